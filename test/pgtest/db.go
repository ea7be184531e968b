package pgtest

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

type atomicCounter struct{ n atomic.Int64 }

func (a *atomicCounter) next() int64 { return a.n.Add(1) }

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDB creates a fresh database for the test and returns its name; it is
// dropped (WITH (FORCE), so lingering sessions do not block it) when the
// test ends. The database is owned by veil_app, so every login role may
// create objects in it; default privileges give veil_app everything the
// login roles or the superuser create there.
func (c *Cluster) NewDB(t testing.TB) string {
	t.Helper()
	name := strings.ToLower(t.Name())
	name = strings.Trim(nonIdent.ReplaceAllString(name, "_"), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("pgveil_%d_%s", c.dbSeq.next(), name)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := c.adminConn(ctx, "postgres")
	if err != nil {
		t.Fatalf("pgtest: NewDB: connecting as superuser: %v", err)
	}
	defer admin.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident+" OWNER "+AppRole+" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"); err != nil {
		t.Fatalf("pgtest: NewDB: creating %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		admin, err := c.adminConn(ctx, "postgres")
		if err != nil {
			t.Errorf("pgtest: dropping %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: dropping %s: %v", name, err)
		}
	})

	conn, err := c.adminConn(ctx, name)
	if err != nil {
		t.Fatalf("pgtest: NewDB: connecting to %s: %v", name, err)
	}
	defer conn.Close(ctx)
	roles := []string{pgx.Identifier{c.superName}.Sanitize()}
	for _, u := range Users {
		roles = append(roles, u.Name)
	}
	forRoles := strings.Join(roles, ", ")
	for _, sql := range []string{
		"GRANT ALL ON SCHEMA public TO " + AppRole,
		"ALTER DEFAULT PRIVILEGES FOR ROLE " + forRoles + " IN SCHEMA public GRANT ALL ON TABLES TO " + AppRole,
		"ALTER DEFAULT PRIVILEGES FOR ROLE " + forRoles + " IN SCHEMA public GRANT ALL ON SEQUENCES TO " + AppRole,
		"ALTER DEFAULT PRIVILEGES FOR ROLE " + forRoles + " IN SCHEMA public GRANT ALL ON FUNCTIONS TO " + AppRole,
		"ALTER DEFAULT PRIVILEGES FOR ROLE " + forRoles + " GRANT ALL ON SCHEMAS TO " + AppRole,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("pgtest: NewDB: %s: %v", sql, err)
		}
	}
	return name
}

// Superuser connects to db ("" means "postgres") as the superuser over TCP
// and closes the connection when the test ends.
func (c *Cluster) Superuser(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	return c.Conn(t, SuperUser, db)
}

// Conn connects to db as role over TCP (sslmode=disable) and closes the
// connection when the test ends.
func (c *Cluster) Conn(t testing.TB, role, db string) *pgx.Conn {
	t.Helper()
	return ConnectDSN(t, c.DSN(role, db))
}

// ConnectDSN connects with pgx to dsn (the cluster, or pgveil in front of
// it) and closes the connection when the test ends. The DSN is not
// printed on failure: it holds a password.
func ConnectDSN(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn.Close(ctx)
	})
	return conn
}

// Exec runs sql with args on conn and fails the test on error.
func Exec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("pgtest: exec %q: %v", sql, err)
	}
}

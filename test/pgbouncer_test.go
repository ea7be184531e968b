package test

// pgveil in front of PgBouncer: many deployments reach PostgreSQL through a
// pooler in transaction mode, and pgveil (a sidecar next to the
// application) then has PgBouncer as its upstream. PgBouncer hands each
// transaction whichever server connection is free, so consecutive
// statements of one client may run on different backends and one backend
// serves several clients: nothing pgveil does may depend on a backend
// staying with a client between transactions.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgveil/pgveil/test/pgtest"
)

// pgbouncerBin finds PgBouncer ($PGBOUNCER, PATH, then where Debian puts
// it); it is required except under -short.
func pgbouncerBin(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("PGBOUNCER"); b != "" {
		return b
	}
	if b, err := exec.LookPath("pgbouncer"); err == nil {
		return b
	}
	if _, err := os.Stat("/usr/sbin/pgbouncer"); err == nil {
		return "/usr/sbin/pgbouncer"
	}
	if testing.Short() {
		t.Skip("pgbouncer not installed (Debian package pgbouncer); skipped under -short")
	}
	t.Fatal("pgbouncer not found: install the Debian package `pgbouncer` (apt-get install pgbouncer), which .ci/run installs")
	return ""
}

// startPgBouncer runs PgBouncer in front of the cluster, in the given pool
// mode with poolSize server connections per database and user, letting
// TrustUser in without a password (as the cluster does). It is stopped when
// the test ends. It returns PgBouncer's address.
func startPgBouncer(t testing.TB, c *pgtest.Cluster, mode string, poolSize int) string {
	t.Helper()
	bin := pgbouncerBin(t)
	c.RequireLocal(t)
	// Not t.TempDir: PgBouncer runs as the postgres user when the tests
	// run as root, and must be able to reach the directory.
	dir, err := os.MkdirTemp("", "pgveil-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(pgtest.FreePort(t)))
	host, port, _ := net.SplitHostPort(addr)
	users := filepath.Join(dir, "userlist.txt")
	ini := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(users, []byte(fmt.Sprintf("%q \"\"\n", pgtest.TrustUser)), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`[databases]
* = host=%s port=%d
[pgbouncer]
listen_addr = %s
listen_port = %s
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
default_pool_size = %d
max_client_conn = 100
ignore_startup_parameters = extra_float_digits,options
`, c.Host, c.Port, host, port, users, mode, poolSize)
	if err := os.WriteFile(ini, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, err := pgtest.ServiceCommand(dir, []string{users, ini}, bin, ini)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting pgbouncer: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// SIGTERM: PgBouncer's immediate shutdown.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return addr
		}
		select {
		case err := <-exited:
			t.Fatalf("pgbouncer exited (%v):\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbouncer does not listen on %s:\n%s", addr, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPgBouncerUpstream: four clients through pgveil behind PgBouncer.
// In transaction mode they share two backends, in the simple protocol and
// with unnamed extended-protocol statements (what transaction pooling
// supports without prepared-statement tracking, which Debian 12's PgBouncer
// 1.18 lacks); in session mode each holds a backend, with named prepared
// statements as pgx caches them. Every write is stored as tokens with its
// blind index, every lookup by the blind index finds the row its client
// wrote, transactions keep their statements together, and a refused
// statement leaves the connection usable.
func TestPgBouncerUpstream(t *testing.T) {
	for _, tc := range []struct {
		poolMode string
		poolSize int
		modes    []pgx.QueryExecMode
	}{
		{"transaction", 2, []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec}},
		{"session", 4, []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe}},
	} {
		t.Run(tc.poolMode, func(t *testing.T) {
			testPgBouncerUpstream(t, tc.poolMode, tc.poolSize, tc.modes)
		})
	}
}

func testPgBouncerUpstream(t *testing.T, poolMode string, poolSize int, modes []pgx.QueryExecMode) {
	c := pgtest.Get(t)
	db := createAppDB(t, c, "")
	bouncer := startPgBouncer(t, c, poolMode, poolSize)
	p := serveProxy(t, c, db, newTestKeys(t), proxyOpts{upstream: bouncer})
	ctx := ctxT(t)

	const clients, perClient = 4, 15
	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		conns[i] = connMode(t, p.DSN(pgtest.TrustUser), modes[i%len(modes)])
	}
	var wg sync.WaitGroup
	errs := make(chan error, clients*perClient)
	for i, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perClient; j++ {
				if err := pooledClientStep(ctx, conn, i, j); err != nil {
					errs <- fmt.Errorf("client %d (%v), step %d: %w", i, modes[i%len(modes)], j, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	// What PostgreSQL holds: tokens and 64-hex blind indexes only, and the
	// clients' sessions ran on no more backends than the pool has.
	direct := p.Direct(t)
	var rows, sealed, backends int
	if err := direct.QueryRow(ctx, `SELECT count(*),
		count(*) FILTER (WHERE email LIKE 'gAAAAA%' AND full_name LIKE 'gAAAAA%' AND email_hash ~ '^[0-9a-f]{64}$')
		FROM users`).Scan(&rows, &sealed); err != nil {
		t.Fatal(err)
	}
	if rows != clients*perClient || sealed != rows {
		t.Errorf("users: %d rows, %d stored as tokens with a blind index; want %d of %d", rows, sealed, clients*perClient, clients*perClient)
	}
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
		db, pgtest.TrustUser).Scan(&backends); err != nil {
		t.Fatal(err)
	}
	if backends < 1 || backends > poolSize {
		t.Errorf("%d backends served %d clients through PgBouncer; want 1 to %d (its pool)", backends, clients, poolSize)
	}
	assertNoPlaintext(t, p, "pool0.0@example.com", "Pool User 3-14 (edited)", "pool1.7@example.com")

	// A statement pgveil refuses gets its SQLSTATE; the connection (and
	// the PgBouncer backend behind it) goes on.
	for i, conn := range conns[:2] {
		_, err := conn.Exec(ctx, "SELECT id FROM users WHERE email LIKE 'pool%'")
		if sqlState(err) != "0A000" {
			t.Errorf("client %d: LIKE on an encrypted column: want 0A000, got %v", i, err)
		}
		var name string
		if err := conn.QueryRow(ctx, "SELECT full_name FROM users WHERE email = $1", "pool2.3@example.com").Scan(&name); err != nil || name != "Pool User 2-3 (edited)" {
			t.Errorf("client %d after the refusal: %q, %v", i, name, err)
		}
	}
}

// pooledClientStep is one step of a TestPgBouncerUpstream client: an
// insert, a lookup by the encrypted email, and a transaction that reads and
// updates the row.
func pooledClientStep(ctx context.Context, conn *pgx.Conn, i, j int) error {
	email := fmt.Sprintf("pool%d.%d@example.com", i, j)
	name := fmt.Sprintf("Pool User %d-%d", i, j)
	if _, err := conn.Exec(ctx, "INSERT INTO users (email, full_name) VALUES ($1, $2)", email, name); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	var got string
	if err := conn.QueryRow(ctx, "SELECT full_name FROM users WHERE email = $1", email).Scan(&got); err != nil {
		return fmt.Errorf("lookup: %w", err)
	}
	if got != name {
		return fmt.Errorf("lookup of %s: got %q, want %q", email, got, name)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	var id int64
	if err := tx.QueryRow(ctx, "SELECT id, full_name FROM users WHERE email = $1 FOR UPDATE", email).Scan(&id, &got); err != nil {
		return fmt.Errorf("in a transaction: %w", err)
	}
	if _, err := tx.Exec(ctx, "UPDATE users SET full_name = $1 WHERE id = $2", got+" (edited)", id); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	if err := conn.QueryRow(ctx, "SELECT full_name FROM users WHERE email = $1", email).Scan(&got); err != nil || got != name+" (edited)" {
		return fmt.Errorf("after the update: %q, %v", got, err)
	}
	return nil
}

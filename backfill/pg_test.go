package backfill

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/test/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testKeyring(t testing.TB, fallbacks ...*keyring.Key) *keyring.Keyring {
	t.Helper()
	s, err := keyring.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := keyring.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return keyring.New(k, fallbacks, 1, []byte("0123456789abcdef0123456789abcdef"), nil)
}

func newKey(t testing.TB) *keyring.Key {
	t.Helper()
	s, err := keyring.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := keyring.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testDB creates a database with a users table of n rows and returns a pool.
func testDB(t testing.TB, n int, extra string) *pgxpool.Pool {
	t.Helper()
	c := pgtest.Get(t)
	db := c.NewDB(t)
	pool, err := pgxpool.New(ctxT(t), c.DSN(pgtest.SuperUser, db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctxT(t), `CREATE TABLE users (id bigint PRIMARY KEY, email text, email_hash text, full_name text, bio text);
		CREATE INDEX ON users (email_hash);
		INSERT INTO users SELECT g, 'user' || g || '@example.com', NULL, CASE WHEN g % 7 = 0 THEN NULL ELSE 'Name ' || g END,
			CASE WHEN g % 5 = 0 THEN '' ELSE repeat('bio ', g % 20) END FROM generate_series(1, `+fmt.Sprint(n)+`) g;`+extra)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

var usersTable = config.Table{Table: "users", Schema: "public", Name: "users", Columns: []config.Column{
	{Column: "email", BlindIndex: "email_hash", HashDomain: "public.users.email"},
	{Column: "full_name", HashDomain: "public.users.full_name"},
	{Column: "bio", HashDomain: "public.users.bio"},
}}

func snapshot(t testing.TB, pool *pgxpool.Pool) map[int64][4]*string {
	t.Helper()
	rows, err := pool.Query(ctxT(t), "SELECT id, email, email_hash, full_name, bio FROM users")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64][4]*string{}
	for rows.Next() {
		var id int64
		var v [4]*string
		if err := rows.Scan(&id, &v[0], &v[1], &v[2], &v[3]); err != nil {
			t.Fatal(err)
		}
		out[id] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRunAndVerify(t *testing.T) {
	pool := testDB(t, 2500, "")
	before := snapshot(t, pool)
	kr := testKeyring(t)
	var out bytes.Buffer
	j := &Job{Op: OpEncrypt, Tables: []config.Table{usersTable}, Keys: kr, Sanitize: true, MaxSize: 1 << 20,
		BatchSize: 300, Workers: 3, Out: &out, MaxFailures: 0.01}
	sum, err := j.Run(ctxT(t), pool)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	sum.Write(&out)
	t.Log(out.String()[max(0, out.Len()-600):])
	if !strings.Contains(out.String(), "Progress: 2500/2500 users processed") {
		t.Errorf("no final progress line")
	}
	after := snapshot(t, pool)
	for id, b := range before {
		a := after[id]
		for ci, vi := range []int{0, 2, 3} {
			_ = ci
			if b[vi] == nil {
				if a[vi] != nil {
					t.Fatalf("row %d: NULL became non-NULL", id)
				}
				continue
			}
			p, ki, err := kr.Open(nil, []byte(*a[vi]))
			if err != nil || ki != 0 || string(p) != *b[vi] {
				t.Fatalf("row %d col %d: does not decrypt to its original (%v)", id, vi, err)
			}
		}
		want := string(kr.BlindIndex(nil, "public.users.email", []byte(*b[0])))
		if a[1] == nil || *a[1] != want {
			t.Fatalf("row %d: wrong blind index", id)
		}
	}
	rep, err := (&Job{Tables: []config.Table{usersTable}, Keys: kr, Workers: 2, BatchSize: 700}).Verify(ctxT(t), pool)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		var b bytes.Buffer
		rep.WriteText(&b)
		t.Fatalf("verify not OK:\n%s", b.String())
	}
	// A second run changes nothing.
	sum2, err := j.Run(ctxT(t), pool)
	if err != nil {
		t.Fatal(err)
	}
	if sum2.Tables[0].Written != 0 {
		t.Fatalf("second run wrote %d rows", sum2.Tables[0].Written)
	}
	again := snapshot(t, pool)
	for id := range after {
		if after[id] != again[id] && fmt.Sprint(deref(after[id])) != fmt.Sprint(deref(again[id])) {
			t.Fatalf("row %d changed on the second run", id)
		}
	}
	_ = pgx.Identifier{}
}

func deref(v [4]*string) [4]string {
	var out [4]string
	for i, p := range v {
		if p == nil {
			out[i] = "<NULL>"
		} else {
			out[i] = *p
		}
	}
	return out
}

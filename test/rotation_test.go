package test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgveil/pgveil/test/pgtest"
)

// TestLookupsDuringRehash: while fallback_hash_keys is set, lookups through
// pgveil match blind indexes under the old hash key and the new one, in
// every lookup form, and writes use the new one.
func TestLookupsDuringRehash(t *testing.T) {
	old := newTestKeys(t)
	p1 := startProxy(t, proxyOpts{keys: &old})
	// Rows written under the old hash key.
	c1 := p1.Conn(t)
	for i := 0; i < 3; i++ {
		mustExec(t, c1, "INSERT INTO users (email, full_name) VALUES ($1, $2)", fmt.Sprintf("old%d@x.io", i), "Old")
	}
	// The same database behind a proxy whose hash key is new, the old one
	// a fallback (as during pgveil rehash).
	next := newTestKeys(t)
	rot := testKeys{Enc: old.Enc, Hash: next.Hash, HashFallback: old.Hash}
	p2 := startProxyOn(t, p1, rot)
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		c := connMode(t, p2.DSN(pgtest.TrustUser), mode)
		email := fmt.Sprintf("new-%s@x.io", mode)
		mustExec(t, c, "INSERT INTO users (email, full_name) VALUES ($1, $2)", email, "New")
		count := func(sql string, args ...any) int {
			t.Helper()
			var n int
			if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
				t.Fatalf("%v %s: %v", mode, sql, err)
			}
			return n
		}
		if n := count("SELECT count(*) FROM users WHERE email = $1", "old1@x.io"); n != 1 {
			t.Errorf("%v: = under the fallback hash key: %d", mode, n)
		}
		if n := count("SELECT count(*) FROM users WHERE email = $1", email); n != 1 {
			t.Errorf("%v: = under the new hash key: %d", mode, n)
		}
		if n := count("SELECT count(*) FROM users WHERE email IN ($1, $2)", "old0@x.io", email); n != 2 {
			t.Errorf("%v: IN across keys: %d", mode, n)
		}
		if n := count("SELECT count(*) FROM users WHERE email = ANY($1)", []string{"old2@x.io", email}); n != 2 {
			t.Errorf("%v: = ANY across keys: %d", mode, n)
		}
		if n := count("SELECT count(*) FROM users WHERE email <> $1", "old0@x.io"); n != count("SELECT count(*) FROM users")-1 {
			t.Errorf("%v: <> across keys: %d", mode, n)
		}
		// The new row's stored blind index is under the new hash key.
		kr := p2.Keyring(t)
		var h string
		p2.Direct(t).QueryRow(ctx, "SELECT email_hash FROM users WHERE full_name IS NOT NULL AND id = (SELECT max(id) FROM users)").Scan(&h)
		if want := string(kr.BlindIndex(nil, "public.users.email", []byte(email))); h != want {
			t.Errorf("%v: new row's blind index is not under the new hash key", mode)
		}
	}
}

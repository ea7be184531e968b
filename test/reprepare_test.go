package test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/proxy"
	"github.com/pgveil/pgveil/test/pgtest"
)

// reload swaps p's configuration for one with keys and mutate applied, as
// SIGHUP does.
func reload(t *testing.T, p *testProxy, keys testKeys, mutate func(*config.Config)) {
	t.Helper()
	old := p.Server.Snapshot()
	cfg := *old.Config
	if mutate != nil {
		mutate(&cfg)
	}
	env := keys.env()
	kr, err := keyring.Load(cfg.Keys, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := proxy.NewSnapshot(&cfg, kr)
	if err != nil {
		t.Fatal(err)
	}
	plant(keys.Enc, keys.Fallback, keys.Hash, keys.HashFallback)
	p.Server.Swap(snap)
}

// TestCatalogPreparedAcrossReload: a statement the client prepared before
// a reload is carried out as the new configuration plans it (pgveil
// prepares it again upstream): lookups keep finding rows while the hash key
// rotates, and a change of mode takes effect at the next execution, on the
// same connection (pgx's statement cache).
func TestCatalogPreparedAcrossReload(t *testing.T) {
	ctx := context.Background()
	old := newTestKeys(t)
	p := startProxy(t, proxyOpts{keys: &old})
	c := p.Conn(t)
	const lookup = "SELECT count(*) FROM users WHERE email = $1"
	count := func(email string) int {
		t.Helper()
		var n int
		if err := c.QueryRow(ctx, lookup, email).Scan(&n); err != nil {
			t.Fatalf("lookup: %v", err)
		}
		return n
	}
	for i := 0; i < 3; i++ {
		mustExec(t, c, "INSERT INTO users (email, full_name) VALUES ($1, $2)", fmt.Sprintf("old%d@x.io", i), "Old")
	}
	if n := count("old1@x.io"); n != 1 {
		t.Fatalf("before the reload: %d", n)
	}

	// Hash-key rotation: new hash key, the old one a fallback.
	rot := testKeys{Enc: old.Enc, Hash: newTestKeys(t).Hash, HashFallback: old.Hash}
	reload(t, p, rot, nil)
	if n := count("old1@x.io"); n != 1 {
		t.Fatalf("a statement prepared before the rotation finds %d rows under the fallback hash key", n)
	}
	mustExec(t, c, "INSERT INTO users (email, full_name) VALUES ($1, $2)", "new@x.io", "New")
	if n := count("new@x.io"); n != 1 {
		t.Fatalf("under the new hash key: %d", n)
	}

	// migrating: rows not yet encrypted are found by their plaintext; strict
	// again: they are not, and the plaintext no longer goes upstream.
	mustExec(t, p.Direct(t), "INSERT INTO users (email, full_name) VALUES ('legacy@x.io', 'Legacy')")
	if n := count("legacy@x.io"); n != 0 {
		t.Fatalf("strict finds a plaintext row: %d", n)
	}
	reload(t, p, rot, func(cfg *config.Config) { cfg.Encryption.Mode = config.ModeMigrating })
	if n := count("legacy@x.io"); n != 1 {
		t.Fatalf("migrating after a reload: %d", n)
	}
	reload(t, p, rot, func(cfg *config.Config) { cfg.Encryption.Mode = config.ModeStrict })
	if n := count("legacy@x.io"); n != 0 {
		t.Fatalf("strict after a reload: %d", n)
	}
	// The connection's last statement upstream is the strict lookup, not
	// migrating's, which sends the plaintext along for rows without a hash.
	var active int
	p.Direct(t).QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%email_hash IS NULL AND%' AND query NOT LIKE '%pg_stat_activity%'").Scan(&active)
	if active != 0 {
		t.Fatal("the plaintext of a lookup still reaches PostgreSQL after the switch to strict")
	}
	// The statement cache of other clients is no different.
	d := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser))
	var n int
	if err := d.QueryRow(ctx, lookup, "old2@x.io").Scan(&n); err != nil || n != 1 {
		t.Fatalf("new connection: %v %d", err, n)
	}
}

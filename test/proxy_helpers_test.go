package test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/proxy"
	"github.com/pgveil/pgveil/test/pgtest"
)

// testKeys are the keys of one test's proxy.
type testKeys struct {
	Enc, Fallback, Hash, HashFallback string
}

func newTestKeys(t testing.TB) testKeys {
	t.Helper()
	gen := func() string {
		k, err := keyring.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	return testKeys{Enc: gen(), Hash: gen()}
}

func (k testKeys) env() map[string]string {
	m := map[string]string{"ENCRYPTION_KEY": k.Enc, "ENCRYPTION_HASH_KEY": k.Hash}
	if k.Fallback != "" {
		m["ENCRYPTION_KEY_FALLBACK"] = k.Fallback
	}
	if k.HashFallback != "" {
		m["ENCRYPTION_HASH_KEY_FALLBACK"] = k.HashFallback
	}
	return m
}

// appTables is the users / tasks / chat_history configuration of the
// runbook pgveil replaces.
const appTables = `
tables:
  - table: users
    columns:
      - column: email
        blind_index: email_hash
      - column: full_name
  - table: tasks
    columns: [{column: title}, {column: description}]
  - table: chat_history
    columns: [{column: message}]
`

// appSchema creates the application's schema, already migrated for pgveil
// (encrypted columns are text, blind-index columns exist and are indexed).
const appSchema = `
CREATE TABLE users (id bigserial PRIMARY KEY, email text, email_hash text, full_name text, age int, created_at timestamptz DEFAULT now());
CREATE UNIQUE INDEX users_email_hash ON users (email_hash);
CREATE TABLE tasks (id bigserial PRIMARY KEY, user_id bigint REFERENCES users(id), title text, description text, done boolean DEFAULT false);
CREATE TABLE chat_history (id bigserial PRIMARY KEY, user_id bigint, message text, created_at timestamptz DEFAULT now());
CREATE TABLE plain_notes (id serial PRIMARY KEY, body text);
`

// testProxy is a pgveil Server in this process, in front of the harness
// cluster.
type testProxy struct {
	Addr    string
	Server  *proxy.Server
	Reg     *prometheus.Registry
	Keys    testKeys
	Cluster *pgtest.Cluster
	DB      string
	Logs    *logBuffer
}

type proxyOpts struct {
	yaml   string // extra YAML (tables etc.); default appTables
	keys   *testKeys
	mutate func(*config.Config)
	schema string // SQL run directly before the proxy starts; default appSchema
	noDB   bool
	// upstream, when set, is where pgveil connects instead of the
	// cluster (a PgBouncer in front of it, say).
	upstream string
}

// startProxy creates a database with the app schema, and a proxy in front
// of it; everything is torn down when the test ends.
func startProxy(t testing.TB, o proxyOpts) *testProxy {
	t.Helper()
	c := pgtest.Get(t)
	db := createAppDB(t, c, o.schema)
	keys := newTestKeys(t)
	if o.keys != nil {
		keys = *o.keys
	}
	return serveProxy(t, c, db, keys, o)
}

// createAppDB creates a database with schema (default appSchema), its
// tables open to the application roles.
func createAppDB(t testing.TB, c *pgtest.Cluster, schema string) string {
	t.Helper()
	db := c.NewDB(t)
	if schema == "" {
		schema = appSchema
	}
	su := c.Superuser(t, db)
	if _, err := su.Exec(context.Background(), schema); err != nil {
		t.Fatalf("creating schema: %v", err)
	}
	if _, err := su.Exec(context.Background(), "GRANT ALL ON ALL TABLES IN SCHEMA public TO "+pgtest.AppRole+"; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "+pgtest.AppRole); err != nil {
		t.Fatalf("grants: %v", err)
	}
	return db
}

// startProxyOn starts another proxy in front of p's database, with other keys.
func startProxyOn(t testing.TB, p *testProxy, keys testKeys) *testProxy {
	t.Helper()
	return serveProxy(t, p.Cluster, p.DB, keys, proxyOpts{})
}

func serveProxy(t testing.TB, c *pgtest.Cluster, db string, keys testKeys, o proxyOpts) *testProxy {
	t.Helper()
	plant(keys.Enc, keys.Fallback, keys.Hash, keys.HashFallback)
	tables := o.yaml
	if tables == "" {
		tables = appTables
	}
	upstream := c.Addr()
	if o.upstream != "" {
		upstream = o.upstream
	}
	yml := fmt.Sprintf("upstream: %s\nupstream_tls: {mode: disable}\n", upstream) + tables
	env := keys.env()
	cfg, err := config.Parse([]byte(yml), "", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if v := os.Getenv("PGVEIL_TEST_EVENT_LOOPS"); v != "" {
		// make test runs the protocol suites a second time with 0: every
		// session on its two goroutines instead of the event loop.
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("PGVEIL_TEST_EVENT_LOOPS=%q: %v", v, err)
		}
		cfg.Proxy.EventLoops = &n
	}
	if v := os.Getenv("PGVEIL_TEST_IO_URING"); v != "" {
		// make test runs the protocol suites again with off: the event
		// loops on epoll, as where the kernel refuses io_uring.
		cfg.Proxy.IOUring = v
	}
	if o.mutate != nil {
		o.mutate(cfg)
	}
	kr, err := keyring.Load(cfg.Keys, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil)
	if err != nil {
		t.Fatalf("keys: %v", err)
	}
	snap, err := proxy.NewSnapshot(cfg, kr)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	logs := &logBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	srv := proxy.NewServer(snap, logger, proxy.NewMetrics(reg), keyring.NewMetrics(reg))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		recordLogs(t, logs)
	})
	return &testProxy{Addr: ln.Addr().String(), Server: srv, Reg: reg, Keys: keys, Cluster: c, DB: db, Logs: logs}
}

// DSN through the proxy.
func (p *testProxy) DSN(role string, params ...string) string {
	direct := p.Cluster.DSN(role, p.DB, params...)
	return strings.Replace(direct, p.Cluster.Addr(), p.Addr, 1)
}

// Direct DSN to Postgres.
func (p *testProxy) DirectDSN(role string, params ...string) string {
	return p.Cluster.DSN(role, p.DB, params...)
}

// Conn connects through the proxy as the trust user.
func (p *testProxy) Conn(t testing.TB, params ...string) *pgx.Conn {
	t.Helper()
	return pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser, params...))
}

// Direct connects straight to Postgres as the superuser.
// RawConn is a plain TCP connection to pgveil, for tests that speak the
// protocol byte by byte; it is closed when the test ends and every read or
// write fails after timeout.
func (p *testProxy) RawConn(t testing.TB, timeout time.Duration) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(timeout))
	return nc
}

func (p *testProxy) Direct(t testing.TB) *pgx.Conn {
	t.Helper()
	return p.Cluster.Superuser(t, p.DB)
}

// Keyring builds the test's keyring (to check stored tokens).
func (p *testProxy) Keyring(t testing.TB) *keyring.Keyring {
	t.Helper()
	kr, err := keyring.Load(config.Keys{EncryptionKey: "env:ENCRYPTION_KEY", FallbackKeys: "env:ENCRYPTION_KEY_FALLBACK", HashKey: "env:ENCRYPTION_HASH_KEY", FallbackHashKeys: "env:ENCRYPTION_HASH_KEY_FALLBACK", KeyVersion: 1},
		func(k string) (string, bool) { v, ok := p.Keys.env()[k]; return v, ok }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// logBuffer collects a proxy's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// allLogs gathers every proxy log written during the suite, so a final
// test can scan it for planted plaintext and keys.
var allLogs struct {
	mu    sync.Mutex
	lines []string
	keys  []string
}

func recordLogs(t testing.TB, l *logBuffer) {
	allLogs.mu.Lock()
	defer allLogs.mu.Unlock()
	allLogs.lines = append(allLogs.lines, l.String())
}

func mustExec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// storedValue reads a column directly from Postgres.
func storedValue(t testing.TB, db *pgx.Conn, table, col string, id int64) *string {
	t.Helper()
	var v *string
	err := db.QueryRow(context.Background(), fmt.Sprintf("SELECT %s FROM %s WHERE id = $1", col, table), id).Scan(&v)
	if err != nil {
		t.Fatalf("stored %s.%s id %d: %v", table, col, id, err)
	}
	return v
}

// assertNoPlaintext scans every text column of every table directly and
// fails if any of the given plaintext values is stored anywhere.
func assertNoPlaintext(t testing.TB, p *testProxy, plaintexts ...string) {
	t.Helper()
	plant(plaintexts...) // and none may appear in any log (zz_logscan_test.go)
	db := p.Direct(t)
	rows, err := db.Query(context.Background(), `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = 'public' AND data_type IN ('text', 'character varying') AND table_name IN ('users','tasks','chat_history')`)
	if err != nil {
		t.Fatal(err)
	}
	type tc struct{ t, c string }
	var cols []tc
	for rows.Next() {
		var x tc
		if err := rows.Scan(&x.t, &x.c); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, x)
	}
	rows.Close()
	for _, c := range cols {
		for _, pt := range plaintexts {
			if pt == "" {
				continue
			}
			var n int
			q := fmt.Sprintf("SELECT count(*) FROM %s WHERE position($1 in coalesce(%s, '')) > 0", pgx.Identifier{c.t}.Sanitize(), pgx.Identifier{c.c}.Sanitize())
			if err := db.QueryRow(context.Background(), q, pt).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > 0 && !(c.c == "email_hash") {
				t.Errorf("plaintext %q found stored in %s.%s", pt, c.t, c.c)
			}
		}
	}
}

// sqlState returns the SQLSTATE of a pgconn error, or "".
func sqlState(err error) string {
	var s interface{ SQLState() string }
	if errors.As(err, &s) {
		return s.SQLState()
	}
	return ""
}

package test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/proxy"
	"github.com/pgveil/pgveil/test/pgtest"
	"github.com/prometheus/client_golang/prometheus"
)

// A client that leaves idle leaves its PostgreSQL backend to the next
// client that logs in as the same user with the same parameters, reset with
// DISCARD ALL; every login still goes through PostgreSQL (upstreams.go).
// Named TestStartup... so that make test runs it on both I/O engines.
func TestStartupUpstreamReuse(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	ctx := context.Background()
	direct := p.Direct(t)

	// First client: leaves every kind of session state behind.
	c1 := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser))
	pid1 := backendPID(t, c1)
	for _, sql := range []string{
		"SET work_mem = '77MB'",
		"SET ROLE " + pgtest.AppRole,
		// Row-level security keyed on a custom setting, as multi-tenant
		// applications do.
		"SELECT set_config('app.tenant_id', '42', false)",
		"SET search_path = pg_catalog",
		"CREATE TEMP TABLE reuse_scratch (x int)",
		"PREPARE reuse_stmt AS SELECT 1",
		"LISTEN reuse_channel",
		"SELECT pg_advisory_lock(4242)",
		"DECLARE reuse_cursor CURSOR WITH HOLD FOR SELECT 1",
	} {
		mustExec(t, c1, sql)
	}
	if err := c1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 1)
	// Kept, reset, idle: PostgreSQL shows the DISCARD ALL as its last query.
	var state, last string
	if err := direct.QueryRow(ctx, "SELECT state, query FROM pg_stat_activity WHERE pid = $1", pid1).Scan(&state, &last); err != nil {
		t.Fatalf("kept backend %d not found: %v", pid1, err)
	}
	if state != "idle" || last != "DISCARD ALL" {
		t.Fatalf("kept backend: state %q, last query %q", state, last)
	}

	// Second client, same user and parameters: gets that backend, clean.
	c2 := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser))
	if pid := backendPID(t, c2); pid != pid1 {
		t.Fatalf("second client on backend %d, want the kept %d", pid, pid1)
	}
	var workMem, path, role string
	var listening, locks int
	if err := c2.QueryRow(ctx, "SELECT current_setting('work_mem'), current_setting('search_path'), current_user, (SELECT count(*) FROM pg_listening_channels()), (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())").Scan(&workMem, &path, &role, &listening, &locks); err != nil {
		t.Fatal(err)
	}
	if workMem == "77MB" || path == "pg_catalog" || role != pgtest.TrustUser || listening != 0 || locks != 0 {
		t.Fatalf("state survived the reset: work_mem %s, search_path %s, role %s, %d channels, %d advisory locks", workMem, path, role, listening, locks)
	}
	var tenant *string
	if err := c2.QueryRow(ctx, "SELECT current_setting('app.tenant_id', true)").Scan(&tenant); err != nil {
		t.Fatal(err)
	}
	if tenant != nil && *tenant == "42" {
		t.Fatal("a custom setting survived the reset")
	}
	for sql, code := range map[string]string{
		"SELECT * FROM reuse_scratch":  "42P01",
		"EXECUTE reuse_stmt":           "26000",
		"FETCH NEXT FROM reuse_cursor": "34000",
	} {
		if _, err := c2.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); sqlState(err) != code {
			t.Fatalf("%s after the reset: %v, want %s", sql, err, code)
		}
	}
	// Encryption works as on any connection: the catalog is loaded on it.
	mustExec(t, c2, "INSERT INTO users (email, full_name) VALUES ($1, $2)", "reuse@example.com", "Reuse Person")
	var name string
	if err := c2.QueryRow(ctx, "SELECT full_name FROM users WHERE email = $1", "reuse@example.com").Scan(&name); err != nil || name != "Reuse Person" {
		t.Fatalf("lookup on a kept backend: %q, %v", name, err)
	}
	assertNoPlaintext(t, p, "reuse@example.com", "Reuse Person")

	// Cancel reaches the backend the session runs on, although the client
	// holds the key of the backend it logged in on.
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	start := time.Now()
	_, err := c2.Exec(cctx, "SELECT pg_sleep(20)")
	cancel()
	if sqlState(err) != "57014" && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled query: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("cancel took %v", time.Since(start))
	}
	if !waitFor(5*time.Second, func() bool {
		var n int
		_ = direct.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)' AND state = 'active'").Scan(&n)
		return n == 0
	}) {
		t.Fatal("the cancelled pg_sleep still runs on the kept backend")
	}
	c2.Close(ctx)

	// Another user never gets it, and a wrong password is refused even with
	// a backend of that user kept: logins always reach PostgreSQL.
	waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 1)
	m := pgtest.ConnectDSN(t, p.DSN(pgtest.ScramUser))
	if backendPID(t, m) == pid1 {
		t.Fatal("a client of another user got the kept backend")
	}
	m.Close(ctx)
	waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 2)
	bad, err := pgx.Connect(ctx, p.DSN(pgtest.ScramUser, "password", "wrong"))
	if err == nil {
		bad.Close(ctx)
		t.Fatal("wrong password accepted with a kept backend of that user")
	}
	if sqlState(err) != "28P01" {
		t.Fatalf("wrong password: %v, want 28P01", err)
	}

	// Other startup parameters: a backend of its own.
	a := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser, "application_name", "other"))
	if backendPID(t, a) == pid1 {
		t.Fatal("a client with other startup parameters got the kept backend")
	}
	a.Close(ctx)

	// A client that leaves inside a transaction: its backend is closed.
	tx := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser, "application_name", "tx"))
	txPID := backendPID(t, tx)
	mustExec(t, tx, "BEGIN")
	mustExec(t, tx, "SELECT 1")
	tx.Close(ctx)
	if !waitFor(5*time.Second, func() bool { return !backendAlive(t, direct, txPID) }) {
		t.Fatal("a backend left in a transaction was kept")
	}

	// A kept backend that PostgreSQL ended is not handed out.
	mustExec(t, direct, "SELECT pg_terminate_backend($1)", pid1)
	if !waitFor(5*time.Second, func() bool { return !backendAlive(t, direct, pid1) }) {
		t.Fatal("backend not terminated")
	}
	c3 := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser))
	if pid := backendPID(t, c3); pid == pid1 {
		t.Fatal("got a terminated backend")
	}
	mustExec(t, c3, "SELECT 1")
	c3.Close(ctx)
}

// proxy.max_idle_upstreams: 0 closes each backend with its client;
// proxy.upstream_idle_timeout closes kept ones nobody takes.
func TestStartupUpstreamReuseLimits(t *testing.T) {
	ctx := context.Background()
	t.Run("off", func(t *testing.T) {
		zero := 0
		p := startProxy(t, proxyOpts{mutate: func(c *config.Config) { c.Proxy.MaxIdleUpstreams = &zero }})
		c := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser))
		pid := backendPID(t, c)
		c.Close(ctx)
		direct := p.Direct(t)
		if !waitFor(5*time.Second, func() bool { return !backendAlive(t, direct, pid) }) {
			t.Fatal("backend kept with max_idle_upstreams: 0")
		}
	})
	t.Run("timeout", func(t *testing.T) {
		p := startProxy(t, proxyOpts{mutate: func(c *config.Config) { c.Proxy.UpstreamIdleTimeout = config.Duration(time.Second) }})
		c := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser))
		pid := backendPID(t, c)
		c.Close(ctx)
		waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 1)
		direct := p.Direct(t)
		if !waitFor(6*time.Second, func() bool { return !backendAlive(t, direct, pid) }) {
			t.Fatal("kept backend outlived upstream_idle_timeout")
		}
		waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 0)
	})
	t.Run("reload", func(t *testing.T) {
		p := startProxy(t, proxyOpts{})
		c := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser))
		pid := backendPID(t, c)
		c.Close(ctx)
		waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 1)
		old := p.Server.Snapshot()
		cfg := *old.Config
		zero := 0
		cfg.Proxy.MaxIdleUpstreams = &zero
		snap, err := proxy.NewSnapshot(&cfg, old.Keyring)
		if err != nil {
			t.Fatal(err)
		}
		p.Server.Swap(snap)
		waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 0)
		direct := p.Direct(t)
		if !waitFor(5*time.Second, func() bool { return !backendAlive(t, direct, pid) }) {
			t.Fatal("kept backend outlived a reload to max_idle_upstreams: 0")
		}
	})
	t.Run("max", func(t *testing.T) {
		one := 1
		p := startProxy(t, proxyOpts{mutate: func(c *config.Config) { c.Proxy.MaxIdleUpstreams = &one }})
		a := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser))
		b := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser))
		pa, pb := backendPID(t, a), backendPID(t, b)
		a.Close(ctx)
		waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 1)
		b.Close(ctx)
		direct := p.Direct(t)
		// The older one makes room for the newer.
		if !waitFor(5*time.Second, func() bool { return !backendAlive(t, direct, pa) }) {
			t.Fatal("more backends kept than max_idle_upstreams")
		}
		c := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser))
		if pid := backendPID(t, c); pid != pb {
			t.Fatalf("got backend %d, want the one kept (%d)", pid, pb)
		}
	})
}

func backendPID(t testing.TB, c *pgx.Conn) int {
	t.Helper()
	var pid int
	if err := c.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

func backendAlive(t testing.TB, direct *pgx.Conn, pid int) bool {
	t.Helper()
	var n int
	if err := direct.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func waitFor(d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitGauge waits until the gauge name in reg reads want.
func waitGauge(t testing.TB, reg *prometheus.Registry, name string, want float64) {
	t.Helper()
	got := -1.0
	ok := waitFor(5*time.Second, func() bool {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == name {
				got = mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return got == want
	})
	if !ok {
		t.Fatalf("%s = %v, want %v", name, got, want)
	}
}

// A client that sends Terminate while a reply is still owed, or with an
// extended batch open, leaves a backend pgveil cannot vouch for: it gets
// the Terminate, and closes; nothing is kept.
func TestStartupUpstreamNotKeptWhenBusy(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	direct := p.Direct(t)
	for name, msgs := range map[string][]pgproto3.FrontendMessage{
		"query in flight": {&pgproto3.Query{String: "SELECT pg_sleep(0.2)"}},
		"batch without Sync": {&pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{},
			&pgproto3.Execute{}, &pgproto3.Flush{}},
	} {
		rc := dialRaw(t, p.Addr, pgtest.TrustUser, p.DB)
		rc.send(&pgproto3.Query{String: "SELECT 1"})
		rc.until("ReadyForQuery")
		var pid int
		rc.send(&pgproto3.Query{String: "SELECT pg_backend_pid()"})
		for _, m := range rc.until("ReadyForQuery") {
			if strings.HasPrefix(m, "DataRow(") {
				pid, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(m, "DataRow("), ")"))
			}
		}
		if name == "batch without Sync" {
			rc.send(msgs...)
			rc.until("CommandComplete")
			rc.send(&pgproto3.Terminate{})
		} else {
			rc.send(append(msgs, &pgproto3.Terminate{})...)
		}
		if !waitFor(5*time.Second, func() bool { return !backendAlive(t, direct, pid) }) {
			t.Fatalf("%s: backend %d kept", name, pid)
		}
		waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 0)
		// The Terminate went to PostgreSQL: pgveil did not even try to
		// reset the connection (its reset would have refused it too).
		if n := reuseCount(p.Reg, "not_kept"); n != 0 {
			t.Fatalf("%s: %v connections tried and not kept", name, n)
		}
	}
}

func reuseCount(reg *prometheus.Registry, result string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "pgveil_upstream_reuse_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

// Kept backends count against CONNECTION LIMIT and max_connections. A
// login PostgreSQL accepts and then refuses for want of a slot (53300)
// runs on the kept backend of the same login, whose slot it lacked; with
// none, pgveil frees a kept backend and logs in again when the client has
// not been asked for anything yet. Without that, a client that reconnects
// would fail where it succeeds without pgveil.
func TestStartupUpstreamReuseConnectionLimit(t *testing.T) {
	ctx := context.Background()
	t.Run("role limit, SCRAM", func(t *testing.T) {
		p := startProxy(t, proxyOpts{})
		direct := p.Direct(t)
		role := "veil_limit1_" + p.DB
		mustExec(t, direct, "CREATE ROLE "+role+" LOGIN PASSWORD 'limit-secret' CONNECTION LIMIT 1 IN ROLE "+pgtest.AppRole)
		t.Cleanup(func() { _, _ = direct.Exec(context.Background(), "DROP ROLE IF EXISTS "+role) })
		dsn := "postgres://" + role + ":limit-secret@" + p.Addr + "/" + p.DB + "?sslmode=disable"
		c1 := pgtest.ConnectDSN(t, dsn)
		pid1 := backendPID(t, c1)
		c1.Close(ctx)
		waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 1)
		for i := 0; i < 3; i++ {
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatalf("reconnect %d with the role's one slot held by a kept backend: %v", i, err)
			}
			if pid := backendPID(t, c); pid != pid1 {
				t.Fatalf("reconnect %d on backend %d, want the kept %d", i, pid, pid1)
			}
			if v := c.PgConn().ParameterStatus("server_version"); v == "" {
				t.Fatal("no server_version ParameterStatus")
			}
			mustExec(t, c, "SELECT 1")
			if i == 2 {
				// The client's BackendKeyData is the kept backend's:
				// cancel reaches it (pgx then closes the connection).
				cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				start := time.Now()
				_, err = c.Exec(cctx, "SELECT pg_sleep(20)")
				cancel()
				if sqlState(err) != "57014" && !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("cancel: %v", err)
				}
				if !waitFor(5*time.Second, func() bool {
					var n int
					_ = direct.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)' AND state = 'active'").Scan(&n)
					return n == 0
				}) {
					t.Fatalf("the cancelled pg_sleep still runs %v later", time.Since(start))
				}
				break
			}
			c.Close(ctx)
			waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 1)
		}
	})

	t.Run("database limit, trust, other parameters", func(t *testing.T) {
		p := startProxy(t, proxyOpts{})
		direct := p.Direct(t)
		// The superuser's connections may exceed the limit but count
		// towards it: leave room for one more.
		var n int
		if err := direct.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", p.DB).Scan(&n); err != nil {
			t.Fatal(err)
		}
		mustExec(t, direct, fmt.Sprintf("ALTER DATABASE %s CONNECTION LIMIT %d", p.DB, n+1))
		t.Cleanup(func() { _, _ = direct.Exec(context.Background(), "ALTER DATABASE "+p.DB+" CONNECTION LIMIT -1") })
		a := pgtest.ConnectDSN(t, p.DSN(pgtest.TrustUser, "application_name", "a"))
		pidA := backendPID(t, a)
		a.Close(ctx)
		waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 1)
		// Another login: no kept backend of its own, so the kept one
		// makes room and the login is sent again.
		b, err := pgx.Connect(ctx, p.DSN(pgtest.TrustUser, "application_name", "b"))
		if err != nil {
			t.Fatalf("login with the database's one slot held by another login's kept backend: %v", err)
		}
		if backendPID(t, b) == pidA || backendAlive(t, direct, pidA) {
			t.Fatal("the kept backend was not closed to make room")
		}
		var app string
		if err := b.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&app); err != nil || app != "b" {
			t.Fatalf("application_name %q, %v", app, err)
		}
		b.Close(ctx)
	})
}

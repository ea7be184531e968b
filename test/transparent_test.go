package test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/test/pgtest"
)

var execModes = []pgx.QueryExecMode{
	pgx.QueryExecModeCacheStatement,
	pgx.QueryExecModeCacheDescribe,
	pgx.QueryExecModeDescribeExec,
	pgx.QueryExecModeExec,
	pgx.QueryExecModeSimpleProtocol,
}

// connMode connects with a given pgx query exec mode.
func connMode(t testing.TB, dsn string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect (%v): %v", mode, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// queryAll runs a query and renders the whole result as text.
func queryAll(t testing.TB, c *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	rows, err := c.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("query %q: %v", sql, err)
	}
	defer rows.Close()
	var b strings.Builder
	for _, f := range rows.FieldDescriptions() {
		b.WriteString(f.Name + "|")
	}
	b.WriteString("\n")
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(&b, vals...)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("rows %q: %v", sql, err)
	}
	return b.String()
}

// TestTransparentExecModes runs the same statements on a table pgveil does
// not encrypt, through pgveil and directly, in every pgx exec mode.
func TestTransparentExecModes(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	direct := p.Direct(t)
	mustExec(t, direct, "INSERT INTO plain_notes (body) SELECT 'note ' || g FROM generate_series(1, 50) g")
	for _, mode := range execModes {
		t.Run(mode.String(), func(t *testing.T) {
			via := connMode(t, p.DSN(pgtest.TrustUser), mode)
			dir := connMode(t, p.DirectDSN(pgtest.TrustUser), mode)
			for _, q := range []struct {
				sql  string
				args []any
			}{
				{"SELECT id, body FROM plain_notes WHERE id <= $1 ORDER BY id", []any{10}},
				{"SELECT count(*), max(body) FROM plain_notes", nil},
				{"SELECT $1::text || 'x', $2::int + 1, $3::bytea", []any{"a'b\\c", 41, []byte{0, 1, 2}}},
				{"SELECT NULL::text, ''::text, 'ünïcødé ✓'::text", nil},
				{"SELECT g, g * 2.5 FROM generate_series(1, 5) g", nil},
			} {
				got, want := queryAll(t, via, q.sql, q.args...), queryAll(t, dir, q.sql, q.args...)
				if got != want {
					t.Errorf("%s:\nvia pgveil: %s\ndirect:     %s", q.sql, got, want)
				}
			}
			// An error, then the connection still works.
			_, err := via.Exec(context.Background(), "SELECT 1/0")
			if sqlState(err) != "22012" {
				t.Fatalf("division by zero: got %v", err)
			}
			var one int
			if err := via.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("after error: %v %d", err, one)
			}
		})
	}
}

func TestTransparentBatchAndPipeline(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	c := p.Conn(t)
	ctx := context.Background()
	b := &pgx.Batch{}
	for i := 0; i < 20; i++ {
		b.Queue("INSERT INTO plain_notes (body) VALUES ($1) RETURNING id", fmt.Sprintf("batch %d", i))
	}
	b.Queue("SELECT count(*) FROM plain_notes")
	br := c.SendBatch(ctx, b)
	for i := 0; i < 20; i++ {
		var id int
		if err := br.QueryRow().Scan(&id); err != nil {
			t.Fatalf("batch row %d: %v", i, err)
		}
	}
	var n int
	if err := br.QueryRow().Scan(&n); err != nil || n != 20 {
		t.Fatalf("count: %v %d", err, n)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}

	// A batch with an error in the middle: the error is reported and the
	// connection is usable afterwards.
	b = &pgx.Batch{}
	b.Queue("SELECT 1")
	b.Queue("SELECT 1/0")
	b.Queue("SELECT 3")
	br = c.SendBatch(ctx, b)
	var x int
	if err := br.QueryRow().Scan(&x); err != nil || x != 1 {
		t.Fatalf("first: %v", err)
	}
	if err := br.QueryRow().Scan(&x); sqlState(err) != "22012" {
		t.Fatalf("second: want 22012, got %v", err)
	}
	br.Close()
	if err := c.QueryRow(ctx, "SELECT 42").Scan(&x); err != nil || x != 42 {
		t.Fatalf("after batch error: %v", err)
	}

	// Low-level pipeline: several syncs in flight.
	pc := c.PgConn()
	pl := pc.StartPipeline(ctx)
	pl.SendQueryParams("SELECT $1::int", [][]byte{[]byte("7")}, nil, nil, nil)
	pl.SendPipelineSync()
	pl.SendQueryParams("SELECT $1::text", [][]byte{[]byte("eight")}, nil, nil, nil)
	pl.SendPipelineSync()
	if err := pl.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		r, err := pl.GetResults()
		if err != nil {
			t.Fatal(err)
		}
		if r == nil {
			break
		}
		switch rr := r.(type) {
		case *pgconn.ResultReader:
			res := rr.Read()
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			got = append(got, string(res.Rows[0][0]))
		case *pgconn.PipelineSync:
			got = append(got, "sync")
			if len(got) == 4 {
				goto done
			}
		}
	}
done:
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "7,sync,eight,sync" {
		t.Fatalf("pipeline results: %v", got)
	}
}

func TestTransparentCopy(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	c := p.Conn(t)
	ctx := context.Background()
	rows := make([][]any, 5000)
	for i := range rows {
		rows[i] = []any{fmt.Sprintf("copied\t%d \\ \"q\" é", i)}
	}
	n, err := c.CopyFrom(ctx, pgx.Identifier{"plain_notes"}, []string{"body"}, pgx.CopyFromRows(rows))
	if err != nil || n != 5000 {
		t.Fatalf("CopyFrom: %v %d", err, n)
	}
	var buf strings.Builder
	tag, err := c.PgConn().CopyTo(ctx, &buf, "COPY (SELECT body FROM plain_notes ORDER BY id) TO STDOUT")
	if err != nil || tag.RowsAffected() != 5000 {
		t.Fatalf("CopyTo: %v %v", err, tag)
	}
	var direct strings.Builder
	if _, err := p.Direct(t).PgConn().CopyTo(ctx, &direct, "COPY (SELECT body FROM plain_notes ORDER BY id) TO STDOUT"); err != nil {
		t.Fatal(err)
	}
	if buf.String() != direct.String() {
		t.Fatal("COPY TO through pgveil differs from direct")
	}
	// COPY FROM STDIN with a bad row: Postgres' error comes back, and the
	// connection is usable.
	_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("1\tok\nnot-a-number\tbad\n"), "COPY plain_notes (id, body) FROM STDIN")
	if sqlState(err) != "22P02" {
		t.Fatalf("bad COPY: want 22P02, got %v", err)
	}
	var x int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM plain_notes").Scan(&x); err != nil || x != 5000 {
		t.Fatalf("after failed COPY: %v %d", err, x)
	}
}

func TestTransparentListenNotify(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	listener := p.Conn(t)
	ctx := context.Background()
	mustExec(t, listener, "LISTEN pgveil_chan")
	notifier := p.Conn(t)
	mustExec(t, notifier, "SELECT pg_notify('pgveil_chan', 'hello through pgveil')")
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := listener.WaitForNotification(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.Channel != "pgveil_chan" || n.Payload != "hello through pgveil" {
		t.Fatalf("notification: %+v", n)
	}
	// NoticeResponse reaches the client too.
	var notices []string
	cfg, _ := pgx.ParseConfig(p.DSN(pgtest.TrustUser))
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	nc, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close(ctx)
	mustExec(t, nc, "DO $$BEGIN RAISE NOTICE 'notice one'; RAISE NOTICE 'notice two'; END$$")
	if strings.Join(notices, ",") != "notice one,notice two" {
		t.Fatalf("notices: %v", notices)
	}
}

func TestTransparentCancel(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	c := p.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Exec(ctx, "SELECT pg_sleep(20)")
	if err == nil {
		t.Fatal("pg_sleep(20) was not cancelled")
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("cancel took %v", time.Since(start))
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code != "57014" {
		t.Fatalf("want 57014 query_canceled, got %v", err)
	}
	// The backend really was cancelled: a new connection sees no pg_sleep
	// running.
	d := p.Direct(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := d.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)' AND state = 'active'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the backend is still running pg_sleep: the CancelRequest did not reach it")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTransparentAuthMethods(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	for _, u := range pgtest.Users {
		t.Run(u.Method, func(t *testing.T) {
			c := pgtest.ConnectDSN(t, p.DSN(u.Name))
			var who string
			if err := c.QueryRow(context.Background(), "SELECT current_user").Scan(&who); err != nil || who != u.Name {
				t.Fatalf("current_user: %v %q", err, who)
			}
			if u.Method == "trust" {
				return
			}
			bad := strings.Replace(p.DSN(u.Name), u.Password, "wrong-password", 1)
			_, err := pgx.Connect(context.Background(), bad)
			if sqlState(err) != "28P01" {
				t.Fatalf("wrong password: want Postgres' 28P01, got %v", err)
			}
		})
	}
}

func TestTransparentTLS(t *testing.T) {
	c := pgtest.Get(t)
	certFile, keyFile := c.MintCert(t, "127.0.0.1", "localhost")
	// SCRAM crosses pgveil when at most one leg is TLS: a client that
	// supports channel binding and talks TLS to pgveil says so ("y"), and
	// a TLS-speaking PostgreSQL then refuses the downgrade. With TLS on both
	// legs, md5, password and trust work (see README).
	for _, tc := range []struct {
		upstream  string
		clientTLS bool
		user      string
	}{
		{"disable", true, pgtest.ScramUser},
		{"prefer", false, pgtest.ScramUser},
		{"require", false, pgtest.ScramUser},
		{"verify-full", false, pgtest.ScramUser},
		{"prefer", true, pgtest.MD5User},
		{"require", true, pgtest.PasswordUser},
		{"verify-full", true, pgtest.MD5User},
	} {
		t.Run(fmt.Sprintf("upstream-%s-clienttls-%v", tc.upstream, tc.clientTLS), func(t *testing.T) {
			p := startProxy(t, proxyOpts{mutate: func(cfg *config.Config) {
				cfg.TLS = &config.TLS{CertFile: certFile, KeyFile: keyFile}
				cfg.UpstreamTLS.Mode = tc.upstream
				cfg.UpstreamTLS.CAFile = c.CAFile
			}})
			dsn := p.DSN(tc.user)
			if tc.clientTLS {
				dsn = p.DSN(tc.user, "sslmode", "verify-full", "sslrootcert", c.CAFile)
			}
			conn := pgtest.ConnectDSN(t, dsn)
			_, isTLS := conn.PgConn().Conn().(*tls.Conn)
			if isTLS != tc.clientTLS {
				t.Fatalf("client connection TLS=%v, want %v", isTLS, tc.clientTLS)
			}
			var ssl bool
			// What Postgres sees of pgveil's connection.
			if err := conn.QueryRow(context.Background(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
				t.Fatal(err)
			}
			if want := tc.upstream != "disable"; ssl != want {
				t.Fatalf("upstream mode %s: Postgres sees ssl=%v", tc.upstream, ssl)
			}
			// The backend is kept when the client leaves, and the next
			// login carries on it, over the same TLS connection.
			var pid int
			if err := conn.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			conn.Close(context.Background())
			waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 1)
			again := pgtest.ConnectDSN(t, dsn)
			var pid2 int
			if err := again.QueryRow(context.Background(), "SELECT pg_backend_pid(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&pid2, &ssl); err != nil {
				t.Fatal(err)
			}
			if pid2 != pid || ssl != (tc.upstream != "disable") {
				t.Fatalf("second login on backend %d (ssl=%v), want the kept %d", pid2, ssl, pid)
			}
		})
	}
	t.Run("plaintext-after-sslrequest", func(t *testing.T) {
		p := startProxy(t, proxyOpts{mutate: func(cfg *config.Config) {
			cfg.TLS = &config.TLS{CertFile: certFile, KeyFile: keyFile}
		}})
		nc := p.RawConn(t, 10*time.Second)
		// SSLRequest immediately followed by bytes that are not a TLS
		// handshake: pgveil must refuse rather than read them as plaintext.
		req := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f, 0, 0, 0, 8, 0, 3, 0, 0}
		nc.Write(req)
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		n, _ := nc.Read(buf)
		if n > 0 && buf[0] == 'S' {
			t.Fatal("pgveil accepted plaintext bytes sent after SSLRequest")
		}
	})
}

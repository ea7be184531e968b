package test

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgveil/pgveil/test/pgtest"
)

func TestStartupParameters(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(p.DSN(pgtest.ScramUser, "application_name", "veil-app"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["options"] = "-c search_path=pg_catalog,public -c statement_timeout=1234"
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var app, path, timeout string
	if err := c.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('search_path'), current_setting('statement_timeout')").Scan(&app, &path, &timeout); err != nil {
		t.Fatal(err)
	}
	if app != "veil-app" || path != "pg_catalog,public" || timeout != "1234ms" {
		t.Fatalf("startup parameters: %q %q %q", app, path, timeout)
	}
	// ParameterStatus after SET reaches the client.
	mustExec(t, c, "SET application_name = 'renamed'")
	if got := c.PgConn().ParameterStatus("application_name"); got != "renamed" {
		t.Fatalf("ParameterStatus application_name: %q", got)
	}
}

func TestStartupGSSENCAndReplication(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	// GSSENCRequest is answered 'N' and the startup continues in the clear.
	nc := p.RawConn(t, 10*time.Second)
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], 8)
	binary.BigEndian.PutUint32(req[4:], 80877104)
	nc.Write(req[:])
	var b [1]byte
	if _, err := nc.Read(b[:]); err != nil || b[0] != 'N' {
		t.Fatalf("GSSENCRequest: %q %v", b, err)
	}
	fe := pgproto3.NewFrontend(nc, nc)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": pgtest.TrustUser, "database": p.DB}})
	fe.Flush()
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	// Replication connections are refused with a clear error.
	_, err := pgx.Connect(context.Background(), p.DSN(pgtest.TrustUser, "replication", "database"))
	if err == nil || !strings.Contains(err.Error(), "pgveil: replication connections are not supported") {
		t.Fatalf("replication: %v", err)
	}
}

// TestServerClosesSession: the backend is terminated by the server; the
// client gets Postgres' FATAL and pgveil's session ends.
func TestServerClosesSession(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	ctx := context.Background()
	c := p.Conn(t)
	var pid int
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	conns := func() float64 {
		mfs, _ := p.Reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "pgveil_connections" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	if got := conns(); got != 1 {
		t.Fatalf("pgveil_connections = %v, want 1", got)
	}
	mustExec(t, p.Direct(t), "SELECT pg_terminate_backend($1)", pid)
	_, err := c.Exec(ctx, "SELECT 1")
	if err == nil {
		t.Fatal("query on a terminated backend succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for conns() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pgveil_connections = %v after the server closed the session", conns())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = testutil.ToFloat64
}

// A refusal reads like any error: no trace of how pgveil raised it.
func TestRefusalHasNoContext(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		c := connMode(t, p.DSN(pgtest.TrustUser), mode)
		_, err := c.Exec(context.Background(), "SELECT * FROM users WHERE email LIKE 'a%'")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "0A000" || pe.Where != "" || pe.Hint == "" {
			t.Fatalf("%v: %#v", mode, pe)
		}
	}
}

package test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/test/pgtest"
)

// rawConn speaks the protocol message by message, for orderings drivers
// do not produce on demand.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	fe *pgproto3.Frontend
}

func dialRaw(t testing.TB, addr, user, db string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(60 * time.Second))
	rc := &rawConn{t: t, nc: nc, fe: pgproto3.NewFrontend(nc, nc)}
	rc.send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": user, "database": db}})
	for {
		m := rc.recv()
		switch m := m.(type) {
		case *pgproto3.ReadyForQuery:
			return rc
		case *pgproto3.ErrorResponse:
			t.Fatalf("startup: %s", m.Message)
		}
	}
}

func (rc *rawConn) send(msgs ...pgproto3.FrontendMessage) {
	rc.t.Helper()
	for _, m := range msgs {
		rc.fe.Send(m)
	}
	if err := rc.fe.Flush(); err != nil {
		rc.t.Fatal(err)
	}
}

func (rc *rawConn) recv() pgproto3.BackendMessage {
	rc.t.Helper()
	m, err := rc.fe.Receive()
	if err != nil {
		rc.t.Fatalf("receive: %v", err)
	}
	return m
}

// until reads messages up to and including one of type T, and returns a
// compact transcript: message types, with DataRow values and error codes.
// msgText renders a backend message for a transcript: its type, with
// DataRow values, error codes and command tags.
func msgText(m pgproto3.BackendMessage) string {
	s := strings.TrimPrefix(fmt.Sprintf("%T", m), "*pgproto3.")
	switch m := m.(type) {
	case *pgproto3.DataRow:
		vals := make([]string, len(m.Values))
		for i, v := range m.Values {
			vals[i] = string(v)
		}
		s += "(" + strings.Join(vals, ",") + ")"
	case *pgproto3.ErrorResponse:
		s += "(" + m.Code + ")"
	case *pgproto3.CommandComplete:
		s += "(" + string(m.CommandTag) + ")"
	}
	return s
}

func (rc *rawConn) until(stop string) []string {
	rc.t.Helper()
	var out []string
	for {
		m := rc.recv()
		s := msgText(m)
		if p, ok := m.(*pgproto3.ParameterDescription); ok {
			s += fmt.Sprintf("(%d)", len(p.ParameterOIDs))
		}
		out = append(out, s)
		if strings.HasPrefix(s, stop) {
			return out
		}
	}
}

func TestProtocolRowLimitAndPipelines(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	mustExec(t, p.Direct(t), "INSERT INTO plain_notes (body) SELECT 'n' || g FROM generate_series(1, 5) g")
	rc := dialRaw(t, p.Addr, pgtest.TrustUser, p.DB)

	// Execute with a row limit: PortalSuspended, then the rest.
	rc.send(&pgproto3.Parse{Name: "s1", Query: "SELECT body FROM plain_notes ORDER BY id"},
		&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "s1"},
		&pgproto3.Describe{ObjectType: 'P', Name: "p1"},
		&pgproto3.Execute{Portal: "p1", MaxRows: 2},
		&pgproto3.Flush{})
	got := strings.Join(rc.until("PortalSuspended"), " ")
	if got != "ParseComplete BindComplete RowDescription DataRow(n1) DataRow(n2) PortalSuspended" {
		t.Fatalf("row limit: %s", got)
	}
	rc.send(&pgproto3.Execute{Portal: "p1", MaxRows: 2}, &pgproto3.Execute{Portal: "p1"}, &pgproto3.Sync{})
	got = strings.Join(rc.until("ReadyForQuery"), " ")
	if got != "DataRow(n3) DataRow(n4) PortalSuspended DataRow(n5) CommandComplete(SELECT 1) ReadyForQuery" {
		t.Fatalf("row limit rest: %s", got)
	}

	// Describe statement, then an error mid-pipeline: everything up to
	// Sync is skipped, and the next batch works.
	rc.send(&pgproto3.Parse{Name: "s2", Query: "SELECT $1::int + 1"},
		&pgproto3.Describe{ObjectType: 'S', Name: "s2"},
		&pgproto3.Bind{PreparedStatement: "s2", Parameters: [][]byte{[]byte("x")}},
		&pgproto3.Execute{},
		&pgproto3.Bind{PreparedStatement: "s2", Parameters: [][]byte{[]byte("1")}},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
		&pgproto3.Bind{PreparedStatement: "s2", Parameters: [][]byte{[]byte("41")}},
		&pgproto3.Execute{},
		&pgproto3.Sync{})
	got = strings.Join(rc.until("ReadyForQuery"), " ")
	if got != "ParseComplete ParameterDescription(1) RowDescription ErrorResponse(22P02) ReadyForQuery" {
		t.Fatalf("error mid-pipeline: %s", got)
	}
	got = strings.Join(rc.until("ReadyForQuery"), " ")
	if got != "BindComplete DataRow(42) CommandComplete(SELECT 1) ReadyForQuery" {
		t.Fatalf("after error: %s", got)
	}

	// Close, and a simple query with several statements.
	rc.send(&pgproto3.Close{ObjectType: 'S', Name: "s1"}, &pgproto3.Sync{})
	if got := strings.Join(rc.until("ReadyForQuery"), " "); got != "CloseComplete ReadyForQuery" {
		t.Fatalf("close: %s", got)
	}
	rc.send(&pgproto3.Query{String: "SELECT 1; SELECT 2; SELECT 1/0; SELECT 4"})
	got = strings.Join(rc.until("ReadyForQuery"), " ")
	if got != "RowDescription DataRow(1) CommandComplete(SELECT 1) RowDescription DataRow(2) CommandComplete(SELECT 1) ErrorResponse(22012) ReadyForQuery" {
		t.Fatalf("multi-statement: %s", got)
	}
	rc.send(&pgproto3.Query{String: ""})
	if got := strings.Join(rc.until("ReadyForQuery"), " "); got != "EmptyQueryResponse ReadyForQuery" {
		t.Fatalf("empty query: %s", got)
	}
	rc.send(&pgproto3.Terminate{})
}

func TestProtocolEncryptedRowLimitAndHiddenParams(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	c := p.Conn(t)
	for i := 1; i <= 3; i++ {
		mustExec(t, c, "INSERT INTO users (email, full_name) VALUES ($1, $2)", fmt.Sprintf("e%d@x.io", i), fmt.Sprintf("Name %d", i))
	}
	rc := dialRaw(t, p.Addr, pgtest.TrustUser, p.DB)
	// The client sees only its own parameter, whatever pgveil adds.
	rc.send(&pgproto3.Parse{Name: "ins", Query: "INSERT INTO users (email, full_name) VALUES ($1, $2)"},
		&pgproto3.Describe{ObjectType: 'S', Name: "ins"}, &pgproto3.Sync{})
	got := strings.Join(rc.until("ReadyForQuery"), " ")
	if got != "ParseComplete ParameterDescription(2) NoData ReadyForQuery" {
		t.Fatalf("describe insert: %s", got)
	}
	// No Describe at all before Execute: pgveil still decrypts.
	rc.send(&pgproto3.Parse{Name: "sel", Query: "SELECT email, full_name FROM users ORDER BY id"},
		&pgproto3.Bind{DestinationPortal: "c", PreparedStatement: "sel"},
		&pgproto3.Execute{Portal: "c", MaxRows: 2}, &pgproto3.Flush{})
	got = strings.Join(rc.until("PortalSuspended"), " ")
	if got != "ParseComplete BindComplete DataRow(e1@x.io,Name 1) DataRow(e2@x.io,Name 2) PortalSuspended" {
		t.Fatalf("encrypted row limit: %s", got)
	}
	rc.send(&pgproto3.Execute{Portal: "c"}, &pgproto3.Sync{})
	got = strings.Join(rc.until("ReadyForQuery"), " ")
	if got != "DataRow(e3@x.io,Name 3) CommandComplete(SELECT 1) ReadyForQuery" {
		t.Fatalf("encrypted rest: %s", got)
	}
}

func TestProtocolMessageTooLarge(t *testing.T) {
	p := startProxy(t, proxyOpts{mutate: func(c *config.Config) { c.Proxy.MaxMessageSize = 1 << 20 }})
	c := p.Conn(t)
	ctx := context.Background()
	big := strings.Repeat("x", 2<<20)
	_, err := c.Exec(ctx, "SELECT length($1::text)", big)
	if sqlState(err) != "54000" || !strings.Contains(err.Error(), "pgveil:") {
		t.Fatalf("oversized Bind: want 54000 from pgveil, got %v", err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("after oversized message: %v", err)
	}
	_, err = c.PgConn().Exec(ctx, "SELECT '"+big+"'").ReadAll()
	if sqlState(err) != "54000" {
		t.Fatalf("oversized Query: want 54000, got %v", err)
	}
	if err := c.QueryRow(ctx, "SELECT 8").Scan(&n); err != nil || n != 8 {
		t.Fatalf("after oversized query: %v", err)
	}
	_ = pgconn.PgError{}
}

// TestProtocolQueriesBehindStartup: a client that sends its first queries
// in the same packet as its StartupMessage, before any reply. pgveil reads
// them ahead during startup and must hand them to whichever engine carries
// the session afterwards, in order.
func TestProtocolQueriesBehindStartup(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	nc := p.RawConn(t, 30*time.Second)
	var buf []byte
	buf, _ = (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": pgtest.TrustUser, "database": p.DB}}).Encode(buf)
	buf, _ = (&pgproto3.Query{String: "SELECT 41 + 1"}).Encode(buf)
	buf, _ = (&pgproto3.Parse{Query: "SELECT $1::int * 2"}).Encode(buf)
	buf, _ = (&pgproto3.Bind{Parameters: [][]byte{[]byte("21")}}).Encode(buf)
	buf, _ = (&pgproto3.Execute{}).Encode(buf)
	buf, _ = (&pgproto3.Sync{}).Encode(buf)
	if _, err := nc.Write(buf); err != nil {
		t.Fatal(err)
	}
	rc := &rawConn{t: t, nc: nc, fe: pgproto3.NewFrontend(nc, nc)}
	rc.until("ReadyForQuery") // end of startup
	got := strings.Join(rc.until("ReadyForQuery"), " ")
	if !strings.Contains(got, "DataRow(42) CommandComplete(SELECT 1)") {
		t.Fatalf("simple query behind startup: %s", got)
	}
	got = strings.Join(rc.until("ReadyForQuery"), " ")
	if got != "ParseComplete BindComplete DataRow(42) CommandComplete(SELECT 1) ReadyForQuery" {
		t.Fatalf("extended query behind startup: %s", got)
	}
}

package proxy

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
)

// scriptedUpstream is a fake PostgreSQL for orderings a real server does
// not produce on demand. It accepts one connection, trusts the startup,
// answers pgveil's catalog query with the given rows, then runs script.
func scriptedUpstream(t *testing.T, catalogRows [][]string, script func(be *pgproto3.Backend, c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		be := pgproto3.NewBackend(c, c)
		if _, err := be.ReceiveStartupMessage(); err != nil {
			return
		}
		be.Send(&pgproto3.AuthenticationOk{})
		be.Send(&pgproto3.BackendKeyData{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		if _, err := be.Receive(); err != nil { // the catalog query
			return
		}
		be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("oid")}, {Name: []byte("attnum")}, {Name: []byte("nspname")}, {Name: []byte("relname")}, {Name: []byte("attname")}}})
		for _, r := range catalogRows {
			vals := make([][]byte, len(r))
			for i, v := range r {
				vals[i] = []byte(v)
			}
			be.Send(&pgproto3.DataRow{Values: vals})
		}
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		script(be, c)
	}()
	return ln.Addr().String()
}

func testSnapshot(t *testing.T, upstream string) (*Snapshot, *keyring.Keyring) {
	t.Helper()
	return testSnapshotColumns(t, upstream, "      - {column: email, blind_index: email_hash}\n")
}

// testSnapshotColumns is a snapshot with fresh keys whose users table has
// the given columns (YAML list items).
func testSnapshotColumns(t testing.TB, upstream, columns string) (*Snapshot, *keyring.Keyring) {
	t.Helper()
	enc, _ := keyring.GenerateKey()
	hash, _ := keyring.GenerateKey()
	env := map[string]string{"ENCRYPTION_KEY": enc, "ENCRYPTION_HASH_KEY": hash}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := config.Parse([]byte("upstream: "+upstream+"\nupstream_tls: {mode: disable}\ntables:\n  - table: users\n    columns:\n"+columns), "", lookup)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Load(cfg.Keys, lookup, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := NewSnapshot(cfg, kr)
	if err != nil {
		t.Fatal(err)
	}
	return snap, kr
}

// TestSessionSplitRepliesAndNotices: rows of an encrypted column arrive in
// one-byte writes with a NoticeResponse between them; the client gets every
// row decrypted and the notice in its place.
func TestSessionSplitRepliesAndNotices(t *testing.T) {
	var kr *keyring.Keyring
	tokens := make(chan [][]byte, 1)
	addr := scriptedUpstream(t, [][]string{{"16384", "2", "public", "users", "email"}}, func(be *pgproto3.Backend, c net.Conn) {
		if _, err := be.Receive(); err != nil { // the client's query
			return
		}
		toks := <-tokens
		var buf []byte
		buf, _ = (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("email"), TableOID: 16384, TableAttributeNumber: 2, DataTypeOID: 25, DataTypeSize: -1}}}).Encode(buf)
		buf, _ = (&pgproto3.DataRow{Values: [][]byte{toks[0]}}).Encode(buf)
		buf, _ = (&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "between rows"}).Encode(buf)
		buf, _ = (&pgproto3.DataRow{Values: [][]byte{nil}}).Encode(buf)
		buf, _ = (&pgproto3.DataRow{Values: [][]byte{toks[1]}}).Encode(buf)
		buf, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SELECT 3")}).Encode(buf)
		buf, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(buf)
		for i := range buf {
			if _, err := c.Write(buf[i : i+1]); err != nil {
				return
			}
		}
		be.Receive() // Terminate
	})
	snap, k := testSnapshot(t, addr)
	kr = k
	t1, _ := kr.Seal(nil, []byte("first@x.io"))
	t2, _ := kr.Seal(nil, []byte("second@x.io"))
	tokens <- [][]byte{t1, t2}

	srv := NewServer(snap, nil, nil, nil)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "u", "database": "d"}})
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
	fe.Send(&pgproto3.Query{String: "SELECT email FROM users"})
	fe.Flush()
	var got []string
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			if m.Values[0] == nil {
				got = append(got, "NULL")
			} else {
				got = append(got, string(m.Values[0]))
			}
		case *pgproto3.NoticeResponse:
			got = append(got, "notice:"+m.Message)
		case *pgproto3.ReadyForQuery:
			want := "first@x.io,notice:between rows,NULL,second@x.io"
			if strings.Join(got, ",") != want {
				t.Fatalf("got %s, want %s", strings.Join(got, ","), want)
			}
			fe.Send(&pgproto3.Terminate{})
			fe.Flush()
			return
		}
	}
}

// TestShutdownDrainsIdle: Shutdown answers an idle session FATAL 57P03 and
// returns once no session is left.
func TestShutdownDrainsIdle(t *testing.T) {
	addr := scriptedUpstream(t, nil, func(be *pgproto3.Backend, c net.Conn) { be.Receive() })
	snap, _ := testSnapshot(t, addr)
	srv := NewServer(snap, nil, nil, nil)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "u"}})
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	m, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	er, ok := m.(*pgproto3.ErrorResponse)
	if !ok || er.Code != "57P03" || er.Severity != "FATAL" || er.Message != "pgveil: shutting down" {
		t.Fatalf("drain: %#v", m)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if srv.Ready(context.Background()) == nil {
		t.Fatal("ready while drained")
	}
}

// TestNamedRecent: the names remembered for fast lookups never outlive a
// change to the map (a statement re-prepared under the same name, closed,
// or every one discarded).
func TestNamedRecent(t *testing.T) {
	var n named[int]
	one, two, three := 1, 2, 3
	long := strings.Repeat("s", 40)
	n.set("P_0", &one)
	n.set(long, &three)
	for range 3 {
		if got := n.getBytes([]byte("P_0")); got != &one {
			t.Fatalf("P_0: got %v", got)
		}
		if got := n.get(long); got != &three {
			t.Fatalf("long name: got %v", got)
		}
	}
	n.set("P_0", &two)
	if got := n.get("P_0"); got != &two {
		t.Fatalf("P_0 after re-prepare: got %v, want the new statement", got)
	}
	if got := n.getBytes([]byte("P_1")); got != nil {
		t.Fatalf("P_1: got %v, want nil", got)
	}
	n.del("P_0")
	if got := n.getBytes([]byte("P_0")); got != nil {
		t.Fatalf("P_0 after Close: got %v, want nil", got)
	}
	n.set("P_0", &one)
	_ = n.get("P_0")
	n.clear()
	if got := n.get("P_0"); got != nil {
		t.Fatalf("P_0 after DISCARD ALL: got %v, want nil", got)
	}
	// More names than remembered: each is still found, the right one.
	vals := make([]int, 10)
	for i := range vals {
		vals[i] = i
		n.set(fmt.Sprint("S_", i), &vals[i])
	}
	for range 2 {
		for i := range vals {
			if got := n.get(fmt.Sprint("S_", i)); got != &vals[i] {
				t.Fatalf("S_%d: got %v", i, got)
			}
		}
	}
}

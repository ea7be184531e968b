package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestUpstreamKey(t *testing.T) {
	snap, _ := testSnapshot(t, "127.0.0.1:5432")
	sm := func(params map[string]string) *pgproto3.StartupMessage {
		return &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: params}
	}
	a := upstreamKey(sm(map[string]string{"user": "app", "database": "db", "application_name": "x"}), snap)
	b := upstreamKey(sm(map[string]string{"application_name": "x", "database": "db", "user": "app"}), snap)
	if a != b {
		t.Fatal("the key depends on the order of the parameters")
	}
	for _, other := range []map[string]string{
		{"user": "app2", "database": "db", "application_name": "x"},
		{"user": "app", "database": "db2", "application_name": "x"},
		{"user": "app", "database": "db", "application_name": "y"},
		{"user": "app", "database": "db"},
		{"user": "app", "database": "db", "application_name": "x", "options": "-c search_path=s"},
		// A value cannot pass for a name and a value.
		{"user": "app", "database": "db\x00application_name\x00x"},
	} {
		if upstreamKey(sm(other), snap) == a {
			t.Errorf("%v shares the key of another login", other)
		}
	}
}

// pipeConn is one end of a net.Pipe whose other end is drained, so that
// terminate's write does not block.
func pipeConn(t *testing.T) net.Conn {
	a, b := net.Pipe()
	go func() { _, _ = io.Copy(io.Discard, b) }()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a
}

func TestUpstreamPool(t *testing.T) {
	var p upstreamPool
	a1 := &idleUpstream{key: "a", conn: pipeConn(t)}
	a2 := &idleUpstream{key: "a", conn: pipeConn(t)}
	b1 := &idleUpstream{key: "b", conn: pipeConn(t)}
	for _, u := range []*idleUpstream{a1, b1, a2} {
		if !p.put(u, 3, time.Minute, nil) {
			t.Fatal("not kept")
		}
	}
	if got := p.take("a", nil); got != a2 {
		t.Fatal("take does not return the most recently kept connection")
	}
	if got := p.take("c", nil); got != nil {
		t.Fatal("take returned a connection of another key")
	}
	// Full: the oldest makes room.
	a3 := &idleUpstream{key: "a", conn: pipeConn(t)}
	a4 := &idleUpstream{key: "a", conn: pipeConn(t)}
	p.put(a3, 3, time.Minute, nil)
	p.put(a4, 3, time.Minute, nil)
	if p.len() != 3 {
		t.Fatalf("%d kept, limit 3", p.len())
	}
	if got := p.take("a", nil); got != a4 {
		t.Fatal("want a4")
	}
	if got := p.take("a", nil); got != a3 {
		t.Fatal("want a3")
	}
	if got := p.take("a", nil); got != nil {
		t.Fatal("a1 was the oldest and should have been closed")
	}
	// Expiry closes what nobody took.
	p.put(&idleUpstream{key: "c", conn: pipeConn(t)}, 3, 20*time.Millisecond, nil)
	deadline := time.Now().Add(5 * time.Second)
	for p.len() != 1 { // b1 stays: its timeout is a minute
		if time.Now().After(deadline) {
			t.Fatalf("%d kept after the timeout", p.len())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.take("c", nil) != nil {
		t.Fatal("an expired connection was handed out")
	}
	p.trim(0, nil)
	if p.len() != 0 {
		t.Fatal("trim(0) kept connections")
	}
	p.closeAll(nil)
	if p.put(&idleUpstream{key: "a", conn: pipeConn(t)}, 3, time.Minute, nil) {
		t.Fatal("kept after closeAll")
	}
}

func TestErrorCode(t *testing.T) {
	body, _ := (&pgproto3.ErrorResponse{Severity: "FATAL", Code: "53300", Message: "too many"}).Encode(nil)
	if got := errorCode(body[5:]); got != "53300" {
		t.Fatalf("errorCode = %q", got)
	}
	for _, bad := range [][]byte{nil, {0}, {'C'}, {'S', 'x'}, {'M', 'a', 0, 'C', '5'}} {
		if got := errorCode(bad); got != "" {
			t.Errorf("errorCode(%q) = %q", bad, got)
		}
	}
}

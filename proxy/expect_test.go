package proxy

import (
	"strings"
	"testing"
)

// queueKinds lists the entries still owed, oldest first.
func queueKinds(q *expectQueue) string {
	names := map[expectKind]string{expParse: "P", expBind: "B", expDescribeStmt: "Ds", expDescribePortal: "Dp",
		expExecute: "E", expClose: "C", expSync: "S", expQuery: "Q"}
	var out []string
	for _, e := range q.items[q.head:] {
		if !e.void {
			out = append(out, names[e.kind])
		}
	}
	return strings.Join(out, " ")
}

func pushAll(t *testing.T, q *expectQueue, kinds ...expectKind) {
	t.Helper()
	for _, k := range kinds {
		if _, ok := q.push(expect{kind: k}); !ok {
			t.Fatal("push refused")
		}
	}
}

// An error answered before the client's Sync is queued: PostgreSQL skips
// the client's messages up to that Sync, and so does the queue.
func TestExpectQueueErrorBeforeSync(t *testing.T) {
	var q expectQueue
	pushAll(t, &q, expParse, expBind, expExecute)
	q.pop() // ParseComplete
	q.pop() // BindComplete
	if !q.popUntilSync() || !q.empty() {
		t.Fatalf("error on Execute: left %q", queueKinds(&q))
	}
	for _, k := range []expectKind{expParse, expBind, expDescribePortal, expExecute, expClose, expQuery} {
		if n, ok := q.push(expect{kind: k}); n != 0 || !ok {
			t.Fatalf("kind %d pushed while PostgreSQL skips to Sync: n=%d ok=%v", k, n, ok)
		}
	}
	if n, _ := q.push(expect{kind: expSync}); n != 4 {
		t.Fatalf("Sync: n=%d, want 4", n)
	}
	pushAll(t, &q, expParse)
	if got := queueKinds(&q); got != "S P" {
		t.Fatalf("after the Sync: %q", got)
	}

	// The Sync already queued: nothing is skipped afterwards.
	q = expectQueue{}
	pushAll(t, &q, expParse, expBind, expExecute, expSync)
	q.popUntilSync()
	pushAll(t, &q, expParse)
	if got := queueKinds(&q); got != "S P" {
		t.Fatalf("error with the Sync queued: %q", got)
	}
	// An error with nothing owed (a FATAL, say) starts no skipping.
	q = expectQueue{}
	q.popUntilSync()
	pushAll(t, &q, expQuery)
	if got := queueKinds(&q); got != "Q" {
		t.Fatalf("error with nothing owed: %q", got)
	}
}

// Syncs the client sends between a statement that starts COPY FROM STDIN
// and its CopyDone are ignored by PostgreSQL, whether queued before the
// CopyInResponse or sent after it.
func TestExpectQueueCopyInSyncs(t *testing.T) {
	var q expectQueue
	// libpq: Parse, Bind, Describe, Execute, Sync, then the data, CopyDone
	// and another Sync, all queued before the CopyInResponse.
	pushAll(t, &q, expParse, expBind, expDescribePortal, expExecute, expSync)
	q.endCopy()
	pushAll(t, &q, expSync, expQuery)
	q.pop()
	q.pop()
	q.pop()
	q.copyInStarted()
	if got := queueKinds(&q); got != "E S Q" {
		t.Fatalf("CopyInResponse with everything queued: %q", got)
	}
	e, _ := q.pop() // CommandComplete
	if e.kind != expExecute {
		t.Fatalf("CommandComplete popped %d", e.kind)
	}
	e, n, _ := q.popNumbered() // ReadyForQuery
	if e.kind != expSync || n != 6 {
		t.Fatalf("ReadyForQuery popped kind %d, entry %d; want the second Sync, entry 6", e.kind, n)
	}

	// The Syncs sent after the CopyInResponse are not queued; the one after
	// CopyDone is.
	q = expectQueue{}
	pushAll(t, &q, expExecute)
	q.copyInStarted()
	if n, _ := q.push(expect{kind: expSync}); n != 0 {
		t.Fatalf("Sync in copy-in queued as entry %d", n)
	}
	if !q.mayCopy() {
		t.Fatal("mayCopy false in copy-in")
	}
	q.endCopy()
	pushAll(t, &q, expSync)
	if got := queueKinds(&q); got != "E S" {
		t.Fatalf("Syncs around CopyDone: %q", got)
	}

	// An error in copy-in: the Syncs after it count (PostgreSQL skips to
	// the first), and the COPY that never started leaves Syncs alone.
	q = expectQueue{}
	pushAll(t, &q, expExecute)
	q.copyInStarted()
	q.popUntilSync()
	pushAll(t, &q, expSync)
	if got := queueKinds(&q); got != "S" {
		t.Fatalf("Sync after an error in copy-in: %q", got)
	}
	q = expectQueue{}
	pushAll(t, &q, expExecute, expSync, expSync)
	q.popUntilSync()
	if got := queueKinds(&q); got != "S S" {
		t.Fatalf("Execute failing before COPY: %q", got)
	}
	if q.mayCopy() {
		t.Fatal("mayCopy true with the statement answered")
	}
}

package proxy

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgveil/pgveil/rewrite"
)

// expectKind is what a forwarded message makes the server owe.
type expectKind uint8

const (
	expParse          expectKind = iota // ParseComplete
	expBind                             // BindComplete
	expDescribeStmt                     // ParameterDescription, then RowDescription or NoData
	expDescribePortal                   // RowDescription or NoData
	expExecute                          // DataRow*, then CommandComplete, EmptyQueryResponse or PortalSuspended
	expClose                            // CloseComplete
	expSync                             // ReadyForQuery
	expQuery                            // any number of results, then ReadyForQuery (also FunctionCall)
)

// expect is one reply (or group of replies) the server owes, in order.
// clientLoop pushes, serverLoop pops. Entries carry what serverLoop needs to
// treat the reply, as immutable values or objects only serverLoop mutates.
type expect struct {
	kind expectKind
	// drop: the reply answers a message pgveil injected; the client never
	// sees it.
	drop   bool
	stmt   *statement    // expParse, expDescribeStmt
	portal *portal       // expDescribePortal, expExecute
	plan   *rewrite.Plan // expQuery
	// catalog: the entry is pgveil's catalog query; its rows rebuild the
	// session's catalog.
	catalog bool
	// raised: the entry is pgveil's stand-in for a refused statement; its
	// ErrorResponse is the client's reply.
	raised bool
	snap   *Snapshot // catalog: the configuration the query was built from
	// replacesZ (catalog): the reload follows a statement that may change
	// the catalog or the resolution of names; its ReadyForQuery is the one
	// the client hears for that statement. pathGen: Session.pathGen when
	// sent.
	replacesZ bool
	pathGen   uint64
	// undo (Parse, Close of a statement): how to put the session's list of
	// statements back if PostgreSQL skips the message.
	undo *stmtUndo
	// sent is when the client's message arrived (Sync, Query; a monoNow
	// reading, 0 for other entries), for the statement duration metrics.
	sent time.Duration
	// inCopy: an expSync the client sent after an Execute or Query with
	// nothing but Flush and CopyData in between. PostgreSQL ignores it if
	// that statement started COPY FROM STDIN (see copyInStarted).
	inCopy bool
	// void: PostgreSQL ignored the message (a Sync in COPY FROM STDIN); the
	// entry is removed unanswered once it is the oldest. Set under mu.
	void bool
}

// expectQueue is the only state both loops touch.
type expectQueue struct {
	mu     sync.Mutex
	items  []expect
	head   int
	closed bool // drained: no more pushes
	// pushed and popped count entries ever added and removed: entry
	// number n (counting from 1) has been answered once popped >= n.
	pushed, popped uint64

	// What PostgreSQL does with the client's next messages, where it does
	// not answer them all:
	//
	// skipping: PostgreSQL reported an error in an extended-protocol batch
	// before the client's Sync was queued. It discards every message up to
	// that Sync, so until then push records nothing (popUntilSync).
	skipping bool
	// copyFrom is the number of the last Execute or Query of the client
	// when it has sent nothing since but Sync, Flush and CopyData: the
	// statement may have started COPY FROM STDIN. 0 otherwise.
	copyFrom uint64
	// copyIn: PostgreSQL answered entry copyFrom with CopyInResponse. It
	// ignores Sync (and Flush) in copy-in, so until the client's CopyDone or
	// CopyFail, or the COPY's error, push records no Sync.
	copyIn bool

	// front is a copy of the oldest entry, taken by peek and dropped by
	// pop. Only the server side peeks and pops, and the oldest entry does
	// not change (only later ones are made void), so the copy stays true
	// until the server side itself pops it: the rows of a result, each of
	// which peeks, take the lock once between them. [server]
	front   expect
	frontOK bool

	// undone holds the undo of entries popUntilSync removed, oldest first,
	// for the client side to apply (takeUndone); undoPending says there
	// are some without taking the lock.
	undone      []*stmtUndo
	undoPending atomic.Bool
}

// stmtUndo says what a Parse or a Close of a statement changed in the
// session's list of statements, so that it can be put back when PostgreSQL
// skips the message (it discards messages up to Sync after an error): else
// pgveil would forget a statement PostgreSQL still holds, and forward its
// next Bind untransformed.
type stmtUndo struct {
	name      string
	was       *statement // what the name held before (nil: nothing)
	installed *statement // what the message put there (nil: a Close)
}

// takeUndone returns the undo of skipped entries, newest first. [client]
func (q *expectQueue) takeUndone() []*stmtUndo {
	q.mu.Lock()
	defer q.mu.Unlock()
	u := q.undone
	q.undone = nil
	q.undoPending.Store(false)
	slices.Reverse(u)
	return u
}

// push appends an entry and returns its number; ok is false once the
// session is being drained. n is 0 when nothing is appended because
// PostgreSQL will not answer the message: it discards messages up to Sync
// after an error (skipping) and ignores a Sync in copy-in (copyIn). [client]
func (q *expectQueue) push(e expect) (n uint64, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return 0, false
	}
	if e.kind == expSync {
		if q.copyIn {
			return 0, true
		}
		q.skipping = false
		e.inCopy = q.copyFrom != 0
	} else {
		q.copyFrom, q.copyIn = 0, false
		if q.skipping {
			return 0, true
		}
	}
	q.items = append(q.items, e)
	q.pushed++
	if (e.kind == expExecute || e.kind == expQuery) && !e.drop {
		q.copyFrom = q.pushed
	}
	return q.pushed, true
}

// endCopy records that the client sent CopyDone or CopyFail: its Syncs
// count again. [client]
func (q *expectQueue) endCopy() {
	q.mu.Lock()
	q.copyFrom, q.copyIn = 0, false
	q.mu.Unlock()
}

// mayCopy reports whether PostgreSQL may be in COPY FROM STDIN: the
// client sent nothing but Sync, Flush and CopyData since its last statement,
// and that statement is not answered yet or started a COPY. [client]
func (q *expectQueue) mayCopy() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.copyIn || q.copyFrom != 0 && q.popped < q.copyFrom
}

// copyInStarted records PostgreSQL's CopyInResponse to the oldest entry.
// PostgreSQL ignores the Syncs the client sent between that statement and
// its CopyDone or CopyFail: those already queued are made void, later ones
// are not queued (push). [server]
func (q *expectQueue) copyInStarted() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropVoidLocked()
	if q.head == len(q.items) {
		return
	}
	for i := q.head + 1; i < len(q.items) && q.items[i].kind == expSync && q.items[i].inCopy; i++ {
		q.items[i].void = true
	}
	if q.copyFrom == q.popped+1 {
		q.copyIn = true
	}
}

// leaveCopyIn records that the COPY ended on the server (an error): Syncs
// the client sends from now on are answered. [server]
func (q *expectQueue) leaveCopyIn() {
	q.mu.Lock()
	q.copyIn = false
	q.mu.Unlock()
}

// dropVoidLocked removes the void entries at the front.
func (q *expectQueue) dropVoidLocked() {
	for q.head < len(q.items) && q.items[q.head].void {
		q.items[q.head] = expect{}
		q.head++
		q.popped++
	}
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
}

// lastPushed returns the number of the last entry pushed. [client]
func (q *expectQueue) lastPushed() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pushed
}

// answered reports whether entry number n has been removed.
func (q *expectQueue) answered(n uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.popped >= n
}

// peek returns the oldest entry without removing it. [server]
func (q *expectQueue) peek() (expect, bool) {
	if q.frontOK {
		return q.front, true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropVoidLocked()
	if q.head == len(q.items) {
		return expect{}, false
	}
	q.front, q.frontOK = q.items[q.head], true
	return q.front, true
}

// pop removes and returns the oldest entry. [server]
func (q *expectQueue) pop() (expect, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.popLocked()
}

// popNumbered is pop that also returns the entry's number. [server]
func (q *expectQueue) popNumbered() (expect, uint64, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.popLocked()
	return e, q.popped, ok
}

func (q *expectQueue) popLocked() (expect, bool) {
	q.front, q.frontOK = expect{}, false
	q.dropVoidLocked()
	if q.head == len(q.items) {
		return expect{}, false
	}
	e := q.items[q.head]
	q.items[q.head] = expect{}
	q.head++
	q.popped++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	return e, true
}

// popUntilSync removes the entries an extended-protocol error cancels: all
// up to, not including, the next Sync. It reports whether any of them (or
// the failing one) was the client's, i.e. whether the client must see the
// error. When no Sync is queued, PostgreSQL goes on discarding the
// messages the client sends until its Sync, and push records none of
// them. An error also ends a COPY FROM STDIN. [server]
func (q *expectQueue) popUntilSync() (clientOwned bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.front, q.frontOK = expect{}, false
	q.copyIn = false
	removed := false
	for {
		q.dropVoidLocked()
		if q.head == len(q.items) {
			// An error with nothing owed is not the answer to anything
			// the client sent in a batch.
			q.skipping = removed
			return clientOwned
		}
		if q.items[q.head].kind == expSync {
			return clientOwned
		}
		if !q.items[q.head].drop {
			clientOwned = true
		}
		if u := q.items[q.head].undo; u != nil {
			q.undone = append(q.undone, u)
			q.undoPending.Store(true)
		}
		q.popLocked()
		removed = true
	}
}

// empty reports whether nothing is owed.
func (q *expectQueue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropVoidLocked()
	return q.head == len(q.items)
}

// closeIfIdle closes the queue when nothing is owed; true if it did.
func (q *expectQueue) closeIfIdle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropVoidLocked()
	if q.head != len(q.items) {
		return false
	}
	q.closed = true
	return true
}

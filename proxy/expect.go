package proxy

import (
	"sync"
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
	// sent is when the client's message arrived (Sync, Query; a monoNow
	// reading, 0 for other entries), for the statement duration metrics.
	sent time.Duration
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

	// front is a copy of the oldest entry, taken by peek and dropped by
	// pop. Only the server side peeks and pops, and an entry does not
	// change once pushed, so the copy stays true until the server side
	// itself pops it: the rows of a result, each of which peeks, take the
	// lock once between them. [server]
	front   expect
	frontOK bool
}

// push appends an entry and returns its number; ok is false once the
// session is being drained.
func (q *expectQueue) push(e expect) (n uint64, ok bool) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, false
	}
	q.items = append(q.items, e)
	q.pushed++
	n = q.pushed
	q.mu.Unlock()
	return n, true
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

func (q *expectQueue) popLocked() (expect, bool) {
	q.front, q.frontOK = expect{}, false
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
// error. [server]
func (q *expectQueue) popUntilSync() (clientOwned bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.front, q.frontOK = expect{}, false
	for q.head < len(q.items) && q.items[q.head].kind != expSync {
		if !q.items[q.head].drop {
			clientOwned = true
		}
		q.popLocked()
	}
	return clientOwned
}

// empty reports whether nothing is owed.
func (q *expectQueue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.head == len(q.items)
}

// closeIfIdle closes the queue when nothing is owed; true if it did.
func (q *expectQueue) closeIfIdle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head != len(q.items) {
		return false
	}
	q.closed = true
	return true
}

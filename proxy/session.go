package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/rewrite"
	"github.com/prometheus/client_golang/prometheus"
)

// Session is one client connection and its one upstream connection.
//
// Ownership: fields marked [client] belong to the client side (startup,
// then clientLoop, or the event loop handling the client socket), [server]
// to the server side (serverLoop, or the event loop handling the upstream
// socket); the expect queue and atomics are shared. Only the client side
// writes to the upstream, only the server side writes to the client
// (drainIfIdle takes cwMu to write its FATAL). On the event loop both sides
// run on one goroutine, one readiness event at a time (evState.mu).
type Session struct {
	// The fields every statement uses come first, so they share a few
	// cache lines: between two events of a session the processes sharing
	// the machine's cores evict most of its memory from the caches, and
	// each line it touches again costs a miss.
	srv *Server
	// ev is the session's event-loop state when the event loop carries it.
	ev       atomic.Pointer[evState]
	cr       frameSource   // [client]
	uw       *bufio.Writer // [client]
	ur       frameSource   // [server]
	cw       *bufio.Writer // [server], under cwMu
	cwMu     sync.Mutex
	closing  atomic.Bool
	txStatus atomic.Uint32 // last ReadyForQuery status: 'I', 'T', 'E'
	// failTx is set by the server side when it told the client that its
	// transaction block failed (a value pgveil could not decrypt) while
	// PostgreSQL's is still good; the client side then fails PostgreSQL's
	// before the client's next statement (failTransaction).
	failTx atomic.Bool
	// evented is set before the event loop first runs the session's
	// handlers: from then on its two sides never run at the same time.
	evented     bool // [client]
	needCatalog bool // [client] reload the catalog before the next statement
	// refreshAfter: reload the catalog right after the statement being
	// sent, before the client hears it is done (see catalog.go): it may
	// change how names without a schema resolve, or the schema. [client]
	refreshAfter bool
	queryMayCopy bool // [client] the Query just sent may start a COPY
	// batchMayCopy: an Execute since the last Sync may have started a
	// COPY; syncMayCopy: so had the batch the Sync just sent ended. [client]
	batchMayCopy, syncMayCopy bool
	reprepared                uint64 // [client] statements freshStatement prepared anew
	// pathGen counts the statements that may have changed the session's
	// resolution of names (pathDynamic catalogs); pathSeen is the count
	// the newest reload saw; pathInTx: one ran in a transaction block not
	// yet seen to end, so every statement is followed by a reload.
	// replacing counts reloads whose ReadyForQuery stands for the
	// statement before them.
	pathGen, pathSeen atomic.Uint64
	pathInTx          atomic.Bool
	replacing         atomic.Int32
	inBatch           bool             // [client] extended-protocol messages sent since the last Sync
	failedBatch       bool             // [client] pgveil refused a message; the server skips to Sync
	snap              *Snapshot        // [client] snapshot in force for the current statement
	copyIn            *copyInState     // [client] rewriting a COPY FROM STDIN
	stmts             named[statement] // [client] prepared statements by name ("" = unnamed)
	portals           named[portal]    // [client]
	// lastParse remembers the last Parse that touched no configured table.
	lastParse *parseMemo // [client]
	// scs follows standard_conforming_strings (literals.go).
	scs    scsState
	cat    atomic.Pointer[catalog] // written by startup and serverLoop, read by both
	encBuf []byte                  // [client] scratch for re-encoded messages
	// overhead accumulates the nanoseconds both loops spent working (from
	// the end of a blocking read to the flush before the next one) since
	// the last ReadyForQuery; serverLoop turns it into the per-statement
	// metrics.
	overhead atomic.Int64
	stats    sessionStats

	// copyFail is set by the client side when it aborts a COPY with
	// CopyFail, taken by the server side with the reply (copy.go).
	copyFail atomic.Pointer[copyFailNote]

	q        expectQueue
	srvState serverState // [server]
	timings  timings

	valBuf      []byte          // [client] scratch for one transformed value
	planScratch rewrite.Scratch // [client] the literals of the statement being handled
	bindScratch bindScratch     // [client]
	bindMsg     bindMsg         // [client]
	encStats    encStats        // [client]
	crypto      keyring.Scratch // [client] for tokens and blind indexes
	// xform is transformer's function for xformSnap, made once per
	// snapshot rather than once per statement.
	xform        func(rewrite.Action, []byte) ([]byte, error) // [client]
	xformSnap    *Snapshot                                    // [client]
	lastParseBuf []byte                                       // [client]
	catMissAt    time.Time                                    // [client] last reload for a configured table missing from the catalog

	id  uint64
	log *slog.Logger

	client   net.Conn // [startup] replaced by the TLS conn after SSLRequest
	upstream net.Conn
	tlsDone  bool
	// startupParams holds the ParameterStatus frames of the login, kept
	// with the connection for a login that finds PostgreSQL full.
	startupParams []byte
	// clientPrefix holds client bytes read ahead during startup.
	clientPrefix []byte
	database     string
	cancel       cancelKey // guarded by srv.mu: the key the client was given
	// upstreamCancel is the BackendKeyData of the connection carrying the
	// session, under connMu: the client's own until the session moves to a
	// kept connection (upstreams.go).
	upstreamCancel cancelKey
	// poolKey says which kept upstream connections the session may take
	// and under which key its own is kept (upstreamKey); "" for neither.
	poolKey string
	// reuse is set when the client sent Terminate with the session idle:
	// the upstream connection is reset and kept, not closed.
	reuse atomic.Bool

	closeOnce sync.Once
	// started is set once startup finished and the loops run.
	started atomic.Bool
	// connMu guards client and upstream while startup replaces them, for
	// kill called from other goroutines.
	connMu sync.Mutex
}

type sessionStats struct {
	statements atomic.Int64
	rewritten  atomic.Int64
	refused    atomic.Int64
}

// statement is a prepared statement the client created with Parse.
type statement struct {
	name string
	plan *rewrite.Plan
	// clientParams is how many parameters the client sees in
	// ParameterDescription; pgveil's hidden ones follow and are cut off.
	clientParams int
	hidden       int
	// declared holds the client's parameter types when pgveil changed one
	// of them in the Parse it sent; ParameterDescription reports them.
	declared []uint32
	// bpchar marks the parameters the client declared bpchar (nil for
	// none): trailing spaces are cut before encrypting or hashing, as
	// PostgreSQL's cast to text cuts them.
	bpchar    []bool
	described bool  // [client] the client sent Describe for it
	scs       uint8 // what executing it may do to standard_conforming_strings (scsEffect)

	// src: what it was planned from, when a reload or a change of
	// search_path may change its plan (freshStatement). [client]
	src *stmtSource
	// upstream is the name PostgreSQL knows the statement by when it is
	// not the client's: freshStatement prepares a new plan under a name of
	// pgveil's, leaving the client's statement as it was. [client]
	upstream string
	// mayCopy: its text may be a COPY (catalog reloads wait). [client]
	mayCopy bool

	rows      *rowInfo // [server] from the Describe reply
	rowsKnown bool     // [server]
}

// touchesConfigured says whether results may carry encrypted columns.
func (st *statement) touchesConfigured() bool {
	return st != nil && st.plan != nil && (st.plan.Kind == rewrite.KindRewrite || len(st.plan.Tables) > 0)
}

// parseMemo is a Parse forwarded unchanged, by its exact bytes.
type parseMemo struct {
	body []byte
	snap *Snapshot
	stmt *statement
}

// named holds a client's prepared statements or portals by name. The
// unnamed one ("") is what most drivers use for every execution: it lives
// in a field, so that path does no map operation. [client]
type named[T any] struct {
	unnamed *T
	byName  map[string]*T
	// recent remembers the last few names found, their bytes inline: a
	// client executes the same few prepared statements over and over
	// (pgbench and JDBC alternate two or three), and a map access with a
	// string key costs several cache misses once the client and PostgreSQL
	// have run in between, as much as the rest of a Bind's bookkeeping.
	// Every change to byName forgets them.
	recent     [4]namedHit[T]
	recentNext uint8
}

// namedHit is one of named.recent; v == nil marks it empty.
type namedHit[T any] struct {
	v    *T
	n    uint8
	name [23]byte
}

func (n *named[T]) get(name string) *T {
	if name == "" {
		return n.unnamed
	}
	for i := range n.recent {
		if h := &n.recent[i]; h.v != nil && int(h.n) == len(name) && string(h.name[:h.n]) == name {
			return h.v
		}
	}
	v := n.byName[name]
	n.remember(name, v)
	return v
}

func (n *named[T]) getBytes(name []byte) *T {
	if len(name) == 0 {
		return n.unnamed
	}
	for i := range n.recent {
		if h := &n.recent[i]; h.v != nil && int(h.n) == len(name) && string(h.name[:h.n]) == string(name) {
			return h.v
		}
	}
	v := n.byName[string(name)]
	n.remember(string(name), v)
	return v
}

func (n *named[T]) remember(name string, v *T) {
	if v == nil || len(name) > len(namedHit[T]{}.name) {
		return
	}
	h := &n.recent[n.recentNext%uint8(len(n.recent))]
	n.recentNext++
	h.v, h.n = v, uint8(copy(h.name[:], name))
}

func (n *named[T]) forget() {
	if n.recent[0].v != nil || n.recent[1].v != nil || n.recent[2].v != nil || n.recent[3].v != nil {
		n.recent = [len(n.recent)]namedHit[T]{}
	}
}

func (n *named[T]) set(name string, v *T) {
	if name == "" {
		n.unnamed = v
		return
	}
	n.forget()
	if n.byName == nil {
		n.byName = map[string]*T{}
	}
	n.byName[name] = v
}

func (n *named[T]) del(name string) {
	if name == "" {
		n.unnamed = nil
		return
	}
	n.forget()
	delete(n.byName, name)
}

// named reports how many named entries there are.
func (n *named[T]) named() int { return len(n.byName) }

func (n *named[T]) clear() {
	n.unnamed = nil
	n.forget()
	clear(n.byName)
}

// portal is a bound statement.
type portal struct {
	stmt      *statement
	described bool // [client]
	// owedThrough is the number of the last expect entry that refers to
	// the portal. [client]
	owedThrough uint64
	rows        *rowInfo // [server]
	rowsKnown   bool     // [server]
}

func newSession(srv *Server, c net.Conn, id uint64) *Session {
	return &Session{
		srv: srv, id: id, client: c,
		log: srv.Logger.With("session", id),
	}
}

// serve runs the session to its end. A panic ends only this session.
func (s *Session) serve() {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("pgveil: BUG: session panicked", "panic", fmt.Sprint(r))
			if s.cw != nil {
				s.cwMu.Lock()
				s.writeError(&pgError{code: codeInternal, msg: "pgveil: internal error; the session was closed"}, true)
				_ = s.cw.Flush()
				s.cwMu.Unlock()
			}
		}
		s.kill()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.startup(ctx); err != nil {
		if !errors.Is(err, errCancelHandled) && !errors.Is(err, io.EOF) {
			s.log.Debug("startup ended", "error", err.Error())
		}
		return
	}
	s.started.Store(true)
	s.srv.Metrics.ConnOpened()
	defer s.srv.Metrics.ConnClosed()
	s.log.Info("session opened", "database", s.database)
	defer func() {
		s.log.Info("session closed", "statements", s.stats.statements.Load(),
			"rewritten", s.stats.rewritten.Load(), "refused", s.stats.refused.Load(),
			"duration_ms", time.Since(start).Milliseconds())
	}()

	if p := s.srv.poller(); p != nil {
		// Plain TCP on both sides: the event loop carries the session (see
		// eventloop_linux.go); this goroutine only waits for its end.
		if done, ok := s.runEvented(p); ok {
			s.log.Debug("session on the event loop")
			<-done
			s.releaseUpstream()
			return
		}
	}

	s.growForGoroutines()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("pgveil: BUG: server loop panicked", "panic", fmt.Sprint(r))
			}
			s.kill()
		}()
		s.serverLoop()
	}()
	cerr := s.clientLoop()
	if cerr != nil && !isClosedErr(cerr) {
		s.log.Debug("client loop ended", "error", cerr.Error())
	}
	var fatal *fatalError
	if errors.As(cerr, &fatal) {
		// Tell the client why before closing, then stop the server loop
		// (which closes the client socket as it ends). It writes whole
		// messages under cwMu, so the error goes between two of them.
		s.cwMu.Lock()
		s.writeError(fatal.err, true)
		_ = s.cw.Flush()
		s.cwMu.Unlock()
		s.upstream.SetReadDeadline(time.Now())
		<-done
	} else if s.reuse.Load() {
		// The server loop waits for a reply nothing owes: stop it between
		// two frames, and keep the connection.
		_ = s.upstream.SetReadDeadline(time.Now())
		<-done
		s.releaseUpstream()
	} else {
		s.killUpstreamSoon()
		<-done
	}
}

// growForGoroutines gives the goroutine engine full-size buffers: its loops
// stream through them (the event loop has its own). Startup has flushed
// all it wrote.
func (s *Session) growForGoroutines() {
	if fr, ok := s.cr.(*frameReader); ok {
		s.cr = fr.resized(ioBufferSize)
	}
	if fr, ok := s.ur.(*frameReader); ok {
		s.ur = fr.resized(ioBufferSize)
	}
	if s.uw.Buffered() == 0 {
		s.uw = bufio.NewWriterSize(s.upstream, ioBufferSize)
	}
	s.cwMu.Lock()
	if s.cw.Buffered() == 0 {
		s.cw = bufio.NewWriterSize(s.client, ioBufferSize)
	}
	s.cwMu.Unlock()
}

// fatalError ends the session after telling the client.
type fatalError struct{ err error }

func (f *fatalError) Error() string { return f.err.Error() }
func (f *fatalError) Unwrap() error { return f.err }

// kill closes both sockets; the loops end on their next read or write.
func (s *Session) kill() {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.q.mu.Lock()
		s.q.closed = true
		s.q.mu.Unlock()
		// Leave the event loop before the sockets close, so their file
		// descriptor numbers are never seen again under this session.
		s.endEvented()
		s.connMu.Lock()
		s.client.Close()
		if s.upstream != nil && !s.reuse.Load() {
			s.upstream.Close()
		}
		s.connMu.Unlock()
	})
}

// killUpstreamSoon lets the upstream see a Terminate the client sent, then
// makes sure the server loop ends.
func (s *Session) killUpstreamSoon() {
	if s.upstream != nil {
		_ = s.upstream.SetReadDeadline(time.Now().Add(2 * time.Second))
	}
}

// drainIfIdle ends the session with FATAL 57P03 when it is idle: the last
// ReadyForQuery said 'I' and nothing is owed. Called by Shutdown.
func (s *Session) drainIfIdle() {
	if s.closing.Load() || !s.started.Load() || s.txStatus.Load() != 'I' {
		return
	}
	if !s.q.closeIfIdle() {
		return
	}
	s.cwMu.Lock()
	s.writeError(&pgError{code: codeCannotConnectNow, msg: "pgveil: shutting down"}, true)
	_ = s.cw.Flush()
	s.cwMu.Unlock()
	s.kill()
}

func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF)
}

// writeError writes an ErrorResponse to the client buffer. [server]
func (s *Session) writeError(err error, fatal bool) {
	buf, _ := errorResponse(err, fatal).Encode(s.srvState.out[:0])
	_, _ = s.cw.Write(buf)
}

// ---------------------------------------------------------------------------
// clientLoop: client -> pgveil -> PostgreSQL.

func (s *Session) clientLoop() error {
	var busySince time.Duration // a monoNow reading; 0 while blocked
	for {
		if s.cr.buffered() == 0 {
			// About to block on the client: send what is pending.
			if err := s.uw.Flush(); err != nil {
				return err
			}
			if busySince != 0 {
				s.overhead.Add(int64(monoNow() - busySince))
				busySince = 0
			}
		}
		typ, _, err := s.cr.next()
		if busySince == 0 {
			busySince = monoNow()
		}
		if err := s.onClientMessage(typ, err, busySince); err != nil {
			return err
		}
	}
}

// onClientMessage handles one client message whose header next() read
// (nextErr is next's error). Both I/O engines call it. io.EOF means the
// client sent Terminate.
func (s *Session) onClientMessage(typ byte, nextErr error, busySince time.Duration) error {
	if nextErr != nil {
		var tooLarge *MessageTooLargeError
		if errors.As(nextErr, &tooLarge) {
			return s.refuseTooLarge(typ, tooLarge)
		}
		return nextErr
	}
	if s.closing.Load() {
		return net.ErrClosed
	}
	if s.q.undoPending.Load() {
		for _, u := range s.q.takeUndone() {
			s.applyUndo(u)
		}
	}
	if s.copyIn != nil && typ != 'd' && typ != 'c' && typ != 'f' && typ != 'H' && typ != 'S' {
		s.copyIn = nil // the COPY ended on the server before any data
	}
	if s.failTx.Load() {
		if err := s.failTransaction(typ); err != nil {
			return err
		}
	}
	var err error
	switch typ {
	case 'Q':
		err = s.onQuery(busySince)
	case 'P':
		err = s.onParse()
	case 'B':
		err = s.onBind()
	case 'D':
		err = s.onDescribe()
	case 'E':
		err = s.onExecute()
	case 'C':
		err = s.onClose()
	case 'S':
		s.syncMayCopy, s.batchMayCopy = s.batchMayCopy, false
		// A Sync PostgreSQL ignores in COPY FROM STDIN ends no batch.
		var n uint64
		if n, err = s.forwardExpectN(expect{kind: expSync, sent: busySince}); n != 0 {
			s.failedBatch, s.inBatch = false, false
		}
	case 'd':
		if s.copyIn != nil {
			err = s.onCopyData()
		} else {
			err = s.cr.forward(s.uw)
		}
	case 'c', 'f': // CopyDone, CopyFail
		s.q.endCopy()
		if s.copyIn != nil {
			err = s.endCopyIn(typ)
		} else {
			err = s.cr.forward(s.uw)
		}
	case 'F': // FunctionCall: a result, then ReadyForQuery
		// It may call set_config: treated as changing
		// standard_conforming_strings until its ReadyForQuery, and the
		// search path.
		s.changedPath()
		if err = s.forwardExpect(expect{kind: expQuery, sent: busySince}); err == nil {
			s.markSCSChange()
		}
	case 'X':
		if s.canKeepUpstream() {
			// The Terminate is not forwarded: the connection is reset and
			// kept once the session has left its loops (releaseUpstream).
			s.reuse.Store(true)
			return io.EOF
		}
		if err := s.cr.forward(s.uw); err != nil {
			return err
		}
		_ = s.uw.Flush()
		return io.EOF
	default: // Flush, and anything else PostgreSQL will judge itself
		err = s.cr.forward(s.uw)
	}
	s.endEncryptions()
	if err != nil {
		return err
	}
	switch typ {
	case 'P', 'B', 'D', 'E', 'C':
		s.inBatch = true
	}
	s.afterStatement(typ)
	return nil
}

// forwardExpect forwards the current message unchanged and records the
// reply it is owed.
func (s *Session) forwardExpect(e expect) error {
	_, err := s.forwardExpectN(e)
	return err
}

// forwardExpectN is forwardExpect returning the entry's number, 0 when
// PostgreSQL will not answer the message (expectQueue.push).
func (s *Session) forwardExpectN(e expect) (uint64, error) {
	n, ok := s.q.push(e)
	if !ok {
		return 0, net.ErrClosed
	}
	return n, s.cr.forward(s.uw)
}

// send writes an encoded message to the upstream after recording its reply.
func (s *Session) send(e expect, frame []byte) error {
	n, ok := s.q.push(e)
	if !ok {
		return net.ErrClosed
	}
	if n == 0 && e.undo != nil {
		s.applyUndo(e.undo) // PostgreSQL will skip it
	}
	if e.portal != nil && n != 0 {
		e.portal.owedThrough = n
	}
	_, err := s.uw.Write(frame)
	return err
}

// sendAsIs sends the current client frame, whose type and body the handler
// decoded, unchanged after recording its reply: straight from the read
// buffer when it is whole there, else framed anew from body.
func (s *Session) sendAsIs(e expect, typ byte, body []byte) error {
	if f := s.cr.frame(); f != nil {
		return s.send(e, f)
	}
	frame := append(append(s.encBuf[:0], typ, 0, 0, 0, 0), body...)
	s.encBuf = finishFrame(frame, 0)
	return s.send(e, s.encBuf)
}

// snapshot loads the snapshot in force at a statement boundary; a new
// generation also means the catalog must be reloaded.
func (s *Session) snapshot() *Snapshot {
	snap := s.srv.snap.Load()
	if snap != s.snap {
		s.snap = snap
		s.needCatalog = true
	}
	return snap
}

// plan analyses sql, counting the outcome.
func (s *Session) plan(snap *Snapshot, sql string) (*rewrite.Plan, []rewrite.Literal, error) {
	s.stats.statements.Add(1)
	// pgveil's reading of the literals must be PostgreSQL's (literals.go).
	if err := s.scsRefusal(snap, sql); err != nil {
		return nil, nil, err
	}
	cat := s.cat.Load()
	s.planScratch.SearchPath = cat.searchPath
	plan, lits, res, err := snap.Rewriter.PlanScratch(sql, &s.planScratch)
	s.srv.Metrics.PlanCache(cacheLabel(res))
	if err != nil {
		return nil, nil, err
	}
	if plan.Kind != rewrite.KindRefuse {
		plan = s.followSearchPath(cat, plan)
	}
	if len(plan.Tables) > 0 {
		// A configured table this session's catalog does not know (created
		// after the session started): reload first, at most once a second.
		for _, t := range plan.Tables {
			if _, ok := cat.columns[t]; !ok && time.Since(s.catMissAt) > time.Second {
				s.catMissAt = time.Now()
				s.needCatalog = true
				break
			}
		}
	}
	// The catalog query goes before this statement, at a point where a
	// simple Query is legal: not inside an extended batch.
	if s.needCatalog && !s.inBatch {
		s.injectCatalogQuery()
	}
	return plan, lits, nil
}

// followSearchPath keeps the session's catalog and resolution of names
// without a schema true (catalog.go): a statement that may change them is
// followed by a catalog reload before the client hears it is done, and a
// statement that names a configured table without its schema while such a
// reload is still owed (later in the same Query or batch) is refused, since
// it was planned with a resolution that may no longer hold.
func (s *Session) followSearchPath(cat *catalog, plan *rewrite.Plan) *rewrite.Plan {
	// Planned before an earlier statement of this Query or batch changed
	// what its names find (the reload that tells is still owed), or after
	// one in its own text: refused.
	if plan.Unqualified && s.pathSeen.Load() < s.pathGen.Load() ||
		plan.UnqualifiedAfterDDL || cat.pathDynamic && plan.UnqualifiedAfterPathChange {
		return &rewrite.Plan{Kind: rewrite.KindRefuse, Tables: plan.Tables, Refusal: staleRefusal(plan)}
	}
	return plan
}

// ranPlan records what a statement about to run may change in the
// catalog or the resolution of names: at a simple Query, at the Execute of
// a prepared statement (its Parse ran nothing).
func (s *Session) ranPlan(plan *rewrite.Plan) {
	if plan.DDL {
		// A table created or dropped may hide or show another of its
		// name; rolled back, it is undone.
		s.refreshAfter = true
		s.pathInTx.Store(true)
		s.pathGen.Add(1)
	}
	if plan.SearchPathChange {
		s.changedPath()
	}
	if s.pathInTx.Load() {
		s.refreshAfter = true
	}
}

// stalePlan refuses a plan made for names without a schema while a reload
// that may change what they find is still owed.
func (s *Session) stalePlan(plan *rewrite.Plan) error {
	if plan.Unqualified && s.pathSeen.Load() < s.pathGen.Load() {
		return staleRefusal(plan)
	}
	return nil
}

func staleRefusal(plan *rewrite.Plan) *rewrite.RefusalError {
	table := ""
	if len(plan.Tables) > 0 {
		table = plan.Tables[0]
	}
	return &rewrite.RefusalError{
		Table:   table,
		Op:      "statement",
		Message: "pgveil: this statement names an encrypted table without its schema after a change of search_path, role or tables in the same Query or batch",
		Hint:    "send the change as a statement of its own (or end the batch with Sync first), or qualify the table with its schema",
		Reason:  rewrite.ReasonUnsupported,
		Code:    "0A000",
	}
}

// changedPath records a statement that may have changed how names without
// a schema resolve.
func (s *Session) changedPath() {
	if !s.cat.Load().pathDynamic {
		return
	}
	s.refreshAfter = true
	s.pathInTx.Store(true)
	s.pathGen.Add(1)
}

// afterStatement marks the end of one client message's handling. A
// statement that may change the catalog or the resolution of names is
// followed at once by a catalog reload, when the message ends a Query or a
// batch; the reload's ReadyForQuery stands for the statement's, so a client
// that waits for it plans its next statement with the new catalog.
//
// Never while PostgreSQL may be in COPY FROM STDIN, which would take the
// query for a protocol violation: after a Query that may start a COPY the
// reload waits for the client's CopyDone or CopyFail (or the next
// statement), and after a Sync for the expect queue's word (mayCopy).
func (s *Session) afterStatement(typ byte) {
	if !s.refreshAfter || s.inBatch || s.copyIn != nil {
		return
	}
	switch typ {
	case 'Q':
		if s.queryMayCopy {
			return
		}
	case 'S':
		if s.syncMayCopy {
			return
		}
	case 'F', 'c', 'f':
	default:
		return
	}
	s.refreshAfter = false
	s.injectCatalogReload(true)
}

func (s *Session) countOutcome(plan *rewrite.Plan, refused error) {
	switch {
	case refused != nil:
		s.stats.refused.Add(1)
		s.srv.Metrics.Query(OutcomeRefused)
		s.srv.Metrics.Rejection(rejectionReason(refused))
		s.audit("statement refused", refused)
	case plan.Kind == rewrite.KindRewrite || len(plan.Tables) > 0:
		// Also a read whose results pgveil decrypts.
		s.stats.rewritten.Add(1)
		s.srv.Metrics.Query(OutcomeRewritten)
	default:
		s.srv.Metrics.Query(OutcomePassthrough)
	}
}

// audit logs an audit event: names, SQLSTATEs, never values.
func (s *Session) audit(msg string, err error) {
	if !s.snap.Config.Encryption.Audit() {
		return
	}
	code, text, _ := errorFields(err)
	s.log.LogAttrs(context.Background(), slog.LevelWarn, msg,
		slog.String("logger", "audit.encryption"), slog.String("sqlstate", code), slog.String("error", text))
}

func (s *Session) onQuery(sent time.Duration) error {
	body, err := s.cr.body()
	if err != nil {
		return err
	}
	sqlBytes, _, ok := cstringBytes(body)
	if !ok {
		return &fatalError{&pgError{code: codeProtocolViolation, msg: "pgveil: malformed Query message"}}
	}
	snap := s.snapshot()
	// A view of the read buffer, not a copy: the plan is rendered before
	// the buffer is read into again, and PlanScratch keeps nothing of it.
	sql := unsafe.String(unsafe.SliceData(sqlBytes), len(sqlBytes))
	changes := s.scsChanges(scsEffect(sql))
	plan, lits, err := s.plan(snap, sql)
	if err != nil {
		return s.raiseQuery(nil, err)
	}
	if plan.Kind != rewrite.KindRefuse {
		s.ranPlan(plan)
	}
	if s.refreshAfter {
		s.queryMayCopy = containsWordFold(sql, "copy")
	}
	switch plan.Kind {
	case rewrite.KindRefuse:
		return s.raiseQuery(plan, plan.Refusal)
	case rewrite.KindPassthrough:
		s.countOutcome(plan, nil)
		err := s.sendAsIs(expect{kind: expQuery, plan: plan, sent: sent}, 'Q', body)
		if err == nil && changes {
			s.markSCSChange()
		}
		return err
	}
	// Rendered straight into the frame sent upstream.
	frame, start := appendFrameHeader(s.encBuf[:0], 'Q')
	frame, err = plan.Render(frame, sql, lits, s.transformer(snap))
	s.encBuf = frame[:0]
	if err != nil {
		return s.raiseQuery(plan, err)
	}
	s.countOutcome(plan, nil)
	if plan.Copy != nil && plan.Copy.In {
		s.copyIn = newCopyInState(plan.Copy, snap, s)
	}
	frame = append(frame, 0)
	frame = finishFrame(frame, start)
	s.encBuf = frame
	err = s.send(expect{kind: expQuery, plan: plan, sent: sent}, frame)
	if err == nil && changes {
		s.markSCSChange()
	}
	return err
}

// raiseQuery sends, in place of a refused simple query, one that makes
// PostgreSQL raise the same error.
func (s *Session) raiseQuery(plan *rewrite.Plan, err error) error {
	if plan == nil {
		plan = &rewrite.Plan{}
	}
	s.countOutcome(plan, err)
	q := pgproto3.Query{String: raiseSQL(err)}
	frame, eerr := q.Encode(s.encBuf[:0])
	if eerr != nil {
		return eerr
	}
	s.encBuf = frame
	return s.send(expect{kind: expQuery, sent: monoNow(), raised: true}, frame)
}

// txFailed is the body of a ReadyForQuery saying the transaction block
// failed.
var txFailed = []byte{'E'}

// failTransaction fails PostgreSQL's transaction block, as the client was
// told it failed (failTx), before the client message typ reaches it: a
// query that raises, its replies dropped. Not while PostgreSQL may be in
// COPY FROM STDIN, where a Query would end the COPY rather than run, nor
// for a Terminate, which ends the transaction anyway: the next message does
// it then. [client]
func (s *Session) failTransaction(typ byte) error {
	switch typ {
	case 'd', 'c', 'f', 'X':
		return nil
	case 'S', 'H':
		if s.q.mayCopy() {
			return nil
		}
	}
	s.failTx.Store(false)
	q := pgproto3.Query{String: raiseSQL(&pgError{code: codeDataCorrupted,
		msg: "pgveil: the transaction is aborted: a value in its results could not be decrypted"})}
	frame, err := q.Encode(s.encBuf[:0])
	if err != nil {
		return err
	}
	s.encBuf = frame
	return s.send(expect{kind: expQuery, drop: true}, frame)
}

// parseEncodeError is the refusal of a Parse pgveil cannot encode once
// rewritten: with its blind-index parameters it has more parameter types
// than the protocol carries (nOIDs of them), or its encrypted values make it
// larger than a message can be.
func parseEncodeError(nOIDs int) error {
	if nOIDs > math.MaxUint16 {
		return &pgError{code: codeProgramLimit,
			msg: fmt.Sprintf("pgveil: the statement has too many parameters once pgveil adds its blind-index parameters (%d; the protocol allows %d)",
				nOIDs, math.MaxUint16),
			hint: "split the statement into smaller ones"}
	}
	return &pgError{code: codeProgramLimit,
		msg:  "pgveil: the statement is too large once pgveil encrypts its values",
		hint: "split the statement into smaller ones"}
}

// raiseExtended sends, in place of a refused Parse or Bind, an unnamed
// statement that raises the error when executed. The ParseComplete and
// BindComplete it earns are dropped; its ErrorResponse is the client's
// reply, and the server then discards the batch up to Sync.
func (s *Session) raiseExtended(err error) error {
	s.countOutcome(&rewrite.Plan{}, err)
	s.failedBatch = true
	buf, eerr := (&pgproto3.Parse{Query: raiseSQL(err)}).Encode(s.encBuf[:0])
	if eerr != nil {
		return eerr
	}
	// Bind and Execute with no names or values always encode.
	buf, _ = (&pgproto3.Bind{}).Encode(buf)
	buf, _ = (&pgproto3.Execute{}).Encode(buf)
	s.encBuf = buf
	for _, e := range [...]expect{{kind: expParse, drop: true}, {kind: expBind, drop: true}, {kind: expExecute, raised: true}} {
		if _, ok := s.q.push(e); !ok {
			return net.ErrClosed
		}
	}
	_, werr := s.uw.Write(buf)
	return werr
}

// refuseTooLarge skips an oversized client message without reading it into
// memory and answers it in its place, so the connection stays usable.
func (s *Session) refuseTooLarge(typ byte, tooLarge *MessageTooLargeError) error {
	if typ == 'd' && s.copyIn == nil {
		// CopyData of a COPY pgveil does not rewrite streams through
		// without being held, as PostgreSQL's large rows do.
		return s.cr.forward(s.uw)
	}
	s.srv.Metrics.Rejection(ReasonTooLarge)
	if err := s.cr.skip(); err != nil {
		return err
	}
	switch typ {
	case 'Q':
		return s.raiseQuery(nil, tooLarge)
	case 'P', 'B':
		return s.raiseExtended(tooLarge)
	case 'd':
		s.copyIn.failed = tooLarge
		return nil
	default:
		return &fatalError{tooLarge}
	}
}

func (s *Session) onParse() error {
	body, err := s.cr.body()
	if err != nil {
		return err
	}
	snap := s.snapshot()
	if r := s.lastParse; r != nil && !s.needCatalog && r.snap == snap && !s.scsUnsafe() && bytes.Equal(r.body, body) {
		// The same Parse as last time (clients that re-send the unnamed
		// statement for every execution), on no configured table: forward
		// it without decoding or planning again.
		s.stats.statements.Add(1)
		s.srv.Metrics.PlanCache(CacheSkip)
		u := s.setStatement(r.stmt.name, r.stmt)
		return s.sendAsIs(expect{kind: expParse, stmt: r.stmt, undo: u}, 'P', body)
	}
	var p pgproto3.Parse
	if err := p.Decode(body); err != nil {
		return &fatalError{&pgError{code: codeProtocolViolation, msg: "pgveil: malformed Parse message"}}
	}
	plan, lits, err := s.plan(snap, p.Query)
	if err != nil {
		s.stmts.del(p.Name)
		return s.raiseExtended(err)
	}
	switch plan.Kind {
	case rewrite.KindRefuse:
		s.stmts.del(p.Name)
		return s.raiseExtended(plan.Refusal)
	case rewrite.KindPassthrough:
		st := &statement{name: p.Name, plan: plan, clientParams: -1, scs: scsEffect(p.Query), mayCopy: containsWordFold(p.Query, "copy")}
		st.src = s.sourceOf(snap, plan, p.Query, p.ParameterOIDs)
		u := s.setStatement(p.Name, st)
		if len(plan.Tables) == 0 && !plan.DDL && !plan.Unqualified && !plan.SearchPathChange && len(body) <= 4096 {
			s.lastParse = &parseMemo{body: append(s.lastParseBuf[:0], body...), snap: snap, stmt: st}
			s.lastParseBuf = s.lastParse.body
		} else {
			s.lastParse = nil
		}
		return s.sendAsIs(expect{kind: expParse, stmt: st, undo: u}, 'P', body)
	}
	st, frame, err := s.upstreamParse(s.encBuf[:0], snap, p.Name, p.Query, p.ParameterOIDs, plan, lits)
	if err != nil {
		s.stmts.del(p.Name)
		return s.raiseExtended(err)
	}
	st.src = s.sourceOf(snap, plan, p.Query, p.ParameterOIDs)
	st.mayCopy = plan.Copy != nil || containsWordFold(p.Query, "copy")
	u := s.setStatement(p.Name, st)
	s.encBuf = frame
	return s.send(expect{kind: expParse, stmt: st, undo: u}, frame)
}

// upstreamParse makes the statement a rewritten plan becomes and the Parse
// that prepares it upstream (appended to dst).
func (s *Session) upstreamParse(dst []byte, snap *Snapshot, name, query string, clientOIDs []uint32, plan *rewrite.Plan, lits []rewrite.Literal) (*statement, []byte, error) {
	p := pgproto3.Parse{Name: name, Query: query, ParameterOIDs: clientOIDs}
	if len(plan.Hidden) > 0 && len(p.ParameterOIDs) > plan.NumClientParams {
		return nil, nil, &pgError{code: codeFeatureNotSupported,
			msg:  "pgveil: a statement on an encrypted table declares more parameter types than it uses",
			hint: "declare only the parameters the statement uses"}
	}
	bpchar, err := checkParamTypes(plan, p.ParameterOIDs)
	if err != nil {
		return nil, nil, err
	}
	out, err := plan.Render(nil, p.Query, lits, s.transformer(snap))
	if err != nil {
		return nil, nil, err
	}
	nClient := plan.NumClientParams
	if len(p.ParameterOIDs) > nClient {
		nClient = len(p.ParameterOIDs)
	}
	oids := make([]uint32, 0, nClient+len(plan.Hidden))
	oids = append(oids, p.ParameterOIDs...)
	for len(oids) < nClient {
		oids = append(oids, 0)
	}
	var declared []uint32
	for i, a := range plan.ClientParams {
		// A parameter pgveil turns into a token or hash must have a text
		// type; a text-like type the client declared (pgjdbc's varchar)
		// stays, anything else becomes text and ParameterDescription
		// reports the client's own type back.
		if a.Op != rewrite.OpNone && i < len(oids) && oids[i] != 0 && !textLike(a.Op, oids[i]) {
			if declared == nil {
				declared = append([]uint32(nil), p.ParameterOIDs...)
			}
			oids[i] = oidForOp(a.Op)
		}
	}
	for _, h := range plan.Hidden {
		oids = append(oids, oidForOp(h.Action.Op))
	}
	st := &statement{name: p.Name, plan: plan, clientParams: nClient, hidden: len(plan.Hidden),
		declared: declared, bpchar: bpchar, scs: scsEffect(p.Query)}
	np := pgproto3.Parse{Name: p.Name, Query: string(out), ParameterOIDs: oids}
	frame, err := np.Encode(dst)
	if err != nil {
		// Refused rather than dropped: PostgreSQL would never answer it.
		return nil, nil, parseEncodeError(len(oids))
	}
	return st, frame, nil
}

// stmtSource is what a prepared statement was planned from, kept when a
// reload or a change of search_path may change its plan (freshStatement).
type stmtSource struct {
	query string
	oids  []uint32 // the client's declared parameter types
	snap  *Snapshot
	sp    *rewrite.SearchPath
}

// sourceOf returns what freshStatement needs of a statement planned as
// plan, or nil when no configuration or search path can change its plan.
func (s *Session) sourceOf(snap *Snapshot, plan *rewrite.Plan, query string, oids []uint32) *stmtSource {
	if plan.Kind != rewrite.KindRewrite && len(plan.Tables) == 0 && !plan.Unqualified {
		return nil
	}
	return &stmtSource{query: query, oids: append([]uint32(nil), oids...), snap: snap, sp: s.planScratch.SearchPath}
}

// freshStatement returns st as the configuration and search path in force
// now plan it. A statement prepared before a reload (another hash key,
// another mode) or before search_path changed would otherwise go on with
// its old plan: lookups missing the rows of a rotated hash key, or values
// sent as they are to a table the name now finds encrypted. When the plan
// differs, pgveil closes the statement upstream and prepares it again under
// the same name; the client sees neither reply.
func (s *Session) freshStatement(st *statement) (*statement, error) {
	src := st.src
	if src == nil {
		return st, nil
	}
	sp := s.cat.Load().searchPath
	if src.snap == s.snap && src.sp.Equal(sp) {
		return st, nil
	}
	plan, lits, err := s.plan(s.snap, src.query)
	if err != nil {
		return nil, err
	}
	if plan.Kind == rewrite.KindRefuse {
		return nil, plan.Refusal
	}
	fresh := &stmtSource{query: src.query, oids: src.oids, snap: s.snap, sp: sp}
	if samePlan(st.plan, plan) {
		st.src = fresh
		return st, nil
	}
	// Prepared under a name of pgveil's: the client's statement stays as it
	// was upstream, so a Parse PostgreSQL refuses (or skips) leaves it
	// usable, as PostgreSQL's own re-planning would. A name of pgveil's
	// from an earlier re-plan is closed after the new Parse (skipped with
	// it if that fails).
	s.reprepared++
	upstream := "pgveil_" + strconv.FormatUint(s.reprepared, 10)
	var ns *statement
	var frame []byte
	if plan.Kind == rewrite.KindPassthrough {
		ns = &statement{name: st.name, plan: plan, clientParams: -1, scs: st.scs}
		frame, err = (&pgproto3.Parse{Name: upstream, Query: src.query, ParameterOIDs: src.oids}).Encode(nil)
	} else {
		ns, frame, err = s.upstreamParse(nil, s.snap, upstream, src.query, src.oids, plan, lits)
	}
	if err != nil {
		return nil, err
	}
	ns.name, ns.src, ns.upstream, ns.mayCopy = st.name, fresh, upstream, st.mayCopy
	up := s.setStatement(st.name, ns)
	if err := s.send(expect{kind: expParse, stmt: ns, drop: true, undo: up}, frame); err != nil {
		return nil, err
	}
	if st.upstream != "" {
		closeFrame, _ := (&pgproto3.Close{ObjectType: 'S', Name: st.upstream}).Encode(nil)
		if err := s.send(expect{kind: expClose, drop: true}, closeFrame); err != nil {
			return nil, err
		}
	}
	if s.lastParse != nil && s.lastParse.stmt == st {
		s.lastParse = nil
	}
	return ns, nil
}

// samePlan reports whether b sends PostgreSQL what a does, so a statement
// prepared with a needs no new Parse.
func samePlan(a, b *rewrite.Plan) bool {
	return a.Kind == b.Kind && a.SQL == b.SQL && a.NumClientParams == b.NumClientParams &&
		slices.Equal(a.Slots, b.Slots) && slices.Equal(a.ClientParams, b.ClientParams) &&
		slices.Equal(a.Hidden, b.Hidden) && slices.Equal(a.Results, b.Results) &&
		slices.Equal(a.Tables, b.Tables) && a.Copy == nil && b.Copy == nil
}

// PostgreSQL type OIDs pgveil declares for the values it computes, and
// those it accepts from the client for values it encrypts or hashes.
const (
	oidText         = 25
	oidUnknown      = 705
	oidVarchar      = 1043
	oidBpchar       = 1042
	oidTextArray    = 1009
	oidVarcharArray = 1015
)

// textLike reports whether a declared parameter type can carry what op
// makes of the value (a token or hash is text; an array of them text[]).
func textLike(op rewrite.Op, oid uint32) bool {
	switch op {
	case rewrite.OpHashAll, rewrite.OpHashArray:
		return oid == oidTextArray || oid == oidVarcharArray
	default:
		return oid == oidText || oid == oidVarchar || oid == oidUnknown
	}
}

func oidForOp(op rewrite.Op) uint32 {
	switch op {
	case rewrite.OpHashAll, rewrite.OpHashArray:
		return oidTextArray
	default:
		return oidText
	}
}

func (s *Session) onBind() error {
	body, err := s.cr.body()
	if err != nil {
		return err
	}
	portalName, rest, ok := cstring(body)
	stmtName, _, ok2 := cstringBytes(rest)
	if !ok || !ok2 {
		return &fatalError{&pgError{code: codeProtocolViolation, msg: "pgveil: malformed Bind message"}}
	}
	s.snapshot() // a reload's new primary key encrypts this Bind's values
	if s.portals.named() > 64 && !s.inBatch && s.txStatus.Load() == 'I' && s.q.empty() {
		// Outside a transaction and a batch every portal is gone on the
		// server; forget them so a client naming each portal anew does not
		// grow this map.
		s.portals.clear()
	}
	st := s.stmts.getBytes(stmtName)
	if st != nil && st.src != nil {
		fresh, err := s.freshStatement(st)
		if err != nil {
			s.portals.del(portalName)
			return s.raiseExtended(err)
		}
		st = fresh
	}
	if st != nil {
		if err := s.stalePlan(st.plan); err != nil {
			s.portals.del(portalName)
			return s.raiseExtended(err)
		}
	}
	var pt *portal
	if old := s.portals.unnamed; portalName == "" && old != nil && s.evented && s.q.answered(old.owedThrough) {
		// Every reply owed for the old unnamed portal has arrived, so no
		// entry of the queue refers to it, and on the event loop the
		// server side is not using it right now: reuse it rather than
		// allocate one per execution.
		*old = portal{stmt: st}
		pt = old
	} else {
		pt = &portal{stmt: st}
	}
	s.portals.set(portalName, pt)
	renamed := st != nil && st.upstream != ""
	if !renamed && (st == nil || st.plan.Kind != rewrite.KindRewrite || (len(st.plan.ClientParams) == 0 && len(st.plan.Hidden) == 0)) {
		return s.sendAsIs(expect{kind: expBind}, 'B', body)
	}
	b := &s.bindMsg
	if !b.decode(body) {
		return &fatalError{&pgError{code: codeProtocolViolation, msg: "pgveil: malformed Bind message"}}
	}
	if renamed {
		b.stmt = []byte(st.upstream)
		if st.plan.Kind != rewrite.KindRewrite || (len(st.plan.ClientParams) == 0 && len(st.plan.Hidden) == 0) {
			frame := b.appendTo(s.encBuf[:0], b.formats, b.params)
			s.encBuf = frame
			return s.send(expect{kind: expBind}, frame)
		}
	}
	frame, err := s.transformBind(s.encBuf[:0], st, b)
	if err != nil {
		s.portals.del(portalName)
		return s.raiseExtended(err)
	}
	s.encBuf = frame
	return s.send(expect{kind: expBind}, frame)
}

func (s *Session) onDescribe() error {
	body, err := s.cr.body()
	if err != nil {
		return err
	}
	if len(body) < 2 {
		return &fatalError{&pgError{code: codeProtocolViolation, msg: "pgveil: malformed Describe message"}}
	}
	name, _, _ := cstring(body[1:])
	e := expect{kind: expDescribePortal}
	if body[0] == 'S' {
		e.kind = expDescribeStmt
		e.stmt = s.stmts.get(name)
		if e.stmt != nil && e.stmt.src != nil {
			s.snapshot()
			fresh, err := s.freshStatement(e.stmt)
			if err != nil {
				return s.raiseExtended(err)
			}
			e.stmt = fresh
		}
		if e.stmt != nil {
			e.stmt.described = true
			if e.stmt.upstream != "" {
				frame, _ := (&pgproto3.Describe{ObjectType: 'S', Name: e.stmt.upstream}).Encode(s.encBuf[:0])
				s.encBuf = frame
				return s.send(e, frame)
			}
		}
	} else {
		e.portal = s.portals.get(name)
		if e.portal != nil {
			e.portal.described = true
		}
	}
	return s.sendAsIs(e, 'D', body)
}

func (s *Session) onExecute() error {
	body, err := s.cr.body()
	if err != nil {
		return err
	}
	name, _, ok := cstring(body)
	if !ok {
		return &fatalError{&pgError{code: codeProtocolViolation, msg: "pgveil: malformed Execute message"}}
	}
	pt := s.portals.get(name)
	if pt != nil && pt.stmt != nil && !s.failedBatch {
		s.ranPlan(pt.stmt.plan)
	}
	if pt == nil || pt.stmt == nil || pt.stmt.mayCopy {
		s.batchMayCopy = true
	}
	if !s.failedBatch {
		// Statements are counted per execution, by what their plan does.
		if pt != nil && pt.stmt != nil {
			s.countOutcome(pt.stmt.plan, nil)
		} else {
			s.srv.Metrics.Query(OutcomePassthrough)
		}
	}
	if pt != nil && !pt.described && pt.stmt.touchesConfigured() && !pt.stmt.described {
		// pgveil must know the result columns to decrypt them: ask, and
		// keep the answer to itself.
		pt.described = true
		d := pgproto3.Describe{ObjectType: 'P', Name: name}
		buf, err := d.Encode(nil)
		if err != nil {
			return err
		}
		if err := s.send(expect{kind: expDescribePortal, portal: pt, drop: true}, buf); err != nil {
			return err
		}
	}
	if pt != nil && pt.stmt != nil && pt.stmt.plan != nil && pt.stmt.plan.Copy != nil && pt.stmt.plan.Copy.In {
		s.copyIn = newCopyInState(pt.stmt.plan.Copy, s.snap, s)
	}
	err = s.sendAsIs(expect{kind: expExecute, portal: pt}, 'E', body)
	if err == nil && pt != nil && pt.stmt != nil && pt.stmt.scs != 0 && s.scsChanges(pt.stmt.scs) {
		s.markSCSChange()
	}
	return err
}

func (s *Session) onClose() error {
	body, err := s.cr.body()
	if err != nil {
		return err
	}
	e := expect{kind: expClose}
	if len(body) >= 2 {
		name, _, _ := cstring(body[1:])
		if body[0] == 'S' {
			if st := s.stmts.get(name); st != nil && st.upstream != "" {
				// pgveil's own name for its newer plan goes with it
				closeFrame, _ := (&pgproto3.Close{ObjectType: 'S', Name: st.upstream}).Encode(nil)
				if err := s.send(expect{kind: expClose, drop: true}, closeFrame); err != nil {
					return err
				}
			}
			e.undo = s.setStatement(name, nil)
		} else {
			s.portals.del(name)
		}
	}
	return s.sendAsIs(e, 'C', body)
}

// setStatement names st (nil: none) in the session's list of statements
// and returns how to undo that, nil when nothing changed.
func (s *Session) setStatement(name string, st *statement) *stmtUndo {
	was := s.stmts.get(name)
	if was == st {
		return nil
	}
	if st == nil {
		s.stmts.del(name)
	} else {
		s.stmts.set(name, st)
	}
	return &stmtUndo{name: name, was: was, installed: st}
}

// applyUndo puts a statement name back as it was before a message
// PostgreSQL skipped, unless a later message named it again. [client]
func (s *Session) applyUndo(u *stmtUndo) {
	if s.stmts.get(u.name) != u.installed {
		return
	}
	if u.was == nil {
		s.stmts.del(u.name)
	} else {
		s.stmts.set(u.name, u.was)
	}
}

// injectCatalogQuery reloads the catalog between statements (after DDL or a
// reload). Its replies never reach the client.
func (s *Session) injectCatalogQuery() { s.injectCatalogReload(false) }

// injectCatalogReload sends the catalog query; with replacesZ its
// ReadyForQuery is forwarded in place of the previous statement's.
func (s *Session) injectCatalogReload(replacesZ bool) {
	s.needCatalog = false
	q := pgproto3.Query{String: s.snap.catalogSQL}
	buf, _ := q.Encode(nil)
	if replacesZ {
		s.replacing.Add(1)
	}
	_ = s.send(expect{kind: expQuery, drop: true, catalog: true, snap: s.snap, replacesZ: replacesZ, pathGen: s.pathGen.Load()}, buf)
}

// ---------------------------------------------------------------------------
// serverLoop: PostgreSQL -> pgveil -> client.

// serverState is serverLoop's own state.
type serverState struct {
	// Fields every statement uses first (see Session).
	qrows    *rowInfo // rows of the current simple-query result set
	execRows *rowInfo // rows of the current Execute
	copyOut  *copyOutState
	// arrived is when the event loop found the frames being handled in
	// memory (a monoNow reading; zero on the goroutine engine): a
	// ReadyForQuery's arrival ends its statement's duration without
	// another clock reading.
	arrived    time.Duration
	execActive bool
	// discarding: pgveil answered the client with its own error (a value no
	// key decrypts) and drops the server's replies up to ReadyForQuery.
	discarding  bool
	rowMemoNext int
	rowMemo     [4]rowInfoMemo
	out         []byte // scratch for rewritten messages
	decrypted   []int  // per key index, flushed to metrics at statement end
	decErrors   int
	decTime     time.Duration
	decRows     int // DataRows decrypted, for sampling their timing
	// decCounters are the decryption counters of decCountersSnap's keys.
	decCounters     []prometheus.Counter
	decCountersSnap *Snapshot
	crypto          keyring.Scratch // for opening tokens
	catRows         [][][]byte      // rows of pgveil's catalog query
	catFailed       bool
}

func (s *Session) serverLoop() {
	st := &s.srvState
	var busySince time.Duration // a monoNow reading; 0 while blocked
	for {
		if s.ur.buffered() == 0 {
			s.cwMu.Lock()
			err := s.cw.Flush()
			s.cwMu.Unlock()
			if err != nil {
				return
			}
			if busySince != 0 {
				s.overhead.Add(int64(monoNow() - busySince))
				busySince = 0
			}
		}
		typ, _, err := s.ur.next()
		if busySince == 0 {
			busySince = monoNow()
		}
		// A frame over the limit goes to its handler too: forwarded or
		// skipped without being held (serverTooLarge).
		if err != nil && !isTooLarge(err) {
			if !isClosedErr(err) && !s.closing.Load() && !s.reuse.Load() {
				s.srv.Metrics.UpstreamError(UpstreamIO)
			}
			return
		}
		s.cwMu.Lock()
		err = s.onServerMessage(st, typ)
		if err != nil {
			var fatal *fatalError
			if errors.As(s.serverTooLarge(err), &fatal) {
				s.writeError(fatal.err, true)
				_ = s.cw.Flush()
			}
		}
		s.cwMu.Unlock()
		if err != nil {
			return
		}
	}
}

func (s *Session) onServerMessage(st *serverState, typ byte) error {
	switch typ {
	case 'D': // DataRow
		e, _ := s.q.peek()
		if e.catalog {
			body, err := s.ur.body()
			if err != nil {
				return err
			}
			st.catRows = append(st.catRows, copyDataRow(body))
			return nil
		}
		rows := st.qrows
		if e.kind == expExecute {
			rows = s.execRowInfo(st, e)
		}
		if st.discarding {
			return s.ur.skip()
		}
		if rows == nil || len(rows.cols) == 0 {
			return s.ur.forward(s.cw)
		}
		return s.decryptRow(st, rows)
	case 'T': // RowDescription
		e, _ := s.q.peek()
		switch e.kind {
		case expDescribeStmt, expDescribePortal:
			s.q.pop()
		}
		body, err := s.ur.body()
		if err != nil {
			return err
		}
		var plan *rewrite.Plan
		if e.kind == expQuery {
			plan = e.plan
		} else if e.stmt != nil {
			plan = e.stmt.plan
		} else if e.portal != nil && e.portal.stmt != nil {
			plan = e.portal.stmt.plan
		}
		ri := s.rowInfoFrom(body, plan)
		switch e.kind {
		case expDescribeStmt:
			if e.stmt != nil {
				e.stmt.rows, e.stmt.rowsKnown = ri, true
			}
		case expDescribePortal:
			if e.portal != nil {
				e.portal.rows, e.portal.rowsKnown = ri, true
			}
		case expQuery:
			st.qrows = ri
		}
		if e.drop || st.discarding {
			return nil
		}
		s.forwardServerFrame('T', body)
		return nil
	case 't': // ParameterDescription
		e, _ := s.q.peek()
		if st.discarding {
			return s.ur.skip()
		}
		if e.kind == expDescribeStmt && e.stmt != nil && (e.stmt.hidden > 0 || e.stmt.declared != nil) {
			body, err := s.ur.body()
			if err != nil {
				return err
			}
			s.writeParameterDescription(body, e.stmt)
			return nil
		}
		return s.ur.forward(s.cw)
	case 'n': // NoData
		e, _ := s.q.pop()
		if e.stmt != nil {
			e.stmt.rows, e.stmt.rowsKnown = nil, true
		}
		if e.portal != nil {
			e.portal.rows, e.portal.rowsKnown = nil, true
		}
		return s.forwardUnless(e.drop || st.discarding)
	case '1', '2', '3': // ParseComplete, BindComplete, CloseComplete
		e, _ := s.q.pop()
		return s.forwardUnless(e.drop || st.discarding)
	case 'C', 'I', 's': // CommandComplete, EmptyQueryResponse, PortalSuspended
		e, _ := s.q.peek()
		if e.kind == expExecute {
			s.q.pop()
			st.execActive, st.execRows = false, nil
		} else {
			st.qrows = nil
		}
		st.copyOut = nil
		s.flushDecryptMetrics(st)
		return s.forwardUnless(e.drop || st.discarding)
	case 'Z': // ReadyForQuery
		e, n, _ := s.q.popNumbered()
		body, err := s.ur.body()
		if err != nil {
			return err
		}
		failed := (st.discarding || s.failTx.Load()) && !e.drop && !e.catalog && len(body) > 0 && body[0] == 'T'
		if failed {
			// pgveil failed the statement, PostgreSQL did not: the client
			// hears its transaction block failed, as after any error, and
			// PostgreSQL's is failed before the client's next statement
			// (until then every ReadyForQuery says so).
			s.failTx.Store(true)
			body = txFailed
		}
		if len(body) > 0 {
			s.txStatus.Store(uint32(body[0]))
			s.noteReadyForQuery(n, body[0])
		}
		st.qrows, st.execRows, st.execActive, st.copyOut = nil, nil, false, nil
		s.copyAnswered()
		if e.catalog {
			if !st.catFailed {
				s.cat.Store(buildCatalog(e.snap.Config.Tables, st.catRows, e.snap.Generation))
				if s.pathSeen.Load() < e.pathGen {
					s.pathSeen.Store(e.pathGen)
				}
				if len(body) > 0 && body[0] == 'I' && e.pathGen == s.pathGen.Load() {
					s.pathInTx.Store(false)
				}
			}
			st.catRows, st.catFailed = nil, false
			if !e.replacesZ {
				return nil
			}
			s.replacing.Add(-1)
			if s.failTx.Load() && len(body) > 0 && body[0] == 'T' {
				s.writeClientFrame('Z', txFailed)
			} else {
				s.forwardServerFrame('Z', body)
			}
			return nil
		}
		st.discarding = false
		if e.drop {
			return nil // failTransaction's statement
		}
		if s.replacing.Load() > 0 {
			if next, ok := s.q.peek(); ok && next.catalog && next.replacesZ {
				// the reload that follows answers for this statement
				s.observeStatement(e)
				return nil
			}
		}
		if failed {
			s.writeClientFrame('Z', body)
		} else {
			s.forwardServerFrame('Z', body)
		}
		s.observeStatement(e)
		return nil
	case 'E': // ErrorResponse
		e, _ := s.q.peek()
		if e.catalog {
			st.catFailed = true
			return s.ur.skip()
		}
		st.copyOut = nil
		if e.kind == expQuery {
			st.qrows = nil
			s.q.leaveCopyIn()
			if e.raised && !st.discarding {
				return s.forwardRaised()
			}
			if !e.drop && !st.discarding && s.copyFail.Load() != nil {
				return s.forwardCopyError()
			}
			return s.forwardUnless(e.drop || st.discarding)
		}
		st.execActive, st.execRows = false, nil
		clientOwned := s.q.popUntilSync()
		if e.raised && !st.discarding {
			return s.forwardRaised()
		}
		if clientOwned && !st.discarding && s.copyFail.Load() != nil {
			return s.forwardCopyError()
		}
		return s.forwardUnless(!clientOwned || st.discarding)
	case 'S': // ParameterStatus: always reaches the client
		body, err := s.ur.body()
		var tooLarge *MessageTooLargeError
		if errors.As(err, &tooLarge) {
			// Not standard_conforming_strings, whose value is on or off.
			return s.ur.forward(s.cw)
		}
		if err != nil {
			return err
		}
		s.noteParameterStatus(body)
		s.forwardServerFrame('S', body)
		return nil
	case 'H': // CopyOutResponse
		plan := s.frontPlan()
		if plan != nil && plan.Copy != nil && !plan.Copy.In {
			st.copyOut = newCopyOutState(plan.Copy, s)
		}
		return s.forwardUnless(st.discarding)
	case 'G': // CopyInResponse
		s.q.copyInStarted()
		return s.onCopyInResponse()
	case 'd': // CopyData
		if st.copyOut != nil && !st.discarding {
			return st.copyOut.onData(s)
		}
		return s.forwardUnless(st.discarding)
	default:
		// NoticeResponse and NotificationResponse arrive at any time and
		// always reach the client, as do CopyInResponse, CopyDone,
		// FunctionCallResponse.
		return s.ur.forward(s.cw)
	}
}

func (s *Session) forwardUnless(drop bool) error {
	if drop {
		return s.ur.skip()
	}
	return s.ur.forward(s.cw)
}

// execRowInfo returns the decrypt columns of an Execute's rows: the portal's
// own Describe, else its statement's.
func (s *Session) execRowInfo(st *serverState, e expect) *rowInfo {
	if st.execActive {
		return st.execRows
	}
	st.execActive = true
	st.execRows = nil
	if p := e.portal; p != nil {
		if p.rowsKnown {
			st.execRows = p.rows
		} else if p.stmt != nil && p.stmt.rowsKnown {
			st.execRows = p.stmt.rows
		}
	}
	return st.execRows
}

// writeParameterDescription forwards a ParameterDescription without the
// parameters pgveil added and with the types the client declared.
func (s *Session) writeParameterDescription(body []byte, st *statement) {
	if len(body) < 2 {
		return
	}
	have := int(binary.BigEndian.Uint16(body))
	n := st.clientParams
	if n > have || n < 0 {
		n = have
	}
	if len(body) < 2+4*have {
		return
	}
	out := s.srvState.out[:0]
	out, start := appendFrameHeader(out, 't')
	out = binary.BigEndian.AppendUint16(out, uint16(n))
	for i := 0; i < n; i++ {
		oid := binary.BigEndian.Uint32(body[2+4*i:])
		if i < len(st.declared) && st.declared[i] != 0 {
			oid = st.declared[i]
		}
		out = binary.BigEndian.AppendUint32(out, oid)
	}
	out = finishFrame(out, start)
	s.srvState.out = out
	_, _ = s.cw.Write(out)
}

// observeStatement records, at a ReadyForQuery, how long the statement (or
// extended batch) took and how much of it pgveil spent working rather than
// waiting on PostgreSQL.
func (s *Session) observeStatement(e expect) {
	if e.sent == 0 {
		return
	}
	at := s.srvState.arrived
	if at == 0 {
		at = monoNow()
	}
	d := at - e.sent
	ov := time.Duration(s.overhead.Swap(0))
	if ov > d {
		ov = d
	}
	s.timings.statement(s.srv, d, ov)
}

// forwardRaised forwards the error PostgreSQL raised for pgveil's refusal
// without its CONTEXT ("PL/pgSQL function inline_code_block ..."), which
// would tell the client how pgveil refuses, not why.
func (s *Session) forwardRaised() error {
	body, err := s.ur.body()
	if err != nil {
		return err
	}
	var er pgproto3.ErrorResponse
	if err := er.Decode(body); err != nil {
		s.writeClientFrame('E', body)
		return nil
	}
	er.Where = ""
	return s.writeErrorResponse(&er)
}

// frontPlan returns the plan of the statement the oldest entry answers
// (a Query, or the Execute of a portal), nil if none. [server]
func (s *Session) frontPlan() *rewrite.Plan {
	e, _ := s.q.peek()
	if e.kind == expQuery {
		return e.plan
	}
	if e.portal != nil && e.portal.stmt != nil {
		return e.portal.stmt.plan
	}
	return nil
}

// writeErrorResponse sends the client an ErrorResponse pgveil made or
// changed, encoded in the server side's scratch. [server, under cwMu]
func (s *Session) writeErrorResponse(er *pgproto3.ErrorResponse) error {
	out, err := er.Encode(s.srvState.out[:0])
	if err != nil {
		return err
	}
	s.srvState.out = out
	_, err = s.cw.Write(out)
	return err
}

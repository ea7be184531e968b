package proxy

// Keeping PostgreSQL connections after their clients leave.
//
// pgveil passes authentication through to PostgreSQL (SPEC §7): it never
// lets a client use a connection it has not logged in with itself, so every
// client still logs in on a PostgreSQL connection opened for it. What
// pgveil keeps is the backend that did the work. A backend that has served
// for a while is faster than a new one: its catalog, relation and plan
// caches are filled and its memory is mapped (on the 2-core machines of
// docs/BENCHMARKS.md a new backend runs 10 to 15 % slower for its first
// seconds). PgBouncer's pool gives each new client such a backend; with
// this, pgveil does too, without a login of its own.
//
// When a client sends Terminate while its session is idle (the last
// ReadyForQuery said 'I', nothing is owed, no extended batch or COPY is
// open), pgveil does not forward the Terminate. Once the session has left
// its loops, it resets the connection with DISCARD ALL (as PgBouncer's
// server_reset_query: it closes cursors, drops temporary tables, prepared
// statements and LISTENs, releases advisory locks and resets every setting
// and the role) and keeps it, up to proxy.max_idle_upstreams connections
// for proxy.upstream_idle_timeout. A client that leaves in any other state
// has its connection closed, as before.
//
// When a later client's login succeeds (ReadyForQuery on the connection
// opened for it) and a kept connection has the same key (user, database,
// every startup parameter, protocol version, upstream address and TLS
// mode), pgveil closes the new connection and carries the session on the
// kept one, from the catalog load on. The client keeps the BackendKeyData
// of the connection it logged in on; pgveil forwards a CancelRequest that
// names it with the key of the connection that carries the session.
//
// A kept connection that PostgreSQL closed (or that sent anything while
// idle) is found when taken, by a non-blocking peek, and closed.
//
// Kept connections hold slots of max_connections and of the role's and
// database's CONNECTION LIMIT, which a client reconnecting (an application
// restarting its pool) needs for its login. A login refused with 53300
// after PostgreSQL accepted the credentials runs on a kept connection of
// the same key (startOnKept); otherwise pgveil closes the oldest kept
// connection and, when the client has not answered an authentication
// request yet, logs in again (relayAuth).

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// idleUpstream is one kept connection.
type idleUpstream struct {
	key    string
	conn   net.Conn
	cancel cancelKey // the connection's own BackendKeyData
	params []byte    // its login's ParameterStatus frames
	// scsOff: standard_conforming_strings is off on it after the reset
	// (literals.go); its login's frames may say otherwise.
	scsOff  bool
	expires time.Time
}

// upstreamPool holds the kept connections, oldest first.
type upstreamPool struct {
	mu     sync.Mutex
	idle   []*idleUpstream
	timer  *time.Timer // fires at due, the earliest expiry
	due    time.Time
	closed bool
}

// upstreamKey is what two logins must share for one to take the other's
// connection.
func upstreamKey(sm *pgproto3.StartupMessage, snap *Snapshot) string {
	names := make([]string, 0, len(sm.Parameters))
	for k := range sm.Parameters {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(snap.Config.Upstream)
	b.WriteByte(0)
	b.WriteString(snap.Config.UpstreamTLS.Mode)
	b.WriteByte(0)
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], sm.ProtocolVersion)
	b.Write(v[:])
	for _, k := range names {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(sm.Parameters[k])
	}
	return b.String()
}

// take returns the most recently kept live connection with key, or nil.
func (p *upstreamPool) take(key string, m *Metrics) *idleUpstream {
	for {
		p.mu.Lock()
		var u *idleUpstream
		for i := len(p.idle) - 1; i >= 0; i-- {
			if p.idle[i].key == key {
				u = p.idle[i]
				p.idle = append(p.idle[:i], p.idle[i+1:]...)
				break
			}
		}
		n := len(p.idle)
		p.mu.Unlock()
		if u == nil {
			return nil
		}
		if connIdle(u.conn) {
			m.UpstreamReuse(ReuseTaken, n)
			return u
		}
		u.conn.Close()
		m.UpstreamReuse(ReuseStale, n)
	}
}

// put keeps u for timeout, closing the oldest kept connection when limit are
// kept already. It reports whether u was kept.
func (p *upstreamPool) put(u *idleUpstream, limit int, timeout time.Duration, m *Metrics) bool {
	p.mu.Lock()
	if p.closed || limit <= 0 {
		p.mu.Unlock()
		return false
	}
	var evicted []*idleUpstream
	for len(p.idle) >= limit {
		evicted = append(evicted, p.idle[0])
		p.idle = p.idle[1:]
	}
	u.expires = time.Now().Add(timeout)
	p.idle = append(p.idle, u)
	// After a reload the new timeout may be shorter than the one the
	// timer was set for.
	if p.timer == nil || u.expires.Before(p.due) {
		p.schedule(u.expires, m)
	}
	n := len(p.idle)
	p.mu.Unlock()
	for _, e := range evicted {
		terminate(e.conn)
		m.UpstreamReuse(ReuseExpired, n)
	}
	m.UpstreamReuse(ReuseKept, n)
	return true
}

// schedule sets the expiry timer to fire at due. [under p.mu]
func (p *upstreamPool) schedule(due time.Time, m *Metrics) {
	if p.timer != nil {
		p.timer.Stop()
	}
	p.due = due
	p.timer = time.AfterFunc(time.Until(due), func() { p.expire(m) })
}

// expire closes the connections kept past their time and sets the timer
// for the next one.
func (p *upstreamPool) expire(m *Metrics) {
	now := time.Now()
	p.mu.Lock()
	// Look at every entry: they are kept oldest first, but a reload may
	// have shortened the timeout of the newer ones.
	var gone []*idleUpstream
	kept := p.idle[:0]
	for _, u := range p.idle {
		if u.expires.After(now) {
			kept = append(kept, u)
		} else {
			gone = append(gone, u)
		}
	}
	p.idle = kept
	p.timer = nil
	if len(p.idle) > 0 && !p.closed {
		next := p.idle[0].expires
		for _, u := range p.idle {
			if u.expires.Before(next) {
				next = u.expires
			}
		}
		p.schedule(next, m)
	}
	n := len(p.idle)
	p.mu.Unlock()
	for _, u := range gone {
		terminate(u.conn)
		m.UpstreamReuse(ReuseExpired, n)
	}
}

// closeOldest closes the connection kept longest, if any.
func (p *upstreamPool) closeOldest(m *Metrics) bool {
	p.mu.Lock()
	if len(p.idle) == 0 {
		p.mu.Unlock()
		return false
	}
	u := p.idle[0]
	p.idle = p.idle[1:]
	n := len(p.idle)
	p.mu.Unlock()
	terminate(u.conn)
	m.UpstreamReuse(ReuseExpired, n)
	return true
}

// trim closes the oldest kept connections beyond limit (after a reload
// lowered proxy.max_idle_upstreams).
func (p *upstreamPool) trim(limit int, m *Metrics) {
	p.mu.Lock()
	var gone []*idleUpstream
	for len(p.idle) > max(limit, 0) {
		gone = append(gone, p.idle[0])
		p.idle = p.idle[1:]
	}
	n := len(p.idle)
	p.mu.Unlock()
	for _, u := range gone {
		terminate(u.conn)
		m.UpstreamReuse(ReuseExpired, n)
	}
}

// closeAll closes every kept connection; nothing is kept afterwards.
func (p *upstreamPool) closeAll(m *Metrics) {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	p.mu.Unlock()
	for _, u := range idle {
		terminate(u.conn)
	}
	if len(idle) > 0 {
		m.UpstreamReuse(ReuseExpired, 0)
	}
}

// len reports how many connections are kept.
func (p *upstreamPool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// terminate ends a PostgreSQL connection politely: Terminate, then close.
func terminate(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write([]byte{'X', 0, 0, 0, 4})
	c.Close()
}

// resetTimeout bounds DISCARD ALL on a connection being kept.
const resetTimeout = 5 * time.Second

var errNotReset = errors.New("pgveil: upstream connection not reset")

// resetUpstream runs DISCARD ALL on c and reads its reply: optional notices,
// parameter statuses and notifications, CommandComplete "DISCARD ALL",
// ReadyForQuery 'I', and nothing after. Anything else is an error and the
// connection must be closed. scsOff says whether standard_conforming_strings
// was off before the reset; it returns whether it is off after.
func resetUpstream(c net.Conn, scsOff bool) (bool, error) {
	_ = c.SetDeadline(time.Now().Add(resetTimeout))
	w := bufio.NewWriterSize(c, 64)
	q := pgproto3.Query{String: "DISCARD ALL"}
	buf, _ := q.Encode(nil)
	if _, err := w.Write(buf); err != nil {
		return scsOff, err
	}
	if err := w.Flush(); err != nil {
		return scsOff, err
	}
	fr := newFrameReaderSize(c, 1<<20, 4096)
	complete := false
	for {
		typ, _, err := fr.next()
		if err != nil {
			return scsOff, err
		}
		body, err := fr.body()
		if err != nil {
			return scsOff, err
		}
		switch typ {
		case 'N', 'A':
		case 'S':
			if off, ok := scsReport(body); ok {
				scsOff = off
			}
		case 'C':
			if string(body) != "DISCARD ALL\x00" {
				return scsOff, errNotReset
			}
			complete = true
		case 'Z':
			if !complete || len(body) != 1 || body[0] != 'I' || fr.r.Buffered() > 0 {
				return scsOff, errNotReset
			}
			return scsOff, c.SetDeadline(time.Time{})
		default:
			return scsOff, errNotReset
		}
	}
}

// keepUpstream resets the upstream connection of a session whose client
// left idle (s.reuse) and keeps it; or closes it. The session has left its
// loops. conn is the connection, leftover what the session had read from
// it and not handled (which must be nothing).
func (s *Session) keepUpstream(conn net.Conn, leftover bool) {
	srv := s.srv
	snap := srv.snap.Load()
	limit := snap.Config.Proxy.IdleUpstreams()
	if leftover || limit <= 0 || srv.draining.Load() || srv.closed.Load() || s.poolKey == "" {
		terminate(conn)
		s.notKept()
		return
	}
	scsOff, err := resetUpstream(conn, s.scs.off.Load())
	if err != nil {
		s.log.Debug("upstream connection not kept: reset failed", "error", err.Error())
		conn.Close()
		s.notKept()
		return
	}
	s.connMu.Lock()
	k := s.upstreamCancel
	s.connMu.Unlock()
	u := &idleUpstream{key: s.poolKey, conn: conn, cancel: k, params: s.startupParams, scsOff: scsOff}
	if !srv.idle.put(u, limit, snap.Config.Proxy.UpstreamIdleTimeout.D(), srv.Metrics) {
		terminate(conn)
		s.notKept()
	}
}

// notKept counts an upstream connection that its client left idle but that
// was closed all the same.
func (s *Session) notKept() {
	s.srv.Metrics.UpstreamReuse(ReuseNotKept, s.srv.idle.len())
}

// releaseUpstream hands the session's upstream connection to keepUpstream
// once the session has ended with s.reuse set. [serve, after the loops]
func (s *Session) releaseUpstream() {
	if !s.reuse.Load() {
		return
	}
	if conn, leftover, evented := s.keptEventedUpstream(); evented {
		if conn != nil {
			s.keepUpstream(conn, leftover)
		} else {
			s.notKept()
		}
		return
	}
	s.connMu.Lock()
	conn := s.upstream
	s.upstream = nil
	s.connMu.Unlock()
	if conn == nil {
		return
	}
	fr, ok := s.ur.(*frameReader)
	s.keepUpstream(conn, !ok || !fr.read || fr.buffered() > 0)
}

// startOnKept finishes a login that PostgreSQL accepted (AuthenticationOk)
// and then refused for want of a connection slot (53300), on a kept
// connection of the same key: its slot is the one the login lacked. The
// client gets the kept login's ParameterStatus frames, the kept
// connection's BackendKeyData and ReadyForQuery. [startup]
func (s *Session) startOnKept(u *idleUpstream, deadline time.Time) error {
	s.moveToKept(u, deadline).Close()
	s.startupParams = append(s.startupParams[:0], u.params...)
	if _, err := s.cw.Write(u.params); err != nil {
		return err
	}
	if u.cancel.secret != "" {
		s.srv.registerCancel(s, u.cancel)
		key := binary.BigEndian.AppendUint32(nil, u.cancel.pid)
		s.writeClientFrame('K', append(key, u.cancel.secret...))
	}
	s.txStatus.Store('I')
	if err := s.loadCatalog(); err != nil {
		return err
	}
	s.writeClientFrame('Z', []byte{'I'})
	return s.cw.Flush()
}

// canKeepUpstream reports whether the client's Terminate finds the session
// idle, so its upstream connection can be reset and kept. [client]
func (s *Session) canKeepUpstream() bool {
	if s.poolKey == "" || s.inBatch || s.failedBatch || s.copyIn != nil ||
		s.txStatus.Load() != 'I' || s.uw.Buffered() > 0 || s.srv.draining.Load() ||
		s.srv.snap.Load().Config.Proxy.IdleUpstreams() <= 0 {
		return false
	}
	s.q.mu.Lock()
	idle := s.q.pushed == s.q.popped && !s.q.closed
	s.q.mu.Unlock()
	return idle
}

// takeIdleUpstream carries the session, whose login just succeeded, on a
// kept connection with its key when there is one, closing the connection
// it logged in on. [startup]
func (s *Session) takeIdleUpstream(deadline time.Time) {
	if s.poolKey == "" || s.snap.Config.Proxy.IdleUpstreams() <= 0 {
		return
	}
	u := s.srv.idle.take(s.poolKey, s.srv.Metrics)
	if u == nil {
		return
	}
	terminate(s.moveToKept(u, deadline))
}

// moveToKept makes the kept connection u the session's upstream and
// returns the connection the client logged in on. [startup]
func (s *Session) moveToKept(u *idleUpstream, deadline time.Time) (login net.Conn) {
	s.connMu.Lock()
	login = s.upstream
	s.upstream = u.conn
	s.upstreamCancel = u.cancel
	s.connMu.Unlock()
	// What PostgreSQL told the client at login need not hold for the kept
	// connection (a role's settings changed since it logged in).
	s.scs.off.Store(u.scsOff)
	_ = u.conn.SetDeadline(deadline)
	s.ur = newFrameReaderSize(u.conn, s.snap.Config.Proxy.MaxMessageSize, startupReadBufferSize)
	s.uw = bufio.NewWriterSize(u.conn, eventWriteBufferSize)
	return login
}

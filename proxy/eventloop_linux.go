//go:build linux

package proxy

// The event-loop engine.
//
// After startup, a session without TLS on either side is carried by an
// event loop instead of its two goroutines: a goroutine that waits on an
// epoll instance and runs the session's handlers when a socket is ready, the
// way PgBouncer's libevent loop works. The protocol code is the same for
// both engines (onClientMessage, onServerMessage); only the I/O differs:
// memFrames hands out whole frames already read (so a handler never waits)
// and fdWriter writes without waiting (what the kernel does not take waits
// in pending, and the side feeding it is not read until it is gone).
//
// Why: with a goroutine per direction, every message costs a read that
// fails with EAGAIN, a park, a netpoller wake-up and, as the runtime moves
// processors between threads blocked in write(2), futex wake-ups and a busy
// sysmon. scripts/bench/relay measures it: a bare goroutine relay spends
// about 40 % more CPU per pgbench transaction than PgBouncer.
//
// The loop makes its system calls with syscall.RawSyscall, without telling
// the scheduler: the sockets are non-blocking, so recvfrom, sendto and
// epoll_ctl return at once, and epoll_wait blocks while the loop holds its processor
// (P). That is deliberate. A blocking call made the normal way lets sysmon
// hand the P to another thread after 20 µs and makes the loop win it back on
// return, a futex round trip per wake-up that costs as much as the work it
// waits for. Holding the P is safe because the runtime still preempts a
// goroutine that has kept one for 10 ms, or that a stop-the-world waits for:
// its signal interrupts epoll_wait (EINTR; epoll_wait is never restarted)
// and the loop then yields explicitly (runtime.Gosched), so garbage
// collection and other goroutines proceed. The finite timeout bounds the
// wait even when asynchronous preemption is off (GODEBUG=asyncpreemptoff=1):
// the loop yields after an empty wait too. Server.poller raises GOMAXPROCS by the
// number of loops when it starts them, so the rest of the program keeps its
// processors.
//
// The loop's duplicates of the sockets are not known to Go's netpoller (see
// dupSocket), or its thread would wake for every message as well. A session
// leaves its loop before its sockets close, so a descriptor number reused
// by a new connection never reaches the old session.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// pollTimeoutMS bounds one epoll_wait (see above).
const pollTimeoutMS = 50

// maxReadPerEvent bounds what one readiness event reads from one socket, so
// a session streaming a large result does not starve the loop's others;
// level-triggered epoll reports the rest.
const maxReadPerEvent = 256 << 10

type poller struct {
	epfd int // -1 on an io_uring loop
	// u is the io_uring state of a loop that uses it (see
	// eventloop_uring_linux.go); nil on an epoll loop.
	u *uringLoop
	// yields counts the times the loop let the scheduler stop it (see run).
	yields atomic.Int64
	mu     sync.Mutex
	// byFD holds the session of each registered descriptor, indexed by
	// its number (descriptors are small integers the kernel reuses lowest
	// first); a zero entry is free. Guarded by mu.
	byFD []pollEntry
	n    int // sessions, guarded by mu
}

type pollEntry struct {
	s      *Session
	client bool
}

// evState is a session's event-loop state. Its fields are used with mu
// held (the loop holds it while it works on the session), except done and
// once.
type evState struct {
	p *poller
	// cfd and ufd are the session's own descriptors; they are closed under
	// mu, so no read or write of the loop can meet a reused number.
	cfd, ufd int
	mu       sync.Mutex
	closed   bool
	// keptFD is ufd, left open by endEvented when the client left the
	// session idle (Session.reuse), until releaseUpstream takes it; else -1.
	keptFD int
	// Input and output state by value: one allocation, a few cache lines
	// (see Session's layout).
	cin, uin memFrames
	cwr, uwr fdWriter
	cEvents  uint32 // interest registered for cfd
	uEvents  uint32
	// On an io_uring loop: the multishot receive of each side; removing
	// once the loop has begun to take the session off, finished once it
	// has. [loop]
	cRecv, uRecv       uringRecv
	removing, finished bool
	done               chan struct{}
	once               sync.Once
}

// eventLoops is the process's pool of event loops. It is started once,
// sized by the first configuration that asks for it, and lives as long as
// the process: loops hold no session state of their own, and a Server that
// closes takes its sessions off them.
var eventLoops struct {
	once    sync.Once
	pollers []*poller
}

// poller returns the event loop for a new session, or nil when sessions
// use goroutines (event_loops: 0, or epoll unavailable).
func (srv *Server) poller() *poller {
	procs := runtime.GOMAXPROCS(0)
	n := srv.snap.Load().Config.Proxy.EventLoopThreads(procs)
	if n == 0 {
		return nil
	}
	eventLoops.once.Do(func() {
		useUring := srv.snap.Load().Config.Proxy.IOUring != "off"
		var pollers []*poller
		for i := 0; i < n; i++ {
			var p *poller
			var err error
			if useUring {
				if p, err = newUringPoller(); err != nil {
					// Not an error: io_uring is often refused (Docker's
					// default seccomp profile, kernels before 6.1).
					srv.Logger.Info("io_uring unavailable; event loops use epoll", "reason", err.Error())
					useUring = false
				}
			}
			if !useUring {
				if p, err = newPoller(); err != nil {
					srv.Logger.Warn("event loop unavailable; sessions use goroutines", "error", err.Error())
					return
				}
			}
			pollers = append(pollers, p)
		}
		// Each loop holds a processor while it waits (see above).
		runtime.GOMAXPROCS(procs + n)
		eventLoops.pollers = pollers
		io := "epoll"
		if useUring {
			io = "io_uring"
		}
		srv.Logger.Info("event loops started", "loops", n, "io", io, "gomaxprocs", procs+n)
	})
	pollers := eventLoops.pollers
	if len(pollers) == 0 {
		return nil
	}
	// The loop with the fewest sessions.
	best := pollers[0]
	for _, p := range pollers[1:] {
		if p.sessions() < best.sessions() {
			best = p
		}
	}
	return best
}

func newPoller() (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &poller{epfd: fd}
	go p.run()
	return p, nil
}

func (p *poller) sessions() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *poller) run() {
	events := make([]syscall.EpollEvent, 256)
	for {
		n, errno := rawEpollWait(p.epfd, events, pollTimeoutMS)
		if errno == syscall.EINTR || errno == 0 && n == 0 {
			// A signal (most likely the runtime's preemption request: a
			// stop-the-world for the garbage collector waits for this
			// goroutine) or the timeout: yield. The loop must not count on
			// a function call to stop at, as the comment at the top once
			// did: the compiler inlines rawEpollWait, and with
			// profile-guided optimization syscall.RawSyscall6 too, which
			// left a loop with no preemption point at all and every other
			// goroutine stopped for seconds behind a collection.
			p.yields.Add(1)
			runtime.Gosched()
			continue
		}
		if errno != 0 {
			// Only a bug (EBADF, EFAULT) gets here; do not spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		// One clock reading per event: the end of one event's work is the
		// start of the next's (see evWork).
		clock := monoNow()
		for i := 0; i < n; i++ {
			fd := events[i].Fd
			p.mu.Lock()
			var e pollEntry
			if fd >= 0 && int(fd) < len(p.byFD) {
				e = p.byFD[fd]
			}
			p.mu.Unlock()
			if e.s != nil {
				e.s.onEvent(e.client, events[i].Events, &clock)
			}
		}
	}
}

const (
	evRead  = syscall.EPOLLIN | syscall.EPOLLRDHUP
	evWrite = syscall.EPOLLOUT
)

// add registers the session's sockets with the interest already computed
// in ev.cEvents and ev.uEvents.
func (p *poller) add(s *Session, ev *evState) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if need := max(ev.cfd, ev.ufd) + 1; need > len(p.byFD) {
		p.byFD = append(p.byFD, make([]pollEntry, max(need, 2*len(p.byFD))-len(p.byFD))...)
	}
	p.byFD[ev.cfd] = pollEntry{s: s, client: true}
	p.byFD[ev.ufd] = pollEntry{s: s, client: false}
	if p.u != nil {
		// The loop arms the receives (only its thread submits).
		p.n++
		p.u.post(uringRequest{s: s, ev: ev})
		return nil
	}
	err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, ev.cfd, &syscall.EpollEvent{Events: ev.cEvents, Fd: int32(ev.cfd)})
	if err == nil {
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, ev.ufd, &syscall.EpollEvent{Events: ev.uEvents, Fd: int32(ev.ufd)})
		if err != nil {
			_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, ev.cfd, nil)
		}
	}
	if err != nil {
		p.byFD[ev.cfd], p.byFD[ev.ufd] = pollEntry{}, pollEntry{}
		return err
	}
	p.n++
	return nil
}

// remove deregisters the session's sockets, if they are still its own.
func (p *poller) remove(s *Session, ev *evState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	removed := false
	for _, fd := range [2]int{ev.cfd, ev.ufd} {
		if fd < len(p.byFD) && p.byFD[fd].s == s {
			p.byFD[fd] = pollEntry{}
			if p.u == nil {
				_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
			}
			removed = true
		}
	}
	if removed {
		p.n--
	}
}

// modify changes the interest of one of the session's sockets. [loop]
func (p *poller) modify(fd int, events uint32) {
	ev := syscall.EpollEvent{Events: events, Fd: int32(fd)}
	_, _, _ = syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(p.epfd), syscall.EPOLL_CTL_MOD, uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
}

// runEvented hands the session to p. ok is false when the session cannot
// use the event loop (TLS on a side); its goroutines carry it then. done is
// closed when the session has left the loop.
func (s *Session) runEvented(p *poller) (done chan struct{}, ok bool) {
	ctcp, ok1 := s.client.(*net.TCPConn)
	utcp, ok2 := s.upstream.(*net.TCPConn)
	s.cwMu.Lock()
	unsent := s.uw.Buffered() + s.cw.Buffered()
	s.cwMu.Unlock()
	if !ok1 || !ok2 || unsent > 0 {
		// TLS on a side; or output startup left unsent (it flushes all it
		// writes, so never): the goroutines carry the session.
		return nil, false
	}
	// The event loop gets duplicates of the sockets, made without os.File:
	// TCPConn.File would register its duplicate with Go's netpoller, whose
	// thread would then wake for every message as well.
	cfd, err := dupSocket(ctcp)
	if err != nil {
		return nil, false
	}
	ufd, err := dupSocket(utcp)
	if err != nil {
		_ = syscall.Close(cfd)
		return nil, false
	}
	ev := &evState{p: p, cfd: cfd, ufd: ufd, keptFD: -1, done: make(chan struct{})}
	if syscall.SetNonblock(cfd, true) != nil || syscall.SetNonblock(ufd, true) != nil {
		_ = syscall.Close(cfd)
		_ = syscall.Close(ufd)
		return nil, false
	}
	limit := s.cr.(*frameReader).limit
	ev.cin.limit, ev.uin.limit = limit, limit
	// Bytes read ahead during startup (a client that pipelined its first
	// queries behind authentication) are the first input.
	ev.cin.buf = append(ev.cin.buf, s.cr.(*frameReader).bufferedBytes()...)
	ev.uin.buf = append(ev.uin.buf, s.ur.(*frameReader).bufferedBytes()...)
	// From here the duplicates carry the session. Closing the net.Conns
	// takes the sockets out of Go's netpoller, whose epoll would otherwise
	// be woken for every message too.
	// Under cwMu from the close to the switch of s.cw: drainIfIdle, which
	// may run now, writes its FATAL either to the old connection while it
	// is open or to the new writer, never to a closed one.
	s.cwMu.Lock()
	s.connMu.Lock()
	ctcp.Close()
	utcp.Close()
	s.connMu.Unlock()
	ev.cwr.fd, ev.uwr.fd = ev.cfd, ev.ufd
	ev.cwr.queue, ev.uwr.queue = p.u != nil, p.u != nil
	s.cr, s.ur = &ev.cin, &ev.uin
	s.evented = true
	s.uw.Reset(&ev.uwr)
	s.cw.Reset(&ev.cwr)
	s.cwMu.Unlock()
	s.ev.Store(ev)

	// Handle what is already in memory before the loop sees the session
	// (this goroutine is the only one that knows it yet), then register.
	// Under ev.mu, and only if kill has not begun: endEvented, which kill
	// calls, deregisters and closes under ev.mu too, so the sockets are
	// never registered after they are closed.
	ev.mu.Lock()
	clock := monoNow()
	ok = !s.closing.Load() && s.evWork(ev, true, 0, &clock) && s.evWork(ev, false, 0, &clock)
	if ok {
		ev.cEvents, ev.uEvents = s.evInterest(ev)
		if err := p.add(s, ev); err != nil {
			s.log.Warn("event loop registration failed; closing the session", "error", err.Error())
			ok = false
		}
	}
	ev.mu.Unlock()
	if !ok {
		s.kill()
		s.endEvented() // in case kill ran before s.ev was set
	}
	return ev.done, true
}

// endEvented takes the session off its loop, closes its sockets and wakes
// serve. Any goroutine may call it, any number of times.
func (s *Session) endEvented() {
	ev := s.ev.Load()
	if ev == nil {
		return
	}
	s.cwMu.Lock()
	ev.cwr.err = net.ErrClosed // drainIfIdle writes under cwMu only
	s.cwMu.Unlock()
	ev.mu.Lock()
	if !ev.closed && ev.p.u != nil {
		// The loop sends what is queued, cancels the receives, then
		// closes the sockets and closes done (uringLoop.settle).
		ev.closed = true
		ev.p.u.post(uringRequest{s: s, ev: ev, remove: true})
		ev.mu.Unlock()
		return
	}
	if !ev.closed {
		ev.closed = true
		ev.p.remove(s, ev)
		_ = syscall.Close(ev.cfd)
		if s.reuse.Load() {
			ev.keptFD = ev.ufd
		} else {
			_ = syscall.Close(ev.ufd)
		}
	}
	ev.mu.Unlock()
	ev.once.Do(func() { close(ev.done) })
}

// keptEventedUpstream returns, for a session the event loop carried, the
// upstream connection endEvented left open (nil if none) and whether input
// or output was left on it unhandled. evented is false for a session on
// goroutines.
func (s *Session) keptEventedUpstream() (conn net.Conn, leftover, evented bool) {
	ev := s.ev.Load()
	if ev == nil {
		return nil, false, false
	}
	ev.mu.Lock()
	fd := ev.keptFD
	ev.keptFD = -1
	u := &ev.uin
	leftover = u.r < len(u.buf) || u.current || u.discard > 0 || u.pass > 0 || ev.uwr.unsent() > 0
	ev.mu.Unlock()
	if fd < 0 {
		return nil, leftover, true
	}
	// net.FileConn duplicates the descriptor for Go's netpoller.
	f := os.NewFile(uintptr(fd), "pgveil-upstream")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, leftover, true
	}
	return conn, leftover, true
}

// connIdle reports whether c is open with nothing to read: a kept
// connection that PostgreSQL closed, or that sent anything while kept
// (a FATAL before closing, a ParameterStatus after a reload), is not
// handed to a client.
func connIdle(c net.Conn) bool {
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	idle := false
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		idle = err == syscall.EAGAIN
	})
	return idle
}

// onEvent handles readiness of one of the session's sockets. [loop]
func (s *Session) onEvent(client bool, events uint32, clock *time.Duration) {
	if s.closing.Load() {
		return
	}
	if !s.onEventRecover(client, events, clock) {
		s.kill()
	}
}

// onEventRecover runs the handlers; a panic ends only this session, as it
// does on the goroutine engine.
func (s *Session) onEventRecover(client bool, events uint32, clock *time.Duration) (ok bool) {
	ev := s.ev.Load()
	defer func() {
		if r := recover(); r != nil {
			s.evPanicked(r)
			ok = false
		}
	}()
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if ev.closed {
		return true
	}
	if !s.evWork(ev, client, events, clock) {
		return false
	}
	if c, u := s.evInterest(ev); c != ev.cEvents || u != ev.uEvents {
		if c != ev.cEvents {
			ev.cEvents = c
			ev.p.modify(ev.cfd, c)
		}
		if u != ev.uEvents {
			ev.uEvents = u
			ev.p.modify(ev.ufd, u)
		}
	}
	return true
}

// evPanicked logs a panic of the session's handlers and tells the client;
// the caller ends the session. [loop]
func (s *Session) evPanicked(r any) {
	s.log.Error("pgveil: BUG: session panicked", "panic", fmt.Sprint(r))
	s.cwMu.Lock()
	s.writeError(&pgError{code: codeInternal, msg: "pgveil: internal error; the session was closed"}, true)
	_ = s.cw.Flush()
	s.cwMu.Unlock()
}

// evWork writes what waits for a writable socket, reads what a readable one
// holds and handles every whole frame in memory; events 0 handles only what
// is in memory. false ends the session. *clock is when the work began (a
// monoNow reading) on entry, when it ended on return: the loop reads the
// clock once per event. [loop, under ev.mu]
func (s *Session) evWork(ev *evState, client bool, events uint32, clock *time.Duration) bool {
	var err error
	if events&syscall.EPOLLOUT != 0 {
		if client {
			s.cwMu.Lock()
			err = ev.cwr.flushPending()
			s.cwMu.Unlock()
		} else {
			err = ev.uwr.flushPending()
		}
	}
	var eof bool
	if err == nil && events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		if client {
			eof, err = ev.cin.readFrom(ev.cfd)
		} else {
			eof, err = ev.uin.readFrom(ev.ufd)
		}
	}
	return s.evHandle(ev, client, clock, eof, err)
}

// evHandle handles every whole frame of the side in memory, unless err (a
// failed read or write) ends the session; so does eof (the peer closed its
// side), after the frames. false ends the session. *clock as for evWork.
// [loop, under ev.mu]
func (s *Session) evHandle(ev *evState, client bool, clock *time.Duration, eof bool, err error) bool {
	beganMono := *clock
	if err == nil {
		if client {
			err = s.evClientFrames(ev, beganMono)
		} else {
			s.srvState.arrived = beganMono
			err = s.evServerFrames(ev)
		}
	}
	*clock = monoNow()
	s.overhead.Add(int64(*clock - beganMono))
	if err == nil && eof {
		err = io.EOF
	}
	if err == nil {
		return true
	}
	var fatal *fatalError
	if errors.As(err, &fatal) {
		s.cwMu.Lock()
		s.writeError(fatal.err, true)
		_ = s.cw.Flush()
		s.cwMu.Unlock()
	} else if !client && !isClosedErr(err) && !errors.Is(err, syscall.ECONNRESET) && !s.closing.Load() {
		s.srv.Metrics.UpstreamError(UpstreamIO)
	}
	if !isClosedErr(err) && !errors.Is(err, syscall.ECONNRESET) && fatal == nil {
		s.log.Debug("session ended", "side", sideName(client), "error", err.Error())
	}
	return false
}

func sideName(client bool) string {
	if client {
		return "client"
	}
	return "server"
}

// evClientFrames handles the client's whole frames in memory, then sends
// what they produced upstream.
func (s *Session) evClientFrames(ev *evState, began time.Duration) error {
	for {
		typ, _, err := ev.cin.next()
		if err == errWouldBlock {
			break
		}
		if err := s.onClientMessage(typ, err, began); err != nil {
			return err
		}
	}
	ev.cin.shrink()
	return s.uw.Flush()
}

// evServerFrames handles the server's whole frames in memory, then sends
// what they produced to the client.
func (s *Session) evServerFrames(ev *evState) error {
	st := &s.srvState
	s.cwMu.Lock()
	defer s.cwMu.Unlock()
	for {
		typ, _, err := ev.uin.next()
		if err == errWouldBlock {
			break
		}
		// A frame over the limit goes to its handler too: forwarded as
		// its bytes arrive or skipped, never held (serverTooLarge).
		if err != nil && !isTooLarge(err) {
			return err
		}
		if err := s.onServerMessage(st, typ); err != nil {
			return s.serverTooLarge(err)
		}
	}
	ev.uin.shrink()
	return s.cw.Flush()
}

// evInterest: a side with output waiting is watched for writability, and
// the side feeding it is not read until that output is gone. [under ev.mu]
func (s *Session) evInterest(ev *evState) (c, u uint32) {
	s.cwMu.Lock()
	cPending := len(ev.cwr.pending) > 0
	s.cwMu.Unlock()
	uPending := len(ev.uwr.pending) > 0
	c, u = syscall.EPOLLRDHUP, syscall.EPOLLRDHUP
	if !uPending {
		c |= syscall.EPOLLIN
	}
	if cPending {
		c |= evWrite
	}
	if !cPending {
		u |= syscall.EPOLLIN
	}
	if uPending {
		u |= evWrite
	}
	return c, u
}

// fdWriter writes to a non-blocking socket without waiting: what the
// kernel does not take is kept in pending and sent when epoll reports the
// socket writable. Writes happen under evState.mu (or cwMu with err
// checked), so the descriptor is never closed under them.
type fdWriter struct {
	fd      int
	pending []byte
	err     error
	// On an io_uring loop (queue), Write only queues in pending: the loop
	// sends it with its next submission, and inflight is what a send in
	// flight (sending) holds. [under evState.mu, and cwMu for the client]
	queue    bool
	sending  bool
	inflight []byte
}

// unsent is what was written and not yet taken by the kernel.
func (w *fdWriter) unsent() int { return len(w.pending) + len(w.inflight) }

func (w *fdWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.queue && cap(w.pending)-len(w.pending) < len(p) {
		w.grow(len(p))
	}
	if w.queue || len(w.pending) > 0 {
		w.pending = append(w.pending, p...)
		return len(p), nil
	}
	n, err := w.write(p)
	if err != nil {
		w.err = err
		return 0, err
	}
	if n < len(p) {
		w.pending = append(w.pending, p[n:]...)
	}
	return len(p), nil
}

func (w *fdWriter) flushPending() error {
	if len(w.pending) == 0 || w.err != nil {
		return w.err
	}
	n, err := w.write(w.pending)
	if err != nil {
		w.err = err
		return err
	}
	rest := copy(w.pending, w.pending[n:])
	w.pending = w.pending[:rest]
	if rest == 0 && cap(w.pending) > 4*ioBufferSize {
		w.pending = nil
	}
	return nil
}

// write writes what the socket takes now.
func (w *fdWriter) write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, errno := rawWrite(w.fd, p[n:])
		switch errno {
		case 0:
			n += m
		case syscall.EINTR:
		case syscall.EAGAIN:
			return n, nil
		default:
			return n, errno
		}
	}
	return n, nil
}

// readFrom reads what fd holds (up to maxReadPerEvent) into m. eof reports
// that the peer closed its side. [loop]
func (m *memFrames) readFrom(fd int) (eof bool, err error) {
	for total := 0; total < maxReadPerEvent; {
		spare := m.spare()
		n, errno := rawRead(fd, spare)
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return false, nil
		case errno != 0:
			return false, errno
		case n == 0:
			return true, nil
		}
		m.filled(n)
		total += n
		m.full = n == len(spare)
		if n < len(spare) {
			// Drained, most likely: a read to confirm would cost a system
			// call per message; level-triggered epoll reports anything left.
			return false, nil
		}
	}
	return false, nil
}

// Raw system calls (see the top of the file for why). recvfrom and sendto
// rather than read and write: on a socket they skip the VFS layer
// (fdget_pos, vfs_read, sock_read_iter), as PgBouncer's recv and send do,
// and MSG_NOSIGNAL turns a write to a closed peer into EPIPE, not SIGPIPE.

func rawEpollWait(epfd int, events []syscall.EpollEvent, msec int) (int, syscall.Errno) {
	r, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(msec), 0, 0)
	return int(r), errno
}

func rawRead(fd int, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	r, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
	return int(r), errno
}

func rawWrite(fd int, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	r, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_NOSIGNAL, 0, 0)
	return int(r), errno
}

// dupSocket duplicates c's descriptor (close-on-exec).
func dupSocket(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var errno syscall.Errno
	if cerr := rc.Control(func(orig uintptr) {
		r, _, e := syscall.RawSyscall(syscall.SYS_FCNTL, orig, syscall.F_DUPFD_CLOEXEC, 0)
		fd, errno = int(r), e
	}); cerr != nil {
		return -1, cerr
	}
	if errno != 0 {
		return -1, errno
	}
	return fd, nil
}

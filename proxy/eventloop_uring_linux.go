//go:build linux

package proxy

// The event loop on io_uring.
//
// Why: an epoll loop makes, per message it relays, a system call to learn
// that a socket is readable, one to read it and one to write the message
// on; for a pgbench transaction that is about six. On io_uring the loop
// makes one, io_uring_enter, per round of work: it submits the sends the
// round produced and waits for the next completions, and each socket has
// one multishot receive outstanding that reads into buffers the kernel
// takes from a ring pgveil provides. On these small machines, where system
// call entry costs a quarter of a microsecond and PgBouncer makes as many
// as the epoll loop, that is the difference: pgveil on io_uring spends about
// a fifth less CPU per pgbench transaction than on epoll, and less than
// PgBouncer (docs/BENCHMARKS.md, which also has scripts/bench/relay, a bare
// relay, on each).
//
// The protocol code is the epoll loop's (evHandle); what differs:
//   - Input: a receive completion's bytes are copied into the side's
//     memFrames, and the buffer goes back to the ring at once.
//   - Output: fdWriter only queues (Write never makes a system call); after
//     each completion the loop submits one send per socket with bytes
//     queued and none in flight. Bytes sent are kept until the send
//     completes, so the kernel never reads freed or reused memory.
//   - Flow control: a side is not read (its receive is cancelled) while
//     more than uringBackpressure bytes wait to go to the other side, so a
//     session's memory does not grow with a result its client reads slowly.
//   - Ending: only the loop's thread may submit (IORING_SETUP_SINGLE_ISSUER),
//     so endEvented posts a request; the loop sends what is queued (a FATAL),
//     cancels every operation on both sockets, and closes them and done once
//     the last completion is in. A descriptor is never closed, or handed to
//     a kept-upstream pool, while the kernel can still use it.
//   - Other goroutines post requests (a new session, an ending one) and
//     wake the loop with an eventfd write when it sleeps.
//
// The ring needs Linux 6.1; where io_uring is refused (older kernels,
// Docker's default seccomp profile) the loops use epoll.

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pgveil/pgveil/internal/uring"
)

const (
	uringEntries = 256      // submission slots (completions: 4 times as many)
	uringBufs    = 64       // provided receive buffers per loop
	uringBufSize = 16 << 10 // bytes per buffer: 1 MiB per loop
	// uringBackpressure is how many bytes may wait to go to one side
	// before the other side is no longer read.
	uringBackpressure = maxReadPerEvent
	// uringSubmitEarly: a send this large is submitted at once, not with
	// the round's others, so that a large result moves through a small
	// buffer (one round can bring a socket's whole receive buffer).
	uringSubmitEarly = ioBufferSize
)

// Kinds of operation, in the top half of user_data; the bottom half is
// the descriptor.
const (
	ukRecv = 1 + iota
	ukSend
	ukCancel
	ukWake
)

func uringData(kind uint64, fd int) uint64 { return kind<<32 | uint64(uint32(fd)) }

// uringRecv is the state of a socket's multishot receive. [loop, ev.mu]
type uringRecv struct {
	armed  bool // outstanding: its last completion has not come
	cancel bool // a cancel for it was submitted
}

// uringRequest asks the loop to start carrying a session (its receives
// are armed, what startup queued is sent) or, with remove, to stop.
type uringRequest struct {
	s      *Session
	ev     *evState
	remove bool
}

// uringLoop is the io_uring state of a poller.
type uringLoop struct {
	r       *uring.Ring
	efd     int     // eventfd other goroutines wake the loop with
	wakeBuf [8]byte // where the loop's read of efd lands
	// sleeping is set while the loop may be waiting in io_uring_enter:
	// post then writes efd.
	sleeping atomic.Bool
	mu       sync.Mutex
	reqs     []uringRequest // guarded by mu
	spare    []uringRequest // the loop's
}

// newUringPoller starts an event loop on io_uring, or reports why it
// cannot.
func newUringPoller() (*poller, error) {
	p := &poller{epfd: -1, u: &uringLoop{efd: -1}}
	ready := make(chan error, 1)
	go p.runUring(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return p, nil
}

func (p *poller) runUring(ready chan<- error) {
	// The ring belongs to the thread that made it: only it may submit
	// (SINGLE_ISSUER), and completions run in its io_uring_enter
	// (DEFER_TASKRUN). The goroutine stays on that thread for good.
	runtime.LockOSThread()
	u := p.u
	r, err := uring.New(uringEntries, uringBufs, uringBufSize, pollTimeoutMS*time.Millisecond)
	if err == nil {
		efd, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
		if errno != 0 {
			r.Close()
			err = errno
		} else {
			u.efd = int(efd)
		}
	}
	if err != nil {
		runtime.UnlockOSThread()
		ready <- err
		return
	}
	u.r = r
	u.armWake()
	ready <- nil
	for {
		u.sleeping.Store(true)
		p.takeRequests()
		errno := r.Enter(true)
		u.sleeping.Store(false)
		switch errno {
		case 0, syscall.EBUSY:
		case syscall.EINTR, syscall.ETIME:
			// A signal (the runtime's preemption request) or the
			// timeout: yield, as the epoll loop does (see run).
			p.yields.Add(1)
			runtime.Gosched()
		default:
			// Only a bug gets here; do not spin.
			time.Sleep(10 * time.Millisecond)
		}
		clock := monoNow()
		r.Completions(func(c uring.CQE) { p.uringCompletion(c, &clock) })
	}
}

// post hands the loop a request. Any goroutine.
func (u *uringLoop) post(req uringRequest) {
	u.mu.Lock()
	u.reqs = append(u.reqs, req)
	u.mu.Unlock()
	// After the append: a loop that set sleeping before taking requests
	// either saw this one or is woken.
	if u.sleeping.Load() {
		one := [8]byte{1}
		_, _ = syscall.Write(u.efd, one[:])
	}
}

// takeRequests carries out the requests posted since the last round. [loop]
func (p *poller) takeRequests() {
	u := p.u
	u.mu.Lock()
	reqs := u.reqs
	u.reqs = u.spare
	u.mu.Unlock()
	for i, req := range reqs {
		p.uringRequest(req)
		reqs[i] = uringRequest{}
	}
	u.spare = reqs[:0]
}

func (p *poller) uringRequest(req uringRequest) {
	s, ev := req.s, req.ev
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if !req.remove {
		if !ev.closed {
			p.uringSync(s, ev)
		}
		return
	}
	// Send what is queued (the FATAL a session may end with), then cancel
	// every operation on either socket: the sends are issued first, in
	// submission order, so only one the peer does not take is cancelled.
	ev.removing = true
	p.u.send(&ev.uwr)
	s.cwMu.Lock()
	p.u.send(&ev.cwr)
	s.cwMu.Unlock()
	for _, fd := range [2]int{ev.cfd, ev.ufd} {
		p.u.r.CancelFD(fd, uringData(ukCancel, fd))
	}
	ev.cRecv.cancel, ev.uRecv.cancel = ev.cRecv.armed, ev.uRecv.armed
	p.uringSettle(s, ev)
}

// uringCompletion dispatches one completion. [loop]
func (p *poller) uringCompletion(c uring.CQE, clock *time.Duration) {
	kind, fd := c.UserData>>32, int(int32(uint32(c.UserData)))
	switch kind {
	case ukWake:
		p.u.armWake()
		return
	case ukCancel:
		return
	}
	p.mu.Lock()
	var e pollEntry
	if fd >= 0 && fd < len(p.byFD) {
		e = p.byFD[fd]
	}
	p.mu.Unlock()
	if e.s == nil {
		// Not expected: a session stays registered until its last
		// completion is in.
		if id, ok := c.Buffer(); ok {
			p.u.r.ReturnBuf(id)
		}
		return
	}
	if !e.s.uringEvent(p, e.client, kind, c, clock) {
		e.s.kill()
	}
}

// uringEvent handles a completion of one of the session's operations;
// false ends the session. A panic ends only this session. [loop]
func (s *Session) uringEvent(p *poller, client bool, kind uint64, c uring.CQE, clock *time.Duration) (ok bool) {
	ev := s.ev.Load()
	defer func() {
		if r := recover(); r != nil {
			s.evPanicked(r)
			ok = false
		}
	}()
	ev.mu.Lock()
	defer ev.mu.Unlock()
	live := !ev.closed && !s.closing.Load()
	ok = true
	switch kind {
	case ukRecv:
		rs, in := &ev.uRecv, &ev.uin
		if client {
			rs, in = &ev.cRecv, &ev.cin
		}
		if !c.More() {
			*rs = uringRecv{}
		}
		if id, ok := c.Buffer(); ok {
			if c.Res > 0 {
				// Kept even on a session that is ending: bytes the
				// server sent then make its connection unfit to keep
				// (keptEventedUpstream).
				in.write(p.u.r.Buf(id, int(c.Res)))
			}
			p.u.r.ReturnBuf(id)
		}
		if live {
			var err error
			if c.Res < 0 && c.Res != -int32(syscall.ENOBUFS) && c.Res != -int32(syscall.ECANCELED) {
				err = syscall.Errno(-c.Res)
			}
			ok = s.evHandle(ev, client, clock, c.Res == 0, err)
		}
	case ukSend:
		w := &ev.uwr
		if client {
			w = &ev.cwr
			s.cwMu.Lock()
		}
		err := w.sent(c.Res)
		if client {
			s.cwMu.Unlock()
		}
		if err != nil && live {
			ok = s.evHandle(ev, client, clock, false, err)
		}
	}
	if ok && live {
		p.uringSync(s, ev)
	}
	p.uringSettle(s, ev)
	return ok
}

// uringSync submits a send for each side with bytes queued, and arms or
// cancels each side's receive as flow control wants. [loop, under ev.mu]
func (p *poller) uringSync(s *Session, ev *evState) {
	u := p.u
	u.send(&ev.uwr)
	s.cwMu.Lock()
	u.send(&ev.cwr)
	toClient := ev.cwr.unsent()
	s.cwMu.Unlock()
	u.want(&ev.cRecv, ev.cfd, ev.uwr.unsent() < uringBackpressure)
	u.want(&ev.uRecv, ev.ufd, toClient < uringBackpressure)
}

// uringSettle finishes a session that is being removed once none of its
// operations is outstanding: its sockets close (the upstream one is kept
// when the session left it idle) and done closes. [loop, under ev.mu]
func (p *poller) uringSettle(s *Session, ev *evState) {
	if !ev.removing || ev.finished || ev.cRecv.armed || ev.uRecv.armed || ev.uwr.sending {
		return
	}
	s.cwMu.Lock()
	sending := ev.cwr.sending
	s.cwMu.Unlock()
	if sending {
		return
	}
	ev.finished = true
	p.remove(s, ev)
	_ = syscall.Close(ev.cfd)
	if s.reuse.Load() {
		ev.keptFD = ev.ufd
	} else {
		_ = syscall.Close(ev.ufd)
	}
	ev.once.Do(func() { close(ev.done) })
}

// send submits what w has queued, if no send of w is in flight. The bytes
// stay in w.inflight, untouched, until the send completes. [loop]
func (u *uringLoop) send(w *fdWriter) {
	if w.sending || len(w.pending) == 0 {
		return
	}
	w.inflight, w.pending = w.pending, w.inflight[:0]
	w.sending = true
	u.r.Send(w.fd, w.inflight, uringData(ukSend, w.fd))
	if len(w.inflight) >= uringSubmitEarly {
		// Sent now if the socket takes it; its completion comes in this
		// round.
		_ = u.r.Enter(false)
	}
}

// sendBufPool recycles the large queue buffers of sessions moving large
// results (fdWriter.grow): one round can queue a few hundred kilobytes,
// and buffers grown by append for each round and dropped after it made
// the garbage collector run every few milliseconds.
var sendBufPool sync.Pool

// sendBufLarge is the size of the pooled buffers.
const sendBufLarge = 1 << 20

// grow makes room for n more bytes in w.pending: small buffers grow as
// append would; past ioBufferSize, a pooled one is taken.
func (w *fdWriter) grow(n int) {
	need := len(w.pending) + n
	var b []byte
	switch {
	case need <= ioBufferSize:
		b = make([]byte, len(w.pending), max(need, 2*cap(w.pending), 512))
	case need <= sendBufLarge:
		if v, ok := sendBufPool.Get().(*[]byte); ok {
			b = (*v)[:len(w.pending)]
		} else {
			b = make([]byte, len(w.pending), sendBufLarge)
		}
	default:
		b = make([]byte, len(w.pending), 2*need)
	}
	copy(b, w.pending)
	releaseSendBuf(w.pending)
	w.pending = b
}

// releaseSendBuf gives a pooled buffer back; others are left to the GC.
func releaseSendBuf(b []byte) {
	if cap(b) == sendBufLarge {
		b = b[:0]
		sendBufPool.Put(&b)
	}
}

// sent takes the completion of w's send. [loop]
func (w *fdWriter) sent(res int32) error {
	w.sending = false
	if res < 0 {
		if w.err == nil || w.err == net.ErrClosed {
			w.err = syscall.Errno(-res)
		}
		w.inflight, w.pending = w.inflight[:0], nil
		return w.err
	}
	if int(res) < len(w.inflight) {
		// Not expected with MSG_WAITALL; the rest goes first.
		rest := make([]byte, 0, len(w.inflight)-int(res)+len(w.pending))
		w.pending = append(append(rest, w.inflight[res:]...), w.pending...)
	}
	w.inflight = w.inflight[:0]
	if cap(w.inflight) > ioBufferSize {
		releaseSendBuf(w.inflight)
		w.inflight = nil
	}
	return nil
}

// want arms fd's multishot receive, or cancels it. [loop]
func (u *uringLoop) want(rs *uringRecv, fd int, read bool) {
	switch {
	case read && !rs.armed:
		u.r.RecvMultishot(fd, uringData(ukRecv, fd))
		rs.armed = true
	case !read && rs.armed && !rs.cancel:
		u.r.Cancel(uringData(ukRecv, fd), uringData(ukCancel, fd))
		rs.cancel = true
	}
}

// armWake reads the eventfd other goroutines wake the loop with. [loop]
func (u *uringLoop) armWake() {
	u.r.Read(u.efd, u.wakeBuf[:], uringData(ukWake, u.efd))
}

//go:build linux

package main

import (
	"fmt"
	"runtime"
	"syscall"
	"time"

	"github.com/pgveil/pgveil/internal/uring"
)

// User data: the kind of operation in the top half, the descriptor in the
// bottom one.
const (
	kindAccept = 1 << 32
	kindRecv   = 2 << 32
	kindSend   = 3 << 32
	kindCancel = 4 << 32
)

// uconn is one socket of a relayed pair.
type uconn struct {
	fd            int
	peer          *uconn
	out, inflight []byte // queued; being sent
	sending       bool
	recving       bool // its multishot receive is outstanding
	dead          bool // being closed
	closed        bool
}

// relayUring is relayEpoll on io_uring: one io_uring_enter per round
// submits the round's sends and waits for completions; each socket has a
// multishot receive into provided buffers. Connecting is a blocking call
// on the loop, as in relayEpoll.
func relayUring(listen, upstream string) error {
	runtime.LockOSThread() // the ring's single issuer
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	lfd, ua, err := listenRaw(listen, upstream)
	if err != nil {
		return err
	}
	r, err := uring.New(256, 256, 16<<10, 50*time.Millisecond)
	if err != nil {
		return err
	}
	conns := map[int]*uconn{}
	send := func(c *uconn) {
		if c.sending || len(c.out) == 0 || c.dead {
			return
		}
		c.out, c.inflight = c.inflight[:0], c.out
		c.sending = true
		r.Send(c.fd, c.inflight, kindSend|uint64(c.fd))
	}
	// A socket closes once nothing of its is in flight, so that its
	// descriptor number, reused, never meets an old completion.
	settle := func(c *uconn) {
		if c.dead && !c.closed && !c.sending && !c.recving {
			c.closed = true
			delete(conns, c.fd)
			_ = syscall.Close(c.fd)
		}
	}
	kill := func(c *uconn) {
		for _, x := range []*uconn{c, c.peer} {
			if !x.dead {
				x.dead = true
				r.CancelFD(x.fd, kindCancel|uint64(x.fd))
				settle(x)
			}
		}
	}
	r.Accept(lfd, kindAccept)
	for {
		switch errno := r.Enter(true); errno {
		case 0, syscall.ETIME:
		case syscall.EINTR:
			runtime.Gosched()
		default:
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
		r.Completions(func(q uring.CQE) {
			fd := int(uint32(q.UserData))
			switch q.UserData &^ 0xffffffff {
			case kindAccept:
				if !q.More() {
					r.Accept(lfd, kindAccept)
				}
				if q.Res < 0 {
					return
				}
				u, err := dialRaw(int(q.Res), ua)
				if err != nil {
					_ = syscall.Close(int(q.Res))
					return
				}
				a, b := &uconn{fd: int(q.Res), recving: true}, &uconn{fd: u, recving: true}
				a.peer, b.peer = b, a
				conns[a.fd], conns[b.fd] = a, b
				r.RecvMultishot(a.fd, kindRecv|uint64(a.fd))
				r.RecvMultishot(b.fd, kindRecv|uint64(b.fd))
			case kindRecv:
				c := conns[fd]
				if id, ok := q.Buffer(); ok {
					if q.Res > 0 {
						c.peer.out = append(c.peer.out, r.Buf(id, int(q.Res))...)
						send(c.peer)
					}
					r.ReturnBuf(id)
				}
				if !q.More() {
					c.recving = false
					if !c.dead && (q.Res > 0 || q.Res == -int32(syscall.ENOBUFS)) {
						c.recving = true
						r.RecvMultishot(fd, kindRecv|uint64(fd))
					} else {
						kill(c)
					}
				}
				settle(c)
			case kindSend:
				c := conns[fd]
				c.sending = false
				c.inflight = c.inflight[:0]
				if q.Res < 0 {
					kill(c)
				}
				send(c)
				settle(c)
			}
		})
	}
}

//go:build linux

// Command relay is a bare TCP relay used by scripts/bench.sh as a reference
// point: it forwards bytes between a client and PostgreSQL and does nothing
// else, so its CPU time per transaction is the floor for a proxy built the
// same way.
//
//	relay -mode goroutines LISTEN UPSTREAM   two goroutines per connection, io.Copy each way
//	relay -mode epoll LISTEN UPSTREAM        one goroutine, raw epoll, raw system calls
//	relay -mode uring LISTEN UPSTREAM        one goroutine on io_uring (internal/uring)
//
// The first is how most Go proxies move bytes (and pgveil's goroutine engine,
// proxy.event_loops: 0): blocking reads on net.Conn, woken by the runtime's
// netpoller. The second bypasses the netpoller and the goroutine scheduler,
// as PgBouncer's libevent loop does and as pgveil's event loop does: its
// system calls are made with syscall.RawSyscall, so the scheduler never
// hands its processor to another thread while it waits (see
// proxy/eventloop_linux.go). The third is the second on io_uring, as
// pgveil's event loop runs where the kernel offers it
// (proxy/eventloop_uring_linux.go).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

func main() {
	mode := flag.String("mode", "goroutines", "goroutines | epoll | uring")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: relay -mode goroutines|epoll|uring LISTEN_ADDR UPSTREAM_ADDR")
		os.Exit(2)
	}
	var err error
	switch *mode {
	case "goroutines":
		err = relayGoroutines(flag.Arg(0), flag.Arg(1))
	case "epoll":
		err = relayEpoll(flag.Arg(0), flag.Arg(1))
	case "uring":
		err = relayUring(flag.Arg(0), flag.Arg(1))
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}

func relayGoroutines(listen, upstream string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				return
			}
			defer u.Close()
			go func() {
				_, _ = io.Copy(u, c)
				_ = u.Close()
			}()
			_, _ = io.Copy(c, u)
		}()
	}
}

func sockaddr(addr string) (*syscall.SockaddrInet4, error) {
	a, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return nil, err
	}
	sa := &syscall.SockaddrInet4{Port: a.Port}
	copy(sa.Addr[:], a.IP.To4())
	return sa, nil
}

// listenRaw opens a listening socket on listen and resolves upstream.
func listenRaw(listen, upstream string) (int, *syscall.SockaddrInet4, error) {
	la, err := sockaddr(listen)
	if err != nil {
		return -1, nil, err
	}
	ua, err := sockaddr(upstream)
	if err != nil {
		return -1, nil, err
	}
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	if err := syscall.SetsockoptInt(lfd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return -1, nil, err
	}
	if err := syscall.Bind(lfd, la); err != nil {
		return -1, nil, err
	}
	if err := syscall.Listen(lfd, 512); err != nil {
		return -1, nil, err
	}
	return lfd, ua, nil
}

// dialRaw connects to upstream and sets TCP_NODELAY on both sockets of
// the pair. A blocking connect: the relay is a benchmark reference, its
// upstream is local.
func dialRaw(client int, ua *syscall.SockaddrInet4) (int, error) {
	u, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := syscall.Connect(u, ua); err != nil {
		_ = syscall.Close(u)
		return -1, err
	}
	_ = syscall.SetsockoptInt(client, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	_ = syscall.SetsockoptInt(u, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	return u, nil
}

func relayEpoll(listen, upstream string) error {
	// One processor stays with this loop while it waits in epoll_wait;
	// accept and connect run on it too.
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	lfd, ua, err := listenRaw(listen, upstream)
	if err != nil {
		return err
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	watch := func(fd int) error {
		return syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)})
	}
	if err := watch(lfd); err != nil {
		return err
	}
	peer := map[int]int{}
	closePair := func(fd int) {
		p := peer[fd]
		delete(peer, fd)
		delete(peer, p)
		_ = syscall.Close(fd)
		_ = syscall.Close(p)
	}
	buf := make([]byte, 64<<10)
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := epollWaitRaw(ep, events)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == lfd {
				c, _, err := syscall.Accept4(lfd, syscall.SOCK_CLOEXEC)
				if err != nil {
					continue
				}
				u, err := dialRaw(c, ua)
				if err != nil {
					_ = syscall.Close(c)
					continue
				}
				peer[c], peer[u] = u, c
				if watch(c) != nil || watch(u) != nil {
					closePair(c)
				}
				continue
			}
			p, ok := peer[fd]
			if !ok {
				continue
			}
			m, err := readRaw(fd, buf)
			if m <= 0 || err != nil {
				closePair(fd)
				continue
			}
			// Blocking sockets: a write completes (the peer's receive
			// buffer drains, since its reader is the other side's loop or
			// a client). A benchmark reference, not a proxy.
			for off := 0; off < m; {
				w, err := writeRaw(p, buf[off:m])
				if err != nil {
					closePair(fd)
					break
				}
				off += w
			}
		}
	}
}

// Raw system calls: the runtime is not told, so it does not hand this
// goroutine's processor to another thread during them. recv and send, as
// PgBouncer and pgveil's event loop use, not read and write.

func epollWaitRaw(ep int, events []syscall.EpollEvent) (int, error) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 50, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func readRaw(fd int, b []byte) (int, error) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func writeRaw(fd int, b []byte) (int, error) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), syscall.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

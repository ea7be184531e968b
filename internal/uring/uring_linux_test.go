//go:build linux

package uring

import (
	"bytes"
	"errors"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// newRing makes a ring on the test's thread, or skips where the kernel
// refuses io_uring (pgveil's loops then use epoll).
func newRing(t *testing.T, entries uint32, nbufs, bufSize int) *Ring {
	t.Helper()
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	r, err := New(entries, nbufs, bufSize, 50*time.Millisecond)
	if errors.Is(err, ErrUnavailable) {
		// Only a kernel that refuses io_uring skips (pgveil then
		// uses epoll, which the other tests cover); a failure to set
		// up a ring it offers fails.
		t.Skipf("this kernel offers no io_uring: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func socketPair(t *testing.T) (a, b int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fds[0]); syscall.Close(fds[1]) })
	return fds[0], fds[1]
}

// wait enters until n completions are in (or a few timeouts pass) and
// returns them, with the bytes of the receives, whose buffers it returns.
func wait(t *testing.T, r *Ring, n int) ([]CQE, [][]byte) {
	t.Helper()
	var got []CQE
	var data [][]byte
	for tries := 0; len(got) < n && tries < 20; tries++ {
		if errno := r.Enter(true); errno != 0 && errno != syscall.ETIME && errno != syscall.EINTR {
			t.Fatalf("enter: %v", errno)
		}
		r.Completions(func(c CQE) {
			got = append(got, c)
			var b []byte
			if id, ok := c.Buffer(); ok {
				if c.Res > 0 {
					b = bytes.Clone(r.Buf(id, int(c.Res)))
				}
				r.ReturnBuf(id)
			}
			data = append(data, b)
		})
	}
	if len(got) < n {
		t.Fatalf("%d completions, want %d: %+v", len(got), n, got)
	}
	return got, data
}

func TestRecvMultishotAndSend(t *testing.T) {
	r := newRing(t, 8, 4, 64)
	a, b := socketPair(t)
	r.RecvMultishot(a, 1)
	// More messages than buffers: each goes back to the ring once read.
	for i := 0; i < 10; i++ {
		msg := bytes.Repeat([]byte{byte('a' + i)}, 10+i)
		if _, err := syscall.Write(b, msg); err != nil {
			t.Fatal(err)
		}
		cqes, data := wait(t, r, 1)
		if c := cqes[0]; c.UserData != 1 || !c.More() || !bytes.Equal(data[0], msg) {
			t.Fatalf("receive %d: %+v %q, want user data 1, more, %q", i, c, data[0], msg)
		}
	}
	// A message larger than a buffer arrives in buffer-sized pieces.
	big := bytes.Repeat([]byte("xyz"), 50)
	if _, err := syscall.Write(b, big); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for len(got) < len(big) {
		_, data := wait(t, r, 1)
		got = append(got, bytes.Join(data, nil)...)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("big message: %q", got)
	}

	out := []byte("hello from the ring")
	r.Send(a, out, 2)
	cqes, _ := wait(t, r, 1)
	if cqes[0].UserData != 2 || int(cqes[0].Res) != len(out) {
		t.Fatalf("send: %+v", cqes[0])
	}
	buf := make([]byte, 64)
	if n, err := syscall.Read(b, buf); err != nil || !bytes.Equal(buf[:n], out) {
		t.Fatalf("peer read %q %v", buf[:n], err)
	}

	// The peer's close ends the multishot receive with 0.
	syscall.Shutdown(b, syscall.SHUT_WR)
	cqes, _ = wait(t, r, 1)
	if c := cqes[0]; c.UserData != 1 || c.Res != 0 || c.More() {
		t.Fatalf("end of stream: %+v", c)
	}
}

func TestOutOfBuffers(t *testing.T) {
	r := newRing(t, 8, 2, 64)
	a, b := socketPair(t)
	r.RecvMultishot(a, 1)
	var last CQE
	for i := 0; i < 3; i++ {
		syscall.Write(b, []byte("ping"))
		for tries := 0; tries < 5; tries++ {
			r.Enter(true)
			var n int
			r.Completions(func(c CQE) { last = c; n++ }) // buffers kept
			if n > 0 {
				break
			}
		}
	}
	if last.Res != -int32(syscall.ENOBUFS) || last.More() {
		t.Fatalf("third receive with two buffers held: %+v, want ENOBUFS, no more", last)
	}
}

func TestCancel(t *testing.T) {
	r := newRing(t, 8, 4, 64)
	a, _ := socketPair(t)
	c, _ := socketPair(t)
	r.RecvMultishot(a, 1)
	r.RecvMultishot(c, 2)
	r.Enter(false)
	r.Cancel(1, 9)
	r.CancelFD(c, 10)
	cqes, _ := wait(t, r, 4)
	byData := map[uint64]CQE{}
	for _, q := range cqes {
		byData[q.UserData] = q
	}
	for _, ud := range []uint64{1, 2} {
		if q := byData[ud]; q.Res != -int32(syscall.ECANCELED) || q.More() {
			t.Errorf("cancelled receive %d: %+v", ud, q)
		}
	}
	if q := byData[9]; q.Res != 0 {
		t.Errorf("cancel by user data: %+v", q)
	}
	if q := byData[10]; q.Res != 1 {
		t.Errorf("cancel by descriptor: %+v, want 1 cancelled", q)
	}
}

// A full submission ring is submitted to make room, not overwritten.
func TestSubmissionRingFull(t *testing.T) {
	r := newRing(t, 2, 2, 64)
	a, b := socketPair(t)
	var want []byte
	msgs := make([][]byte, 7)
	for i := range msgs {
		msgs[i] = []byte{'0' + byte(i), '-'}
		want = append(want, msgs[i]...)
		r.Send(a, msgs[i], uint64(100+i))
	}
	cqes, _ := wait(t, r, len(msgs))
	for _, q := range cqes {
		if q.Res != 2 {
			t.Errorf("send: %+v", q)
		}
	}
	buf := make([]byte, 64)
	if n, err := syscall.Read(b, buf); err != nil || !bytes.Equal(buf[:n], want) {
		t.Fatalf("peer read %q %v, want %q", buf[:n], err, want)
	}
}

func TestEnterTimesOut(t *testing.T) {
	r := newRing(t, 8, 2, 64)
	// The wait ends by the timeout or, sooner, by the runtime's
	// preemption signal (this goroutine holds its processor through the
	// raw system call); never later.
	start := time.Now()
	if errno := r.Enter(true); errno != syscall.ETIME && errno != syscall.EINTR {
		t.Fatalf("enter with nothing to wait for: %v, want ETIME or EINTR", errno)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("waited %v, want at most the 50 ms timeout", d)
	}
}

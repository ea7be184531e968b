//go:build linux

package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	sysSetup    = 425
	sysEnter    = 426
	sysRegister = 427

	setupCQSize       = 1 << 3
	setupSubmitAll    = 1 << 7
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13

	featSingleMmap = 1 << 0
	featNoDrop     = 1 << 1

	enterGetEvents = 1 << 0
	enterExtArg    = 1 << 3

	offSQRing = 0
	offSQEs   = 0x10000000

	opAccept      = 13
	opAsyncCancel = 14
	opRead        = 22
	opSend        = 26
	opRecv        = 27

	sqeBufferSelect = 1 << 5
	recvMultishot   = 1 << 1
	acceptMultishot = 1 << 0
	cancelAll       = 1 << 0
	cancelFD        = 1 << 1

	cqeFBuffer       = 1 << 0
	cqeFMore         = 1 << 1
	cqeBufferShift   = 16
	registerPbufRing = 22
)

type sqOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sq                                                                     sqOffsets
	cq                                                                     cqOffsets
}

// sqe is struct io_uring_sqe (64 bytes).
type sqe struct {
	opcode   uint8
	flags    uint8
	ioprio   uint16
	fd       int32
	off      uint64
	addr     uint64
	len      uint32
	opFlags  uint32 // msg_flags, cancel_flags, ...
	userData uint64
	bufGroup uint16
	_        uint16 // personality
	_        int32  // splice_fd_in
	_        [2]uint64
}

// CQE is a completion: struct io_uring_cqe.
type CQE struct {
	UserData uint64
	Res      int32 // the result, or -errno
	Flags    uint32
}

// More reports that a multishot operation goes on after this completion.
func (c CQE) More() bool { return c.Flags&cqeFMore != 0 }

// Buffer returns the provided buffer a receive completed into.
func (c CQE) Buffer() (id uint16, ok bool) {
	return uint16(c.Flags >> cqeBufferShift), c.Flags&cqeFBuffer != 0
}

type getEventsArg struct {
	sigmask   uint64
	sigmaskSz uint32
	minWait   uint32
	ts        uint64
}

type bufReg struct {
	ringAddr    uint64
	ringEntries uint32
	bgid        uint16
	flags       uint16
	_           [3]uint64
}

// Ring is one io_uring with its provided-buffer ring (group 0).
type Ring struct {
	fd int

	sqHead, sqTail *uint32
	sqMask         uint32
	sqEntries      uint32
	sqes           []sqe
	tail           uint32 // next SQE to fill
	submitted      uint32 // SQEs handed to the kernel

	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []CQE

	bufRing  []byte // io_uring_buf entries
	bufs     []byte
	bufSize  int
	bufMask  uint16
	bufTail  uint16 // entries added; published by publishBufs
	bufDirty bool

	timeout syscall.Timespec
	maps    [][]byte
}

// ErrUnavailable: the kernel (or a seccomp profile, as Docker's default
// one) does not offer what a Ring needs. Other errors of New are failures
// on a kernel that does (out of memory, a bug).
var ErrUnavailable = errors.New("io_uring unavailable")

// New sets up a ring with entries submission slots, four times as many
// completion slots, and nbufs provided receive buffers of bufSize bytes
// (nbufs a power of two). Enter waits at most timeout. It needs Linux 6.1:
// single issuer with deferred task work, which implies multishot receive
// and buffer rings.
func New(entries uint32, nbufs, bufSize int, timeout time.Duration) (*Ring, error) {
	p := params{flags: setupSubmitAll | setupSingleIssuer | setupDeferTaskrun | setupCQSize, cqEntries: 4 * entries}
	fd, _, errno := syscall.RawSyscall(sysSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		if refused(errno) {
			return nil, fmt.Errorf("%w: io_uring_setup: %v", ErrUnavailable, errno)
		}
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &Ring{fd: int(fd), timeout: syscall.NsecToTimespec(int64(timeout))}
	if p.features&featSingleMmap == 0 || p.features&featNoDrop == 0 {
		r.Close()
		return nil, fmt.Errorf("%w: kernel too old", ErrUnavailable)
	}
	ringLen := max(int(p.sq.array)+int(p.sqEntries)*4, int(p.cq.cqes)+int(p.cqEntries)*int(unsafe.Sizeof(CQE{})))
	rm, err := r.mmap(r.fd, offSQRing, ringLen)
	if err != nil {
		r.Close()
		return nil, err
	}
	sm, err := r.mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})))
	if err != nil {
		r.Close()
		return nil, err
	}
	base := unsafe.Pointer(&rm[0])
	r.sqHead = (*uint32)(unsafe.Add(base, p.sq.head))
	r.sqTail = (*uint32)(unsafe.Add(base, p.sq.tail))
	r.sqMask = *(*uint32)(unsafe.Add(base, p.sq.ringMask))
	r.sqEntries = p.sqEntries
	// The index array maps slot i to SQE i, once for all.
	array := unsafe.Slice((*uint32)(unsafe.Add(base, p.sq.array)), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&sm[0])), p.sqEntries)
	r.tail = atomic.LoadUint32(r.sqTail)
	r.submitted = r.tail
	r.cqHead = (*uint32)(unsafe.Add(base, p.cq.head))
	r.cqTail = (*uint32)(unsafe.Add(base, p.cq.tail))
	r.cqMask = *(*uint32)(unsafe.Add(base, p.cq.ringMask))
	r.cqes = unsafe.Slice((*CQE)(unsafe.Add(base, p.cq.cqes)), p.cqEntries)

	// Buffers are anonymous memory outside Go's heap, which the kernel
	// writes at any time. Pages become resident as receives use them.
	if r.bufRing, err = r.mmap(-1, 0, nbufs*16); err != nil {
		r.Close()
		return nil, err
	}
	if r.bufs, err = r.mmap(-1, 0, nbufs*bufSize); err != nil {
		r.Close()
		return nil, err
	}
	r.bufSize, r.bufMask = bufSize, uint16(nbufs-1)
	reg := bufReg{ringAddr: uint64(uintptr(unsafe.Pointer(&r.bufRing[0]))), ringEntries: uint32(nbufs)}
	if _, _, errno := syscall.RawSyscall6(sysRegister, uintptr(r.fd), registerPbufRing, uintptr(unsafe.Pointer(&reg)), 1, 0, 0); errno != 0 {
		r.Close()
		if refused(errno) {
			return nil, fmt.Errorf("%w: registering the buffer ring: %v", ErrUnavailable, errno)
		}
		return nil, fmt.Errorf("registering the buffer ring: %w", errno)
	}
	for i := 0; i < nbufs; i++ {
		r.ReturnBuf(uint16(i))
	}
	r.publishBufs()
	return r, nil
}

// refused reports an errno by which a kernel says it does not offer a
// feature: no io_uring (ENOSYS), forbidden (EPERM, seccomp;
// io_uring_disabled), or a flag it does not know (EINVAL).
func refused(errno syscall.Errno) bool {
	return errno == syscall.ENOSYS || errno == syscall.EPERM || errno == syscall.EINVAL || errno == syscall.EACCES
}

func (r *Ring) mmap(fd int, off int64, n int) ([]byte, error) {
	flags := syscall.MAP_SHARED | syscall.MAP_POPULATE
	if fd < 0 {
		flags = syscall.MAP_PRIVATE | syscall.MAP_ANONYMOUS
	}
	b, err := syscall.Mmap(fd, off, n, syscall.PROT_READ|syscall.PROT_WRITE, flags)
	if err != nil {
		return nil, fmt.Errorf("io_uring mmap: %w", err)
	}
	r.maps = append(r.maps, b)
	return b, nil
}

// Close releases the ring; operations still in flight are cancelled.
func (r *Ring) Close() {
	_ = syscall.Close(r.fd)
	for _, m := range r.maps {
		_ = syscall.Munmap(m)
	}
	r.maps = nil
}

// sqe returns a cleared submission entry to fill; the next Enter submits
// it. When every slot is taken, it submits those first.
func (r *Ring) sqe() *sqe {
	for r.tail-atomic.LoadUint32(r.sqHead) >= r.sqEntries {
		// SUBMIT_ALL: the kernel takes every valid entry; nothing but a
		// signal interrupts that.
		_ = r.Enter(false)
	}
	e := &r.sqes[r.tail&r.sqMask]
	*e = sqe{}
	r.tail++
	return e
}

// Enter submits the queued entries and, with wait, waits for at least one
// completion, or the timeout (ETIME), or a signal (EINTR).
func (r *Ring) Enter(wait bool) syscall.Errno {
	toSubmit := r.tail - r.submitted
	atomic.StoreUint32(r.sqTail, r.tail)
	flags, minComplete := uintptr(0), uintptr(0)
	arg := getEventsArg{ts: uint64(uintptr(unsafe.Pointer(&r.timeout)))}
	if wait {
		flags, minComplete = enterGetEvents|enterExtArg, 1
	}
	n, _, errno := syscall.RawSyscall6(sysEnter, uintptr(r.fd), uintptr(toSubmit), minComplete, flags, uintptr(unsafe.Pointer(&arg)), unsafe.Sizeof(arg))
	if errno == 0 {
		r.submitted += uint32(n)
	} else {
		// Submission comes before the wait: a wait that was interrupted
		// or timed out has submitted what it could.
		r.submitted = atomic.LoadUint32(r.sqHead)
	}
	return errno
}

// Completions calls f for each completion in the ring, and then gives the
// kernel the buffers f returned.
func (r *Ring) Completions(f func(c CQE)) {
	head := *r.cqHead
	for {
		tail := atomic.LoadUint32(r.cqTail)
		if head == tail {
			break
		}
		for head != tail {
			c := r.cqes[head&r.cqMask]
			// The slot is free before f runs: f may submit, and a full
			// submission ring makes sqe enter the kernel.
			head++
			atomic.StoreUint32(r.cqHead, head)
			f(c)
		}
	}
	if r.bufDirty {
		r.publishBufs()
	}
}

// Buf returns the n bytes a receive completed with in provided buffer id.
// They are valid until ReturnBuf(id).
func (r *Ring) Buf(id uint16, n int) []byte {
	off := int(id) * r.bufSize
	return r.bufs[off : off+n : off+n]
}

// ReturnBuf gives buffer id back to the kernel, at the end of the current
// Completions.
func (r *Ring) ReturnBuf(id uint16) {
	e := r.bufRing[int(r.bufTail&r.bufMask)*16:]
	*(*uint64)(unsafe.Pointer(&e[0])) = uint64(uintptr(unsafe.Pointer(&r.bufs[int(id)*r.bufSize])))
	*(*uint32)(unsafe.Pointer(&e[8])) = uint32(r.bufSize)
	*(*uint16)(unsafe.Pointer(&e[12])) = id
	r.bufTail++
	r.bufDirty = true
}

// publishBufs makes the returned buffers visible: the ring's tail is the
// 16-bit field at offset 14, over the first entry's reserved field. The
// store is a release (atomic) one, after the entries' plain stores.
func (r *Ring) publishBufs() {
	word := (*uint32)(unsafe.Pointer(&r.bufRing[12]))
	// Bytes 12-13 are the first entry's buffer id: kept as they are.
	atomic.StoreUint32(word, uint32(r.bufTail)<<16|atomic.LoadUint32(word)&0xffff)
	r.bufDirty = false
}

// RecvMultishot queues a multishot receive on fd into the provided
// buffers: a completion per read, each with More set but the last.
func (r *Ring) RecvMultishot(fd int, userData uint64) {
	e := r.sqe()
	e.opcode, e.fd = opRecv, int32(fd)
	e.ioprio = recvMultishot
	e.flags = sqeBufferSelect // group 0
	e.userData = userData
}

// Send queues a send of p on fd, with MSG_WAITALL (the kernel sends all
// of p, retrying a short send itself) and MSG_NOSIGNAL. p must stay
// untouched until the completion.
func (r *Ring) Send(fd int, p []byte, userData uint64) {
	e := r.sqe()
	e.opcode, e.fd = opSend, int32(fd)
	e.addr, e.len = uint64(uintptr(unsafe.Pointer(&p[0]))), uint32(len(p))
	e.opFlags = syscall.MSG_NOSIGNAL | syscall.MSG_WAITALL
	e.userData = userData
}

// Read queues a read of fd into p (which must stay put until the
// completion).
func (r *Ring) Read(fd int, p []byte, userData uint64) {
	e := r.sqe()
	e.opcode, e.fd = opRead, int32(fd)
	e.addr, e.len = uint64(uintptr(unsafe.Pointer(&p[0]))), uint32(len(p))
	e.userData = userData
}

// Cancel queues the cancellation of the operation with user data target.
func (r *Ring) Cancel(target, userData uint64) {
	e := r.sqe()
	e.opcode, e.fd = opAsyncCancel, -1
	e.addr = target
	e.userData = userData
}

// CancelFD queues the cancellation of every operation on fd.
func (r *Ring) CancelFD(fd int, userData uint64) {
	e := r.sqe()
	e.opcode, e.fd = opAsyncCancel, int32(fd)
	e.opFlags = cancelFD | cancelAll
	e.userData = userData
}

// Accept queues a multishot accept on the listening socket fd: a
// completion per connection (Res is its descriptor), More set but on the
// last.
func (r *Ring) Accept(fd int, userData uint64) {
	e := r.sqe()
	e.opcode, e.fd = opAccept, int32(fd)
	e.ioprio = acceptMultishot
	e.opFlags = syscall.O_CLOEXEC // accept_flags
	e.userData = userData
}

//go:build linux

package proxy

// A minimal io_uring: the rings, submission and completion entries, and a
// ring of provided receive buffers; only what the event loop uses (see
// eventloop_uring_linux.go for why it uses it). The layouts are those of
// <linux/io_uring.h>.

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"
)

const (
	sysIOUringSetup    = 425
	sysIOUringEnter    = 426
	sysIOUringRegister = 427

	uringSetupSubmitAll    = 1 << 7
	uringSetupCQSize       = 1 << 3
	uringSetupSingleIssuer = 1 << 12
	uringSetupDeferTaskrun = 1 << 13

	uringFeatSingleMmap = 1 << 0
	uringFeatNoDrop     = 1 << 1

	uringEnterGetEvents = 1 << 0
	uringEnterExtArg    = 1 << 3

	uringOffSQRing = 0
	uringOffSQEs   = 0x10000000

	uringOpRead        = 22
	uringOpSend        = 26
	uringOpRecv        = 27
	uringOpAsyncCancel = 14

	uringSQEBufferSelect = 1 << 5
	uringRecvMultishot   = 1 << 1
	uringCancelFD        = 1 << 1
	uringCancelAll       = 1 << 0

	uringCQEFBuffer     = 1 << 0
	uringCQEFMore       = 1 << 1
	uringCQEBufferShift = 16

	uringRegisterPbufRing = 22
)

type uringSQOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type uringCQOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sq                                                                     uringSQOffsets
	cq                                                                     uringCQOffsets
}

// uringSQE is struct io_uring_sqe (64 bytes).
type uringSQE struct {
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

// uringCQE is struct io_uring_cqe (16 bytes).
type uringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

type uringGetEventsArg struct {
	sigmask   uint64
	sigmaskSz uint32
	minWait   uint32
	ts        uint64
}

type uringBufReg struct {
	ringAddr    uint64
	ringEntries uint32
	bgid        uint16
	flags       uint16
	_           [3]uint64
}

// uring is one ring, used by the one thread that created it (the kernel
// holds it to that: IORING_SETUP_SINGLE_ISSUER).
type uring struct {
	fd int

	sqHead, sqTail *uint32
	sqMask         uint32
	sqEntries      uint32
	sqes           []uringSQE
	tail           uint32 // next SQE to fill
	submitted      uint32 // SQEs handed to the kernel

	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []uringCQE

	// The provided-buffer ring (group 0) multishot receives take their
	// buffers from: bufRing holds the entries, bufs the buffers.
	bufRing  []byte
	bufs     []byte
	bufSize  int
	bufMask  uint16
	bufTail  uint16 // entries added, published by publishBufs
	bufDirty bool

	timeout syscall.Timespec
	maps    [][]byte
}

// errUringUnavailable: the kernel (or a seccomp profile, as Docker's
// default one) does not offer what the loop needs.
var errUringUnavailable = errors.New("io_uring unavailable")

// newUring sets up a ring with entries submission slots and nbufs
// provided buffers of bufSize bytes. It needs Linux 6.1 (single issuer
// with deferred task work implies multishot receive and buffer rings).
func newUring(entries uint32, nbufs, bufSize int) (*uring, error) {
	p := uringParams{flags: uringSetupSubmitAll | uringSetupSingleIssuer | uringSetupDeferTaskrun | uringSetupCQSize, cqEntries: 4 * entries}
	r1, _, errno := syscall.RawSyscall(sysIOUringSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("%w: io_uring_setup: %v", errUringUnavailable, errno)
	}
	r := &uring{fd: int(r1), timeout: syscall.Timespec{Nsec: pollTimeoutMS * 1e6}}
	if p.features&uringFeatSingleMmap == 0 || p.features&uringFeatNoDrop == 0 {
		r.close()
		return nil, fmt.Errorf("%w: kernel too old", errUringUnavailable)
	}
	ringLen := max(int(p.sq.array)+int(p.sqEntries)*4, int(p.cq.cqes)+int(p.cqEntries)*int(unsafe.Sizeof(uringCQE{})))
	rm, err := r.mmap(r.fd, uringOffSQRing, ringLen)
	if err != nil {
		r.close()
		return nil, err
	}
	sm, err := r.mmap(r.fd, uringOffSQEs, int(p.sqEntries)*int(unsafe.Sizeof(uringSQE{})))
	if err != nil {
		r.close()
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
	r.sqes = unsafe.Slice((*uringSQE)(unsafe.Pointer(&sm[0])), p.sqEntries)
	r.tail = atomic.LoadUint32(r.sqTail)
	r.submitted = r.tail
	r.cqHead = (*uint32)(unsafe.Add(base, p.cq.head))
	r.cqTail = (*uint32)(unsafe.Add(base, p.cq.tail))
	r.cqMask = *(*uint32)(unsafe.Add(base, p.cq.ringMask))
	r.cqes = unsafe.Slice((*uringCQE)(unsafe.Add(base, p.cq.cqes)), p.cqEntries)

	// Buffers are anonymous memory outside Go's heap: the kernel writes
	// them at any time. Pages become resident as receives use them.
	if r.bufRing, err = r.mmap(-1, 0, nbufs*16); err != nil {
		r.close()
		return nil, err
	}
	if r.bufs, err = r.mmap(-1, 0, nbufs*bufSize); err != nil {
		r.close()
		return nil, err
	}
	r.bufSize, r.bufMask = bufSize, uint16(nbufs-1)
	reg := uringBufReg{ringAddr: uint64(uintptr(unsafe.Pointer(&r.bufRing[0]))), ringEntries: uint32(nbufs)}
	if _, _, errno := syscall.RawSyscall6(sysIOUringRegister, uintptr(r.fd), uringRegisterPbufRing, uintptr(unsafe.Pointer(&reg)), 1, 0, 0); errno != 0 {
		r.close()
		return nil, fmt.Errorf("%w: registering the buffer ring: %v", errUringUnavailable, errno)
	}
	for i := 0; i < nbufs; i++ {
		r.returnBuf(uint16(i))
	}
	r.publishBufs()
	return r, nil
}

func (r *uring) mmap(fd int, off int64, n int) ([]byte, error) {
	flags := syscall.MAP_SHARED | syscall.MAP_POPULATE
	if fd < 0 {
		flags = syscall.MAP_PRIVATE | syscall.MAP_ANONYMOUS
	}
	b, err := syscall.Mmap(fd, off, n, syscall.PROT_READ|syscall.PROT_WRITE, flags)
	if err != nil {
		return nil, fmt.Errorf("%w: mmap: %v", errUringUnavailable, err)
	}
	r.maps = append(r.maps, b)
	return b, nil
}

func (r *uring) close() {
	for _, m := range r.maps {
		_ = syscall.Munmap(m)
	}
	r.maps = nil
	_ = syscall.Close(r.fd)
}

// sqe returns a cleared submission entry to fill; it is submitted by the
// next enter. When every slot is taken, it submits what is queued first.
func (r *uring) sqe() *uringSQE {
	for r.tail-atomic.LoadUint32(r.sqHead) >= r.sqEntries {
		if errno := r.enter(false); errno != 0 && errno != syscall.EINTR && errno != syscall.EBUSY {
			// Not expected with SUBMIT_ALL and valid entries; the
			// entries already queued stay queued.
			panic(fmt.Sprintf("io_uring_enter: %v", errno))
		}
	}
	e := &r.sqes[r.tail&r.sqMask]
	*e = uringSQE{}
	r.tail++
	return e
}

// enter submits the queued entries and, with wait, waits for at least one
// completion or the loop's poll timeout (ETIME).
func (r *uring) enter(wait bool) syscall.Errno {
	toSubmit := r.tail - r.submitted
	atomic.StoreUint32(r.sqTail, r.tail)
	flags, minComplete := uintptr(0), uintptr(0)
	arg := uringGetEventsArg{ts: uint64(uintptr(unsafe.Pointer(&r.timeout)))}
	if wait {
		flags, minComplete = uringEnterGetEvents|uringEnterExtArg, 1
	}
	n, _, errno := syscall.RawSyscall6(sysIOUringEnter, uintptr(r.fd), uintptr(toSubmit), minComplete, flags, uintptr(unsafe.Pointer(&arg)), unsafe.Sizeof(arg))
	if errno == 0 {
		r.submitted += uint32(n)
	} else {
		// Submission happens before the wait: an interrupted or timed
		// out wait has submitted everything (SUBMIT_ALL).
		r.submitted = atomic.LoadUint32(r.sqHead)
	}
	return errno
}

// completions calls f for each completion in the ring, then frees their
// slots.
func (r *uring) completions(f func(c uringCQE)) {
	head := *r.cqHead
	for {
		tail := atomic.LoadUint32(r.cqTail)
		if head == tail {
			break
		}
		for head != tail {
			c := r.cqes[head&r.cqMask]
			// The slot is free before f runs: f may submit, and a
			// full submission ring makes sqe enter the kernel.
			head++
			atomic.StoreUint32(r.cqHead, head)
			f(c)
		}
	}
	if r.bufDirty {
		r.publishBufs()
	}
}

// buf returns the bytes a receive completion left in provided buffer id.
func (r *uring) buf(id uint16, n int) []byte {
	off := int(id) * r.bufSize
	return r.bufs[off : off+n : off+n]
}

// returnBuf gives buffer id back to the kernel (at the next publishBufs).
func (r *uring) returnBuf(id uint16) {
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
func (r *uring) publishBufs() {
	word := (*uint32)(unsafe.Pointer(&r.bufRing[12]))
	// Bytes 12-13 are the first entry's buffer id: keep them.
	atomic.StoreUint32(word, uint32(r.bufTail)<<16|atomic.LoadUint32(word)&0xffff)
	r.bufDirty = false
}

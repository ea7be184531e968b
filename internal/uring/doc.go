// Package uring is a minimal io_uring: the rings, submission and completion
// entries, and a ring of provided receive buffers; only what pgveil's event
// loop (proxy/eventloop_uring_linux.go, which says why it uses io_uring)
// and the bench relay need. The layouts are those of <linux/io_uring.h>.
//
// A Ring is used by the one thread that created it: the kernel holds it to
// that (IORING_SETUP_SINGLE_ISSUER), and completions are produced only in
// that thread's Enter (IORING_SETUP_DEFER_TASKRUN). Lock the goroutine to
// its thread (runtime.LockOSThread) before New.
package uring

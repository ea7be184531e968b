//go:build linux

package proxy

import (
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/pgveil/pgveil/internal/uring"
)

// An idle event loop blocks in epoll_wait holding its processor. A
// stop-the-world (here runtime.GC) interrupts it with a signal, and the
// loop must then yield itself: it has no function call of its own to be
// stopped at once the compiler inlines the system call, as it does with
// profile-guided optimization, and every goroutine of pgveil then waited
// seconds behind a collection (new connections stalled). This test binary
// is built without that inlining, so it checks the yield itself.
func TestPollerYieldsToStopTheWorld(t *testing.T) {
	t.Run("epoll", func(t *testing.T) {
		p, err := newPoller()
		if err != nil {
			t.Fatal(err)
		}
		testPollerYields(t, p)
	})
	t.Run("io_uring", func(t *testing.T) {
		p, err := newUringPoller()
		if errors.Is(err, uring.ErrUnavailable) {
			// Only a kernel that refuses io_uring skips (pgveil then
			// uses epoll, which the other tests cover); a failure to set
			// up a ring it offers fails.
			t.Skipf("this kernel offers no io_uring: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		testPollerYields(t, p)
	})
}

func testPollerYields(t *testing.T, p *poller) {
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1) // the loop keeps one, as Server.poller provides
	time.Sleep(20 * time.Millisecond)             // waiting for events
	before := p.yields.Load()
	for i := 0; i < 5; i++ {
		start := time.Now()
		runtime.GC()
		if d := time.Since(start); d > time.Second {
			t.Fatalf("a collection took %v with an idle event loop", d)
		}
	}
	if p.yields.Load() == before {
		t.Fatal("the idle event loop did not yield when the runtime stopped the world")
	}
}

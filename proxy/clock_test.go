package proxy

import (
	"testing"
	"time"
)

// monoNow, TSC-backed or not, keeps pace with the system's monotonic clock.
func TestMonoNowKeepsPace(t *testing.T) {
	startFastClock()
	t.Logf("TSC-backed: %v", tsc.Load() != nil)
	for i := 0; i < 3; i++ {
		a, sysA := monoNow(), time.Since(monoEpoch)
		time.Sleep(50 * time.Millisecond)
		b, sysB := monoNow(), time.Since(monoEpoch)
		got, want := b-a, sysB-sysA
		if got <= 0 || got < want*99/100-time.Millisecond || got > want*101/100+time.Millisecond {
			t.Fatalf("monoNow advanced %v while the system clock advanced %v", got, want)
		}
		if d := a - sysA; d < -10*time.Millisecond || d > 10*time.Millisecond {
			t.Fatalf("monoNow %v is %v away from time.Since(monoEpoch)", a, d)
		}
	}
}

func BenchmarkMonoNow(b *testing.B) {
	startFastClock()
	var sink time.Duration
	for b.Loop() {
		sink += monoNow()
	}
	_ = sink
}

func BenchmarkTimeSince(b *testing.B) {
	var sink time.Duration
	for b.Loop() {
		sink += time.Since(monoEpoch)
	}
	_ = sink
}

// wallClock's seconds stay within a second of the system's wall clock over
// time, and take the wall clock again after a second or a reading that
// goes back.
func TestWallClock(t *testing.T) {
	startFastClock()
	var w wallClock
	for i := 0; i < 4; i++ {
		before := time.Now().Unix()
		got := w.unixSeconds(monoNow())
		after := time.Now().Unix()
		if got < before-1 || got > after+1 {
			t.Fatalf("reading %d: %d, the wall clock said %d..%d", i, got, before, after)
		}
		time.Sleep(400 * time.Millisecond)
	}
	// A reading far ahead refreshes, one behind too.
	m := monoNow()
	w = wallClock{at: m, unix: 1} // an absurd earlier reading
	if got := w.unixSeconds(m + 2*time.Second); got < time.Now().Unix()-1 {
		t.Fatalf("not refreshed after 2 s: %d", got)
	}
	w = wallClock{at: m + time.Hour, unix: 1}
	if got := w.unixSeconds(m); got < time.Now().Unix()-1 {
		t.Fatalf("not refreshed for a reading behind: %d", got)
	}
}

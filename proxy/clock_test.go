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

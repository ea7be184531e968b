package proxy

import (
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The clock of the per-statement durations (pgveil_statement_duration_seconds,
// pgveil_proxy_overhead_seconds): readings as durations since monoEpoch.
//
// Why not time.Since: the loops read the clock a few times per statement,
// and on the small virtual machines pgveil runs beside an application a
// vDSO clock_gettime costs 200-250 ns once the processes sharing the core
// have evicted its data page and code, more than a statement's protocol
// handling. Where the kernel itself keeps time with the TSC (so it is
// invariant and synchronised across cores), reading it directly costs
// about 10 ns; its rate is measured against the system's monotonic clock
// once, at the first reading. Elsewhere monoNow is time.Since(monoEpoch).
// Only durations are taken from it, never wall-clock times.

// monoEpoch is the origin of monoNow's readings.
var monoEpoch = time.Now()

// tscRate converts TSC readings to monoNow's scale.
type tscRate struct {
	base   uint64  // a TSC reading
	offset float64 // nanoseconds since monoEpoch at base
	nsPer  float64 // nanoseconds per TSC tick
}

var (
	tscOnce sync.Once
	tsc     atomic.Pointer[tscRate] // nil until measured, or when unusable
)

// monoNow reads the monotonic clock as a duration since monoEpoch.
func monoNow() time.Duration {
	if r := tsc.Load(); r != nil {
		return time.Duration(r.offset + float64(cputicks()-r.base)*r.nsPer)
	}
	return time.Since(monoEpoch)
}

// startFastClock measures the TSC's rate when the kernel's clocksource is
// the TSC; monoNow uses it from then on (readings stay continuous: both
// scales share monoEpoch). It takes about 20 ms, once; later calls return
// at once.
func startFastClock() {
	tscOnce.Do(func() {
		if !haveCputicks {
			return
		}
		cs, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
		if err != nil || strings.TrimSpace(string(cs)) != "tsc" {
			return
		}
		t0, c0 := time.Since(monoEpoch), cputicks()
		time.Sleep(20 * time.Millisecond)
		t1, c1 := time.Since(monoEpoch), cputicks()
		if c1 <= c0 || t1 <= t0 {
			return
		}
		tsc.Store(&tscRate{base: c1, offset: float64(t1), nsPer: float64(t1-t0) / float64(c1-c0)})
	})
}

// wallClock reads Unix seconds (Fernet token timestamps) for one goroutine
// from monoNow readings, taking the system's wall clock once a second: a
// wall-clock reading per client message cost as much as a token's AES.
// A wall-clock step reaches it within a second.
type wallClock struct {
	at   time.Duration // the monoNow reading when unix was taken
	unix int64         // Unix nanoseconds at at; 0 until the first reading
}

// unixSeconds returns the Unix time, in seconds, at the monoNow reading mono.
func (w *wallClock) unixSeconds(mono time.Duration) int64 {
	if w.unix == 0 || mono < w.at || mono-w.at >= time.Second {
		w.at, w.unix = mono, time.Now().UnixNano()
	}
	return (w.unix + int64(mono-w.at)) / int64(time.Second)
}

package proxy

import (
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// durationHistogram is a Prometheus histogram of durations that sessions
// fill in batches. A prometheus.Histogram takes one observation at a time
// with four atomic operations on memory every session shares; pgveil
// observes three durations per statement, so a session instead counts its
// statements into a histBatch of its own (plain increments) and adds the
// batch with one lock (see timings). The exposition is a histogram's, the
// same as prometheus.NewHistogram with these buckets gives.
type durationHistogram struct {
	desc   *prometheus.Desc
	bounds []float64       // upper bounds in seconds, as exposed
	limits []time.Duration // the same bounds, for bucket search

	mu     sync.Mutex
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64  // seconds
	count  uint64
}

func newDurationHistogram(name, help string, bounds []float64) *durationHistogram {
	if len(bounds) >= maxHistBuckets {
		panic("proxy: more histogram buckets than a histBatch holds")
	}
	h := &durationHistogram{
		desc:   prometheus.NewDesc(name, help, nil, nil),
		bounds: bounds,
		counts: make([]uint64, len(bounds)+1),
	}
	for _, b := range bounds {
		h.limits = append(h.limits, time.Duration(math.Round(b*1e9)))
	}
	return h
}

// bucket returns the index of the first bucket whose bound d does not
// exceed (len(bounds) for +Inf). Statement durations sit in the first few
// buckets, so a linear scan ends early.
func (h *durationHistogram) bucket(d time.Duration) int {
	for i, l := range h.limits {
		if d <= l {
			return i
		}
	}
	return len(h.limits)
}

// Observe records one duration.
func (h *durationHistogram) Observe(d time.Duration) {
	i := h.bucket(d)
	h.mu.Lock()
	h.counts[i]++
	h.sum += d.Seconds()
	h.count++
	h.mu.Unlock()
}

// add records a batch and empties it.
func (h *durationHistogram) add(b *histBatch) {
	if b.n == 0 {
		return
	}
	h.mu.Lock()
	for i, c := range b.counts[:len(h.counts)] {
		h.counts[i] += uint64(c)
	}
	h.sum += b.sum.Seconds()
	h.count += uint64(b.n)
	h.mu.Unlock()
	*b = histBatch{}
}

func (h *durationHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

func (h *durationHistogram) Collect(ch chan<- prometheus.Metric) {
	cum := make(map[float64]uint64, len(h.bounds))
	h.mu.Lock()
	var c uint64
	for i, b := range h.bounds {
		c += h.counts[i]
		cum[b] = c
	}
	count, sum := h.count, h.sum
	h.mu.Unlock()
	ch <- prometheus.MustNewConstHistogram(h.desc, count, sum, cum)
}

// maxHistBuckets bounds the buckets a durationHistogram may have (a
// histBatch is an array, so it lives in the session without an allocation).
const maxHistBuckets = 24

// histBatch is observations not yet added to a durationHistogram: at most
// timingBatch of them (timings publishes a full batch), so a byte counts a
// bucket and a session's three batches share two cache lines.
type histBatch struct {
	counts [maxHistBuckets]uint8
	n      uint8
	sum    time.Duration
}

// A batch's counts must hold timingBatch observations.
var _ [255 - timingBatch]struct{}

// observe counts d; the caller adds the batch to h before it holds 255.
func (b *histBatch) observe(h *durationHistogram, d time.Duration) {
	b.counts[h.bucket(d)]++
	b.sum += d
	b.n++
}

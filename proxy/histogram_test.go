package proxy

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// A durationHistogram, fed one at a time or in batches, exposes what a
// prometheus.Histogram with the same buckets exposes for the same
// durations: the cumulative buckets and count exactly, the sum to
// rounding.
func TestDurationHistogramMatchesPrometheus(t *testing.T) {
	for _, bounds := range [][]float64{overheadBuckets, latencyBuckets} {
		want := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Help: "h", Buckets: bounds})
		got := newDurationHistogram("h", "h", bounds)
		var batch histBatch
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 5000; i++ {
			var d time.Duration
			switch i % 4 {
			case 0: // exactly on a bound
				d = time.Duration(math.Round(bounds[rng.IntN(len(bounds))] * 1e9))
			case 1: // beyond the last bound
				d = time.Duration(bounds[len(bounds)-1]*1e9) + time.Duration(rng.IntN(1e9))
			default:
				d = time.Duration(rng.ExpFloat64() * bounds[len(bounds)/2] * 1e9)
			}
			want.Observe(d.Seconds())
			if i%3 == 0 {
				got.Observe(d)
			} else {
				batch.observe(got, d)
				if batch.n == timingBatch {
					got.add(&batch)
				}
			}
		}
		got.add(&batch)
		if batch.n != 0 {
			t.Fatal("add left the batch full")
		}
		w, g := collectHistogram(t, want), collectHistogram(t, got)
		if w.GetSampleCount() != g.GetSampleCount() || math.Abs(w.GetSampleSum()-g.GetSampleSum()) > 1e-6*w.GetSampleSum() {
			t.Fatalf("count/sum %d/%g, prometheus %d/%g", g.GetSampleCount(), g.GetSampleSum(), w.GetSampleCount(), w.GetSampleSum())
		}
		if len(w.Bucket) != len(g.Bucket) {
			t.Fatalf("%d buckets, prometheus %d", len(g.Bucket), len(w.Bucket))
		}
		for i := range w.Bucket {
			if w.Bucket[i].GetUpperBound() != g.Bucket[i].GetUpperBound() || w.Bucket[i].GetCumulativeCount() != g.Bucket[i].GetCumulativeCount() {
				t.Fatalf("bucket %d: le %g count %d, prometheus le %g count %d", i,
					g.Bucket[i].GetUpperBound(), g.Bucket[i].GetCumulativeCount(), w.Bucket[i].GetUpperBound(), w.Bucket[i].GetCumulativeCount())
			}
		}
	}
}

func collectHistogram(t *testing.T, c prometheus.Collector) *dto.Histogram {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].Metric) != 1 {
		t.Fatalf("gather: %v %v", err, mfs)
	}
	return mfs[0].Metric[0].GetHistogram()
}

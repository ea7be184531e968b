package proxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgveil/pgveil/keyring"
)

// histogramCount returns the sample count of the histogram family name.
func histogramCount(t *testing.T, g prometheus.Gatherer, name string, label ...string) uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(label); i += 2 {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == label[i] && lp.GetValue() != label[i+1] {
						continue metrics
					}
				}
			}
			return m.GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no histogram %s %v", name, label)
	return 0
}

// Timings are batched per session and published when a batch fills, when
// the session ends and before every gathering through Server.Gatherer.
func TestTimingsPublished(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	snap, _ := testSnapshot(t, "127.0.0.1:1")
	srv := NewServer(snap, nil, NewMetrics(reg), keyring.NewMetrics(reg))
	s := newSession(srv, nil, 1)
	srv.mu.Lock()
	srv.sessions[s] = struct{}{}
	srv.mu.Unlock()

	for i := 0; i < timingBatch-1; i++ {
		s.timings.statement(srv, 3*time.Millisecond, time.Microsecond)
	}
	s.timings.crypto(srv, false, 3, 1, 5*time.Microsecond)
	s.timings.crypto(srv, true, 2, 0, 2*time.Microsecond)
	if n := histogramCount(t, reg, "pgveil_statement_duration_seconds"); n != 0 {
		t.Fatalf("%d statements published before the batch filled", n)
	}
	s.timings.statement(srv, 3*time.Millisecond, time.Microsecond)
	if n := histogramCount(t, reg, "pgveil_statement_duration_seconds"); n != timingBatch {
		t.Fatalf("%d statements published once the batch filled, want %d", n, timingBatch)
	}
	s.timings.statement(srv, 3*time.Millisecond, time.Microsecond)
	g := srv.Gatherer(reg)
	for name, want := range map[string]uint64{
		"pgveil_statement_duration_seconds": timingBatch + 1,
		"pgveil_proxy_overhead_seconds":     timingBatch + 1,
		"pgveil_upstream_wait_seconds":      timingBatch + 1,
	} {
		if n := histogramCount(t, g, name); n != want {
			t.Fatalf("%s: %d observations through Gatherer, want %d", name, n, want)
		}
	}
	if n := histogramCount(t, g, "encryption_duration_seconds", "operation", "encrypt"); n != 1 {
		t.Fatalf("encrypt observations: %d", n)
	}
	if n := histogramCount(t, g, "encryption_duration_seconds", "operation", "decrypt"); n != 1 {
		t.Fatalf("decrypt observations: %d", n)
	}
	s.timings.statement(srv, time.Millisecond, 0)
	srv.untrack(s)
	if n := histogramCount(t, reg, "pgveil_statement_duration_seconds"); n != timingBatch+2 {
		t.Fatalf("%d statements after the session ended, want %d", n, timingBatch+2)
	}
}

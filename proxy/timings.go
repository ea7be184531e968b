package proxy

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// timingBatch is how many observations a session keeps before it
// publishes them.
const timingBatch = 32

// timings batches a session's observations for the duration histograms
// (pgveil_statement_duration_seconds, pgveil_proxy_overhead_seconds,
// pgveil_upstream_wait_seconds, encryption_duration_seconds) and the
// encryption counters that go with them. Published one at a time, they
// cost a statement more than the rest of its bookkeeping: the histograms'
// memory is shared by every session and cold by the time a session's next
// statement comes. A batch touches it once. The statement durations are
// counted straight into per-session buckets (statementBatch, histogram.go);
// the encryption durations are kept as they come. Scrapes publish every
// session's batch first (Server.Gatherer), so /metrics is always whole.
type timings struct {
	mu    sync.Mutex
	stmt  statementBatch
	nStmt int
	enc   []cryptoTiming
	dec   []cryptoTiming
}

type cryptoTiming struct {
	n, failed int
	d         time.Duration
}

func (t *timings) statement(srv *Server, total, overhead time.Duration) {
	t.mu.Lock()
	t.stmt.observe(srv.Metrics, total, overhead)
	t.nStmt++
	t.publishIfFull(srv, t.nStmt)
	t.mu.Unlock()
}

// crypto records one message's encryptions, or one statement's
// decryptions.
func (t *timings) crypto(srv *Server, decrypt bool, n, failed int, d time.Duration) {
	t.mu.Lock()
	batch := &t.enc
	if decrypt {
		batch = &t.dec
	}
	*batch = append(*batch, cryptoTiming{n, failed, d})
	t.publishIfFull(srv, len(*batch))
	t.mu.Unlock()
}

func (t *timings) publishIfFull(srv *Server, n int) {
	if n >= timingBatch {
		t.publishLocked(srv)
	}
}

// publish hands everything batched to the metrics.
func (t *timings) publish(srv *Server) {
	t.mu.Lock()
	t.publishLocked(srv)
	t.mu.Unlock()
}

func (t *timings) publishLocked(srv *Server) {
	km := srv.KeyMetrics
	srv.Metrics.addStatements(&t.stmt)
	t.nStmt = 0
	for _, x := range t.enc {
		km.ObserveEncrypt(x.n, x.failed, x.d)
	}
	for _, x := range t.dec {
		km.ObserveDecrypt(x.n, x.failed, x.d)
	}
	t.enc, t.dec = t.enc[:0], t.dec[:0]
}

// PublishTimings publishes what every session has batched (see timings).
func (srv *Server) PublishTimings() {
	srv.mu.Lock()
	sessions := make([]*Session, 0, len(srv.sessions))
	for s := range srv.sessions {
		sessions = append(sessions, s)
	}
	srv.mu.Unlock()
	for _, s := range sessions {
		s.timings.publish(srv)
	}
}

// Gatherer returns g with every session's batched timings published before
// each gathering: what AdminHandler should serve.
func (srv *Server) Gatherer(g prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		srv.PublishTimings()
		return g.Gather()
	})
}

package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgveil/pgveil/rewrite"
)

// Label values of pgveil_connections_total{result}. A client connection is
// counted once, by how its startup ended: ConnOpened counts ResultAccepted,
// ConnRefused counts one of the others.
const (
	ResultAccepted           = "accepted"            // startup finished, the session runs
	ResultRefusedMaintenance = "refused_maintenance" // MAINTENANCE_MODE: 57P03
	ResultRefusedDraining    = "refused_draining"    // SIGTERM drain in progress: 57P03
	ResultUpstreamFailed     = "upstream_failed"     // Postgres unreachable: 08006
	ResultAuthFailed         = "auth_failed"         // Postgres refused the credentials
	ResultProtocolError      = "protocol_error"      // the client broke the startup protocol or timed out
)

// Label values of pgveil_queries_total{outcome}: what pgveil did with one
// statement the client sent.
const (
	OutcomePassthrough = "passthrough" // touches no configured table; forwarded byte for byte
	OutcomeRewritten   = "rewritten"   // encrypted, decrypted or rewritten to a blind index
	OutcomeRefused     = "refused"     // refused by pgveil (0A000, 54000, 22021)
	OutcomeError       = "error"       // failed inside pgveil (for example XX001)
)

// Label values of pgveil_rejections_total{reason}. The first nine are the
// values of rewrite.RefusalError.Reason, defined there once.
const (
	ReasonLike                 = rewrite.ReasonLike
	ReasonRange                = rewrite.ReasonRange
	ReasonOrderBy              = rewrite.ReasonOrderBy
	ReasonGroupBy              = rewrite.ReasonGroupBy
	ReasonDistinct             = rewrite.ReasonDistinct
	ReasonFunction             = rewrite.ReasonFunction
	ReasonEqualityWithoutIndex = rewrite.ReasonEqualityWithoutIndex
	ReasonInsertSelect         = rewrite.ReasonInsertSelect
	ReasonUnsupported          = rewrite.ReasonUnsupported
	ReasonTooLarge             = "too_large"     // value over max_size: 54000
	ReasonInvalidInput         = "invalid_input" // refused by sanitize_input: 22021
	ReasonParse                = "parse"         // SQL pg_query could not parse on a configured table
)

// Label values of pgveil_upstream_errors_total{kind}.
const (
	UpstreamConnect  = "connect"  // dial to Postgres failed
	UpstreamTLS      = "tls"      // TLS handshake with Postgres failed
	UpstreamIO       = "io"       // read or write on an established upstream connection failed
	UpstreamProtocol = "protocol" // Postgres sent something pgveil could not follow
)

// Label values of pgveil_plan_cache_lookups_total{result}.
const (
	CacheHit  = "hit"  // a plan for this SQL and config generation was cached
	CacheMiss = "miss" // the SQL was analysed and the plan cached
	CacheSkip = "skip" // the cache was not consulted (statement too large, cache disabled)
)

// Label values of pgveil_upstream_reuse_total{result}: what became of a
// PostgreSQL connection whose client left, or of a kept one.
const (
	ReuseKept    = "kept"     // reset and kept for the next client
	ReuseNotKept = "not_kept" // left idle by its client but closed (keeping off, draining, reset failed)
	ReuseTaken   = "taken"    // handed to a client that logged in
	ReuseExpired = "expired"  // closed after proxy.upstream_idle_timeout, or to make room
	ReuseStale   = "stale"    // found closed or talking when taken; closed
)

// Label values of pgveil_config_reloads_total{result}.
const (
	ReloadSuccess = "success"
	ReloadError   = "error"
)

var (
	connResults     = []string{ResultAccepted, ResultRefusedMaintenance, ResultRefusedDraining, ResultUpstreamFailed, ResultAuthFailed, ResultProtocolError}
	queryOutcomes   = []string{OutcomePassthrough, OutcomeRewritten, OutcomeRefused, OutcomeError}
	rejectReasons   = []string{ReasonLike, ReasonRange, ReasonOrderBy, ReasonGroupBy, ReasonDistinct, ReasonFunction, ReasonEqualityWithoutIndex, ReasonInsertSelect, ReasonUnsupported, ReasonTooLarge, ReasonInvalidInput, ReasonParse}
	upstreamKinds   = []string{UpstreamConnect, UpstreamTLS, UpstreamIO, UpstreamProtocol}
	cacheResults    = []string{CacheHit, CacheMiss, CacheSkip}
	reloadResults   = []string{ReloadSuccess, ReloadError}
	reuseResults    = []string{ReuseKept, ReuseNotKept, ReuseTaken, ReuseExpired, ReuseStale}
	overheadBuckets = []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1}
	latencyBuckets  = []float64{1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
)

// Metrics is the proxy's own instrumentation, the pgveil_* families of SPEC
// §7. The runbook's encryption_* families belong to keyring.Metrics.
//
// Build one with NewMetrics per registry. Every method is safe for
// concurrent use and does nothing on a nil *Metrics, so code paths and tests
// that do not measure can pass nil. Label values outside the closed sets
// declared above are ignored rather than creating new series: labels never
// carry SQL, users, addresses or error text.
type Metrics struct {
	connections      prometheus.Gauge
	connectionsTotal *prometheus.CounterVec
	queries          *prometheus.CounterVec
	rejections       *prometheus.CounterVec
	upstreamErrors   *prometheus.CounterVec
	planCache        *prometheus.CounterVec
	overhead         *durationHistogram // per statement: filled in batches (timings)
	upstreamWait     *durationHistogram
	statement        *durationHistogram
	decryptions      *prometheus.CounterVec
	reloads          *prometheus.CounterVec
	draining         prometheus.Gauge
	maintenance      prometheus.Gauge
	idleUpstreams    prometheus.Gauge
	reuse            *prometheus.CounterVec

	// known holds, per vector, the counter of each label value of its
	// closed set, resolved once: the per-statement path is two map
	// lookups and an atomic add, not a label hash.
	known map[*prometheus.CounterVec]map[string]prometheus.Counter
	// The per-statement counters, resolved once more into fields: a map
	// lookup touches memory the statement's other work does not.
	queryPassthrough, queryRewritten prometheus.Counter
	cacheHit, cacheMiss, cacheSkip   prometheus.Counter
}

// NewMetrics creates the pgveil_* families, registers them with reg and sets
// every known label combination to zero, so the first increment shows in
// rate(). It panics if reg already holds them (a programming error, as
// prometheus.MustRegister). A nil reg creates the metrics unregistered.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgveil_connections",
			Help: "Client sessions currently open through pgveil.",
		}),
		connectionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgveil_connections_total",
			Help: "Client connections by how their startup ended (accepted or the reason they were refused).",
		}, []string{"result"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgveil_queries_total",
			Help: "Statements received from clients, by what pgveil did with them.",
		}, []string{"outcome"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgveil_rejections_total",
			Help: "Statements or values pgveil refused, by reason.",
		}, []string{"reason"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgveil_upstream_errors_total",
			Help: "Failures talking to PostgreSQL, by kind.",
		}, []string{"kind"}),
		planCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgveil_plan_cache_lookups_total",
			Help: "Rewrite plan cache lookups, by result.",
		}, []string{"result"}),
		overhead: newDurationHistogram("pgveil_proxy_overhead_seconds",
			"Time pgveil spent on a statement apart from waiting on PostgreSQL (parsing, rewriting, encrypting, decrypting).",
			overheadBuckets),
		upstreamWait: newDurationHistogram("pgveil_upstream_wait_seconds",
			"Time a statement spent waiting on PostgreSQL.", latencyBuckets),
		statement: newDurationHistogram("pgveil_statement_duration_seconds",
			"Time from a statement reaching pgveil to its last reply leaving pgveil, as the client sees it.",
			latencyBuckets),
		decryptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgveil_decryptions_total",
			Help: "Values decrypted, by the fingerprint of the key that opened them; a fallback key whose series stops growing can be retired.",
		}, []string{"key"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgveil_config_reloads_total",
			Help: "Configuration and key reloads (SIGHUP), by result.",
		}, []string{"result"}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgveil_draining",
			Help: "1 while pgveil drains after SIGTERM and refuses new connections, else 0.",
		}),
		maintenance: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgveil_maintenance_mode",
			Help: "1 while maintenance mode refuses new connections, else 0.",
		}),
		idleUpstreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgveil_upstream_idle_connections",
			Help: "PostgreSQL connections kept, reset, for the next client (proxy.max_idle_upstreams).",
		}),
		reuse: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgveil_upstream_reuse_total",
			Help: "What became of PostgreSQL connections whose clients left (kept, not_kept) and of kept ones (taken, expired, stale).",
		}, []string{"result"}),
	}
	m.known = map[*prometheus.CounterVec]map[string]prometheus.Counter{
		m.connectionsTotal: counters(m.connectionsTotal, connResults),
		m.queries:          counters(m.queries, queryOutcomes),
		m.rejections:       counters(m.rejections, rejectReasons),
		m.upstreamErrors:   counters(m.upstreamErrors, upstreamKinds),
		m.planCache:        counters(m.planCache, cacheResults),
		m.reloads:          counters(m.reloads, reloadResults),
		m.reuse:            counters(m.reuse, reuseResults),
	}
	m.queryPassthrough = m.known[m.queries][OutcomePassthrough]
	m.queryRewritten = m.known[m.queries][OutcomeRewritten]
	m.cacheHit = m.known[m.planCache][CacheHit]
	m.cacheMiss = m.known[m.planCache][CacheMiss]
	m.cacheSkip = m.known[m.planCache][CacheSkip]
	if reg != nil {
		reg.MustRegister(m.connections, m.connectionsTotal, m.queries, m.rejections,
			m.upstreamErrors, m.planCache, m.overhead, m.upstreamWait, m.statement,
			m.decryptions, m.reloads, m.draining, m.maintenance, m.idleUpstreams, m.reuse)
	}
	return m
}

// counters creates (at zero) and returns the child of vec for each value.
func counters(vec *prometheus.CounterVec, values []string) map[string]prometheus.Counter {
	s := make(map[string]prometheus.Counter, len(values))
	for _, v := range values {
		s[v] = vec.WithLabelValues(v)
	}
	return s
}

// inc adds one to vec{value} when value belongs to vec's closed set.
func (m *Metrics) inc(vec *prometheus.CounterVec, value string) {
	if c, ok := m.known[vec][value]; ok {
		c.Inc()
	}
}

// ConnOpened records a client session whose startup finished (the client
// got ReadyForQuery): pgveil_connections goes up by one and
// pgveil_connections_total{result="accepted"} counts it. Pair every call
// with one ConnClosed.
func (m *Metrics) ConnOpened() {
	if m == nil {
		return
	}
	m.connections.Inc()
	m.connectionsTotal.WithLabelValues(ResultAccepted).Inc()
}

// ConnClosed records the end of a session counted by ConnOpened.
func (m *Metrics) ConnClosed() {
	if m == nil {
		return
	}
	m.connections.Dec()
}

// UpstreamReuse records what became of an upstream connection with a
// Reuse* constant, and the number of idle ones kept now.
func (m *Metrics) UpstreamReuse(result string, idle int) {
	if m == nil {
		return
	}
	m.inc(m.reuse, result)
	m.idleUpstreams.Set(float64(idle))
}

// ConnRefused records a client connection that ended before its session
// started, with one of the Result* constants other than ResultAccepted. It
// does not touch pgveil_connections.
func (m *Metrics) ConnRefused(result string) {
	if m == nil || result == ResultAccepted {
		return
	}
	m.inc(m.connectionsTotal, result)
}

// Query records one client statement with an Outcome* constant.
func (m *Metrics) Query(outcome string) {
	if m == nil {
		return
	}
	switch outcome {
	case OutcomePassthrough:
		m.queryPassthrough.Inc()
	case OutcomeRewritten:
		m.queryRewritten.Inc()
	default:
		m.inc(m.queries, outcome)
	}
}

// Rejection records one refusal with a Reason* constant. A refused statement
// is usually also counted by Query(OutcomeRefused).
func (m *Metrics) Rejection(reason string) {
	if m == nil {
		return
	}
	m.inc(m.rejections, reason)
}

// UpstreamError records one failure talking to Postgres with an Upstream*
// constant.
func (m *Metrics) UpstreamError(kind string) {
	if m == nil {
		return
	}
	m.inc(m.upstreamErrors, kind)
}

// PlanCache records one plan cache lookup with a Cache* constant.
func (m *Metrics) PlanCache(result string) {
	if m == nil {
		return
	}
	switch result {
	case CacheHit:
		m.cacheHit.Inc()
	case CacheMiss:
		m.cacheMiss.Inc()
	case CacheSkip:
		m.cacheSkip.Inc()
	}
}

// ObserveOverhead records the time pgveil spent on one statement apart from
// waiting on Postgres.
func (m *Metrics) ObserveOverhead(d time.Duration) {
	if m == nil {
		return
	}
	m.overhead.Observe(d)
}

// ObserveUpstreamWait records the time one statement waited on Postgres.
func (m *Metrics) ObserveUpstreamWait(d time.Duration) {
	if m == nil {
		return
	}
	m.upstreamWait.Observe(d)
}

// ObserveStatement records the time one statement took as the client sees
// it: from its arrival at pgveil to its last reply leaving pgveil.
func (m *Metrics) ObserveStatement(d time.Duration) {
	if m == nil {
		return
	}
	m.statement.Observe(d)
}

// statementBatch is a session's statement durations not yet published.
type statementBatch struct {
	statement, overhead, upstreamWait histBatch
}

// observe counts one statement into b; m may be nil.
func (b *statementBatch) observe(m *Metrics, total, overhead time.Duration) {
	if m == nil {
		return
	}
	b.statement.observe(m.statement, total)
	b.overhead.observe(m.overhead, overhead)
	b.upstreamWait.observe(m.upstreamWait, total-overhead)
}

// addStatements publishes a session's batch and empties it.
func (m *Metrics) addStatements(b *statementBatch) {
	if m == nil {
		return
	}
	m.statement.add(&b.statement)
	m.overhead.add(&b.overhead)
	m.upstreamWait.add(&b.upstreamWait)
}

// InitKeys creates pgveil_decryptions_total{key=fp} at zero for each key
// fingerprint (keyring fingerprints: 8 hex characters), so that a key no
// value has used yet is visible. Call it at start-up and after each reload
// with the primary and fallback fingerprints. Series of keys no longer
// configured are kept: a retired key shows as a flat line.
func (m *Metrics) InitKeys(fps []string) {
	if m == nil {
		return
	}
	for _, fp := range fps {
		if fp != "" {
			m.decryptions.WithLabelValues(fp)
		}
	}
}

// Decryptions records n values opened by the key with fingerprint fp.
func (m *Metrics) Decryptions(fp string, n int) {
	if c := m.DecryptionCounter(fp); c != nil && n > 0 {
		c.Add(float64(n))
	}
}

// DecryptionCounter is the counter Decryptions adds to for fp, for callers
// that keep it instead of looking the label up per statement.
func (m *Metrics) DecryptionCounter(fp string) prometheus.Counter {
	if m == nil || fp == "" {
		return nil
	}
	return m.decryptions.WithLabelValues(fp)
}

// Reload records one configuration and key reload.
func (m *Metrics) Reload(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.reloads.WithLabelValues(ReloadSuccess).Inc()
	} else {
		m.reloads.WithLabelValues(ReloadError).Inc()
	}
}

// SetDraining sets pgveil_draining to 1 (draining after SIGTERM) or 0.
func (m *Metrics) SetDraining(on bool) {
	if m == nil {
		return
	}
	m.draining.Set(b2f(on))
}

// SetMaintenance sets pgveil_maintenance_mode to 1 (maintenance mode) or 0.
func (m *Metrics) SetMaintenance(on bool) {
	if m == nil {
		return
	}
	m.maintenance.Set(b2f(on))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

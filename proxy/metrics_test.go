package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTestMetrics(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return NewMetrics(reg), reg
}

func TestMetricsLint(t *testing.T) {
	t.Parallel()
	m, reg := newTestMetrics(t)
	m.InitKeys([]string{"0a1b2c3d", "4e5f6a7b"})
	m.ObserveOverhead(time.Microsecond)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestMetricsFamilies(t *testing.T) {
	t.Parallel()
	_, reg := newTestMetrics(t)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetType().String()
	}
	want := map[string]string{
		"pgveil_connections":                "GAUGE",
		"pgveil_connections_total":          "COUNTER",
		"pgveil_queries_total":              "COUNTER",
		"pgveil_rejections_total":           "COUNTER",
		"pgveil_upstream_errors_total":      "COUNTER",
		"pgveil_plan_cache_lookups_total":   "COUNTER",
		"pgveil_proxy_overhead_seconds":     "HISTOGRAM",
		"pgveil_upstream_wait_seconds":      "HISTOGRAM",
		"pgveil_statement_duration_seconds": "HISTOGRAM",
		"pgveil_config_reloads_total":       "COUNTER",
		"pgveil_draining":                   "GAUGE",
		"pgveil_maintenance_mode":           "GAUGE",
		"pgveil_upstream_idle_connections":  "GAUGE",
		"pgveil_upstream_reuse_total":       "COUNTER",
		// pgveil_decryptions_total has no series until InitKeys or
		// Decryptions, so Gather leaves it out.
	}
	for name, typ := range want {
		if got[name] != typ {
			t.Errorf("%s: type %q, want %q", name, got[name], typ)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected family %s", name)
		}
	}
}

// Every known label combination exists at zero before anything happened.
func TestMetricsInitialisedToZero(t *testing.T) {
	t.Parallel()
	_, reg := newTestMetrics(t)
	wantSeries := map[string]int{
		"pgveil_connections_total":        len(connResults),
		"pgveil_queries_total":            len(queryOutcomes),
		"pgveil_rejections_total":         len(rejectReasons),
		"pgveil_upstream_errors_total":    len(upstreamKinds),
		"pgveil_plan_cache_lookups_total": len(cacheResults),
		"pgveil_upstream_reuse_total":     len(reuseResults),
		"pgveil_config_reloads_total":     len(reloadResults),
	}
	for name, n := range wantSeries {
		if got := testutil.CollectAndCount(reg, name); got != n {
			t.Errorf("%s: %d series, want %d", name, got, n)
		}
	}
	const expo = `
# HELP pgveil_queries_total Statements received from clients, by what pgveil did with them.
# TYPE pgveil_queries_total counter
pgveil_queries_total{outcome="error"} 0
pgveil_queries_total{outcome="passthrough"} 0
pgveil_queries_total{outcome="refused"} 0
pgveil_queries_total{outcome="rewritten"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expo), "pgveil_queries_total"); err != nil {
		t.Error(err)
	}
	if len(rejectReasons) != 12 {
		t.Errorf("%d rejection reasons, want the 12 of the contract", len(rejectReasons))
	}
}

func TestMetricsCounters(t *testing.T) {
	t.Parallel()
	m, _ := newTestMetrics(t)

	m.ConnOpened()
	m.ConnOpened()
	m.ConnClosed()
	m.ConnRefused(ResultRefusedMaintenance)
	m.ConnRefused(ResultRefusedDraining)
	m.ConnRefused(ResultRefusedDraining)
	m.ConnRefused(ResultAccepted) // not a refusal: ignored
	if got := testutil.ToFloat64(m.connections); got != 1 {
		t.Errorf("pgveil_connections = %v, want 1", got)
	}
	for result, want := range map[string]float64{
		ResultAccepted: 2, ResultRefusedMaintenance: 1, ResultRefusedDraining: 2,
		ResultUpstreamFailed: 0, ResultAuthFailed: 0,
	} {
		if got := testutil.ToFloat64(m.connectionsTotal.WithLabelValues(result)); got != want {
			t.Errorf("pgveil_connections_total{result=%q} = %v, want %v", result, got, want)
		}
	}

	m.Query(OutcomePassthrough)
	m.Query(OutcomeRewritten)
	m.Query(OutcomeRewritten)
	m.Query(OutcomeRefused)
	for outcome, want := range map[string]float64{OutcomePassthrough: 1, OutcomeRewritten: 2, OutcomeRefused: 1, OutcomeError: 0} {
		if got := testutil.ToFloat64(m.queries.WithLabelValues(outcome)); got != want {
			t.Errorf("pgveil_queries_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}

	m.Rejection(ReasonLike)
	if got := testutil.ToFloat64(m.rejections.WithLabelValues(ReasonLike)); got != 1 {
		t.Errorf("like refusal counted %v times, want once", got)
	}
	if got := testutil.ToFloat64(m.rejections.WithLabelValues(ReasonRange)); got != 0 {
		t.Errorf("range refusals = %v, want 0", got)
	}

	m.UpstreamError(UpstreamConnect)
	m.UpstreamError(UpstreamTLS)
	m.UpstreamError(UpstreamTLS)
	if got := testutil.ToFloat64(m.upstreamErrors.WithLabelValues(UpstreamTLS)); got != 2 {
		t.Errorf("tls upstream errors = %v, want 2", got)
	}

	m.PlanCache(CacheMiss)
	m.PlanCache(CacheHit)
	m.PlanCache(CacheHit)
	m.PlanCache(CacheSkip)
	for result, want := range map[string]float64{CacheHit: 2, CacheMiss: 1, CacheSkip: 1} {
		if got := testutil.ToFloat64(m.planCache.WithLabelValues(result)); got != want {
			t.Errorf("plan cache %s = %v, want %v", result, got, want)
		}
	}

	m.Reload(true)
	m.Reload(false)
	m.Reload(false)
	if got := testutil.ToFloat64(m.reloads.WithLabelValues(ReloadError)); got != 2 {
		t.Errorf("failed reloads = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.reloads.WithLabelValues(ReloadSuccess)); got != 1 {
		t.Errorf("successful reloads = %v, want 1", got)
	}

	m.SetDraining(true)
	m.SetMaintenance(true)
	if testutil.ToFloat64(m.draining) != 1 || testutil.ToFloat64(m.maintenance) != 1 {
		t.Error("draining and maintenance gauges not set to 1")
	}
	m.SetDraining(false)
	m.SetMaintenance(false)
	if testutil.ToFloat64(m.draining) != 0 || testutil.ToFloat64(m.maintenance) != 0 {
		t.Error("draining and maintenance gauges not reset to 0")
	}
}

// Values outside the closed label sets never create a series.
func TestMetricsUnknownLabelIgnored(t *testing.T) {
	t.Parallel()
	m, reg := newTestMetrics(t)
	m.Query("SELECT secret FROM users")
	m.Rejection("syntax error at or near 'alice@example.com'")
	m.UpstreamError("dial tcp 10.0.0.1:5432")
	m.PlanCache("maybe")
	m.ConnRefused("bob")
	for name, n := range map[string]int{
		"pgveil_queries_total":            len(queryOutcomes),
		"pgveil_rejections_total":         len(rejectReasons),
		"pgveil_upstream_errors_total":    len(upstreamKinds),
		"pgveil_plan_cache_lookups_total": len(cacheResults),
		"pgveil_connections_total":        len(connResults),
	} {
		if got := testutil.CollectAndCount(reg, name); got != n {
			t.Errorf("%s: %d series after unknown labels, want %d", name, got, n)
		}
	}
	if got := testutil.ToFloat64(m.queries.WithLabelValues(OutcomeError)); got != 0 {
		t.Errorf("unknown outcome counted as error: %v", got)
	}
}

func TestMetricsDecryptionsByKey(t *testing.T) {
	t.Parallel()
	m, reg := newTestMetrics(t)
	m.InitKeys([]string{"aaaaaaaa", "bbbbbbbb", ""})
	if got := testutil.CollectAndCount(reg, "pgveil_decryptions_total"); got != 2 {
		t.Fatalf("%d decryption series after InitKeys, want 2", got)
	}
	const zero = `
# HELP pgveil_decryptions_total Values decrypted, by the fingerprint of the key that opened them; a fallback key whose series stops growing can be retired.
# TYPE pgveil_decryptions_total counter
pgveil_decryptions_total{key="aaaaaaaa"} 0
pgveil_decryptions_total{key="bbbbbbbb"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(zero), "pgveil_decryptions_total"); err != nil {
		t.Error(err)
	}
	m.Decryptions("aaaaaaaa", 3)
	m.Decryptions("aaaaaaaa", 2)
	m.Decryptions("bbbbbbbb", 0)  // nothing decrypted
	m.Decryptions("bbbbbbbb", -1) // nonsense
	m.Decryptions("", 4)          // no fingerprint: no series
	m.Decryptions("cccccccc", 1)  // a key added by a reload before InitKeys
	for fp, want := range map[string]float64{"aaaaaaaa": 5, "bbbbbbbb": 0, "cccccccc": 1} {
		if got := testutil.ToFloat64(m.decryptions.WithLabelValues(fp)); got != want {
			t.Errorf("decryptions{key=%q} = %v, want %v", fp, got, want)
		}
	}
	if got := testutil.CollectAndCount(reg, "pgveil_decryptions_total"); got != 3 {
		t.Errorf("%d decryption series, want 3", got)
	}
}

func TestMetricsHistograms(t *testing.T) {
	t.Parallel()
	m, reg := newTestMetrics(t)
	m.ObserveOverhead(3 * time.Microsecond)
	m.ObserveOverhead(40 * time.Millisecond)
	m.ObserveUpstreamWait(2 * time.Millisecond)
	m.ObserveStatement(2500 * time.Microsecond)
	const expo = `
# HELP pgveil_proxy_overhead_seconds Time pgveil spent on a statement apart from waiting on PostgreSQL (parsing, rewriting, encrypting, decrypting).
# TYPE pgveil_proxy_overhead_seconds histogram
pgveil_proxy_overhead_seconds_bucket{le="1e-06"} 0
pgveil_proxy_overhead_seconds_bucket{le="2.5e-06"} 0
pgveil_proxy_overhead_seconds_bucket{le="5e-06"} 1
pgveil_proxy_overhead_seconds_bucket{le="1e-05"} 1
pgveil_proxy_overhead_seconds_bucket{le="2.5e-05"} 1
pgveil_proxy_overhead_seconds_bucket{le="5e-05"} 1
pgveil_proxy_overhead_seconds_bucket{le="0.0001"} 1
pgveil_proxy_overhead_seconds_bucket{le="0.00025"} 1
pgveil_proxy_overhead_seconds_bucket{le="0.0005"} 1
pgveil_proxy_overhead_seconds_bucket{le="0.001"} 1
pgveil_proxy_overhead_seconds_bucket{le="0.0025"} 1
pgveil_proxy_overhead_seconds_bucket{le="0.005"} 1
pgveil_proxy_overhead_seconds_bucket{le="0.01"} 1
pgveil_proxy_overhead_seconds_bucket{le="0.025"} 1
pgveil_proxy_overhead_seconds_bucket{le="0.05"} 2
pgveil_proxy_overhead_seconds_bucket{le="0.1"} 2
pgveil_proxy_overhead_seconds_bucket{le="+Inf"} 2
pgveil_proxy_overhead_seconds_sum 0.040003000000000004
pgveil_proxy_overhead_seconds_count 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expo), "pgveil_proxy_overhead_seconds"); err != nil {
		t.Error(err)
	}
	if got := testutil.CollectAndCount(m.upstreamWait); got != 1 {
		t.Errorf("upstream wait: %d series, want 1", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "pgveil_upstream_wait_seconds", "pgveil_statement_duration_seconds":
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 1 || h.GetSampleSum() < 0.002 || h.GetSampleSum() > 0.0026 {
				t.Errorf("%s: count %d sum %v, want 1 sample of ~2ms", mf.GetName(), h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}
}

// Every method is a no-op on a nil *Metrics.
func TestMetricsNilSafe(t *testing.T) {
	t.Parallel()
	var m *Metrics
	m.ConnOpened()
	m.ConnClosed()
	m.ConnRefused(ResultRefusedMaintenance)
	m.Query(OutcomeRewritten)
	m.Rejection(ReasonLike)
	m.UpstreamError(UpstreamIO)
	m.PlanCache(CacheHit)
	m.ObserveOverhead(time.Millisecond)
	m.ObserveUpstreamWait(time.Millisecond)
	m.ObserveStatement(time.Millisecond)
	m.InitKeys([]string{"aaaaaaaa"})
	m.Decryptions("aaaaaaaa", 1)
	m.Reload(true)
	m.SetDraining(true)
	m.SetMaintenance(true)
}

// Two registries hold independent metrics; one registry refuses a second set.
func TestMetricsNoGlobals(t *testing.T) {
	t.Parallel()
	a, _ := newTestMetrics(t)
	b, _ := newTestMetrics(t)
	a.Query(OutcomeRefused)
	if got := testutil.ToFloat64(b.queries.WithLabelValues(OutcomeRefused)); got != 0 {
		t.Errorf("metrics shared between registries: %v", got)
	}
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	defer func() {
		if recover() == nil {
			t.Error("registering twice on one registry did not panic")
		}
	}()
	NewMetrics(reg)
}

// NewMetrics(nil) works unregistered.
func TestMetricsNilRegisterer(t *testing.T) {
	t.Parallel()
	m := NewMetrics(nil)
	m.Query(OutcomeRewritten)
	if got := testutil.ToFloat64(m.queries.WithLabelValues(OutcomeRewritten)); got != 1 {
		t.Errorf("unregistered metrics: %v, want 1", got)
	}
}

func TestMetricsConcurrent(t *testing.T) {
	t.Parallel()
	m, _ := newTestMetrics(t)
	done := make(chan struct{})
	for range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 1000 {
				m.ConnOpened()
				m.Query(OutcomeRewritten)
				m.Decryptions("aaaaaaaa", 1)
				m.ObserveOverhead(time.Microsecond)
				m.ConnClosed()
			}
		}()
	}
	for range 8 {
		<-done
	}
	if got := testutil.ToFloat64(m.queries.WithLabelValues(OutcomeRewritten)); got != 8000 {
		t.Errorf("rewritten = %v, want 8000", got)
	}
	if got := testutil.ToFloat64(m.connections); got != 0 {
		t.Errorf("open connections = %v, want 0", got)
	}
}

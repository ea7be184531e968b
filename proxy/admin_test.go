package proxy

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func get(t *testing.T, srv *httptest.Server, method, path string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

func TestAdminHealthz(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(AdminHandler(prometheus.NewRegistry(), func() error { return errors.New("upstream down") }))
	t.Cleanup(srv.Close)
	code, body, h := get(t, srv, http.MethodGet, "/healthz")
	if code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 \"ok\" even when not ready", code, body)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/healthz Content-Type %q", ct)
	}
	if code, _, _ := get(t, srv, http.MethodHead, "/healthz"); code != http.StatusOK {
		t.Errorf("HEAD /healthz = %d, want 200", code)
	}
}

func TestAdminReadyz(t *testing.T) {
	t.Parallel()
	var state atomic.Pointer[error]
	set := func(err error) { state.Store(&err) }
	set(nil)
	var calls atomic.Int32
	ready := func() error {
		calls.Add(1)
		return *state.Load()
	}
	srv := httptest.NewServer(AdminHandler(prometheus.NewRegistry(), ready))
	t.Cleanup(srv.Close)

	if code, body, _ := get(t, srv, http.MethodGet, "/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("ready: /readyz = %d %q, want 200 \"ok\"", code, body)
	}

	set(errors.New("pgveil: maintenance mode\n(MAINTENANCE_MODE=true)"))
	code, body, _ := get(t, srv, http.MethodGet, "/readyz")
	if code != http.StatusServiceUnavailable {
		t.Errorf("maintenance: /readyz = %d, want 503", code)
	}
	if want := "pgveil: not ready: maintenance mode (MAINTENANCE_MODE=true)\n"; body != want {
		t.Errorf("maintenance: /readyz body %q, want %q", body, want)
	}

	set(errors.New("upstream 127.0.0.1:5432 does not accept connections"))
	code, body, _ = get(t, srv, http.MethodGet, "/readyz")
	if code != http.StatusServiceUnavailable || body != "pgveil: not ready: upstream 127.0.0.1:5432 does not accept connections\n" {
		t.Errorf("upstream down: /readyz = %d %q", code, body)
	}

	set(nil)
	if code, _, _ := get(t, srv, http.MethodGet, "/readyz"); code != http.StatusOK {
		t.Errorf("ready again: /readyz = %d, want 200", code)
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("ready called %d times for 4 requests", n)
	}
	// /healthz never asks.
	get(t, srv, http.MethodGet, "/healthz")
	if n := calls.Load(); n != 4 {
		t.Errorf("/healthz called ready")
	}
}

func TestAdminReadyzNilFunc(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(AdminHandler(prometheus.NewRegistry(), nil))
	t.Cleanup(srv.Close)
	if code, _, _ := get(t, srv, http.MethodGet, "/readyz"); code != http.StatusOK {
		t.Errorf("nil ready: /readyz = %d, want 200", code)
	}
}

func TestAdminMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	srv := httptest.NewServer(AdminHandler(reg, nil))
	t.Cleanup(srv.Close)

	scrape := func() map[string]float64 {
		t.Helper()
		code, body, h := get(t, srv, http.MethodGet, "/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics = %d", code)
		}
		if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("/metrics Content-Type %q", ct)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("parse /metrics: %v", err)
		}
		out := map[string]float64{}
		for name, mf := range mfs {
			for _, mt := range mf.GetMetric() {
				key := name
				for _, lp := range mt.GetLabel() {
					key += "{" + lp.GetName() + "=" + lp.GetValue() + "}"
				}
				switch {
				case mt.Counter != nil:
					out[key] = mt.GetCounter().GetValue()
				case mt.Gauge != nil:
					out[key] = mt.GetGauge().GetValue()
				case mt.Histogram != nil:
					out[key+"_count"] = float64(mt.GetHistogram().GetSampleCount())
				}
			}
		}
		return out
	}

	before := scrape()
	if v, ok := before["pgveil_rejections_total{reason=like}"]; !ok || v != 0 {
		t.Errorf("before: like rejections = %v (present %v), want 0", v, ok)
	}
	m.Rejection(ReasonLike)
	m.ConnOpened()
	m.Decryptions("0a1b2c3d", 7)
	m.SetMaintenance(true)
	after := scrape()
	for key, want := range map[string]float64{
		"pgveil_rejections_total{reason=like}":        1,
		"pgveil_connections":                          1,
		"pgveil_connections_total{result=accepted}":   1,
		"pgveil_decryptions_total{key=0a1b2c3d}":      7,
		"pgveil_maintenance_mode":                     1,
		"pgveil_proxy_overhead_seconds_count":         0,
		"pgveil_rejections_total{reason=order_by}":    0,
		"pgveil_upstream_errors_total{kind=protocol}": 0,
	} {
		if got, ok := after[key]; !ok || got != want {
			t.Errorf("after: %s = %v (present %v), want %v", key, got, ok, want)
		}
	}
}

func TestAdminMethodsAndPaths(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(AdminHandler(prometheus.NewRegistry(), nil))
	t.Cleanup(srv.Close)
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _, _ := get(t, srv, http.MethodPost, path); code != http.StatusMethodNotAllowed {
			t.Errorf("POST %s = %d, want 405", path, code)
		}
	}
	if code, _, _ := get(t, srv, http.MethodGet, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ = %d, want 404", code)
	}
}

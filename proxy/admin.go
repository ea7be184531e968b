package proxy

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminHandler serves admin_listen (SPEC §7):
//
//   - GET /metrics: the families gathered from g, in the Prometheus text
//     format (or OpenMetrics when the scraper asks for it);
//   - GET /healthz: 200 "ok" for as long as the process runs (liveness);
//   - GET /readyz: 200 "ok" when ready returns nil, else 503 with
//     "pgveil: not ready: " and ready's error text (readiness).
//
// ready is called on every /readyz request and must be safe for concurrent
// use; it reports keys not loaded, upstream not accepting connections,
// maintenance mode and draining. Its error text is sent to the caller, so it
// must, like every pgveil error, name no key and no plaintext. A nil ready
// is always ready. HEAD works where GET does; other methods get 405.
func AdminHandler(g prometheus.Gatherer, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		// A failing collector should not hide every other metric.
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				msg := strings.TrimPrefix(err.Error(), "pgveil: ")
				plain(w, http.StatusServiceUnavailable, "pgveil: not ready: "+oneLine(msg))
				return
			}
		}
		plain(w, http.StatusOK, "ok")
	})
	return mux
}

func plain(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body + "\n"))
}

// oneLine keeps a reason on one line, so probes and logs show it whole.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

package keyring

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Error types of encryption_errors_total{error_type}.
const (
	ErrorTypeInvalidKey    = "invalid_key"
	ErrorTypeUndecryptable = "undecryptable"
	ErrorTypeNotToken      = "not_token"
	ErrorTypeTooLarge      = "too_large"
	ErrorTypeInvalidInput  = "invalid_input"
)

// Label values of encryption_operations_total and encryption_duration_seconds.
const (
	opEncrypt     = "encrypt"
	opDecrypt     = "decrypt"
	statusSuccess = "success"
	statusError   = "error"
)

var errorTypes = []string{ErrorTypeInvalidKey, ErrorTypeUndecryptable, ErrorTypeNotToken, ErrorTypeTooLarge, ErrorTypeInvalidInput}

// Metrics are the runbook's encryption metrics (SPEC §7), spelled as its
// dashboards and alerts expect. Every method is safe on a nil *Metrics and
// then does nothing. Proxy and backfill share one.
type Metrics struct {
	encryptOK, encryptErr, decryptOK, decryptErr prometheus.Counter
	errors                                       *prometheus.CounterVec
	encryptDur, decryptDur                       prometheus.Observer
	keyVersion                                   prometheus.Gauge
}

// NewMetrics registers encryption_operations_total, encryption_errors_total,
// encryption_duration_seconds and active_encryption_key_version with reg,
// every known label combination at zero. It panics if reg already holds
// them, as prometheus.MustRegister does.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "encryption_operations_total",
		Help: "Values encrypted or decrypted by pgveil, by operation and status.",
	}, []string{"operation", "status"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "encryption_errors_total",
		Help: "Encryption and decryption failures by error type.",
	}, []string{"error_type"})
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "encryption_duration_seconds",
		Help: "Time spent encrypting or decrypting the values of one call (one value or one protocol message's values).",
		// 1µs .. ~1s
		Buckets: prometheus.ExponentialBuckets(1e-6, 4, 11),
	}, []string{"operation"})
	ver := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "active_encryption_key_version",
		Help: "Version of the primary encryption key in use (keys.key_version).",
	})
	reg.MustRegister(ops, errs, dur, ver)
	m := &Metrics{
		encryptOK:  ops.WithLabelValues(opEncrypt, statusSuccess),
		encryptErr: ops.WithLabelValues(opEncrypt, statusError),
		decryptOK:  ops.WithLabelValues(opDecrypt, statusSuccess),
		decryptErr: ops.WithLabelValues(opDecrypt, statusError),
		errors:     errs,
		encryptDur: dur.WithLabelValues(opEncrypt),
		decryptDur: dur.WithLabelValues(opDecrypt),
		keyVersion: ver,
	}
	for _, t := range errorTypes {
		errs.WithLabelValues(t)
	}
	return m
}

// ObserveEncrypt records n values encrypted in d, of which failed failed.
func (m *Metrics) ObserveEncrypt(n, failed int, d time.Duration) {
	if m == nil || n <= 0 {
		return
	}
	observe(m.encryptOK, m.encryptErr, m.encryptDur, n, failed, d)
}

// ObserveDecrypt records n values decrypted in d, of which failed failed.
func (m *Metrics) ObserveDecrypt(n, failed int, d time.Duration) {
	if m == nil || n <= 0 {
		return
	}
	observe(m.decryptOK, m.decryptErr, m.decryptDur, n, failed, d)
}

func observe(ok, bad prometheus.Counter, dur prometheus.Observer, n, failed int, d time.Duration) {
	failed = min(max(failed, 0), n)
	if n > failed {
		ok.Add(float64(n - failed))
	}
	if failed > 0 {
		bad.Add(float64(failed))
	}
	dur.Observe(d.Seconds())
}

// Error counts one failure of errorType, which should be one of the
// ErrorType constants (see ErrorType).
func (m *Metrics) Error(errorType string) {
	if m == nil {
		return
	}
	m.errors.WithLabelValues(errorType).Inc()
}

// SetKeyVersion sets active_encryption_key_version.
func (m *Metrics) SetKeyVersion(v int) {
	if m == nil {
		return
	}
	m.keyVersion.Set(float64(v))
}

// ErrorType maps a keyring error to its error_type label: ErrNotToken,
// ErrUndecryptable, *SizeError, *InvalidInputError; anything else (a key
// that failed to load) is invalid_key.
func ErrorType(err error) string {
	var se *SizeError
	var ie *InvalidInputError
	switch {
	case errors.Is(err, ErrNotToken):
		return ErrorTypeNotToken
	case errors.Is(err, ErrUndecryptable):
		return ErrorTypeUndecryptable
	case errors.As(err, &se):
		return ErrorTypeTooLarge
	case errors.As(err, &ie):
		return ErrorTypeInvalidInput
	}
	return ErrorTypeInvalidKey
}

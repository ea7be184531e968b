package keyring

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsContract(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	want := `
# HELP active_encryption_key_version Version of the primary encryption key in use (keys.key_version).
# TYPE active_encryption_key_version gauge
active_encryption_key_version 0
# HELP encryption_errors_total Encryption and decryption failures by error type.
# TYPE encryption_errors_total counter
encryption_errors_total{error_type="invalid_input"} 0
encryption_errors_total{error_type="invalid_key"} 0
encryption_errors_total{error_type="not_token"} 0
encryption_errors_total{error_type="too_large"} 0
encryption_errors_total{error_type="undecryptable"} 0
# HELP encryption_operations_total Values encrypted or decrypted by pgveil, by operation and status.
# TYPE encryption_operations_total counter
encryption_operations_total{operation="decrypt",status="error"} 0
encryption_operations_total{operation="decrypt",status="success"} 0
encryption_operations_total{operation="encrypt",status="error"} 0
encryption_operations_total{operation="encrypt",status="success"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"active_encryption_key_version", "encryption_errors_total", "encryption_operations_total"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "encryption_duration_seconds"); err != nil || n != 2 {
		t.Errorf("encryption_duration_seconds series: %d %v", n, err)
	}
	m.ObserveEncrypt(3, 1, 5*time.Microsecond)
	m.ObserveDecrypt(4, 0, time.Microsecond)
	m.ObserveDecrypt(2, 5, time.Microsecond) // failed clamps to n
	m.Error(ErrorTypeUndecryptable)
	m.Error(ErrorType(&SizeError{}))
	m.SetKeyVersion(3)
	want = `
# HELP active_encryption_key_version Version of the primary encryption key in use (keys.key_version).
# TYPE active_encryption_key_version gauge
active_encryption_key_version 3
# HELP encryption_errors_total Encryption and decryption failures by error type.
# TYPE encryption_errors_total counter
encryption_errors_total{error_type="invalid_input"} 0
encryption_errors_total{error_type="invalid_key"} 0
encryption_errors_total{error_type="not_token"} 0
encryption_errors_total{error_type="too_large"} 1
encryption_errors_total{error_type="undecryptable"} 1
# HELP encryption_operations_total Values encrypted or decrypted by pgveil, by operation and status.
# TYPE encryption_operations_total counter
encryption_operations_total{operation="decrypt",status="error"} 2
encryption_operations_total{operation="decrypt",status="success"} 4
encryption_operations_total{operation="encrypt",status="error"} 1
encryption_operations_total{operation="encrypt",status="success"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"active_encryption_key_version", "encryption_errors_total", "encryption_operations_total"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.CollectAndCount(reg, "encryption_duration_seconds"); got != 2 {
		t.Errorf("duration series %d", got)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) != 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestMetricsNilSafe(t *testing.T) {
	t.Parallel()
	var m *Metrics
	m.ObserveEncrypt(1, 0, time.Second)
	m.ObserveDecrypt(1, 1, time.Second)
	m.Error(ErrorTypeNotToken)
	m.SetKeyVersion(2)
}

func TestErrorType(t *testing.T) {
	t.Parallel()
	kr, _ := testKeyring(t, 0)
	_, _, notTok := kr.Open(nil, []byte("plain"))
	other, _ := testKeyring(t, 0)
	tok, _ := other.Seal(nil, []byte("x"))
	_, _, undec := kr.Open(nil, tok)
	_, keyErr := ParseKey("short")
	for err, want := range map[error]string{
		notTok:                              ErrorTypeNotToken,
		undec:                               ErrorTypeUndecryptable,
		&SizeError{}:                        ErrorTypeTooLarge,
		&InvalidInputError{}:                ErrorTypeInvalidInput,
		keyErr:                              ErrorTypeInvalidKey,
		errors.Join(errors.New("x"), undec): ErrorTypeUndecryptable,
	} {
		if got := ErrorType(err); got != want {
			t.Errorf("ErrorType(%v) = %s, want %s", err, got, want)
		}
	}
}

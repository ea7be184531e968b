package test

import (
	"encoding/base64"
	"flag"
	"regexp"
	"strings"
	"testing"
)

// keyShaped matches text that looks like a Fernet key: 43 url-safe base64
// characters and "=". Fernet tokens are longer and have no "=" in that place;
// a match decoding to 32 bytes is a key, planted or not.
var keyShaped = regexp.MustCompile(`[A-Za-z0-9_-]{43}=`)

// TestZZZLogsHaveNoSecrets runs last (its file sorts last and it is not
// parallel): every log line pgveil wrote during the suite, from in-process
// proxies (allLogs) and from pgveil processes (recorded by startPgveil),
// is scanned for every planted plaintext value and key. Tests that call
// t.Parallel at the top level run after this one; their logs are not seen.
func TestZZZLogsHaveNoSecrets(t *testing.T) {
	if n := liveBinaries.Load(); n != 0 {
		t.Errorf("%d pgveil processes still running: their logs are not all recorded", n)
	}
	allLogs.mu.Lock()
	logs := append([]string(nil), allLogs.lines...)
	secrets := append(plantedList(), allLogs.keys...)
	allLogs.mu.Unlock()
	if len(logs) == 0 {
		// Only a -run filter that started no pgveil leaves nothing to
		// scan; in a whole run, no logs means their capture broke.
		if f := flag.Lookup("test.run"); f == nil || f.Value.String() == "" {
			t.Fatal("no pgveil logs were recorded in a run of the whole suite")
		}
		t.Skip("no pgveil logs were recorded: the -run filter started no pgveil")
	}
	var lines []string
	for _, l := range logs {
		lines = append(lines, strings.Split(l, "\n")...)
	}
	t.Logf("scanning %d log lines for %d planted secrets", len(lines), len(secrets))
	found := 0
	for _, line := range lines {
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				found++
				if found <= 20 {
					// Name the log line, not the secret.
					t.Errorf("a planted secret (%d characters) appears in a log line: %.300s", len(s), redact(line, s))
				}
			}
		}
		for _, m := range keyShaped.FindAllString(line, -1) {
			if raw, err := base64.URLEncoding.DecodeString(m); err == nil && len(raw) == 32 {
				found++
				if found <= 20 {
					t.Errorf("a key-shaped value appears in a log line: %.300s", redact(line, m))
				}
			}
		}
	}
	if found > 20 {
		t.Errorf("%d secrets found in logs in all", found)
	}
}

func redact(line, secret string) string {
	return strings.ReplaceAll(line, secret, "<REDACTED>")
}

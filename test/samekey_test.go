package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReloadRefusesSameKey: a reload whose hash key file now holds the
// encryption key is refused, and pgveil keeps its keys.
func TestReloadRefusesSameKey(t *testing.T) {
	c, db := newAppDB(t)
	dir := t.TempDir()
	ek, hk := genKey(t), genKey(t)
	encFile, hashFile := filepath.Join(dir, "encryption_key"), filepath.Join(dir, "hash_key")
	writeFileAtomic(t, encFile, ek)
	writeFileAtomic(t, hashFile, hk)
	p := startPgveil(t, c, db, binOpts{
		yaml: upstreamYAML(c) + appTables,
		env:  map[string]string{"ENCRYPTION_KEY_FILE": encFile, "ENCRYPTION_HASH_KEY_FILE": hashFile},
	})
	writeFileAtomic(t, hashFile, ek)
	l := p.reload("configuration reload failed; keeping the previous configuration")
	if e, _ := l["error"].(string); !strings.Contains(e, "keys.hash_key holds the same key as keys.encryption_key") {
		t.Fatalf("reload line %v", l)
	}
	if f, _ := l["fix"].(string); !strings.Contains(f, "pgveil keygen") {
		t.Fatalf("reload line without the fix: %v", l)
	}
	if err := connectErr(p); err != nil {
		t.Fatalf("pgveil after the refused reload: %v", err)
	}
	// Same check before start-up: exit 2 with the fix.
	_ = os.WriteFile(hashFile, []byte(ek), 0o600)
	e := &bfEnv{keys: map[string]string{"ENCRYPTION_KEY_FILE": encFile, "ENCRYPTION_HASH_KEY_FILE": hashFile}}
	_, errs, code := e.runRaw(t, "check", "--config", p.Config)
	if code != 2 || !strings.Contains(errs, "keys.hash_key holds the same key as keys.encryption_key") || !strings.Contains(errs, "fix: generate a hash key of its own") {
		t.Fatalf("check: exit %d\n%s", code, errs)
	}
}

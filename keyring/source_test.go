package keyring

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgveil/pgveil/config"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func defaultKeys() config.Keys {
	return config.Keys{
		EncryptionKey:    config.DefaultEncryptionKey,
		FallbackKeys:     config.DefaultFallbackKeys,
		KeyVersion:       1,
		HashKey:          config.DefaultHashKey,
		FallbackHashKeys: config.DefaultFallbackHashKeys,
	}
}

func TestLoadFromEnv(t *testing.T) {
	t.Parallel()
	k3, _ := GenerateKey()
	env := envOf(map[string]string{
		"ENCRYPTION_KEY":               testKeyA,
		"ENCRYPTION_KEY_FALLBACK":      " " + testKeyB + " , " + k3 + ",",
		"ENCRYPTION_HASH_KEY":          testKeyB + "\n",
		"ENCRYPTION_HASH_KEY_FALLBACK": testKeyA,
	})
	keys := defaultKeys()
	keys.KeyVersion = 5
	kr, err := Load(keys, env, os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	fps := kr.KeyFingerprints()
	if len(fps) != 3 || fps[0] != "630dcd29" || fps[1] != mustKey(t, testKeyB).Fingerprint() || fps[2] != mustKey(t, k3).Fingerprint() {
		t.Errorf("fingerprints %v", fps)
	}
	if kr.Version() != 5 || kr.HashFallbacks() != 1 || kr.HashKeyFingerprint() != mustKey(t, testKeyB).Fingerprint() {
		t.Errorf("version %d, hash fallbacks %d", kr.Version(), kr.HashFallbacks())
	}
	// The hash key is testKeyB: its blind index matches the fixed vector.
	if got := kr.BlindIndex(nil, "public.users.email", []byte("alice@example.com")); string(got) != "5d5aa0570bc2d354559eabbb9d770679910b349d21678747186b428a24b1ec4f" {
		t.Errorf("blind index %s", got)
	}
}

func TestLoadFromFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyFile := write("key", "\n  "+testKeyA+"\n\n")
	hashFile := write("hash", testKeyB)
	emptyFile := write("empty", "  \n")
	fb1 := write("fb1", testKeyB+"\n")
	keys := config.Keys{
		EncryptionKey:    "file:" + keyFile,
		FallbackKeys:     "file:" + fb1 + ",env:MORE,file:" + emptyFile + ",file:" + filepath.Join(dir, "absent"),
		KeyVersion:       2,
		HashKey:          "file:" + hashFile,
		FallbackHashKeys: "file:" + emptyFile,
	}
	k3, _ := GenerateKey()
	kr, err := Load(keys, envOf(map[string]string{"MORE": k3}), os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	if fps := kr.KeyFingerprints(); len(fps) != 3 || fps[0] != "630dcd29" {
		t.Errorf("fingerprints %v", fps)
	}
	if kr.HashFallbacks() != 0 {
		t.Errorf("empty fallback hash file gave %d keys", kr.HashFallbacks())
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	emptyFile := filepath.Join(dir, "empty")
	os.WriteFile(emptyFile, nil, 0o600)
	badFile := filepath.Join(dir, "bad")
	secretish := "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
	os.WriteFile(badFile, []byte(secretish), 0o600)
	std := strings.ReplaceAll(strings.ReplaceAll(testKeyA, "-", "+"), "_", "/")
	std = "+" + std[1:]
	cases := []struct {
		name string
		keys func(*config.Keys)
		env  map[string]string
		want []string
	}{
		{"missing key", nil, map[string]string{"ENCRYPTION_HASH_KEY": testKeyB},
			[]string{"encryption key is missing", "environment variable ENCRYPTION_KEY", "generate one with: pgveil keygen"}},
		{"missing hash key", nil, map[string]string{"ENCRYPTION_KEY": testKeyA},
			[]string{"hash key is missing", "environment variable ENCRYPTION_HASH_KEY", "pgveil keygen"}},
		{"malformed key", nil, map[string]string{"ENCRYPTION_KEY": secretish, "ENCRYPTION_HASH_KEY": testKeyB},
			[]string{"encryption key from environment variable ENCRYPTION_KEY is malformed", "url-safe base64 of 32 bytes", "pgveil keygen"}},
		{"standard base64 key", nil, map[string]string{"ENCRYPTION_KEY": std, "ENCRYPTION_HASH_KEY": testKeyB},
			[]string{"standard base64", "ENCRYPTION_KEY"}},
		{"malformed fallback", nil, map[string]string{"ENCRYPTION_KEY": testKeyA, "ENCRYPTION_HASH_KEY": testKeyB, "ENCRYPTION_KEY_FALLBACK": testKeyB + "," + secretish},
			[]string{"fallback key number 2 from environment variable ENCRYPTION_KEY_FALLBACK is malformed", "pgveil keygen"}},
		{"malformed hash fallback", nil, map[string]string{"ENCRYPTION_KEY": testKeyA, "ENCRYPTION_HASH_KEY": testKeyB, "ENCRYPTION_HASH_KEY_FALLBACK": secretish},
			[]string{"fallback hash key number 1", "ENCRYPTION_HASH_KEY_FALLBACK"}},
		{"two primaries", nil, map[string]string{"ENCRYPTION_KEY": testKeyA + "," + testKeyB, "ENCRYPTION_HASH_KEY": testKeyB},
			[]string{"more than one key", "fallback"}},
		{"empty key file", func(k *config.Keys) { k.EncryptionKey = "file:" + emptyFile }, map[string]string{"ENCRYPTION_HASH_KEY": testKeyB},
			[]string{"file " + emptyFile + " does not exist or is empty", "pgveil keygen"}},
		{"absent key file", func(k *config.Keys) { k.EncryptionKey = "file:" + emptyFile + ".nope" }, map[string]string{"ENCRYPTION_HASH_KEY": testKeyB},
			[]string{"does not exist", "pgveil keygen"}},
		{"bad key file", func(k *config.Keys) { k.HashKey = "file:" + badFile }, map[string]string{"ENCRYPTION_KEY": testKeyA},
			[]string{"hash key from file " + badFile + " is malformed"}},
		{"unreadable key file", func(k *config.Keys) { k.HashKey = "file:" + dir }, map[string]string{"ENCRYPTION_KEY": testKeyA},
			[]string{"cannot read key file " + dir}},
		{"key pasted as source", func(k *config.Keys) { k.EncryptionKey = testKeyA }, nil,
			[]string{"not env:NAME or file:/path", "redacted"}},
		{"unset source", func(k *config.Keys) { k.EncryptionKey = "" }, nil,
			[]string{"encryption key is not configured", "ENCRYPTION_KEY", "pgveil keygen"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			keys := defaultKeys()
			if c.keys != nil {
				c.keys(&keys)
			}
			_, err := Load(keys, envOf(c.env), os.ReadFile)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "pgveil: ") {
				t.Errorf("message %q does not start with pgveil:", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			for _, secret := range []string{testKeyA[:20], testKeyB[:20], secretish[:20], std[:20]} {
				if strings.Contains(msg, secret) {
					t.Errorf("message %q contains key material", msg)
				}
			}
		})
	}
}

func TestSourceParse(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Source{
		"env:ENCRYPTION_KEY":    {SourceEnv, "ENCRYPTION_KEY"},
		" file:/run/s/key ":     {SourceFile, "/run/s/key"},
		"FILE:/a:b":             {SourceFile, "/a:b"},
		"file:/path,with,comma": {SourceFile, "/path,with,comma"},
	} {
		got, err := ParseSource(in)
		if err != nil || got != want {
			t.Errorf("ParseSource(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "env:", "vault:x", "ENCRYPTION_KEY"} {
		if _, err := ParseSource(in); err == nil {
			t.Errorf("ParseSource(%q) succeeded", in)
		}
	}
	got := splitSources("env:A, file:/x,y ,env:B,")
	if len(got) != 3 || got[0] != "env:A" || strings.TrimSpace(got[1]) != "file:/x,y" || got[2] != "env:B" {
		t.Errorf("splitSources = %q", got)
	}
	if s := (Source{SourceFile, "/k"}).String(); s != "file:/k" {
		t.Errorf("String %q", s)
	}
	_, ok, err := Source{SourceFile, "/nonexistent/k"}.Resolve(nil, os.ReadFile)
	if ok || err != nil {
		t.Errorf("missing file: %v %v", ok, err)
	}
	_, _, err = Source{SourceFile, "/k"}.Resolve(nil, func(string) ([]byte, error) { return nil, errors.New("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("read error: %v", err)
	}
}

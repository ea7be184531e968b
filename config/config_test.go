package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const minimal = `
upstream: db.internal:5432
tables:
  - table: users
    columns:
      - column: email
        blind_index: email_hash
      - column: full_name
  - table: tasks
    columns: [{column: title}, {column: description}]
  - table: chat_history
    columns: [{column: message}]
`

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func mustParse(t *testing.T, yml string, e map[string]string) *Config {
	t.Helper()
	c, err := Parse([]byte(yml), "pgveil.yaml", env(e))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c := mustParse(t, minimal, nil)
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "127.0.0.1:6432"},
		{"admin_listen", c.AdminListen, "127.0.0.1:9187"},
		{"upstream", c.Upstream, "db.internal:5432"},
		{"tls", c.TLS == nil, true},
		{"upstream_tls.mode", c.UpstreamTLS.Mode, "prefer"},
		{"upstream_tls.server_name", c.UpstreamTLS.ServerName, "db.internal"},
		{"encryption_key", c.Keys.EncryptionKey, "env:ENCRYPTION_KEY"},
		{"fallback_keys", c.Keys.FallbackKeys, "env:ENCRYPTION_KEY_FALLBACK"},
		{"hash_key", c.Keys.HashKey, "env:ENCRYPTION_HASH_KEY"},
		{"fallback_hash_keys", c.Keys.FallbackHashKeys, "env:ENCRYPTION_HASH_KEY_FALLBACK"},
		{"key_version", c.Keys.KeyVersion, 1},
		{"max_size", c.Encryption.MaxSize, 10485760},
		{"sanitize", c.Encryption.Sanitize(), true},
		{"sanitize ptr", c.Encryption.SanitizeInput != nil, true},
		{"audit", c.Encryption.Audit(), true},
		{"mode", c.Encryption.Mode, "strict"},
		{"on_unsupported", c.Encryption.OnUnsupported, "reject"},
		{"max_message_size", c.Proxy.MaxMessageSize, 256 << 20},
		{"startup_timeout", c.Proxy.StartupTimeout.D(), 30 * time.Second},
		{"plan_cache_size", c.Proxy.PlanCacheSize, 4096},
		{"shutdown_timeout", c.ShutdownTimeout.D(), 30 * time.Second},
		{"log_level", c.LogLevel, "info"},
		{"maintenance", c.Maintenance, false},
		{"path", c.Path, "pgveil.yaml"},
		{"tables", len(c.Tables), 3},
		{"schema", c.Tables[0].Schema, "public"},
		{"name", c.Tables[0].Name, "users"},
		{"table", c.Tables[0].Table, "public.users"},
		{"hash domain", c.Tables[0].Columns[0].HashDomain, "public.users.email"},
		{"blind index", c.Tables[0].Columns[0].BlindIndex, "email_hash"},
		{"searchable", c.Tables[0].Columns[0].Searchable(), true},
		{"not searchable", c.Tables[0].Columns[1].Searchable(), false},
		{"flow columns", c.Tables[1].Columns[1].Column, "description"},
		{"domain 2", c.Tables[2].Columns[0].HashDomain, "public.chat_history.message"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if c.Lookup("PUBLIC", "Users") != &c.Tables[0] || c.Lookup("public", "nope") != nil {
		t.Error("Lookup")
	}
	if col := c.Tables[0].Column("EMAIL"); col == nil || col.BlindIndex != "email_hash" {
		t.Error("Table.Column")
	}
}

func TestFullFile(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
listen: 0.0.0.0:6433
upstream: 10.0.0.5:5433
admin_listen: "off"
tls:
  cert_file: server.crt
  key_file: server.key
upstream_tls:
  mode: Verify-Full
  ca_file: ca.crt
  server_name: pg.example.com
keys:
  encryption_key: file:/run/secrets/key
  fallback_keys: env:OLD_KEY,file:/run/secrets/older
  key_version: 4
  hash_key: env:HK
encryption:
  max_size: 1000
  sanitize_input: false
  audit_logging: false
  mode: migrating
  on_unsupported: passthrough
proxy:
  max_message_size: 1048576
  startup_timeout: 5s
  plan_cache_size: 10
shutdown_timeout: 1m30s
log_level: WARNING
maintenance: true
tables:
  - table: App.People
    columns:
      - column: Email
        blind_index: Email_HMAC
        hash_domain: email
`, nil)
	tb := c.Tables[0]
	col := tb.Columns[0]
	if c.Listen != "0.0.0.0:6433" || c.AdminListen != "" || c.TLS == nil || c.TLS.KeyFile != "server.key" ||
		c.UpstreamTLS.Mode != "verify-full" || c.UpstreamTLS.ServerName != "pg.example.com" ||
		c.Keys.EncryptionKey != "file:/run/secrets/key" || c.Keys.KeyVersion != 4 || c.Keys.HashKey != "env:HK" ||
		c.Encryption.MaxSize != 1000 || c.Encryption.Sanitize() || c.Encryption.Audit() ||
		c.Encryption.Mode != "migrating" || c.Encryption.OnUnsupported != "passthrough" ||
		c.Proxy.MaxMessageSize != 1<<20 || c.Proxy.StartupTimeout.D() != 5*time.Second || c.Proxy.PlanCacheSize != 10 ||
		c.ShutdownTimeout.D() != 90*time.Second || c.LogLevel != "warn" || !c.Maintenance ||
		tb.Schema != "app" || tb.Name != "people" || col.Column != "email" || col.BlindIndex != "email_hmac" || col.HashDomain != "email" {
		t.Errorf("full file decoded as %+v", c)
	}
}

func TestUnknownKey(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yml, key string
		line           int
	}{
		{"top level", "upstream: a:1\nlisten_addr: x\n", "listen_addr", 2},
		{"keys", "upstream: a:1\nkeys:\n  encryption_key: env:X\n  hashkey: env:Y\n", "hashkey", 4},
		{"column", "upstream: a:1\ntables:\n  - table: t\n    columns:\n      - column: c\n        blindindex: c_hash\n", "blindindex", 6},
		{"table", "upstream: a:1\ntables:\n  - table: t\n    colums: []\n", "colums", 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yml), "p.yaml", nil)
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) != 1 {
				t.Fatalf("err = %v", err)
			}
			p := ce.Problems[0]
			if p.Line != c.line || p.Key != c.key {
				t.Errorf("problem %+v, want line %d key %s", p, c.line, c.key)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "pgveil: ") || !strings.Contains(msg, `unknown key "`+c.key+`"`) ||
				!strings.Contains(msg, "line ") || !strings.Contains(msg, "p.yaml") {
				t.Errorf("message %q", msg)
			}
		})
	}
}

func TestSyntaxErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, yml, want string }{
		{"bad yaml", "upstream: [a\n", "line"},
		{"bad duration", minimal + "shutdown_timeout: 30\n", `"30" is not a duration`},
		{"bad duration word", minimal + "proxy: {startup_timeout: soon}\n", "not a duration"},
		{"negative duration", minimal + "shutdown_timeout: -5s\n", "negative"},
		{"wrong type", minimal + "encryption: {max_size: big}\n", "line"},
		{"two documents", minimal + "---\nlisten: x\n", "more than one YAML document"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.yml), "p.yaml", nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "pgveil: ") {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	t.Parallel()
	file := minimal + `
keys:
  encryption_key: file:/etc/k
  fallback_keys: file:/etc/fk
  hash_key: file:/etc/hk
  fallback_hash_keys: file:/etc/fhk
  key_version: 2
encryption:
  max_size: 5000
  sanitize_input: true
  audit_logging: true
`
	cases := []struct {
		name  string
		env   map[string]string
		check func(*Config) bool
	}{
		{"none", nil, func(c *Config) bool {
			return c.Keys.EncryptionKey == "file:/etc/k" && c.Keys.KeyVersion == 2 && c.Encryption.MaxSize == 5000
		}},
		{"ENCRYPTION_KEY", map[string]string{"ENCRYPTION_KEY": "x"}, func(c *Config) bool { return c.Keys.EncryptionKey == "env:ENCRYPTION_KEY" }},
		{"empty ENCRYPTION_KEY keeps file", map[string]string{"ENCRYPTION_KEY": ""}, func(c *Config) bool { return c.Keys.EncryptionKey == "file:/etc/k" }},
		{"ENCRYPTION_KEY_FILE", map[string]string{"ENCRYPTION_KEY_FILE": "/run/s/k"}, func(c *Config) bool { return c.Keys.EncryptionKey == "file:/run/s/k" }},
		{"ENCRYPTION_KEY_FALLBACK", map[string]string{"ENCRYPTION_KEY_FALLBACK": "a,b"}, func(c *Config) bool { return c.Keys.FallbackKeys == "env:ENCRYPTION_KEY_FALLBACK" }},
		{"ENCRYPTION_KEY_FALLBACK_FILE", map[string]string{"ENCRYPTION_KEY_FALLBACK_FILE": "/f"}, func(c *Config) bool { return c.Keys.FallbackKeys == "file:/f" }},
		{"ENCRYPTION_HASH_KEY", map[string]string{"ENCRYPTION_HASH_KEY": "x"}, func(c *Config) bool { return c.Keys.HashKey == "env:ENCRYPTION_HASH_KEY" }},
		{"ENCRYPTION_HASH_KEY_FILE", map[string]string{"ENCRYPTION_HASH_KEY_FILE": "/h"}, func(c *Config) bool { return c.Keys.HashKey == "file:/h" }},
		{"ENCRYPTION_HASH_KEY_FALLBACK", map[string]string{"ENCRYPTION_HASH_KEY_FALLBACK": "x"}, func(c *Config) bool {
			return c.Keys.FallbackHashKeys == "env:ENCRYPTION_HASH_KEY_FALLBACK"
		}},
		{"ENCRYPTION_HASH_KEY_FALLBACK_FILE", map[string]string{"ENCRYPTION_HASH_KEY_FALLBACK_FILE": "/g"}, func(c *Config) bool { return c.Keys.FallbackHashKeys == "file:/g" }},
		{"ENCRYPTION_KEY_VERSION", map[string]string{"ENCRYPTION_KEY_VERSION": "7"}, func(c *Config) bool { return c.Keys.KeyVersion == 7 }},
		{"ENCRYPTION_MAX_SIZE", map[string]string{"ENCRYPTION_MAX_SIZE": "123"}, func(c *Config) bool { return c.Encryption.MaxSize == 123 }},
		{"ENCRYPTION_SANITIZE_INPUT", map[string]string{"ENCRYPTION_SANITIZE_INPUT": "false"}, func(c *Config) bool { return !c.Encryption.Sanitize() }},
		{"ENCRYPTION_SANITIZE_INPUT 0", map[string]string{"ENCRYPTION_SANITIZE_INPUT": "0"}, func(c *Config) bool { return !c.Encryption.Sanitize() }},
		{"ENCRYPTION_AUDIT_LOGGING", map[string]string{"ENCRYPTION_AUDIT_LOGGING": "FALSE"}, func(c *Config) bool { return !c.Encryption.Audit() }},
		{"MAINTENANCE_MODE", map[string]string{"MAINTENANCE_MODE": "true"}, func(c *Config) bool { return c.Maintenance }},
		{"MAINTENANCE_MODE 1", map[string]string{"MAINTENANCE_MODE": "1"}, func(c *Config) bool { return c.Maintenance }},
		{"MAINTENANCE_MODE 0", map[string]string{"MAINTENANCE_MODE": "0"}, func(c *Config) bool { return !c.Maintenance }},
	}
	for _, c := range cases {
		cfg := mustParse(t, file, c.env)
		if !c.check(cfg) {
			t.Errorf("%s: got %+v", c.name, cfg.Keys)
		}
	}
	// Defaults apply when neither file nor env names a source.
	cfg := mustParse(t, minimal, map[string]string{"ENCRYPTION_HASH_KEY_FILE": "/h"})
	if cfg.Keys.EncryptionKey != "env:ENCRYPTION_KEY" || cfg.Keys.HashKey != "file:/h" {
		t.Errorf("defaults with env: %+v", cfg.Keys)
	}
}

func TestEnvErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"ENCRYPTION_KEY": "x", "ENCRYPTION_KEY_FILE": "/k"}, "both ENCRYPTION_KEY and ENCRYPTION_KEY_FILE are set"},
		{map[string]string{"ENCRYPTION_KEY_VERSION": "two"}, "ENCRYPTION_KEY_VERSION: must be a whole number"},
		{map[string]string{"ENCRYPTION_KEY_VERSION": "0"}, "ENCRYPTION_KEY_VERSION: must be a whole number"},
		{map[string]string{"ENCRYPTION_MAX_SIZE": "-1"}, "ENCRYPTION_MAX_SIZE: must be a whole number"},
		{map[string]string{"ENCRYPTION_SANITIZE_INPUT": "maybe"}, "ENCRYPTION_SANITIZE_INPUT: must be true or false"},
		{map[string]string{"MAINTENANCE_MODE": "sometimes"}, "MAINTENANCE_MODE: must be true or false"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(minimal), "", env(c.env))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("env %v: err %v, want %q", c.env, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\"x\"") {
			t.Errorf("error echoes a value: %v", err)
		}
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yml string
		line      int
		want      string
	}{
		{"no upstream", "tables: [{table: t, columns: [{column: c}]}]\n", 0, "upstream: required: set it to the host:port"},
		{"bad upstream", "upstream: localhost\ntables: [{table: t, columns: [{column: c}]}]\n", 1, "upstream: must be host:port"},
		{"bad port", "upstream: h:99999\ntables: [{table: t, columns: [{column: c}]}]\n", 1, "must be a number from 0 to 65535"},
		{"bad listen", "listen: 6432\n" + minimal, 1, "listen: must be host:port"},
		{"no tables", "upstream: h:1\n", 0, "tables: required"},
		{"empty tables", "upstream: h:1\ntables: []\n", 2, "tables: required"},
		{"no columns", "upstream: h:1\ntables:\n  - table: users\n", 3, "table public.users has no columns"},
		{"empty columns", "upstream: h:1\ntables:\n  - table: users\n    columns: []\n", 4, "has no columns"},
		{"no table name", "upstream: h:1\ntables:\n  - columns: [{column: c}]\n", 3, "table name is required"},
		{"two dots", "upstream: h:1\ntables:\n  - table: a.b.c\n    columns: [{column: c}]\n", 3, "more than one dot"},
		{"quoted", "upstream: h:1\ntables:\n  - table: '\"Users\"'\n    columns: [{column: c}]\n", 3, "without quotes"},
		{"dup table", "upstream: h:1\ntables:\n  - table: users\n    columns: [{column: a}]\n  - table: public.Users\n    columns: [{column: b}]\n", 5, "configured twice"},
		{"dup column", "upstream: h:1\ntables:\n  - table: users\n    columns:\n      - column: email\n      - column: EMAIL\n", 6, "column public.users.email is configured twice"},
		{"empty column", "upstream: h:1\ntables:\n  - table: users\n    columns:\n      - column: ''\n", 5, "column name is empty"},
		{"blind index same as column", "upstream: h:1\ntables:\n  - table: users\n    columns:\n      - column: email\n        blind_index: Email\n", 6, "must be another column, such as email_hash"},
		{"blind index is encrypted column", "upstream: h:1\ntables:\n  - table: users\n    columns:\n      - column: email\n      - column: name\n        blind_index: email\n", 7, "already used as an encrypted column"},
		{"shared blind index", "upstream: h:1\ntables:\n  - table: users\n    columns:\n      - column: a\n        blind_index: h\n      - column: b\n        blind_index: h\n", 8, "already used as the blind index of a"},
		{"upstream tls mode", minimal + "upstream_tls: {mode: always}\n", 13, "use disable, prefer, require or verify-full"},
		{"cert without key", minimal + "tls:\n  cert_file: a.crt\n", 13, "set both"},
		{"key without cert", minimal + "tls:\n  key_file: a.key\n", 13, "key_file is set without cert_file"},
		{"mode", minimal + "encryption: {mode: lax}\n", 13, "use strict, or migrating"},
		{"on_unsupported", minimal + "encryption: {on_unsupported: allow}\n", 13, "use reject or passthrough"},
		{"max_size", minimal + "encryption: {max_size: -3}\n", 13, "must be a positive number of bytes"},
		{"key material as source", minimal + "keys: {encryption_key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=}\n", 13, "must be a key source, env:NAME or file:/path"},
		{"bad fallback source", minimal + "keys: {fallback_keys: 'env:A,vault:b'}\n", 13, "keys.fallback_keys: must be a key source"},
		{"key_version", minimal + "keys: {key_version: -1}\n", 13, "keys.key_version: must be at least 1"},
		{"message too small", minimal + "proxy: {max_message_size: 1000}\n", 13, "raise proxy.max_message_size or lower encryption.max_size"},
		{"plan cache", minimal + "proxy: {plan_cache_size: -1}\n", 13, "plan_cache_size"},
		{"event loops", minimal + "proxy: {event_loops: -1}\n", 13, "event_loops"},
		{"log level", minimal + "log_level: loud\n", 13, "use debug, info, warn or error"},
		{"admin listen", minimal + "admin_listen: nine\n", 13, `or "off" to disable`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yml), "p.yaml", nil)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %q, want %q", err, c.want)
			}
			for _, p := range ce.Problems {
				if strings.Contains(p.String(), c.want) && p.Line != c.line {
					t.Errorf("problem %q on line %d, want %d", p, p.Line, c.line)
				}
			}
			if strings.Contains(err.Error(), "AAECAwQFBgcICQoLDA0ODxAR") {
				t.Errorf("error echoes key material: %v", err)
			}
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte("listen: nope\nencryption: {mode: lax}\n"), "p.yaml", nil)
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != 4 {
		t.Fatalf("want 4 problems (listen, upstream, mode, tables), got %v", err)
	}
	if !strings.Contains(err.Error(), "(4 problems)") {
		t.Errorf("message %q", err)
	}
}

func TestLoadAndConfigPath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "pgveil.yaml")
	if err := os.WriteFile(p, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, nil)
	if err != nil || c.Path != p || c.Upstream != "db.internal:5432" {
		t.Fatalf("Load: %v %+v", err, c)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), nil); err == nil || !strings.Contains(err.Error(), "pass --config FILE or set PGVEIL_CONFIG") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Load("", nil); err == nil || !strings.Contains(err.Error(), "PGVEIL_CONFIG") {
		t.Errorf("no path: %v", err)
	}
	e := env(map[string]string{"PGVEIL_CONFIG": "/etc/pgveil.yaml"})
	if got := ConfigPath("", e); got != "/etc/pgveil.yaml" {
		t.Errorf("ConfigPath env = %q", got)
	}
	if got := ConfigPath("x.yaml", e); got != "x.yaml" {
		t.Errorf("ConfigPath flag = %q", got)
	}
	if got := ConfigPath("", nil); got != "" {
		t.Errorf("ConfigPath none = %q", got)
	}
}

func TestYAML11Booleans(t *testing.T) {
	t.Parallel()
	c := mustParse(t, minimal+"admin_listen: off\nencryption: {sanitize_input: no, audit_logging: off}\n", nil)
	if c.AdminListen != "" || c.Encryption.Sanitize() || c.Encryption.Audit() {
		t.Errorf("admin_listen %q sanitize %v audit %v", c.AdminListen, c.Encryption.Sanitize(), c.Encryption.Audit())
	}
}

func TestSameKeySourceRefused(t *testing.T) {
	yml := "upstream: 127.0.0.1:5432\nkeys:\n  encryption_key: file:/run/secrets/key\n  hash_key: FILE:/run/secrets/key \ntables:\n  - table: users\n    columns: [{column: email}]\n"
	_, err := Parse([]byte(yml), "x.yaml", nil)
	if err == nil || !strings.Contains(err.Error(), "line 4: keys.hash_key: names the same source as keys.encryption_key (file:/run/secrets/key)") {
		t.Fatalf("got %v", err)
	}
	env := map[string]string{"ENCRYPTION_KEY": "x", "ENCRYPTION_HASH_KEY": "y"}
	if _, err := Parse([]byte("upstream: 127.0.0.1:5432\ntables:\n  - table: users\n    columns: [{column: email}]\n"), "x.yaml",
		func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatalf("two variables: %v", err)
	}
}

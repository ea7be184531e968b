package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// validator applies the environment, fills defaults and collects problems.
type validator struct {
	cfg  *Config
	err  *Error
	root *yaml.Node
}

// problem records msg for the setting at path (elements are map keys or
// sequence indexes), with the line of the nearest node that exists.
func (v *validator) problem(msg string, path ...any) {
	v.err.Problems = append(v.err.Problems, Problem{Line: v.line(path), Key: pathString(path), Message: msg})
}

func (v *validator) envProblem(name, msg string) {
	v.err.Problems = append(v.err.Problems, Problem{Key: name, Message: msg})
}

func pathString(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch p := p.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", p)
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(p)
		}
	}
	return b.String()
}

// line finds the line of path in the YAML tree: the key's line for a map
// entry, the item's line for a sequence element, else the nearest parent's.
func (v *validator) line(path []any) int {
	n := v.root
	if n == nil || n.Kind != yaml.DocumentNode || len(n.Content) == 0 {
		return 0
	}
	n = n.Content[0]
	line := 0
	for _, p := range path {
		switch p := p.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return line
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					line = n.Content[i].Line
					n = n.Content[i+1]
					found = true
					break
				}
			}
			if !found {
				return line
			}
		case int:
			if n.Kind != yaml.SequenceNode || p >= len(n.Content) {
				return line
			}
			n = n.Content[p]
			line = n.Line
		}
	}
	return line
}

// keyEnv pairs a key variable with the setting it overrides.
type keyEnv struct {
	name  string
	field *string
}

func (v *validator) applyEnv(lookupEnv func(string) (string, bool)) {
	get := func(name string) (string, bool) {
		val, ok := lookupEnv(name)
		val = strings.TrimSpace(val)
		return val, ok && val != ""
	}
	k := &v.cfg.Keys
	for _, ke := range []keyEnv{
		{EnvKey, &k.EncryptionKey},
		{EnvKeyFallback, &k.FallbackKeys},
		{EnvHashKey, &k.HashKey},
		{EnvHashKeyFallback, &k.FallbackHashKeys},
	} {
		_, set := get(ke.name)
		file, fileSet := get(ke.name + FileSuffix)
		switch {
		case set && fileSet:
			v.envProblem(ke.name, fmt.Sprintf("both %s and %s are set; unset one of them", ke.name, ke.name+FileSuffix))
		case set:
			*ke.field = "env:" + ke.name
		case fileSet:
			*ke.field = "file:" + file
		}
	}
	if s, ok := get(EnvKeyVersion); ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			v.envProblem(EnvKeyVersion, "must be a whole number of at least 1 (the version of the primary key)")
		} else {
			k.KeyVersion = n
		}
	}
	if s, ok := get(EnvMaxSize); ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			v.envProblem(EnvMaxSize, "must be a whole number of bytes, at least 1 (default 10485760)")
		} else {
			v.cfg.Encryption.MaxSize = n
		}
	}
	for _, b := range []struct {
		name string
		set  func(bool)
	}{
		{EnvSanitizeInput, func(x bool) { v.cfg.Encryption.SanitizeInput = &x }},
		{EnvAuditLogging, func(x bool) { v.cfg.Encryption.AuditLogging = &x }},
		{EnvMaintenanceMode, func(x bool) { v.cfg.Maintenance = x }},
	} {
		s, ok := get(b.name)
		if !ok {
			continue
		}
		x, valid := parseBool(s)
		if !valid {
			v.envProblem(b.name, "must be true or false (or 1 or 0)")
			continue
		}
		b.set(x)
	}
}

func parseBool(s string) (value, ok bool) {
	switch strings.ToLower(s) {
	case "1", "true", "yes", "on":
		return true, true
	case "0", "false", "no", "off":
		return false, true
	}
	return false, false
}

func (v *validator) defaults() {
	c := v.cfg
	c.Listen = strings.TrimSpace(c.Listen)
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	c.Upstream = strings.TrimSpace(c.Upstream)
	c.AdminListen = strings.TrimSpace(c.AdminListen)
	switch {
	case c.AdminListen == "":
		c.AdminListen = DefaultAdminListen
	case strings.EqualFold(c.AdminListen, AdminListenOff):
		c.AdminListen = ""
	}
	c.UpstreamTLS.Mode = strings.ToLower(strings.TrimSpace(c.UpstreamTLS.Mode))
	if c.UpstreamTLS.Mode == "" {
		c.UpstreamTLS.Mode = TLSPrefer
	}
	if c.UpstreamTLS.ServerName == "" {
		if host, _, err := net.SplitHostPort(c.Upstream); err == nil {
			c.UpstreamTLS.ServerName = host
		}
	}
	k := &c.Keys
	if strings.TrimSpace(k.EncryptionKey) == "" {
		k.EncryptionKey = DefaultEncryptionKey
	}
	if strings.TrimSpace(k.FallbackKeys) == "" {
		k.FallbackKeys = DefaultFallbackKeys
	}
	if strings.TrimSpace(k.HashKey) == "" {
		k.HashKey = DefaultHashKey
	}
	if strings.TrimSpace(k.FallbackHashKeys) == "" {
		k.FallbackHashKeys = DefaultFallbackHashKeys
	}
	if k.KeyVersion == 0 {
		k.KeyVersion = DefaultKeyVersion
	}
	e := &c.Encryption
	if e.MaxSize == 0 {
		e.MaxSize = DefaultMaxSize
	}
	t := true
	if e.SanitizeInput == nil {
		e.SanitizeInput = &t
	}
	if e.AuditLogging == nil {
		e.AuditLogging = &t
	}
	e.Mode = strings.ToLower(strings.TrimSpace(e.Mode))
	if e.Mode == "" {
		e.Mode = ModeStrict
	}
	e.OnUnsupported = strings.ToLower(strings.TrimSpace(e.OnUnsupported))
	if e.OnUnsupported == "" {
		e.OnUnsupported = OnUnsupportedReject
	}
	p := &c.Proxy
	if p.MaxMessageSize == 0 {
		p.MaxMessageSize = DefaultMaxMessageSize
	}
	if p.StartupTimeout == 0 {
		p.StartupTimeout = Duration(DefaultStartupTimeout)
	}
	if p.PlanCacheSize == 0 {
		p.PlanCacheSize = DefaultPlanCacheSize
	}
	if p.UpstreamIdleTimeout == 0 {
		p.UpstreamIdleTimeout = Duration(DefaultUpstreamIdleTimeout)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(DefaultShutdownTimeout)
	}
	c.LogLevel = strings.ToLower(strings.TrimSpace(c.LogLevel))
	switch c.LogLevel {
	case "":
		c.LogLevel = DefaultLogLevel
	case "warning":
		c.LogLevel = "warn"
	}
}

// checkHostPort reports what is wrong with a host:port address, or "".
func checkHostPort(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "must be host:port, such as 127.0.0.1:5432"
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("port %q must be a number from 0 to 65535", port)
	}
	return ""
}

func (v *validator) validate() {
	c := v.cfg
	if msg := checkHostPort(c.Listen); msg != "" {
		v.problem(msg, "listen")
	}
	if c.Upstream == "" {
		v.problem("required: set it to the host:port of PostgreSQL, such as 127.0.0.1:5432", "upstream")
	} else if msg := checkHostPort(c.Upstream); msg != "" {
		v.problem(msg, "upstream")
	}
	if c.AdminListen != "" {
		if msg := checkHostPort(c.AdminListen); msg != "" {
			v.problem(msg+`, or "off" to disable the admin server`, "admin_listen")
		}
	}
	if c.TLS != nil {
		c.TLS.CertFile = strings.TrimSpace(c.TLS.CertFile)
		c.TLS.KeyFile = strings.TrimSpace(c.TLS.KeyFile)
		switch {
		case c.TLS.CertFile == "" && c.TLS.KeyFile == "":
			c.TLS = nil
		case c.TLS.CertFile == "":
			v.problem("key_file is set without cert_file; set both to offer TLS to clients, or neither", "tls", "cert_file")
		case c.TLS.KeyFile == "":
			v.problem("cert_file is set without key_file; set both to offer TLS to clients, or neither", "tls", "key_file")
		}
	}
	switch c.UpstreamTLS.Mode {
	case TLSDisable, TLSPrefer, TLSRequire, TLSVerifyFull:
	default:
		v.problem(fmt.Sprintf("unknown mode %q; use disable, prefer, require or verify-full", c.UpstreamTLS.Mode), "upstream_tls", "mode")
	}
	// verify-full without ca_file verifies against the system's roots.

	v.checkSources()
	if c.Keys.KeyVersion < 1 {
		v.problem("must be at least 1", "keys", "key_version")
	}

	e := &c.Encryption
	if e.MaxSize < 1 {
		v.problem("must be a positive number of bytes (default 10485760)", "encryption", "max_size")
	}
	switch e.Mode {
	case ModeStrict, ModeMigrating:
	default:
		v.problem(fmt.Sprintf("unknown mode %q; use strict, or migrating until pgveil backfill has finished", e.Mode), "encryption", "mode")
	}
	switch e.OnUnsupported {
	case OnUnsupportedReject, OnUnsupportedPassthrough:
	default:
		v.problem(fmt.Sprintf("unknown value %q; use reject or passthrough", e.OnUnsupported), "encryption", "on_unsupported")
	}

	p := &c.Proxy
	if p.MaxMessageSize < 1 {
		v.problem("must be a positive number of bytes (default 268435456)", "proxy", "max_message_size")
	} else if e.MaxSize > 0 {
		if need := tokenLen(e.MaxSize) + 64; p.MaxMessageSize < need {
			v.problem(fmt.Sprintf("%d bytes cannot carry one encrypted value of encryption.max_size (%d bytes need %d); raise proxy.max_message_size or lower encryption.max_size", p.MaxMessageSize, e.MaxSize, need), "proxy", "max_message_size")
		}
	}
	if p.PlanCacheSize < 0 {
		v.problem("must be a positive number of plans (default 4096)", "proxy", "plan_cache_size")
	}
	if p.EventLoops != nil && (*p.EventLoops < 0 || *p.EventLoops > 256) {
		v.problem("must be between 0 (every session on goroutines) and 256 threads; leave it out for half the processors", "proxy", "event_loops")
	}
	if p.IOUring != "" && p.IOUring != "auto" && p.IOUring != "off" {
		v.problem(fmt.Sprintf("is %q; use auto (io_uring where the kernel offers it, epoll elsewhere) or off (epoll)", p.IOUring), "proxy", "io_uring")
	}
	if p.StartupTimeout.D() < 0 {
		v.problem("must be positive", "proxy", "startup_timeout")
	}
	if p.MaxIdleUpstreams != nil && (*p.MaxIdleUpstreams < 0 || *p.MaxIdleUpstreams > 10000) {
		v.problem("must be between 0 (close each PostgreSQL connection with its client) and 10000; leave it out for 32", "proxy", "max_idle_upstreams")
	}
	if p.UpstreamIdleTimeout.D() < 0 {
		v.problem("must be positive (default 60s); set proxy.max_idle_upstreams: 0 to keep no idle connection", "proxy", "upstream_idle_timeout")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		v.problem(fmt.Sprintf("unknown level %q; use debug, info, warn or error", c.LogLevel), "log_level")
	}
	v.validateTables()
}

// tokenLen is the length of the Fernet token of an n-byte plaintext.
func tokenLen(n int) int {
	raw := 57 + (n/16+1)*16
	return (raw + 2) / 3 * 4
}

// checkSources checks the syntax of the key sources; the keyring resolves
// them.
func (v *validator) checkSources() {
	k := &v.cfg.Keys
	for _, s := range []struct {
		name  string
		value *string
		list  bool
	}{
		{"encryption_key", &k.EncryptionKey, false},
		{"fallback_keys", &k.FallbackKeys, true},
		{"hash_key", &k.HashKey, false},
		{"fallback_hash_keys", &k.FallbackHashKeys, true},
	} {
		*s.value = strings.TrimSpace(*s.value)
		parts := []string{*s.value}
		if s.list {
			parts = strings.Split(*s.value, ",")
		}
		for _, part := range parts {
			part = strings.TrimSpace(part)
			kind, name, ok := strings.Cut(part, ":")
			kind = strings.ToLower(kind)
			if s.list && !ok && len(parts) > 1 {
				continue // a comma inside a file path
			}
			if !ok || strings.TrimSpace(name) == "" || (kind != "env" && kind != "file") {
				v.problem("must be a key source, env:NAME or file:/path, not a key; put the key in that variable or file (generate one with: pgveil keygen)", "keys", s.name)
				break
			}
		}
	}
	// The blind-index key must not be the encryption key; pgveil check and
	// serve also compare the keys themselves.
	if src := sourceKey(k.HashKey); src != "" && src == sourceKey(k.EncryptionKey) {
		v.problem(fmt.Sprintf("names the same source as keys.encryption_key (%s): the hash key must be a key of its own; generate one with pgveil keygen and give it its own variable or file (ENCRYPTION_HASH_KEY or ENCRYPTION_HASH_KEY_FILE)", src), "keys", "hash_key")
	}
}

// sourceKey normalises a single key source for comparison ("" when it is
// not one).
func sourceKey(s string) string {
	kind, name, ok := strings.Cut(strings.TrimSpace(s), ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(kind)) + ":" + name
}

// identifier normalises a configured name, or says what is wrong with it.
func identifier(s string) (string, string) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", "is empty"
	case strings.ContainsAny(s, "\"`"):
		return "", "must be written without quotes; pgveil matches names case-insensitively"
	case strings.ContainsAny(s, " \t\r\n"):
		return "", "must not contain white space"
	}
	return strings.ToLower(s), ""
}

func (v *validator) validateTables() {
	c := v.cfg
	if len(c.Tables) == 0 {
		v.problem("required: list the tables to encrypt, each with its columns, such as\n    tables:\n      - table: users\n        columns: [{column: email, blind_index: email_hash}]", "tables")
		return
	}
	seen := map[string]int{}
	for ti := range c.Tables {
		t := &c.Tables[ti]
		raw := strings.TrimSpace(t.Table)
		parts := strings.Split(raw, ".")
		switch {
		case raw == "":
			v.problem("table name is required", "tables", ti, "table")
			continue
		case len(parts) > 2:
			v.problem(fmt.Sprintf("%q has more than one dot; write table or schema.table", raw), "tables", ti, "table")
			continue
		}
		if len(parts) == 1 {
			parts = []string{DefaultSchema, parts[0]}
		}
		var bad string
		t.Schema, bad = identifier(parts[0])
		if bad == "" {
			t.Name, bad = identifier(parts[1])
		}
		if bad != "" {
			v.problem(fmt.Sprintf("table name %q %s", raw, bad), "tables", ti, "table")
			continue
		}
		t.Table = t.Schema + "." + t.Name
		if prev, dup := seen[t.Table]; dup {
			v.problem(fmt.Sprintf("table %s is configured twice (also tables[%d]); merge their columns into one entry", t.Table, prev), "tables", ti, "table")
		}
		seen[t.Table] = ti
		if len(t.Columns) == 0 {
			v.problem(fmt.Sprintf("table %s has no columns; list the columns to encrypt, such as columns: [{column: email}]", t.Table), "tables", ti, "columns")
			continue
		}
		v.validateColumns(ti, t)
	}
}

func (v *validator) validateColumns(ti int, t *Table) {
	names := map[string]string{} // lowercased name -> what it is
	for ci := range t.Columns {
		col := &t.Columns[ci]
		name, bad := identifier(col.Column)
		if bad != "" {
			v.problem(fmt.Sprintf("column name %s", bad), "tables", ti, "columns", ci, "column")
			continue
		}
		col.Column = name
		if what, dup := names[name]; dup {
			v.problem(fmt.Sprintf("column %s.%s is configured twice (%s); list each column once", t.Table, name, what), "tables", ti, "columns", ci, "column")
			continue
		}
		names[name] = "as an encrypted column"
		if strings.TrimSpace(col.BlindIndex) != "" {
			bi, bad := identifier(col.BlindIndex)
			switch {
			case bad != "":
				v.problem(fmt.Sprintf("blind index name %s", bad), "tables", ti, "columns", ci, "blind_index")
			case bi == name:
				v.problem(fmt.Sprintf("blind index of %s.%s must be another column, such as %s_hash", t.Table, name, name), "tables", ti, "columns", ci, "blind_index")
			default:
				if what, dup := names[bi]; dup {
					v.problem(fmt.Sprintf("blind index %s of %s.%s is already used %s; give each its own column", bi, t.Table, name, what), "tables", ti, "columns", ci, "blind_index")
				}
				names[bi] = "as the blind index of " + name
				col.BlindIndex = bi
			}
		} else {
			col.BlindIndex = ""
		}
		col.HashDomain = strings.TrimSpace(col.HashDomain)
		if col.HashDomain == "" {
			col.HashDomain = t.Table + "." + name
		}
	}
}

// Lookup returns the configured table schema.name (lowercase), or nil.
func (c *Config) Lookup(schema, name string) *Table {
	schema, name = strings.ToLower(schema), strings.ToLower(name)
	for i := range c.Tables {
		if c.Tables[i].Schema == schema && c.Tables[i].Name == name {
			return &c.Tables[i]
		}
	}
	return nil
}

// Column returns the configured column name (case-insensitive), or nil.
func (t *Table) Column(name string) *Column {
	name = strings.ToLower(name)
	for i := range t.Columns {
		if t.Columns[i].Column == name {
			return &t.Columns[i]
		}
	}
	return nil
}

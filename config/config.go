// Package config loads pgveil's YAML configuration, applies the environment
// overrides of SPEC §3 and validates the result. A *Config is immutable once
// Load returns it: a SIGHUP builds a new one rather than editing the old.
package config

import "time"

// Mode says how the proxy treats values in encrypted columns that are not
// tokens yet.
const (
	ModeStrict    = "strict"    // a non-token value is an error (XX001)
	ModeMigrating = "migrating" // non-token values pass through; lookups also match plaintext
)

// OnUnsupported says what happens to SQL that cannot be computed on ciphertext.
const (
	OnUnsupportedReject      = "reject"
	OnUnsupportedPassthrough = "passthrough"
)

// Upstream TLS modes, as libpq's sslmode.
const (
	TLSDisable    = "disable"
	TLSPrefer     = "prefer"
	TLSRequire    = "require"
	TLSVerifyFull = "verify-full"
)

// Config is the whole configuration. Zero values are replaced by defaults in
// Load, so every field holds the value in force.
type Config struct {
	Listen      string      `yaml:"listen"`       // default 127.0.0.1:6432
	Upstream    string      `yaml:"upstream"`     // host:port, required
	AdminListen string      `yaml:"admin_listen"` // default 127.0.0.1:9187; "" after Load means disabled only if set to "off"
	TLS         *TLS        `yaml:"tls"`          // nil: no TLS offered to clients
	UpstreamTLS UpstreamTLS `yaml:"upstream_tls"`
	Keys        Keys        `yaml:"keys"`
	Encryption  Encryption  `yaml:"encryption"`
	Proxy       Proxy       `yaml:"proxy"`
	Tables      []Table     `yaml:"tables"`
	// Maintenance is MAINTENANCE_MODE (or maintenance: true): new client
	// connections are refused with 57P03.
	Maintenance bool `yaml:"maintenance"`
	// ShutdownTimeout bounds the drain after SIGTERM. Default 30s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`

	// Path is the file the config was read from ("" when parsed from bytes).
	Path string `yaml:"-"`
}

// TLS is the certificate pgveil presents to clients.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// UpstreamTLS is how pgveil connects to PostgreSQL.
type UpstreamTLS struct {
	Mode       string `yaml:"mode"` // default prefer
	CAFile     string `yaml:"ca_file"`
	ServerName string `yaml:"server_name"` // default: host part of Upstream
}

// Keys holds key *sources*, not keys: "env:NAME" or "file:/path". The
// keyring package resolves them. Environment overrides are applied by Load:
// ENCRYPTION_KEY set => EncryptionKey = "env:ENCRYPTION_KEY";
// ENCRYPTION_KEY_FILE=/p => EncryptionKey = "file:/p"; likewise for the
// other keys. Defaults: env:ENCRYPTION_KEY, env:ENCRYPTION_HASH_KEY.
type Keys struct {
	EncryptionKey    string `yaml:"encryption_key"`
	FallbackKeys     string `yaml:"fallback_keys"`
	KeyVersion       int    `yaml:"key_version"` // default 1; ENCRYPTION_KEY_VERSION
	HashKey          string `yaml:"hash_key"`
	FallbackHashKeys string `yaml:"fallback_hash_keys"`
}

// Encryption settings of SPEC §3.
type Encryption struct {
	MaxSize       int    `yaml:"max_size"`       // bytes of plaintext per value; default 10485760
	SanitizeInput *bool  `yaml:"sanitize_input"` // default true; use Sanitize()
	AuditLogging  *bool  `yaml:"audit_logging"`  // default true; use Audit()
	Mode          string `yaml:"mode"`           // strict | migrating; default strict
	OnUnsupported string `yaml:"on_unsupported"` // reject | passthrough; default reject
}

// Sanitize reports whether invalid UTF-8 and NUL bytes are refused.
func (e Encryption) Sanitize() bool { return e.SanitizeInput == nil || *e.SanitizeInput }

// Audit reports whether audit events are logged.
func (e Encryption) Audit() bool { return e.AuditLogging == nil || *e.AuditLogging }

// Proxy holds wire-level limits.
type Proxy struct {
	// MaxMessageSize caps one protocol message pgveil holds whole, in
	// either direction; messages it passes on unchanged stream through
	// whatever their size. Default 256 MiB.
	MaxMessageSize int `yaml:"max_message_size"`
	// StartupTimeout bounds SSL negotiation, startup and authentication.
	// Default 30s.
	StartupTimeout Duration `yaml:"startup_timeout"`
	// PlanCacheSize is the number of rewrite plans kept. Default 4096.
	PlanCacheSize int `yaml:"plan_cache_size"`
	// EventLoops is the number of event-loop threads that carry sessions
	// without TLS after startup (Linux; elsewhere every session runs on two
	// goroutines). 0 switches the event loop off. Default: half the
	// processors, at least 1.
	EventLoops *int `yaml:"event_loops"`
	// IOUring chooses the event loops' I/O: "auto" (the default) uses
	// io_uring where the kernel offers it (Linux 6.1) and epoll elsewhere;
	// "off" always uses epoll.
	IOUring string `yaml:"io_uring"`
	// MaxIdleUpstreams is how many PostgreSQL connections whose clients
	// have left pgveil keeps, reset, for the next client that logs in as
	// the same user to the same database with the same startup parameters.
	// 0 closes each one with its client. Default 32.
	MaxIdleUpstreams *int `yaml:"max_idle_upstreams"`
	// UpstreamIdleTimeout closes a kept connection no client has taken
	// for this long. Default 60s.
	UpstreamIdleTimeout Duration `yaml:"upstream_idle_timeout"`
}

// IdleUpstreams is the number of idle upstream connections to keep.
func (p Proxy) IdleUpstreams() int {
	if p.MaxIdleUpstreams != nil {
		return *p.MaxIdleUpstreams
	}
	return DefaultMaxIdleUpstreams
}

// EventLoopThreads is the number of event-loop threads to run for
// GOMAXPROCS processors; 0 means every session uses goroutines.
func (p Proxy) EventLoopThreads(procs int) int {
	if p.EventLoops != nil {
		return *p.EventLoops
	}
	return max(1, procs/2)
}

// Table is one configured table (or view).
type Table struct {
	// Table as written in the config: "users" or "app.users".
	Table   string   `yaml:"table"`
	Columns []Column `yaml:"columns"`

	// Schema and Name are Table split at the dot by Load; Schema defaults
	// to "public".
	Schema string `yaml:"-"`
	Name   string `yaml:"-"`
}

// Column is one encrypted column.
type Column struct {
	Column     string `yaml:"column"`
	BlindIndex string `yaml:"blind_index"` // "" = not searchable
	// HashDomain names the blind-index key domain. Load fills the default,
	// "schema.table.column", so it is never empty after Load.
	HashDomain string `yaml:"hash_domain"`
}

// Searchable reports whether the column has a blind index.
func (c Column) Searchable() bool { return c.BlindIndex != "" }

// Duration is a time.Duration that YAML writes as "30s".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

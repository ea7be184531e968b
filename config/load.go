package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults of SPEC §3.
const (
	DefaultListen          = "127.0.0.1:6432"
	DefaultAdminListen     = "127.0.0.1:9187"
	DefaultMaxSize         = 10485760
	DefaultKeyVersion      = 1
	DefaultShutdownTimeout = 30 * time.Second
	DefaultMaxMessageSize  = 256 << 20
	DefaultStartupTimeout  = 30 * time.Second
	DefaultPlanCacheSize   = 4096
	// DefaultMaxIdleUpstreams and DefaultUpstreamIdleTimeout: see Proxy.
	DefaultMaxIdleUpstreams    = 32
	DefaultUpstreamIdleTimeout = 60 * time.Second
	DefaultLogLevel            = "info"
	DefaultSchema              = "public"

	DefaultEncryptionKey    = "env:" + EnvKey
	DefaultFallbackKeys     = "env:" + EnvKeyFallback
	DefaultHashKey          = "env:" + EnvHashKey
	DefaultFallbackHashKeys = "env:" + EnvHashKeyFallback

	// AdminListenOff in admin_listen disables the admin server; Load then
	// leaves AdminListen empty.
	AdminListenOff = "off"
)

// Environment variables of SPEC §3. Each key variable also has a _FILE form.
const (
	EnvConfig          = "PGVEIL_CONFIG"
	EnvKey             = "ENCRYPTION_KEY"
	EnvKeyFallback     = "ENCRYPTION_KEY_FALLBACK"
	EnvHashKey         = "ENCRYPTION_HASH_KEY"
	EnvHashKeyFallback = "ENCRYPTION_HASH_KEY_FALLBACK"
	EnvKeyVersion      = "ENCRYPTION_KEY_VERSION"
	EnvMaxSize         = "ENCRYPTION_MAX_SIZE"
	EnvSanitizeInput   = "ENCRYPTION_SANITIZE_INPUT"
	EnvAuditLogging    = "ENCRYPTION_AUDIT_LOGGING"
	EnvMaintenanceMode = "MAINTENANCE_MODE"
	FileSuffix         = "_FILE"
)

// Error is a configuration that cannot be used. It lists every problem
// found, each with where it is and how to fix it.
type Error struct {
	Path     string // config file ("" when parsed from bytes without a path)
	Problems []Problem
}

// Problem is one thing wrong with a configuration.
type Problem struct {
	Line    int    // line in the file, 0 when unknown or from the environment
	Key     string // setting, as a path: "tables[0].columns[1].blind_index", or an env var
	Message string // what is wrong and what to do
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("pgveil: invalid configuration")
	if e.Path != "" {
		b.WriteString(" in ")
		b.WriteString(e.Path)
	}
	if len(e.Problems) == 1 {
		b.WriteString(": ")
		b.WriteString(e.Problems[0].String())
		return b.String()
	}
	fmt.Fprintf(&b, " (%d problems):", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// ConfigPath returns the config file to read: the --config flag when given,
// else $PGVEIL_CONFIG, else "".
func ConfigPath(flag string, lookupEnv func(string) (string, bool)) string {
	if flag != "" {
		return flag
	}
	if lookupEnv != nil {
		if v, ok := lookupEnv(EnvConfig); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Load reads the YAML file at path, applies the environment overrides of
// SPEC §3 through lookupEnv (os.LookupEnv in production; nil means an empty
// environment), fills defaults and validates. Problems come back as one
// *Error listing them all.
func Load(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	if path == "" {
		return nil, fmt.Errorf("pgveil: no configuration file: pass --config FILE or set %s", EnvConfig)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pgveil: cannot read configuration: %w; pass --config FILE or set %s", err, EnvConfig)
	}
	return Parse(data, path, lookupEnv)
}

// Parse is Load on bytes already read; path only names the source in
// messages and in Config.Path.
func Parse(data []byte, path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	cfg := &Config{}
	e := &Error{Path: path}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(cfg)
	if err != nil && !errors.Is(err, io.EOF) {
		e.Problems = append(e.Problems, yamlProblems(err)...)
		return nil, e
	}
	if err == nil {
		var extra yaml.Node
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			e.Problems = append(e.Problems, Problem{Line: extra.Line, Message: "more than one YAML document; keep the whole configuration in one"})
			return nil, e
		}
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root) // cannot fail: the strict decode above succeeded
	v := &validator{cfg: cfg, err: e, root: &root}
	v.applyEnv(lookupEnv)
	v.defaults()
	v.validate()
	if len(e.Problems) > 0 {
		return nil, e
	}
	cfg.Path = path
	return cfg, nil
}

var (
	reUnknownField = regexp.MustCompile(`^line (\d+): field (.+) not found in type (\S+)$`)
	reLine         = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
)

// sectionOf names the config section a Go type decodes.
var sectionOf = map[string]string{
	"config.Config":      "top level",
	"config.TLS":         "tls",
	"config.UpstreamTLS": "upstream_tls",
	"config.Keys":        "keys",
	"config.Encryption":  "encryption",
	"config.Proxy":       "proxy",
	"config.Table":       "a table",
	"config.Column":      "a column",
}

// yamlProblems turns yaml.v3 errors into problems with line numbers.
func yamlProblems(err error) []Problem {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var ps []Problem
		for _, msg := range te.Errors {
			ps = append(ps, yamlProblem(msg))
		}
		return ps
	}
	return []Problem{yamlProblem(err.Error())}
}

func yamlProblem(msg string) Problem {
	if m := reUnknownField.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		section := sectionOf[m[3]]
		if section == "" {
			section = m[3]
		}
		return Problem{Line: line, Key: m[2], Message: fmt.Sprintf("unknown key %q in %s; check its spelling against the documented settings", m[2], section)}
	}
	if m := reLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Problem{Line: line, Message: strings.TrimPrefix(m[2], "yaml: ")}
	}
	return Problem{Message: strings.TrimPrefix(msg, "yaml: ")}
}

// UnmarshalYAML reads a duration written as Go writes it ("30s", "1m30s",
// "500ms"). A bare number is refused: its unit would be a guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be a string such as \"30s\"", n.Line)
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration; write it with a unit, such as \"30s\" or \"2m\"", n.Line, n.Value)
	}
	if v < 0 {
		return fmt.Errorf("line %d: a duration cannot be negative", n.Line)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as "30s".
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// String is the duration as Go writes it.
func (d Duration) String() string { return time.Duration(d).String() }

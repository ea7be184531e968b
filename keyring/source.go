package keyring

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/pgveil/pgveil/config"
)

// Source kinds.
const (
	SourceEnv  = "env"
	SourceFile = "file"
)

// keygenHint ends every missing or malformed key message.
const keygenHint = "generate one with: pgveil keygen"

// Source says where a key comes from: "env:NAME" (an environment variable)
// or "file:/path" (a file read whole and trimmed of surrounding white
// space; an empty file means no value). Naming a source reveals no secret.
type Source struct {
	Kind string // SourceEnv or SourceFile
	Name string // variable name or file path
}

// ParseSource parses "env:NAME" or "file:/path".
func ParseSource(s string) (Source, error) {
	s = strings.TrimSpace(s)
	kind, name, ok := strings.Cut(s, ":")
	kind = strings.ToLower(strings.TrimSpace(kind))
	name = strings.TrimSpace(name)
	if !ok || name == "" || (kind != SourceEnv && kind != SourceFile) {
		return Source{}, fmt.Errorf("pgveil: key source %q is not env:NAME or file:/path", redactSource(s))
	}
	return Source{Kind: kind, Name: name}, nil
}

// redactSource keeps a mistyped source out of messages if it could be a key
// pasted where a source belongs.
func redactSource(s string) string {
	if _, err := decodeKeyText(s); err == nil || len(s) >= 40 && !strings.ContainsAny(s, ":/") {
		return "[redacted: looks like a key; write env:NAME or file:/path and put the key there]"
	}
	return s
}

// String returns "env:NAME" or "file:/path".
func (s Source) String() string { return s.Kind + ":" + s.Name }

// describe names the source for a message: "environment variable NAME" or
// "file /path".
func (s Source) describe() string {
	if s.Kind == SourceEnv {
		return "environment variable " + s.Name
	}
	return "file " + s.Name
}

// Resolve reads the source. ok is false when it holds no value (unset or
// empty variable, empty file, missing file). Any other read error is err.
func (s Source) Resolve(lookupEnv func(string) (string, bool), readFile func(string) ([]byte, error)) (value string, ok bool, err error) {
	switch s.Kind {
	case SourceEnv:
		if lookupEnv == nil {
			return "", false, nil
		}
		v, _ := lookupEnv(s.Name)
		v = strings.TrimSpace(v)
		return v, v != "", nil
	case SourceFile:
		if readFile == nil {
			return "", false, fmt.Errorf("pgveil: cannot read key file %s: no file reader", s.Name)
		}
		b, err := readFile(s.Name)
		if errors.Is(err, fs.ErrNotExist) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("pgveil: cannot read key file %s: %w", s.Name, unwrapPathError(err))
		}
		v := strings.TrimSpace(string(b))
		return v, v != "", nil
	}
	return "", false, fmt.Errorf("pgveil: unknown key source kind %q", s.Kind)
}

// unwrapPathError keeps the OS reason and drops the repeated path.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// splitSources splits a comma-separated list of sources. A comma starts a
// new source only when "env:" or "file:" follows it, so file paths may hold
// commas.
func splitSources(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		p := strings.TrimSpace(part)
		if p == "" {
			continue
		}
		lp := strings.ToLower(p)
		if len(out) > 0 && !strings.HasPrefix(lp, SourceEnv+":") && !strings.HasPrefix(lp, SourceFile+":") {
			out[len(out)-1] += "," + p
			continue
		}
		out = append(out, p)
	}
	return out
}

// resolveList resolves a comma-separated list of sources whose values are
// themselves comma-separated keys. what names the setting in messages.
func resolveList(list, what string, lookupEnv func(string) (string, bool), readFile func(string) ([]byte, error)) ([][KeyLen]byte, error) {
	var keys [][KeyLen]byte
	for _, src := range splitSources(list) {
		s, err := ParseSource(src)
		if err != nil {
			return nil, fmt.Errorf("%w (keys.%s)", err, what)
		}
		v, ok, err := s.Resolve(lookupEnv, readFile)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		n := 0
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			n++
			raw, err := decodeKeyText(item)
			if err != nil {
				return nil, fmt.Errorf("pgveil: %s number %d from %s is malformed: %v; %s", what, n, s.describe(), err, keygenHint)
			}
			keys = append(keys, raw)
		}
	}
	return keys, nil
}

// resolveOne resolves a required single key.
func resolveOne(src, what, envHint string, lookupEnv func(string) (string, bool), readFile func(string) ([]byte, error)) ([KeyLen]byte, error) {
	var raw [KeyLen]byte
	if strings.TrimSpace(src) == "" {
		return raw, fmt.Errorf("pgveil: %s is not configured: set %s or keys.%s; %s", what, envHint, configName(what), keygenHint)
	}
	s, err := ParseSource(src)
	if err != nil {
		return raw, fmt.Errorf("%w (keys.%s)", err, configName(what))
	}
	v, ok, err := s.Resolve(lookupEnv, readFile)
	if err != nil {
		return raw, err
	}
	if !ok {
		state, how := "is unset or empty", "set it"
		if s.Kind == SourceFile {
			state, how = "does not exist or is empty", "write the key into it"
		}
		return raw, fmt.Errorf("pgveil: %s is missing: %s %s (%s); %s", what, s.describe(), state, how, keygenHint)
	}
	if strings.Contains(v, ",") {
		return raw, fmt.Errorf("pgveil: %s from %s holds more than one key; put only the primary there and the others in the fallback setting", what, s.describe())
	}
	raw, err = decodeKeyText(v)
	if err != nil {
		return raw, fmt.Errorf("pgveil: %s from %s is malformed: %v; %s", what, s.describe(), err, keygenHint)
	}
	return raw, nil
}

func configName(what string) string {
	switch what {
	case "hash key":
		return "hash_key"
	}
	return "encryption_key"
}

// Load resolves the key sources of keys (after config.Load's environment
// overrides) and builds a Keyring. lookupEnv reads environment variables
// (os.LookupEnv in production); readFile reads key files (os.ReadFile).
// The encryption key and the hash key are required; fallbacks are
// optional. Errors name the variable or file and never contain key
// material.
func Load(keys config.Keys, lookupEnv func(string) (string, bool), readFile func(string) ([]byte, error)) (*Keyring, error) {
	primaryRaw, err := resolveOne(keys.EncryptionKey, "encryption key", "ENCRYPTION_KEY (or ENCRYPTION_KEY_FILE)", lookupEnv, readFile)
	if err != nil {
		return nil, err
	}
	fallbackRaw, err := resolveList(keys.FallbackKeys, "fallback key", lookupEnv, readFile)
	if err != nil {
		return nil, err
	}
	hashRaw, err := resolveOne(keys.HashKey, "hash key", "ENCRYPTION_HASH_KEY (or ENCRYPTION_HASH_KEY_FILE)", lookupEnv, readFile)
	if err != nil {
		return nil, err
	}
	hashFallbackRaw, err := resolveList(keys.FallbackHashKeys, "fallback hash key", lookupEnv, readFile)
	if err != nil {
		return nil, err
	}
	fallbacks := make([]*Key, 0, len(fallbackRaw))
	for _, r := range fallbackRaw {
		if r == primaryRaw {
			continue // the primary already opens what it would
		}
		fallbacks = append(fallbacks, newKey(r))
	}
	hashFallbacks := make([][]byte, 0, len(hashFallbackRaw))
	for _, r := range hashFallbackRaw {
		if r == hashRaw {
			continue
		}
		hashFallbacks = append(hashFallbacks, r[:])
	}
	version := keys.KeyVersion
	if version < 1 {
		version = 1
	}
	return New(newKey(primaryRaw), fallbacks, version, hashRaw[:], hashFallbacks), nil
}

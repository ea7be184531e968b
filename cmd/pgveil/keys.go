package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
)

// loadKeys resolves the key sources of keys and refuses a hash key that is
// also an encryption key (docs/CONFIG.md: use two different keys). Every
// command that reads keys goes through it: check, the data commands, and
// serve at start-up and on every reload.
func loadKeys(keys config.Keys, e *env) (*keyring.Keyring, error) {
	kr, err := keyring.Load(keys, e.lookupEnv, e.readFile)
	if err != nil {
		return nil, err // names the variable or file and says to run pgveil keygen
	}
	if err := distinctKeys(keys, kr, e); err != nil {
		return nil, err
	}
	return kr, nil
}

// SameKeyError is a hash key that is also an encryption key.
type SameKeyError struct {
	HashSetting string // "keys.hash_key" or "keys.fallback_hash_keys"
	EncSetting  string // "keys.encryption_key" or "keys.fallback_keys"
	Fingerprint string
}

func (e *SameKeyError) Error() string {
	return fmt.Sprintf("pgveil: %s holds the same key as %s (fingerprint %s); the blind-index key and the encryption key must be two different keys",
		e.HashSetting, e.EncSetting, e.Fingerprint)
}

// Hint says how to fix it.
func (e *SameKeyError) Hint() string {
	if e.HashSetting == "keys.fallback_hash_keys" {
		return "remove that key from keys.fallback_hash_keys (ENCRYPTION_HASH_KEY_FALLBACK): a fallback hash key is an earlier hash key, never an encryption key"
	}
	return "generate a hash key of its own with 'pgveil keygen' and put it in keys.hash_key (ENCRYPTION_HASH_KEY or ENCRYPTION_HASH_KEY_FILE); " +
		"if blind indexes were already made with the shared key, keep it as keys.fallback_hash_keys and run pgveil rehash (docs/RUNBOOK.md, hash-key rotation)"
}

func distinctKeys(keys config.Keys, kr *keyring.Keyring, e *env) error {
	encSetting := func(i int) string {
		if i == 0 {
			return "keys.encryption_key"
		}
		return "keys.fallback_keys"
	}
	// The hash key, compared byte for byte with every encryption key.
	if src, err := keyring.ParseSource(keys.HashKey); err == nil {
		if v, ok, err := src.Resolve(e.lookupEnv, e.readFile); err == nil && ok {
			if hk, err := keyring.ParseKey(strings.TrimSpace(v)); err == nil {
				for i, k := range append([]*keyring.Key{kr.Primary()}, kr.Fallbacks()...) {
					if hk.Equal(k) {
						return &SameKeyError{HashSetting: "keys.hash_key", EncSetting: encSetting(i), Fingerprint: k.Fingerprint()}
					}
				}
			}
		}
	}
	// Fallback hash keys, by fingerprint (8 hex digits of SHA-256 of the
	// key: two keys that share one are the same key but for a 1 in 4
	// billion chance).
	enc := kr.KeyFingerprints()
	for _, fp := range kr.HashFallbackFingerprints() {
		if i := slices.Index(enc, fp); i >= 0 {
			return &SameKeyError{HashSetting: "keys.fallback_hash_keys", EncSetting: encSetting(i), Fingerprint: fp}
		}
	}
	return nil
}

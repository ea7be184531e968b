// Package keyring holds pgveil's keys and the cryptography of SPEC §4:
// Fernet tokens (version 0x80, AES-128-CBC, HMAC-SHA256) for encrypted
// values, and HMAC-SHA256 blind indexes for equality lookups.
//
// A *Keyring is immutable once built and safe for concurrent use; a SIGHUP
// builds a new one. Keys describe themselves by fingerprint only (first 8 hex
// of the SHA-256 of the key bytes), in logs, errors and fmt output alike.
package keyring

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
)

// KeyLen is the length of a Fernet key in bytes: 16 for signing, 16 for
// encryption.
const KeyLen = 32

// keyTextLen is the length of a key in url-safe base64 with padding.
const keyTextLen = 44

// errKeyFormat is wrapped by every ParseKey error.
var errKeyFormat = errors.New("must be url-safe base64 of 32 bytes (44 characters, as Python's Fernet.generate_key() prints)")

// Key is one Fernet key: the first 16 bytes sign (HMAC-SHA256), the last 16
// encrypt (AES-128-CBC). The key material never leaves the value: String,
// GoString, LogValue and fmt verbs all show the fingerprint.
type Key struct {
	fp string
	m  *keyMaterial
}

type keyMaterial struct {
	raw   [KeyLen]byte
	block cipher.Block // AES-128 with raw[16:]
	mac   macPool      // HMAC-SHA256 with raw[:16]
}

// ParseKey decodes a key written as Python's Fernet writes it: url-safe
// base64 with padding, exactly 44 characters, exactly 32 bytes. Standard
// base64 ('+', '/') is refused. The error never contains the input.
func ParseKey(s string) (*Key, error) {
	raw, err := decodeKeyText(s)
	if err != nil {
		return nil, err
	}
	return newKey(raw), nil
}

func decodeKeyText(s string) ([KeyLen]byte, error) {
	var raw [KeyLen]byte
	if len(s) != keyTextLen {
		return raw, fmt.Errorf("key is %d characters: %w", len(s), errKeyFormat)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isURLAlphabet(c) || (c == '=' && i == len(s)-1) {
			continue
		}
		if c == '+' || c == '/' {
			return raw, fmt.Errorf("key uses standard base64 ('+' or '/'), not url-safe base64: %w", errKeyFormat)
		}
		return raw, fmt.Errorf("key has a character outside url-safe base64 at position %d: %w", i+1, errKeyFormat)
	}
	var buf [KeyLen + 1]byte // DecodedLen(44)
	n, err := base64.URLEncoding.Strict().Decode(buf[:], []byte(s))
	if err != nil || n != KeyLen {
		return raw, fmt.Errorf("key does not decode to 32 bytes: %w", errKeyFormat)
	}
	copy(raw[:], buf[:KeyLen])
	return raw, nil
}

func newKey(raw [KeyLen]byte) *Key {
	m := &keyMaterial{raw: raw}
	b, err := aes.NewCipher(m.raw[16:])
	if err != nil {
		panic("pgveil: BUG: aes.NewCipher on 16 bytes: " + err.Error())
	}
	m.block = b
	m.mac.init(m.raw[:16])
	return &Key{fp: Fingerprint(m.raw[:]), m: m}
}

// GenerateKey returns a new random key as url-safe base64 with padding
// (44 characters), the format ParseKey and Python's Fernet accept.
func GenerateKey() (string, error) {
	var raw [KeyLen]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("pgveil: reading random bytes: %w", err)
	}
	return base64.URLEncoding.EncodeToString(raw[:]), nil
}

// Fingerprint returns the first 8 hex digits of the SHA-256 of b. It
// identifies a key in logs and metrics without revealing it.
func Fingerprint(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:4])
}

// Fingerprint returns the key's fingerprint (8 hex digits).
func (k *Key) Fingerprint() string {
	if k == nil {
		return ""
	}
	return k.fp
}

// String returns "key:" and the fingerprint, never the key.
func (k *Key) String() string { return "key:" + k.Fingerprint() }

// GoString is String, so %#v does not print the material either.
func (k *Key) GoString() string { return k.String() }

// LogValue logs the key as its fingerprint.
func (k *Key) LogValue() slog.Value { return slog.StringValue(k.Fingerprint()) }

// Format prints the fingerprint form for every verb, so no fmt verb can
// reveal the key.
func (k *Key) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(k.String())) }

// Equal reports whether two keys have the same material (constant time).
func (k *Key) Equal(o *Key) bool {
	if k == nil || o == nil || k.m == nil || o.m == nil {
		return k == o
	}
	return hmac.Equal(k.m.raw[:], o.m.raw[:])
}

// urlAlphabet marks the bytes of url-safe base64 (without '=').
var urlAlphabet = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") {
		t[c] = true
	}
	return t
}()

func isURLAlphabet(c byte) bool { return urlAlphabet[c] }

// macPool computes HMAC-SHA256 under one key from the key's precomputed
// ipad/opad states (sha256block.go): no per-call state, so any goroutine
// may use it at once. (The name is from when it pooled crypto/hmac states.)
type macPool struct {
	st hmacState
}

func (p *macPool) init(key []byte) {
	if len(key) > shaBlock {
		panic("keyring: HMAC key longer than a SHA-256 block") // keys here are 16 or 32 bytes
	}
	p.st.init(key)
}

// sum writes HMAC-SHA256(key, a || b) into out (32 bytes).
func (p *macPool) sum(out []byte, a, b []byte) {
	p.st.sum(out, a, b)
}

// Scratch is memory one goroutine reuses across the Keyring calls that take
// it: a token buffer, a batch of IVs, the last column key used. Those
// calls then touch the caller's memory rather than process-wide pools,
// which on a small machine shared with the database and the application
// are cold by the time a session's next statement comes. The zero value is
// ready to use; a nil *Scratch means the pools. Keep a Scratch no longer
// than the session it serves: its buffer held plaintext.
type Scratch struct {
	buf []byte
	ivs *ivBatch
	// The column key of the last blind index, which the next one most
	// likely shares: no map lookup of its domain.
	idxKey    *hashKey
	idxDomain string
	idxMAC    *macPool
}

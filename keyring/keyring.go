package keyring

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sync"
	"sync/atomic"
)

// blindIndexLabel prefixes the hash domain when deriving a column's blind
// index key (SPEC §4).
const blindIndexLabel = "pgveil blind index v1 "

// BlindIndexLen is the length of a blind index: lowercase hex of HMAC-SHA256.
const BlindIndexLen = 2 * sha256.Size

// Keyring is one generation of keys: the primary Fernet key, its fallbacks,
// the key version, the blind-index hash key and its fallbacks. It is
// immutable and safe for concurrent use.
type Keyring struct {
	keys          []*Key // primary first, then fallbacks
	version       int
	hash          *hashKey
	hashFallbacks []*hashKey

	// Shared, keyless errors returned by Open (no allocation per failure).
	errNotToken      *DecryptError
	errUndecryptable *DecryptError
}

// hashKey is one blind-index key K with its derived per-domain column keys.
type hashKey struct {
	raw     []byte
	fp      string
	domains atomic.Pointer[map[string]*macPool] // copy on write
	mu      sync.Mutex                          // serialises writers of domains
}

// New builds a keyring from parsed keys. primary must not be nil; version
// below 1 becomes 1; hash and each fallbackHash are the blind-index keys'
// bytes (any length; Load always gives 32).
func New(primary *Key, fallbacks []*Key, version int, hash []byte, fallbackHash [][]byte) *Keyring {
	if primary == nil || primary.m == nil {
		panic("pgveil: BUG: keyring.New without a primary key")
	}
	if version < 1 {
		version = 1
	}
	k := &Keyring{version: version}
	k.keys = append(k.keys, primary)
	for _, f := range fallbacks {
		if f != nil && f.m != nil {
			k.keys = append(k.keys, f)
		}
	}
	k.hash = newHashKey(hash)
	for _, h := range fallbackHash {
		k.hashFallbacks = append(k.hashFallbacks, newHashKey(h))
	}
	fps := k.KeyFingerprints()
	k.errNotToken = &DecryptError{Err: ErrNotToken, Keys: len(k.keys), Fingerprints: fps}
	k.errUndecryptable = &DecryptError{Err: ErrUndecryptable, Keys: len(k.keys), Fingerprints: fps}
	return k
}

func newHashKey(b []byte) *hashKey {
	h := &hashKey{raw: slices.Clone(b), fp: Fingerprint(b)}
	m := map[string]*macPool{}
	h.domains.Store(&m)
	return h
}

// column returns the HMAC pool of the column key for domain, deriving and
// caching it on first use.
func (h *hashKey) column(domain string) *macPool {
	if p, ok := (*h.domains.Load())[domain]; ok {
		return p
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old := *h.domains.Load()
	if p, ok := old[domain]; ok {
		return p
	}
	mac := hmac.New(sha256.New, h.raw)
	mac.Write([]byte(blindIndexLabel))
	mac.Write([]byte(domain))
	p := &macPool{}
	p.init(mac.Sum(nil))
	m := make(map[string]*macPool, len(old)+1)
	for d, q := range old {
		m[d] = q
	}
	m[domain] = p
	h.domains.Store(&m)
	return p
}

func (h *hashKey) appendIndex(dst []byte, domain string, plain []byte, sc *Scratch) []byte {
	var mac *macPool
	if sc != nil && sc.idxKey == h && sc.idxDomain == domain {
		mac = sc.idxMAC // a session looks up one column after another
	} else {
		mac = h.column(domain)
		if sc != nil {
			sc.idxKey, sc.idxDomain, sc.idxMAC = h, domain, mac
		}
	}
	var sum [sha256.Size]byte
	mac.sum(sum[:], plain, nil)
	return hex.AppendEncode(dst, sum[:])
}

// Seal appends to dst a Fernet token of plain under the primary key, with
// the current time and a random IV. The token is url-safe base64 with
// padding and starts with "gAAAAA". Size and input checks are the caller's
// (CheckPlain); Seal fails only if the system's random source does.
func (k *Keyring) Seal(dst, plain []byte) ([]byte, error) {
	return sealAt(dst, k.keys[0].m, plain, nowUnix(), nil, nil)
}

// SealAt is Seal with the token's timestamp (Unix seconds) given: a caller
// sealing several values of one message reads the clock once for all.
func (k *Keyring) SealAt(dst, plain []byte, unix int64) ([]byte, error) {
	return sealAt(dst, k.keys[0].m, plain, unix, nil, nil)
}

// SealScratch is SealAt with the caller's scratch memory (see Scratch).
func (k *Keyring) SealScratch(dst, plain []byte, unix int64, sc *Scratch) ([]byte, error) {
	return sealAt(dst, k.keys[0].m, plain, unix, nil, sc)
}

// Open appends the plaintext of token to dst. It tries the primary key,
// then each fallback (MultiFernet semantics), and returns the index of the
// key that opened it: 0 for the primary, i for fallback i. Timestamps are
// not checked (no TTL). A value that is not shaped like a token fails with
// an error matching ErrNotToken; a token no key opens with one matching
// ErrUndecryptable. Both are *DecryptError values shared by all callers:
// do not modify them (use WithColumn). Open never panics; on error dst is
// returned unchanged.
func (k *Keyring) Open(dst, token []byte) (plain []byte, keyIndex int, err error) {
	return k.OpenScratch(dst, token, nil)
}

// OpenScratch is Open with the caller's scratch memory (see Scratch).
func (k *Keyring) OpenScratch(dst, token []byte, sc *Scratch) (plain []byte, keyIndex int, err error) {
	sp, raw, derr := decodeToken(token, sc)
	if derr != nil {
		if derr == ErrNotToken {
			return dst, -1, k.errNotToken
		}
		return dst, -1, k.errUndecryptable
	}
	defer putScratch(sc, sp)
	for i, key := range k.keys {
		if !verifyMAC(key.m, raw, sc) {
			continue
		}
		if out, ok := decryptRaw(dst, key.m, raw); ok {
			return out, i, nil
		}
	}
	return dst, -1, k.errUndecryptable
}

// BlindIndex appends to dst the blind index of plain in hash domain domain
// (usually "schema.table.column"): 64 lowercase hex digits of
// HMAC-SHA256(HMAC-SHA256(K, "pgveil blind index v1 " + domain), plain),
// with K the current hash key.
func (k *Keyring) BlindIndex(dst []byte, domain string, plain []byte) []byte {
	return k.hash.appendIndex(dst, domain, plain, nil)
}

// BlindIndexScratch is BlindIndex with the caller's scratch memory (see
// Scratch).
func (k *Keyring) BlindIndexScratch(dst []byte, domain string, plain []byte, sc *Scratch) []byte {
	return k.hash.appendIndex(dst, domain, plain, sc)
}

// BlindIndexAll returns the blind index of plain under the current hash key
// followed by one under each fallback hash key, for lookups that must match
// rows indexed under either while a rehash runs.
func (k *Keyring) BlindIndexAll(domain string, plain []byte) [][]byte {
	out := make([][]byte, 0, 1+len(k.hashFallbacks))
	buf := make([]byte, 0, BlindIndexLen*(1+len(k.hashFallbacks)))
	buf = k.hash.appendIndex(buf, domain, plain, nil)
	out = append(out, buf[:BlindIndexLen:BlindIndexLen])
	for i, h := range k.hashFallbacks {
		buf = h.appendIndex(buf, domain, plain, nil)
		lo := (i + 1) * BlindIndexLen
		out = append(out, buf[lo:lo+BlindIndexLen:lo+BlindIndexLen])
	}
	return out
}

// BlindIndexFallback appends the blind index of plain under fallback hash
// key i (0-based), for tools that check which hash key an index was built with.
func (k *Keyring) BlindIndexFallback(dst []byte, i int, domain string, plain []byte) []byte {
	return k.hashFallbacks[i].appendIndex(dst, domain, plain, nil)
}

// Version is the key version (keys.key_version, ENCRYPTION_KEY_VERSION).
func (k *Keyring) Version() int { return k.version }

// Primary is the key Seal uses.
func (k *Keyring) Primary() *Key { return k.keys[0] }

// Fallbacks are the keys Open tries after the primary, in order.
func (k *Keyring) Fallbacks() []*Key { return slices.Clone(k.keys[1:]) }

// KeyFingerprints returns the fingerprints of the primary key and then of
// each fallback key, in Open's order (index = Open's keyIndex).
func (k *Keyring) KeyFingerprints() []string {
	fps := make([]string, len(k.keys))
	for i, key := range k.keys {
		fps[i] = key.Fingerprint()
	}
	return fps
}

// HashKeyFingerprint is the fingerprint of the current hash key.
func (k *Keyring) HashKeyFingerprint() string { return k.hash.fp }

// HashFallbackFingerprints are the fingerprints of the fallback hash keys.
func (k *Keyring) HashFallbackFingerprints() []string {
	fps := make([]string, len(k.hashFallbacks))
	for i, h := range k.hashFallbacks {
		fps[i] = h.fp
	}
	return fps
}

// HashFallbacks is the number of fallback hash keys.
func (k *Keyring) HashFallbacks() int { return len(k.hashFallbacks) }

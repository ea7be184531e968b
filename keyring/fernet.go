package keyring

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"slices"
	"sync"
	"time"
)

// Fernet token layout (https://github.com/fernet/spec):
//
//	version (1) | timestamp (8, big-endian seconds) | IV (16) | ciphertext (16·n) | HMAC-SHA256 (32)
//
// url-safe base64 with padding, as Python's cryptography writes it.
const (
	fernetVersion = 0x80
	blockSize     = 16
	headerLen     = 1 + 8 + blockSize // version, timestamp, IV
	macLen        = 32
	overhead      = headerLen + macLen
	minRawLen     = overhead + blockSize // PKCS7 always adds at least one byte
	minTokenLen   = (minRawLen + 2) / 3 * 4
	tokenPrefix   = "gAAAAA"
	maxClockSkew  = 60 // seconds, for the spec vectors' TTL checks
	// maxPooledScratch bounds the scratch buffers kept for reuse.
	maxPooledScratch = 64 << 10
)

var b64 = base64.URLEncoding

// TokenLen returns the length of the token Seal produces for a plaintext of
// n bytes.
func TokenLen(n int) int {
	return b64.EncodedLen(overhead + (n/blockSize+1)*blockSize)
}

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// getScratch returns a buffer of n bytes: sc's own, or one from the pool
// when sc is nil. Give it back with putScratch.
func getScratch(sc *Scratch, n int) *[]byte {
	var p *[]byte
	if sc != nil {
		p = &sc.buf
	} else {
		p = scratchPool.Get().(*[]byte)
	}
	if cap(*p) < n {
		*p = make([]byte, n)
	}
	*p = (*p)[:n]
	return p
}

// ivBatch hands out IVs from one read of the system's random source: a
// read per token costs about as much as the token's AES and HMAC together.
// A batch serves one goroutine at a time (sync.Pool), and each of its
// bytes is handed out once.
type ivBatch struct {
	buf [64 * 16]byte
	off int
}

var ivPool = sync.Pool{New: func() any { return &ivBatch{off: len(ivBatch{}.buf)} }}

// randomIV fills iv with random bytes, from sc's batch or a pooled one.
func randomIV(sc *Scratch, iv []byte) error {
	var b *ivBatch
	if sc != nil {
		if sc.ivs == nil {
			sc.ivs = &ivBatch{off: len(ivBatch{}.buf)}
		}
		b = sc.ivs
	} else {
		b = ivPool.Get().(*ivBatch)
		defer ivPool.Put(b)
	}
	if b.off+len(iv) > len(b.buf) {
		if _, err := rand.Read(b.buf[:]); err != nil {
			b.off = len(b.buf)
			return err
		}
		b.off = 0
	}
	copy(iv, b.buf[b.off:b.off+len(iv)])
	b.off += len(iv)
	return nil
}

func putScratch(sc *Scratch, p *[]byte) {
	if sc != nil {
		if cap(*p) > maxPooledScratch {
			*p = nil
		}
		return
	}
	if cap(*p) <= maxPooledScratch {
		scratchPool.Put(p)
	}
}

// IsToken reports cheaply whether b has the shape of a Fernet token: the
// "gAAAAA" prefix, url-safe base64 with padding, and a length that can hold
// a version, timestamp, IV, one cipher block and an HMAC. It does not check
// the HMAC: a value that passes may still fail to open.
func IsToken(b []byte) bool {
	n := len(b)
	if n < minTokenLen || n%4 != 0 || string(b[:len(tokenPrefix)]) != tokenPrefix {
		return false
	}
	end := n
	if b[end-1] == '=' {
		end--
		if b[end-1] == '=' {
			end--
		}
	}
	for _, c := range b[len(tokenPrefix):end] {
		if !isURLAlphabet(c) {
			return false
		}
	}
	return true
}

// sealAt appends a token for plain under key to dst, with the given
// timestamp and IV (nil IV: random).
func sealAt(dst []byte, key *keyMaterial, plain []byte, now int64, iv []byte, sc *Scratch) ([]byte, error) {
	ctLen := (len(plain)/blockSize + 1) * blockSize
	rawLen := overhead + ctLen
	sp := getScratch(sc, rawLen)
	defer putScratch(sc, sp)
	raw := *sp

	raw[0] = fernetVersion
	binary.BigEndian.PutUint64(raw[1:9], uint64(now))
	if iv == nil {
		if err := randomIV(sc, raw[9:headerLen]); err != nil {
			return dst, err
		}
	} else {
		copy(raw[9:headerLen], iv)
	}
	ct := raw[headerLen : headerLen+ctLen]
	copy(ct, plain)
	pad := byte(ctLen - len(plain))
	for i := len(plain); i < ctLen; i++ {
		ct[i] = pad
	}
	// CBC by hand: cipher.NewCBCEncrypter copies the expanded AES key
	// (an allocation per call) and has no faster loop on amd64.
	prev := raw[9:headerLen]
	for i := 0; i < ctLen; i += blockSize {
		blk := ct[i : i+blockSize]
		subtle.XORBytes(blk, blk, prev)
		key.block.Encrypt(blk, blk)
		prev = blk
	}
	key.mac.sum(raw[headerLen+ctLen:], raw[:headerLen+ctLen], nil)
	return appendEncodeBase64URL(dst, raw), nil
}

// decodeToken decodes token into a pooled scratch buffer and checks its
// structure. The caller must putScratch the buffer when ok.
func decodeToken(token []byte, sc *Scratch) (sp *[]byte, raw []byte, err error) {
	// Shape only: the base64 decode below checks the alphabet itself, so
	// the hot path does not scan the token twice.
	if n := len(token); n < minTokenLen || n%4 != 0 || string(token[:len(tokenPrefix)]) != tokenPrefix {
		return nil, nil, ErrNotToken
	}
	// Two bytes of room beyond the decoded length: the fast decoder
	// stores eight bytes at a time.
	sp = getScratch(sc, b64.DecodedLen(len(token))+2)
	raw, ok := appendDecodeBase64URL((*sp)[:0], token)
	var derr error
	if !ok {
		raw, derr = b64.AppendDecode((*sp)[:0], token)
	}
	if derr != nil || len(raw) < 1 || raw[0] != fernetVersion {
		putScratch(sc, sp)
		return nil, nil, ErrNotToken
	}
	if len(raw) < minRawLen || (len(raw)-overhead)%blockSize != 0 {
		putScratch(sc, sp)
		return nil, nil, ErrUndecryptable
	}
	return sp, raw, nil
}

// verifyMAC reports whether raw's HMAC is valid under key (constant time).
func verifyMAC(key *keyMaterial, raw []byte, sc *Scratch) bool {
	var sum [macLen]byte
	body := raw[:len(raw)-macLen]
	key.mac.sum(sum[:], body, nil)
	return macEqual(&sum, raw[len(raw)-macLen:])
}

// macEqual compares a computed MAC with a token's, in constant time: four
// 8-byte XORs, no branch on the bytes (crypto/hmac.Equal's byte loop cost
// as much as a quarter of a SHA-256 block).
func macEqual(sum *[macLen]byte, mac []byte) bool {
	m := mac[:macLen]
	var d uint64
	for i := 0; i < macLen; i += 8 {
		d |= binary.LittleEndian.Uint64(sum[i:]) ^ binary.LittleEndian.Uint64(m[i:])
	}
	return d == 0
}

// decryptRaw appends the plaintext of a MAC-verified raw token to dst. ok is
// false when the padding is wrong; dst is then returned unchanged.
func decryptRaw(dst []byte, key *keyMaterial, raw []byte) ([]byte, bool) {
	iv := raw[9:headerLen]
	ct := raw[headerLen : len(raw)-macLen]
	start := len(dst)
	dst = slices.Grow(dst, len(ct))
	out := dst[start : start+len(ct)]
	prev := iv
	for i := 0; i < len(ct); i += blockSize {
		o := out[i : i+blockSize]
		c := ct[i : i+blockSize]
		key.block.Decrypt(o, c)
		subtle.XORBytes(o, o, prev)
		prev = c
	}
	pad := int(out[len(out)-1])
	if pad < 1 || pad > blockSize {
		return dst[:start], false
	}
	var bad byte
	for _, c := range out[len(out)-pad:] {
		bad |= c ^ byte(pad)
	}
	if bad != 0 {
		return dst[:start], false
	}
	return dst[:start+len(ct)-pad], true
}

// openAt is the spec's verification with a TTL, for the test vectors: a
// token older than ttl or more than 60 s in the future is refused. ttl <= 0
// disables the age check (as the spec vectors with ttl_sec 0 expect).
func openAt(dst []byte, key *keyMaterial, token []byte, now time.Time, ttl time.Duration) ([]byte, error) {
	sp, raw, err := decodeToken(token, nil)
	if err != nil {
		return dst, err
	}
	defer putScratch(nil, sp)
	ts := int64(binary.BigEndian.Uint64(raw[1:9]))
	if ttl > 0 {
		if now.Unix() > ts+int64(ttl/time.Second) || ts > now.Unix()+maxClockSkew {
			return dst, ErrUndecryptable
		}
	}
	if !verifyMAC(key, raw, nil) {
		return dst, ErrUndecryptable
	}
	out, ok := decryptRaw(dst, key, raw)
	if !ok {
		return dst, ErrUndecryptable
	}
	return out, nil
}

// nowUnix is the clock Seal uses.
func nowUnix() int64 { return time.Now().Unix() }

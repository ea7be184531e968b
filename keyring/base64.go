package keyring

import (
	"encoding/binary"
	"slices"
)

// Url-safe base64 for tokens, faster than encoding/base64 on the hot path:
// every value read through pgveil is decoded once, every value written is
// encoded once, and for a short value the standard library's codec cost as
// much as the HMAC (about 170 ns to decode a 120-character token).
//
// The decoder looks each group of four characters up in four tables that
// hold the character's six bits already in place, so a group is four loads
// and three ORs, and an invalid character sets a flag bit that one test per
// eight characters sees. The encoder builds eight characters in a register
// and stores them at once. Both give exactly what encoding/base64's
// URLEncoding gives (base64_test.go compares them on every length and on
// every byte value at every position); the decoder declines what it does
// not handle itself (any byte outside the alphabet, misplaced padding,
// non-zero bits under the padding) and the caller then asks the standard
// library, so inputs off the fast path behave exactly as before.

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

var b64Enc = func() (t [64]byte) {
	copy(t[:], b64Alphabet)
	return t
}()

// b64Invalid flags a byte outside the alphabet in b64Dec.
const b64Invalid = 1 << 31

// b64Dec[i][c] is character c's six bits at position i of a group of four,
// shifted to their place in the group's 24 bits; b64Invalid if c is not in
// the alphabet.
var b64Dec = func() (t [4][256]uint32) {
	for i := range t {
		for c := range t[i] {
			t[i][c] = b64Invalid
		}
	}
	for v := range len(b64Alphabet) {
		c := b64Alphabet[v]
		t[0][c] = uint32(v) << 18
		t[1][c] = uint32(v) << 12
		t[2][c] = uint32(v) << 6
		t[3][c] = uint32(v)
	}
	return t
}()

// b64Group decodes four characters into 24 bits (b64Invalid set if one is
// not in the alphabet).
func b64Group(s []byte) uint32 {
	_ = s[3]
	return b64Dec[0][s[0]] | b64Dec[1][s[1]] | b64Dec[2][s[2]] | b64Dec[3][s[3]]
}

// appendDecodeBase64URL appends the bytes of src, url-safe base64 with
// padding, to dst. ok is false, and dst returned unchanged, when src is not
// something this fast path decodes (see above); encoding/base64 decides
// then.
func appendDecodeBase64URL(dst, src []byte) (out []byte, ok bool) {
	if len(src) == 0 || len(src)%4 != 0 {
		return dst, false
	}
	start := len(dst)
	// Two groups make one 8-byte store of which 6 bytes are kept: two
	// bytes of room beyond the decoded length.
	n := len(src) / 4 * 3
	dst = slices.Grow(dst, n+2)
	buf := dst[start : start+n+2]
	w := 0
	s := src
	// Two groups at a time, the last group (which may hold padding) left
	// for below.
	for len(s) > 8 {
		x, y := b64Group(s[0:4]), b64Group(s[4:8])
		if (x|y)&b64Invalid != 0 {
			return dst[:start], false
		}
		binary.BigEndian.PutUint64(buf[w:], uint64(x)<<40|uint64(y)<<16)
		w += 6
		s = s[8:]
	}
	if len(s) == 8 {
		x := b64Group(s[0:4])
		if x&b64Invalid != 0 {
			return dst[:start], false
		}
		buf[w], buf[w+1], buf[w+2] = byte(x>>16), byte(x>>8), byte(x)
		w += 3
		s = s[4:]
	}
	// The last group: "xxxx", "xxx=" or "xx==".
	switch {
	case s[3] != '=':
		x := b64Group(s)
		if x&b64Invalid != 0 {
			return dst[:start], false
		}
		buf[w], buf[w+1], buf[w+2] = byte(x>>16), byte(x>>8), byte(x)
		w += 3
	case s[2] != '=':
		x := b64Dec[0][s[0]] | b64Dec[1][s[1]] | b64Dec[2][s[2]]
		if x&b64Invalid != 0 || x&0xff != 0 {
			return dst[:start], false
		}
		buf[w], buf[w+1] = byte(x>>16), byte(x>>8)
		w += 2
	default:
		x := b64Dec[0][s[0]] | b64Dec[1][s[1]]
		if x&b64Invalid != 0 || x&0xffff != 0 {
			return dst[:start], false
		}
		buf[w] = byte(x >> 16)
		w++
	}
	return dst[:start+w], true
}

// appendEncodeBase64URL appends src in url-safe base64 with padding to dst.
func appendEncodeBase64URL(dst, src []byte) []byte {
	start := len(dst)
	n := (len(src) + 2) / 3 * 4
	dst = slices.Grow(dst, n)
	buf := dst[start : start+n]
	w := 0
	s := src
	// Six bytes make eight characters, built in one register and stored at
	// once; reading s[0:8] needs two bytes beyond the six.
	a := &b64Enc
	for len(s) >= 8 && len(buf)-w >= 8 {
		v := binary.BigEndian.Uint64(s)
		out := uint64(a[v>>58])<<56 | uint64(a[v>>52&0x3f])<<48 |
			uint64(a[v>>46&0x3f])<<40 | uint64(a[v>>40&0x3f])<<32 |
			uint64(a[v>>34&0x3f])<<24 | uint64(a[v>>28&0x3f])<<16 |
			uint64(a[v>>22&0x3f])<<8 | uint64(a[v>>16&0x3f])
		binary.BigEndian.PutUint64(buf[w:], out)
		w += 8
		s = s[6:]
	}
	for len(s) >= 3 {
		v := uint32(s[0])<<16 | uint32(s[1])<<8 | uint32(s[2])
		buf[w] = b64Alphabet[v>>18&0x3f]
		buf[w+1] = b64Alphabet[v>>12&0x3f]
		buf[w+2] = b64Alphabet[v>>6&0x3f]
		buf[w+3] = b64Alphabet[v&0x3f]
		w += 4
		s = s[3:]
	}
	switch len(s) {
	case 2:
		v := uint32(s[0])<<16 | uint32(s[1])<<8
		buf[w] = b64Alphabet[v>>18&0x3f]
		buf[w+1] = b64Alphabet[v>>12&0x3f]
		buf[w+2] = b64Alphabet[v>>6&0x3f]
		buf[w+3] = '='
		w += 4
	case 1:
		v := uint32(s[0]) << 16
		buf[w] = b64Alphabet[v>>18&0x3f]
		buf[w+1] = b64Alphabet[v>>12&0x3f]
		buf[w+2], buf[w+3] = '=', '='
		w += 4
	}
	return dst[:start+w]
}

package keyring

import (
	"encoding/binary"
	"math/bits"
)

// HMAC-SHA256 from precomputed states. HMAC(K, m) is
// SHA-256((K^opad) || SHA-256((K^ipad) || m)); the states after the first
// block of each hash, (K^ipad) and (K^opad), depend on the key alone, so
// they are computed once per key. A MAC of a Fernet token's body (57-73
// bytes) then costs three block compressions instead of five, and a blind
// index of a short value two instead of four; and none of crypto/sha256's
// buffering, which on these short inputs cost as much as the compressions.
// crypto/hmac keeps such states too, but restores them by unmarshalling a
// hash.Hash per call.

const (
	shaBlock = 64
	shaSize  = 32
)

// hmacState is a key's SHA-256 states after its ipad and opad blocks.
type hmacState struct {
	in, out [8]uint32
}

var shaIV = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}

// init computes the states for key, at most one block long.
func (s *hmacState) init(key []byte) {
	var ipad, opad [shaBlock]byte
	for i := range ipad {
		var k byte
		if i < len(key) {
			k = key[i]
		}
		ipad[i], opad[i] = k^0x36, k^0x5c
	}
	s.in, s.out = shaIV, shaIV
	block(&s.in, ipad[:])
	block(&s.out, opad[:])
}

// sum writes HMAC-SHA256(key, a || b) into out (32 bytes).
func (s *hmacState) sum(out []byte, a, b []byte) {
	h := s.in
	n := uint64(shaBlock + len(a) + len(b)) // bytes hashed, the ipad block included
	// tail holds what is left of a and b after their whole blocks, then
	// the padding: at most two blocks.
	var tail [2 * shaBlock]byte
	t := 0
	for _, p := range [2][]byte{a, b} {
		if t > 0 {
			c := copy(tail[t:shaBlock], p)
			t += c
			p = p[c:]
			if t < shaBlock {
				continue
			}
			block(&h, tail[:shaBlock])
			t = 0
		}
		if whole := len(p) &^ (shaBlock - 1); whole > 0 {
			block(&h, p[:whole])
			p = p[whole:]
		}
		t = copy(tail[:], p)
	}
	tail[t] = 0x80
	end := shaBlock
	if t+1+8 > shaBlock {
		end = 2 * shaBlock
	}
	clear(tail[t+1 : end-8])
	binary.BigEndian.PutUint64(tail[end-8:end], n*8)
	block(&h, tail[:end])

	// The outer hash: the inner digest and its padding fill one block.
	var outer [shaBlock]byte
	for i, v := range h {
		binary.BigEndian.PutUint32(outer[4*i:], v)
	}
	outer[shaSize] = 0x80
	binary.BigEndian.PutUint64(outer[shaBlock-8:], (shaBlock+shaSize)*8)
	h = s.out
	block(&h, outer[:])
	for i, v := range h {
		binary.BigEndian.PutUint32(out[4*i:], v)
	}
}

var shaK = [64]uint32{
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

// blockGeneric is SHA-256's compression function in Go (the standard
// library's sha256block.go), for CPUs without the SHA extensions.
func blockGeneric(dig *[8]uint32, p []byte) {
	var w [64]uint32
	h0, h1, h2, h3, h4, h5, h6, h7 := dig[0], dig[1], dig[2], dig[3], dig[4], dig[5], dig[6], dig[7]
	for len(p) >= shaBlock {
		a, b, c, d, e, f, g, h := h0, h1, h2, h3, h4, h5, h6, h7
		for i := range 64 {
			if i < 16 {
				w[i] = binary.BigEndian.Uint32(p[4*i:])
			} else {
				v1 := w[i-2]
				t1 := bits.RotateLeft32(v1, -17) ^ bits.RotateLeft32(v1, -19) ^ (v1 >> 10)
				v2 := w[i-15]
				t2 := bits.RotateLeft32(v2, -7) ^ bits.RotateLeft32(v2, -18) ^ (v2 >> 3)
				w[i] = t1 + w[i-7] + t2 + w[i-16]
			}
			t1 := h + (bits.RotateLeft32(e, -6) ^ bits.RotateLeft32(e, -11) ^ bits.RotateLeft32(e, -25)) + ((e & f) ^ (^e & g)) + shaK[i] + w[i]
			t2 := (bits.RotateLeft32(a, -2) ^ bits.RotateLeft32(a, -13) ^ bits.RotateLeft32(a, -22)) + ((a & b) ^ (a & c) ^ (b & c))
			h, g, f, e, d, c, b, a = g, f, e, d+t1, c, b, a, t1+t2
		}
		h0 += a
		h1 += b
		h2 += c
		h3 += d
		h4 += e
		h5 += f
		h6 += g
		h7 += h
		p = p[shaBlock:]
	}
	dig[0], dig[1], dig[2], dig[3], dig[4], dig[5], dig[6], dig[7] = h0, h1, h2, h3, h4, h5, h6, h7
}

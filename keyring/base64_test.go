package keyring

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"testing"
)

// The token codec must give exactly what encoding/base64's URLEncoding
// gives; the decoder may decline an input (the standard library then
// decides) but never decode one differently.

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestEncodeBase64URLMatchesStdlib(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 300; n++ {
		for range 10 {
			src := randomBytes(r, n)
			want := base64.URLEncoding.EncodeToString(src)
			// Appended after a prefix, into a buffer of the exact size and
			// into one that must grow.
			got := appendEncodeBase64URL([]byte("pre"), src)
			if string(got) != "pre"+want {
				t.Fatalf("len %d: got %q, want %q", n, got[3:], want)
			}
			exact := make([]byte, 0, len(want))
			got = appendEncodeBase64URL(exact, src)
			if string(got) != want {
				t.Fatalf("len %d: exact-size buffer: got %q, want %q", n, got, want)
			}
			if n > 0 && &got[0] != &exact[:1][0] {
				t.Fatalf("len %d: a buffer of the encoded size was reallocated", n)
			}
		}
	}
}

func TestDecodeBase64URLMatchesStdlib(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for n := 1; n <= 300; n++ {
		for range 10 {
			want := randomBytes(r, n)
			enc := []byte(base64.URLEncoding.EncodeToString(want))
			got, ok := appendDecodeBase64URL([]byte("pre"), enc)
			if !ok || string(got) != "pre"+string(want) {
				t.Fatalf("len %d (%q): got %x ok=%v, want %x", n, enc, got, ok, want)
			}
		}
	}
}

// TestDecodeBase64URLEveryByte puts every byte value at every position of
// encodings of each padding: where the fast decoder accepts, it must agree
// with the standard library; it must accept whatever is in the alphabet
// with zero bits under the padding.
func TestDecodeBase64URLEveryByte(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 57, 88, 89, 90} {
		base := []byte(base64.URLEncoding.EncodeToString(randomBytes(r, n)))
		for pos := range base {
			for c := range 256 {
				in := bytes.Clone(base)
				in[pos] = byte(c)
				want, werr := base64.URLEncoding.DecodeString(string(in))
				got, ok := appendDecodeBase64URL(nil, in)
				if ok && (werr != nil || !bytes.Equal(got, want)) {
					t.Fatalf("%q: fast decoder gave %x, encoding/base64 %x (%v)", in, got, want, werr)
				}
				if !ok && werr == nil && bytes.Equal([]byte(base64.URLEncoding.EncodeToString(want)), in) {
					t.Fatalf("%q: canonical encoding declined", in)
				}
			}
		}
	}
}

func TestDecodeBase64URLDeclines(t *testing.T) {
	for _, in := range []string{"", "A", "AB", "ABC", "AB=A", "A===", "====", "AB==AB==", "AB\nA", "AB+/", "ABC=", "AB=="} {
		got, ok := appendDecodeBase64URL(nil, []byte(in))
		want, werr := base64.URLEncoding.DecodeString(in)
		if ok && (werr != nil || !bytes.Equal(got, want)) {
			t.Errorf("%q: fast decoder gave %x, encoding/base64 %x (%v)", in, got, want, werr)
		}
	}
}

func FuzzDecodeBase64URL(f *testing.F) {
	f.Add([]byte("gAAAAABpAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="))
	f.Add([]byte("AB=="))
	f.Add([]byte("ABC="))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, ok := appendDecodeBase64URL([]byte("x"), in)
		if !ok {
			if string(got) != "x" {
				t.Fatalf("declined but changed dst: %q", got)
			}
			return
		}
		want, err := base64.URLEncoding.DecodeString(string(in))
		if err != nil || string(got) != "x"+string(want) {
			t.Fatalf("%q: fast decoder gave %x, encoding/base64 %x (%v)", in, got[1:], want, err)
		}
	})
}

func BenchmarkBase64URL(b *testing.B) {
	raw := randomBytes(rand.New(rand.NewPCG(7, 8)), 89) // a token of a short value
	enc := []byte(base64.URLEncoding.EncodeToString(raw))
	dec := make([]byte, 0, len(raw)+2)
	out := make([]byte, 0, len(enc))
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			dec, _ = appendDecodeBase64URL(dec[:0], enc)
		}
	})
	b.Run("decode/stdlib", func(b *testing.B) {
		for b.Loop() {
			dec, _ = base64.URLEncoding.AppendDecode(dec[:0], enc)
		}
	})
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			out = appendEncodeBase64URL(out[:0], raw)
		}
	})
	b.Run("encode/stdlib", func(b *testing.B) {
		for b.Loop() {
			out = base64.URLEncoding.AppendEncode(out[:0], raw)
		}
	})
}

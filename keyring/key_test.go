package keyring

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

const (
	testKeyA = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // bytes 0..31
	testKeyB = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=" // bytes 32..63
)

func TestParseKey(t *testing.T) {
	t.Parallel()
	raw := bytes.Repeat([]byte{0xfb, 0xff}, 16) // encodes with '-' and '_' / '+' and '/'
	urlKey := base64.URLEncoding.EncodeToString(raw)
	stdKey := base64.StdEncoding.EncodeToString(raw)
	cases := []struct {
		name, in string
		ok       bool
		msg      string
	}{
		{"python key", "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=", true, ""},
		{"url-safe alphabet", urlKey, true, ""},
		{"standard base64", stdKey, false, "standard base64"},
		{"no padding", strings.TrimSuffix(testKeyA, "="), false, "43 characters"},
		{"extra char", testKeyA + "=", false, "45 characters"},
		{"empty", "", false, "0 characters"},
		{"31 bytes", base64.URLEncoding.EncodeToString(make([]byte, 31)) + "A", false, ""},
		{"space inside", testKeyA[:10] + " " + testKeyA[11:], false, "position 11"},
		{"surrounding space", " " + testKeyA[1:], false, "position 1"},
		{"non-canonical last char", testKeyA[:42] + "9=", false, "32 bytes"},
		{"33 bytes", base64.URLEncoding.EncodeToString(make([]byte, 33)), false, "44 characters"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := ParseKey(c.in)
			if c.ok {
				if err != nil || k == nil {
					t.Fatalf("ParseKey: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %q", c.in)
			}
			if !errors.Is(err, errKeyFormat) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q, want it to mention %q", err, c.msg)
			}
			if len(c.in) > 8 && strings.Contains(err.Error(), c.in[2:10]) {
				t.Errorf("error %q contains key material", err)
			}
		})
	}
}

func TestGenerateKey(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 50 {
		s, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != 44 || strings.ContainsAny(s, "+/") || seen[s] {
			t.Fatalf("bad or repeated key %q", s)
		}
		seen[s] = true
		if _, err := ParseKey(s); err != nil {
			t.Fatal(err)
		}
	}
}

func TestKeyNeverPrintsMaterial(t *testing.T) {
	t.Parallel()
	k := mustKey(t, testKeyA)
	// sha256(bytes 0..31) = 630dcd29...
	if k.Fingerprint() != "630dcd29" {
		t.Fatalf("fingerprint %s", k.Fingerprint())
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("Encryption service initialized", "key", k, "keys", []*Key{k})
	outs := []string{
		buf.String(),
		fmt.Sprintf("%v %+v %#v %s %x %q %d", k, k, k, k, k, k, k),
		fmt.Sprintf("%v %+v %#v", *k, *k, *k),
		fmt.Sprint([]*Key{k}),
		k.String(),
	}
	secretish := []string{testKeyA, testKeyA[:16], "000102030405", string(k.m.raw[:])}
	for _, o := range outs {
		for _, s := range secretish {
			if strings.Contains(o, s) {
				t.Errorf("output %q contains key material", o)
			}
		}
	}
	if !strings.Contains(buf.String(), `"key":"630dcd29"`) {
		t.Errorf("slog output %s does not show the fingerprint", buf.String())
	}
	if !k.Equal(mustKey(t, testKeyA)) || k.Equal(mustKey(t, testKeyB)) {
		t.Error("Equal")
	}
}

func TestBlindIndexVectors(t *testing.T) {
	t.Parallel()
	// Computed independently with Python's hmac module (see
	// test/keyring_python_test.go for the live cross-check).
	cases := []struct {
		hashKey, domain, plain, want string
	}{
		{testKeyA, "public.users.email", "alice@example.com", "4444062108472cd08ba8968f08dd5c9a76603471110a886546259febdc33fade"},
		{testKeyA, "public.users.email", "", "f3692f6b869a60500b311038b8e54610a432e6eeb84e1bb91981433b6277af5c"},
		{testKeyA, "app.people.email", "alice@example.com", "32b5a8d32b8016319725cf65fcf20bff44356899c1b1061233fba9c2885bd8cb"},
		{testKeyA, "email", "Zoëé", "ec101ea22faa2cb5d52a22ba699b5d494c40302b3dd087f3240c20d961e19c4e"},
		{testKeyB, "public.users.email", "alice@example.com", "5d5aa0570bc2d354559eabbb9d770679910b349d21678747186b428a24b1ec4f"},
		{testKeyB, "public.users.email", "", "69f1fd762c5aba6a9e16be97558381543e5a76bb8bd32bbf08d9e65bf2bc0b71"},
		{testKeyB, "app.people.email", "alice@example.com", "000811e6e0237d46d1d3d8625bbd91634d378ddfefb118f35e57efbd7cdce031"},
		{testKeyB, "email", "Zoëé", "13583b4fd85972227d8c05e8f83a40dd04408791b1d94da8522cace3f6857eeb"},
	}
	enc := mustKey(t, testKeyA)
	for _, c := range cases {
		hk := mustKey(t, c.hashKey).m.raw
		kr := New(enc, nil, 1, hk[:], nil)
		got := kr.BlindIndex([]byte("p:"), c.domain, []byte(c.plain))
		if string(got) != "p:"+c.want {
			t.Errorf("BlindIndex(%s, %q) = %s, want %s", c.domain, c.plain, got[2:], c.want)
		}
		// Twice: the second call uses the cached column key.
		if got2 := kr.BlindIndex(nil, c.domain, []byte(c.plain)); string(got2) != c.want {
			t.Errorf("cached BlindIndex differs")
		}
	}
}

func TestBlindIndexAll(t *testing.T) {
	t.Parallel()
	a, b := mustKey(t, testKeyA).m.raw, mustKey(t, testKeyB).m.raw
	kr := New(mustKey(t, testKeyA), nil, 1, b[:], [][]byte{a[:]})
	all := kr.BlindIndexAll("public.users.email", []byte("alice@example.com"))
	if len(all) != 2 || kr.HashFallbacks() != 1 {
		t.Fatalf("got %d indexes", len(all))
	}
	if string(all[0]) != "5d5aa0570bc2d354559eabbb9d770679910b349d21678747186b428a24b1ec4f" ||
		string(all[1]) != "4444062108472cd08ba8968f08dd5c9a76603471110a886546259febdc33fade" {
		t.Errorf("BlindIndexAll = %s", all)
	}
	// Appending to one must not clobber the next.
	_ = append(all[0], "xx"...)
	if string(all[1][:4]) != "4444" {
		t.Error("BlindIndexAll results share capacity")
	}
	if got := kr.BlindIndexFallback(nil, 0, "public.users.email", []byte("alice@example.com")); string(got) != string(all[1]) {
		t.Errorf("BlindIndexFallback = %s", got)
	}
	if fps := kr.HashFallbackFingerprints(); len(fps) != 1 || fps[0] != "630dcd29" {
		t.Errorf("hash fallback fingerprints %v", fps)
	}
}

func TestBlindIndexConcurrent(t *testing.T) {
	t.Parallel()
	hk := mustKey(t, testKeyA).m.raw
	kr := New(mustKey(t, testKeyB), nil, 1, hk[:], nil)
	want := "4444062108472cd08ba8968f08dd5c9a76603471110a886546259febdc33fade"
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				dom := fmt.Sprintf("public.t%d.c%d", g, i%20)
				kr.BlindIndex(nil, dom, []byte("v"))
				if got := kr.BlindIndex(nil, "public.users.email", []byte("alice@example.com")); string(got) != want {
					t.Errorf("concurrent BlindIndex = %s", got)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestCheckPlain(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		in       string
		max      int
		sanitize bool
		state    string
	}{
		{"ok", "héllo", 10, true, ""},
		{"empty", "", 10, true, ""},
		{"at max", "12345", 5, true, ""},
		{"over max", "123456", 5, true, "54000"},
		{"no limit", strings.Repeat("x", 100), 0, true, ""},
		{"nul", "a\x00b", 10, true, "22021"},
		{"nul unsanitized", "a\x00b", 10, false, ""},
		{"bad utf8", "a\xffb", 10, true, "22021"},
		{"truncated utf8", "\xc3", 10, true, "22021"},
		{"surrogate", "\xed\xa0\x80", 10, true, "22021"},
		{"bad utf8 unsanitized", "a\xff", 10, false, ""},
		{"size before sanitize", "\xff\xff\xff", 2, true, "54000"},
	}
	for _, c := range cases {
		err := CheckPlain([]byte(c.in), c.max, c.sanitize)
		if c.state == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		var s interface {
			SQLState() string
			Hint() string
		}
		if !errors.As(err, &s) || s.SQLState() != c.state {
			t.Errorf("%s: err %v, want SQLSTATE %s", c.name, err, c.state)
			continue
		}
		if !strings.HasPrefix(err.Error(), "pgveil: ") || (len(c.in) > 2 && strings.Contains(err.Error(), c.in)) || s.Hint() == "" {
			t.Errorf("%s: message %q", c.name, err)
		}
	}
	se := &SizeError{Column: "public.users.email", Size: 11, Max: 10}
	if se.Error() != "pgveil: value of 11 bytes for encrypted column public.users.email exceeds max_size of 10 bytes" {
		t.Errorf("SizeError: %q", se)
	}
	ie := &InvalidInputError{Column: "public.users.email", Reason: ReasonNULByte}
	if ie.Error() != "pgveil: value for encrypted column public.users.email contains a NUL byte" {
		t.Errorf("InvalidInputError: %q", ie)
	}
}

// TestHotPathAllocations: the calls the proxy makes per value allocate
// nothing. The Scratch variants (the proxy's) are checked in every run; the
// pooled ones only without the race detector, under which sync.Pool drops
// items at random.
func TestHotPathAllocations(t *testing.T) {
	kr := New(mustKey(t, testKeyA), []*Key{mustKey(t, testKeyB)}, 1, make([]byte, 32), nil)
	plain := []byte("alice@example.com")
	tok, _ := kr.Seal(nil, plain)
	fb := New(mustKey(t, testKeyB), nil, 1, make([]byte, 32), nil)
	tokFallback, _ := fb.Seal(nil, plain)
	dst := make([]byte, 0, 1024)
	kr.BlindIndex(nil, "d", plain) // derive the column key
	var sc Scratch
	_, _ = kr.SealScratch(nil, plain, 1700000000, &sc) // fill the scratch
	checks := map[string]func(){
		"SealScratch":          func() { _, _ = kr.SealScratch(dst[:0], plain, 1700000000, &sc) },
		"OpenScratch":          func() { _, _, _ = kr.OpenScratch(dst[:0], tok, &sc) },
		"OpenScratch fallback": func() { _, _, _ = kr.OpenScratch(dst[:0], tokFallback, &sc) },
		"OpenScratch error":    func() { _, _, _ = kr.OpenScratch(dst[:0], plain, &sc) },
		"BlindIndexScratch":    func() { _ = kr.BlindIndexScratch(dst[:0], "d", plain, &sc) },
		"CheckPlain":           func() { _ = CheckPlain(plain, 100, true) },
		"IsToken":              func() { _ = IsToken(tok) },
	}
	if !raceEnabled {
		checks["Seal"] = func() { _, _ = kr.Seal(dst[:0], plain) }
		checks["Open"] = func() { _, _, _ = kr.Open(dst[:0], tok) }
		checks["Open fallback"] = func() { _, _, _ = kr.Open(dst[:0], tokFallback) }
		checks["Open error"] = func() { _, _, _ = kr.Open(dst[:0], plain) }
		checks["BlindIndex"] = func() { _ = kr.BlindIndex(dst[:0], "d", plain) }
	}
	for name, f := range checks {
		if n := testing.AllocsPerRun(200, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	for _, n := range []int{16, 100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			kr := New(mustKey(b, testKeyA), nil, 1, make([]byte, 32), nil)
			plain := bytes.Repeat([]byte("x"), n)
			dst := make([]byte, 0, TokenLen(n))
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				dst, _ = kr.Seal(dst[:0], plain)
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, n := range []int{16, 100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			kr := New(mustKey(b, testKeyA), nil, 1, make([]byte, 32), nil)
			tok, _ := kr.Seal(nil, bytes.Repeat([]byte("x"), n))
			dst := make([]byte, 0, n)
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				dst, _, _ = kr.Open(dst[:0], tok)
			}
		})
	}
	b.Run("parallel/100", func(b *testing.B) {
		kr := New(mustKey(b, testKeyA), nil, 1, make([]byte, 32), nil)
		tok, _ := kr.Seal(nil, bytes.Repeat([]byte("x"), 100))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			dst := make([]byte, 0, 128)
			for pb.Next() {
				dst, _, _ = kr.Open(dst[:0], tok)
			}
		})
	})
}

func BenchmarkBlindIndex(b *testing.B) {
	kr := New(mustKey(b, testKeyA), nil, 1, make([]byte, 32), nil)
	plain := []byte("alice@example.com")
	dst := make([]byte, 0, BlindIndexLen)
	b.ReportAllocs()
	for b.Loop() {
		dst = kr.BlindIndex(dst[:0], "public.users.email", plain)
	}
}

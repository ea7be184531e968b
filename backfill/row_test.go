package backfill

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/pgveil/pgveil/keyring"
)

func TestEval(t *testing.T) {
	old := newKey(t)
	kr := testKeyring(t, old)
	oldOnly := keyring.New(old, nil, 1, []byte("0123456789abcdef0123456789abcdef"), nil)
	stranger := testKeyring(t)
	const dom = "public.users.email"
	seal := func(k *keyring.Keyring, p string) []byte {
		tok, err := k.Seal(nil, []byte(p))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	idx := func(p string) []byte { return kr.BlindIndex(nil, dom, []byte(p)) }
	primary := seal(kr, "alice@example.com")
	fallback := seal(oldOnly, "bob@example.com")
	foreign := seal(stranger, "carol@example.com")

	type want struct {
		class    class
		key      int
		hash     hashState
		setValue bool
		setHash  bool
		hashNull bool // the new blind index is NULL
		fail     failure
		plain    string // the new value decrypts (or is, for decrypt) to this
	}
	cases := []struct {
		name   string
		op     Op
		domain string
		value  []byte
		stored []byte
		want   want
	}{
		{"encrypt plaintext", OpEncrypt, dom, []byte("dave@example.com"), nil,
			want{class: classPlain, hash: hashMissing, setValue: true, setHash: true, plain: "dave@example.com"}},
		{"encrypt empty string", OpEncrypt, dom, []byte{}, nil,
			want{class: classPlain, hash: hashMissing, setValue: true, setHash: true, plain: ""}},
		{"encrypt skips primary token", OpEncrypt, dom, primary, idx("alice@example.com"),
			want{class: classToken, key: 0, hash: hashOK}},
		{"encrypt never re-encrypts a fallback token", OpEncrypt, dom, fallback, idx("bob@example.com"),
			want{class: classToken, key: 1, hash: hashOK}},
		{"encrypt fills a missing blind index", OpEncrypt, dom, primary, nil,
			want{class: classToken, hash: hashMissing, setHash: true}},
		{"encrypt undecryptable fails", OpEncrypt, dom, foreign, nil,
			want{class: classUndecryptable, hash: hashOK, fail: failUndecryptable}},
		{"encrypt NULL", OpEncrypt, dom, nil, nil, want{class: classNull, hash: hashOK}},
		{"encrypt NULL clears a stale index", OpEncrypt, dom, nil, idx("x"),
			want{class: classNull, hash: hashWrong, setHash: true, hashNull: true}},
		{"encrypt not searchable", OpEncrypt, "", []byte("Full Name"), nil,
			want{class: classPlain, hash: hashNone, setValue: true, plain: "Full Name"}},
		{"encrypt NUL byte refused", OpEncrypt, "", []byte("a\x00b"), nil,
			want{class: classPlain, fail: failInvalidInput}},
		{"encrypt invalid UTF-8 refused", OpEncrypt, "", []byte{0xff, 0xfe}, nil,
			want{class: classPlain, fail: failInvalidInput}},
		{"encrypt over max_size refused", OpEncrypt, "", bytes.Repeat([]byte("x"), 101), nil,
			want{class: classPlain, fail: failTooLarge}},
		{"reencrypt fallback", OpReencrypt, dom, fallback, idx("bob@example.com"),
			want{class: classToken, key: 1, hash: hashOK, setValue: true, plain: "bob@example.com"}},
		{"reencrypt primary untouched", OpReencrypt, dom, primary, idx("alice@example.com"),
			want{class: classToken, hash: hashOK}},
		{"reencrypt plaintext untouched", OpReencrypt, dom, []byte("x"), nil,
			want{class: classPlain, hash: hashMissing}},
		{"reencrypt undecryptable fails", OpReencrypt, "", foreign, nil,
			want{class: classUndecryptable, fail: failUndecryptable}},
		{"rehash wrong index", OpRehash, dom, primary, idx("someone else"),
			want{class: classToken, hash: hashWrong, setHash: true}},
		{"rehash correct index", OpRehash, dom, primary, idx("alice@example.com"),
			want{class: classToken, hash: hashOK}},
		{"rehash skips unsearchable columns", OpRehash, "", primary, nil, want{}},
		{"rehash leaves empty index of plaintext", OpRehash, dom, []byte("p"), nil,
			want{class: classPlain, hash: hashMissing}},
		{"decrypt token", OpDecrypt, dom, fallback, idx("bob@example.com"),
			want{class: classToken, key: 1, hash: hashOK, setValue: true, setHash: true, hashNull: true, plain: "bob@example.com"}},
		{"decrypt plaintext untouched", OpDecrypt, dom, []byte("p"), nil,
			want{class: classPlain, hash: hashMissing}},
		{"decrypt undecryptable fails", OpDecrypt, dom, foreign, nil,
			want{class: classUndecryptable, hash: hashOK, fail: failUndecryptable}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := &rowCodec{op: tc.op, keys: kr, maxSize: 100, sanitize: true}
			var c cell
			rc.eval(&c, tc.domain, tc.value, tc.stored, nil)
			w := tc.want
			if c.class != w.class || c.hash != w.hash || c.setValue != w.setValue || c.setHash != w.setHash || c.fail != w.fail {
				t.Fatalf("got class=%d hash=%d setValue=%v setHash=%v fail=%v, want class=%d hash=%d setValue=%v setHash=%v fail=%v",
					c.class, c.hash, c.setValue, c.setHash, c.fail, w.class, w.hash, w.setValue, w.setHash, w.fail)
			}
			if c.class == classToken && c.keyIndex != w.key {
				t.Fatalf("key index %d, want %d", c.keyIndex, w.key)
			}
			if c.setValue {
				got := c.value
				if c.value == nil {
					t.Fatal("new value is NULL")
				}
				if tc.op != OpDecrypt {
					p, ki, err := kr.Open(nil, c.value)
					if err != nil || ki != 0 {
						t.Fatalf("new token: key %d, %v", ki, err)
					}
					got = p
				}
				if string(got) != w.plain {
					t.Fatalf("new value has the wrong plaintext")
				}
			}
			if c.setHash {
				if w.hashNull != (c.newHash == nil) {
					t.Fatalf("new blind index NULL=%v, want %v", c.newHash == nil, w.hashNull)
				}
				if !w.hashNull {
					var p []byte
					switch {
					case tc.op == OpEncrypt && c.class == classPlain:
						p = tc.value
					default:
						p, _, _ = kr.Open(nil, tc.value)
					}
					if !bytes.Equal(c.newHash, kr.BlindIndex(nil, tc.domain, p)) {
						t.Fatal("new blind index is not the current key's")
					}
				}
			}
		})
	}
}

// TestEvalArena checks that cells stay valid while the arena grows.
func TestEvalArena(t *testing.T) {
	kr := testKeyring(t)
	rc := &rowCodec{op: OpEncrypt, keys: kr, maxSize: 1 << 20, sanitize: true}
	cells := make([]cell, 200)
	var arena []byte
	for i := range cells {
		arena = rc.eval(&cells[i], "d", []byte(strings.Repeat("v", i)), nil, arena)
	}
	for i, c := range cells {
		p, _, err := kr.Open(nil, c.value)
		if err != nil || len(p) != i {
			t.Fatalf("cell %d: %v", i, err)
		}
		if !bytes.Equal(c.newHash, kr.BlindIndex(nil, "d", p)) {
			t.Fatalf("cell %d: blind index overwritten", i)
		}
	}
}

func TestParseShard(t *testing.T) {
	for _, ok := range []string{"0/1", "0/4", "3/4"} {
		if _, err := ParseShard(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "1", "4/4", "-1/4", "1/0", "a/b", "1/2/3"} {
		if _, err := ParseShard(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimiter(100)
	l.now = func() time.Time { return now }
	// One second of burst, then 100 rows per second.
	if d := l.reserve(100); d > 0 {
		t.Fatalf("first second waited %v", d)
	}
	if d := l.reserve(100); d != time.Second {
		t.Fatalf("second 100 rows: wait %v, want 1s", d)
	}
	now = now.Add(10 * time.Second)
	if d := l.reserve(50); d > 0 {
		t.Fatalf("after idling: wait %v", d)
	}
	var nilLimiter *limiter
	if d := nilLimiter.reserve(1 << 20); d != 0 {
		t.Fatal("nil limiter waits")
	}
	if d := newLimiter(0).reserve(1 << 20); d != 0 {
		t.Fatal("no rate waits")
	}
}

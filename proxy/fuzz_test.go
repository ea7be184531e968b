package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// FuzzFrame: any byte stream read as frames neither panics nor allocates
// beyond the limit.
func FuzzFrame(f *testing.F) {
	f.Add([]byte{'Q', 0, 0, 0, 9, 'S', 'E', 'L', 0})
	f.Add([]byte{'P', 0, 0, 0, 3})
	f.Add([]byte{'D', 0x7f, 0xff, 0xff, 0xff})
	f.Add([]byte{'d', 0, 0, 0, 4, 'X', 0, 0, 0, 5, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 16
		fr := newFrameReader(bytes.NewReader(data), limit)
		var sink bytes.Buffer
		w := bufio.NewWriter(&sink)
		for i := 0; ; i++ {
			_, size, err := fr.next()
			if err != nil {
				var tl *MessageTooLargeError
				if errors.As(err, &tl) {
					if size <= limit {
						t.Fatalf("too large reported for %d bytes", size)
					}
					if fr.skip() != nil {
						return
					}
					continue
				}
				return
			}
			if i%2 == 0 {
				b, err := fr.body()
				if err != nil {
					return
				}
				if len(b) != size || cap(fr.scratch) > limit {
					t.Fatalf("body %d bytes, declared %d, scratch %d", len(b), size, cap(fr.scratch))
				}
			} else if err := fr.forward(w); err != nil && !errors.Is(err, io.EOF) {
				return
			}
		}
	})
}

// FuzzCopyRow: COPY row splitting and decoding never panic, and text-format
// escaping round-trips.
func FuzzCopyRow(f *testing.F) {
	f.Add([]byte("a\tb\\tc\t\\N"), byte('\t'), false)
	f.Add([]byte(`"x,""y"",z",,"`), byte(','), true)
	f.Fuzz(func(t *testing.T, row []byte, delim byte, csv bool) {
		// PostgreSQL refuses these delimiters in text format (copy.c).
		if delim == '\n' || delim == '\r' || delim == '"' || delim >= 0x80 ||
			strings.IndexByte("\\.abcdefghijklmnopqrstuvwxyz0123456789", delim) >= 0 {
			return
		}
		for _, fld := range splitCopyRow(nil, row, delim, csv, '"') {
			if csv {
				_ = unquoteCSV(fld, '"', '"')
			} else {
				_ = unescapeText(fld)
			}
		}
		// Round trip: escaping any value and decoding it yields the value.
		esc := escapeText(nil, row, delim)
		if got := unescapeText(esc); !bytes.Equal(got, row) {
			t.Fatalf("escape round trip: %q -> %q -> %q", row, esc, got)
		}
		if fields := splitCopyRow(nil, esc, delim, false, 0); len(fields) != 1 {
			t.Fatalf("escaped value split into %d fields", len(fields))
		}
		q := quoteCSV(nil, row, ',', '"', '"', "")
		if got := unquoteCSV(q, '"', '"'); !bytes.Equal(got, row) && len(row) > 0 {
			t.Fatalf("csv round trip: %q -> %q -> %q", row, q, got)
		}
	})
}

// FuzzArrayParam: array parameters in text and binary format never panic.
func FuzzArrayParam(f *testing.F) {
	f.Add([]byte(`{a,"b c",NULL,"d\"e"}`))
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 'x'})
	f.Fuzz(func(t *testing.T, v []byte) {
		_, _ = parseTextArray(v)
		_, _ = parseBinaryArray(v)
	})
}

func TestParseTextArray(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`{}`, nil},
		{`{a}`, []string{"a"}},
		{`{a,b}`, []string{"a", "b"}},
		{`{"a,b","c\"d",NULL,"NULL"}`, []string{"a,b", `c"d`, "<nil>", "NULL"}},
		{`{ x@y.io , z@y.io }`, []string{"x@y.io", "z@y.io"}},
	} {
		got, err := parseTextArray([]byte(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		var s []string
		for _, g := range got {
			if g == nil {
				s = append(s, "<nil>")
			} else {
				s = append(s, string(g))
			}
		}
		if len(s) != len(tc.want) {
			t.Fatalf("%s: %q", tc.in, s)
		}
		for i := range s {
			if s[i] != tc.want[i] {
				t.Fatalf("%s: %q", tc.in, s)
			}
		}
	}
}

// frameEvent is one frame as a reader yields it: its type and body, or the
// size of an oversized frame that was skipped.
type frameEvent struct {
	typ     byte
	body    string
	skipped int
}

// FuzzMemFrames: the event loop's frame source yields, for any byte stream
// cut into reads at any points, the same frames as the blocking
// frameReader, skips oversized frames without holding them, and never
// panics.
func FuzzMemFrames(f *testing.F) {
	f.Add([]byte{'Q', 0, 0, 0, 9, 'S', 'E', 'L', 0, 'S', 0, 0, 0, 4}, []byte{3, 1, 7})
	f.Add([]byte{'d', 0, 0, 0, 40, 1, 2, 3}, []byte{1})
	f.Add(append([]byte{'D', 0, 0, 0, 200}, make([]byte, 196)...), []byte{50, 0, 9})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		const limit = 64
		// What frameReader makes of the whole stream.
		var want []frameEvent
		fr := newFrameReader(bytes.NewReader(data), limit)
		for {
			typ, size, err := fr.next()
			var tl *MessageTooLargeError
			if errors.As(err, &tl) {
				// Reported at its header, before its bytes arrive.
				want = append(want, frameEvent{typ: typ, skipped: size})
				if fr.skip() != nil {
					break
				}
				continue
			}
			if err != nil {
				break
			}
			b, err := fr.body()
			if err != nil {
				break
			}
			want = append(want, frameEvent{typ: typ, body: string(b)})
		}
		// memFrames fed in pieces, drained after each read as the loop does.
		m := &memFrames{limit: limit}
		var got []frameEvent
		bad := false
		drain := func() {
			for !bad {
				typ, size, err := m.next()
				if err == errWouldBlock {
					return
				}
				var tl *MessageTooLargeError
				if errors.As(err, &tl) {
					if size <= limit {
						t.Fatalf("too large reported for %d bytes", size)
					}
					_ = m.skip()
					got = append(got, frameEvent{typ: typ, skipped: size})
					continue
				}
				if err != nil {
					bad = true // a malformed length ends the session
					return
				}
				b, _ := m.body()
				got = append(got, frameEvent{typ: typ, body: string(b)})
			}
		}
		rest := data
		for i := 0; len(rest) > 0 && !bad; i++ {
			n := len(rest)
			if i < len(cuts) {
				n = min(n, int(cuts[i])+1)
			}
			spare := m.spare()
			n = min(n, len(spare))
			copy(spare, rest[:n])
			m.filled(n)
			rest = rest[n:]
			drain()
			if cap(m.buf) > 2*(limit+5)+2*minReadSpace+maxReadPerEvent {
				t.Fatalf("buffer grew to %d bytes", cap(m.buf))
			}
		}
		// frameReader stops at a truncated frame, memFrames waits for it:
		// compare the frames both have.
		if len(got) > len(want) {
			t.Fatalf("memFrames yielded %d frames, frameReader %d", len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("frame %d: memFrames %+v, frameReader %+v", i, got[i], want[i])
			}
		}
		if !bad && m.discard == 0 && m.buffered() == 0 && len(got) != len(want) {
			t.Fatalf("all bytes consumed but memFrames yielded %d frames, frameReader %d", len(got), len(want))
		}
	})
}

// FuzzBindMsg: the in-place Bind decoder accepts only what pgproto3 reads
// the same way, and re-encoding what it read gives back the same frame.
func FuzzBindMsg(f *testing.F) {
	for _, b := range []*pgproto3.Bind{
		{},
		{DestinationPortal: "p", PreparedStatement: "s", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{[]byte("x"), nil, {}}, ResultFormatCodes: []int16{0, 1}},
		{Parameters: [][]byte{[]byte("u4242@example.com")}, ResultFormatCodes: []int16{1}},
	} {
		frame, _ := b.Encode(nil)
		f.Add(frame[5:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var m bindMsg
		if !m.decode(body) {
			return
		}
		var want pgproto3.Bind
		if err := want.Decode(body); err != nil {
			t.Fatalf("decoded what pgproto3 refuses (%v)", err)
		}
		if string(m.portal) != want.DestinationPortal || string(m.stmt) != want.PreparedStatement ||
			len(m.params) != len(want.Parameters) || len(m.formats) != len(want.ParameterFormatCodes) {
			t.Fatalf("decoded %+v, pgproto3 %+v", m, want)
		}
		for i, p := range m.params {
			if (p == nil) != (want.Parameters[i] == nil) || !bytes.Equal(p, want.Parameters[i]) {
				t.Fatalf("parameter %d: %q, pgproto3 %q", i, p, want.Parameters[i])
			}
		}
		for i, c := range m.formats {
			if c != want.ParameterFormatCodes[i] {
				t.Fatalf("format %d: %d, pgproto3 %d", i, c, want.ParameterFormatCodes[i])
			}
		}
		frame := m.appendTo(nil, m.formats, m.params)
		if !bytes.Equal(frame[5:], body) || frame[0] != 'B' || int(binary.BigEndian.Uint32(frame[1:])) != len(body)+4 {
			t.Fatalf("re-encoded %x, want %x", frame[5:], body)
		}
	})
}

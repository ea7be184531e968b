package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestOverLimitFramesStream: a frame over the limit is forwarded without
// being held whole (memFrames takes its bytes as they arrive), body refuses
// it on both frame sources, and the frames after it are read as usual.
func TestOverLimitFramesStream(t *testing.T) {
	const limit = 1000
	big, _ := (&pgproto3.DataRow{Values: [][]byte{[]byte(strings.Repeat("x", 5000))}}).Encode(nil)
	small, _ := (&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}).Encode(nil)
	stream := append(append([]byte(nil), big...), small...)

	t.Run("memFrames", func(t *testing.T) {
		for _, piece := range []int{1, 7, 100, 4096, len(stream)} {
			m := &memFrames{limit: limit}
			var out bytes.Buffer
			w := bufio.NewWriterSize(&out, 64)
			var got []byte // types of the frames handled
			rest := stream
			for len(rest) > 0 {
				sp := m.spare()
				n := copy(sp, rest[:min(piece, len(rest))])
				m.filled(n)
				rest = rest[n:]
				for {
					typ, _, err := m.next()
					if err == errWouldBlock {
						break
					}
					var tl *MessageTooLargeError
					if errors.As(err, &tl) {
						if _, berr := m.body(); !errors.As(berr, &tl) {
							t.Fatalf("body of a frame over the limit: %v", berr)
						}
						if err := m.forward(w); err != nil {
							t.Fatal(err)
						}
					} else if err != nil {
						t.Fatal(err)
					} else if err := m.forward(w); err != nil {
						t.Fatal(err)
					}
					got = append(got, typ)
				}
				if cap(m.buf) > limit+2*minReadSpace {
					t.Fatalf("pieces of %d: buffer grew to %d bytes for a frame over the limit", piece, cap(m.buf))
				}
			}
			_ = w.Flush()
			if string(got) != "DC" || !bytes.Equal(out.Bytes(), stream) {
				t.Fatalf("pieces of %d: handled %q, forwarded %d bytes (%v equal)", piece, got, out.Len(), bytes.Equal(out.Bytes(), stream))
			}
		}
	})

	t.Run("frameReader", func(t *testing.T) {
		fr := newFrameReaderSize(bytes.NewReader(stream), limit, 64)
		var out bytes.Buffer
		w := bufio.NewWriterSize(&out, 64)
		typ, _, err := fr.next()
		var tl *MessageTooLargeError
		if typ != 'D' || !errors.As(err, &tl) {
			t.Fatalf("next: %c %v", typ, err)
		}
		if _, err := fr.body(); !errors.As(err, &tl) {
			t.Fatalf("body of a frame over the limit: %v", err)
		}
		if err := fr.forward(w); err != nil {
			t.Fatal(err)
		}
		if typ, _, err = fr.next(); typ != 'C' || err != nil {
			t.Fatalf("next after the big frame: %c %v", typ, err)
		}
		if err := fr.forward(w); err != nil {
			t.Fatal(err)
		}
		_ = w.Flush()
		if !bytes.Equal(out.Bytes(), stream) {
			t.Fatalf("forwarded %d bytes, want the %d of the stream", out.Len(), len(stream))
		}
	})
}

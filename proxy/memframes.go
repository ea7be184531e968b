package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
)

// errWouldBlock: the next frame is not wholly in memory yet.
var errWouldBlock = errors.New("pgveil: frame incomplete")

// minReadSpace is the least room offered to one read, and the size a
// buffer starts at: an idle session holds little.
const minReadSpace = 8 << 10

// memFrames is a frameSource over bytes an event loop read from a socket.
// next reports errWouldBlock until a whole frame is in memory, so handlers
// never wait; a frame over the limit is reported as soon as its header is
// in and skipped or forwarded as its bytes arrive, never held (body refuses
// it).
type memFrames struct {
	buf     []byte // unread bytes are buf[r:]
	r       int
	limit   int
	size    int    // body length of the current frame
	current bool   // a frame's header was returned and its body not consumed
	discard int    // bytes of a skipped frame still to arrive
	full    bool   // the last read filled the room spare offered
	whole   []byte // the frame body last handed out, header included
	// pass is how many bytes of a frame forward streams (one over the
	// limit) are still to arrive; next writes them to passTo first.
	pass   int
	passTo *bufio.Writer
}

// spare returns room for the next read: at least minReadSpace, and enough
// for the whole frame being assembled when its header is in.
func (m *memFrames) spare() []byte {
	if m.r == len(m.buf) {
		m.buf, m.r = m.buf[:0], 0
	}
	need := minReadSpace
	if m.full {
		// The last read filled what it was offered: more is waiting, so
		// offer more (fewer system calls for a large result).
		need = min(max(2*cap(m.buf), need), maxReadPerEvent)
	}
	if avail := len(m.buf) - m.r; avail >= 5 && m.pass == 0 {
		n := int(int32(binary.BigEndian.Uint32(m.buf[m.r+1 : m.r+5])))
		if total := 1 + n; n >= 4 && n-4 <= m.limit && total > avail {
			need = max(need, total-avail)
		}
	}
	if cap(m.buf)-len(m.buf) < need {
		if m.r > 0 {
			n := copy(m.buf, m.buf[m.r:])
			m.buf, m.r = m.buf[:n], 0
		}
		if cap(m.buf)-len(m.buf) < need {
			grown := make([]byte, len(m.buf), max(2*cap(m.buf), len(m.buf)+need))
			copy(grown, m.buf)
			m.buf = grown
		}
	}
	return m.buf[len(m.buf):cap(m.buf)]
}

// filled takes n bytes a read put in spare(), less any that belong to a
// skipped frame.
func (m *memFrames) filled(n int) {
	start := len(m.buf)
	m.buf = m.buf[:start+n]
	if m.discard > 0 {
		k := min(m.discard, n)
		copy(m.buf[start:], m.buf[start+k:])
		m.buf = m.buf[:len(m.buf)-k]
		m.discard -= k
	}
}

// write takes bytes a receive completed with elsewhere (the io_uring loop's
// provided buffers), as a read into spare() would. full stays false: it
// asks spare for more room to save reads, and there are none to save here
// (a buffer that only grows to be dropped by shrink is garbage).
func (m *memFrames) write(p []byte) {
	m.full = false
	for len(p) > 0 {
		n := copy(m.spare(), p)
		m.filled(n)
		p = p[n:]
	}
}

// shrink drops a buffer that grew for one large frame, once it is unused.
func (m *memFrames) shrink() {
	if m.r == len(m.buf) && cap(m.buf) > 4*ioBufferSize {
		m.buf, m.r = nil, 0
	}
}

func (m *memFrames) next() (byte, int, error) {
	m.whole = nil
	if m.current {
		if err := m.skip(); err != nil {
			return 0, 0, err
		}
	}
	if m.pass > 0 {
		if err := m.passOn(); err != nil {
			return 0, 0, err
		}
		if m.pass > 0 {
			return 0, 0, errWouldBlock
		}
	}
	if m.discard > 0 {
		return 0, 0, errWouldBlock
	}
	avail := len(m.buf) - m.r
	if avail < 5 {
		return 0, 0, errWouldBlock
	}
	hdr := m.buf[m.r:]
	n := int(int32(binary.BigEndian.Uint32(hdr[1:5])))
	if n < 4 {
		return 0, 0, errBadFrameLength
	}
	typ, size := hdr[0], n-4
	if size > m.limit {
		m.size, m.current = size, true
		return typ, size, &MessageTooLargeError{Type: typ, Size: size, Limit: m.limit}
	}
	if avail < 5+size {
		return 0, 0, errWouldBlock
	}
	m.size, m.current = size, true
	return typ, size, nil
}

func (m *memFrames) body() ([]byte, error) {
	if m.size > m.limit {
		// Never held whole: the frame stays current, to be skipped.
		return nil, &MessageTooLargeError{Type: m.buf[m.r], Size: m.size, Limit: m.limit}
	}
	m.current = false
	b := m.buf[m.r+5 : m.r+5+m.size]
	m.whole = m.buf[m.r : m.r+5+m.size]
	m.r += 5 + m.size
	return b, nil
}

// frame: the bytes stay in buf until the next read, which only happens
// once every whole frame in memory has been handled.
func (m *memFrames) frame() []byte { return m.whole }

func (m *memFrames) forward(w *bufio.Writer) error {
	m.current = false
	total := 5 + m.size
	if avail := len(m.buf) - m.r; avail < total {
		// A frame over the limit: what is in memory now, the rest as it
		// arrives (next), so it is never held whole.
		m.pass, m.passTo = total-avail, w
		_, err := w.Write(m.buf[m.r:])
		m.r = len(m.buf)
		return err
	}
	_, err := w.Write(m.buf[m.r : m.r+total])
	m.r += total
	return err
}

// passOn writes to passTo what has arrived of the frame forward streams.
func (m *memFrames) passOn() error {
	k := min(m.pass, len(m.buf)-m.r)
	if k == 0 {
		return nil
	}
	_, err := m.passTo.Write(m.buf[m.r : m.r+k])
	m.r += k
	m.pass -= k
	if m.pass == 0 {
		m.passTo = nil
	}
	return err
}

func (m *memFrames) skip() error {
	m.current = false
	total := 5 + m.size
	if avail := len(m.buf) - m.r; avail < total {
		m.discard = total - avail
		m.r = len(m.buf)
		return nil
	}
	m.r += total
	return nil
}

func (m *memFrames) buffered() int { return len(m.buf) - m.r }

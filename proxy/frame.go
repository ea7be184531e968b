package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ioBufferSize is the size of each socket's read and write buffer. A frame
// that fits is handed out as a slice of the read buffer (no copy); a larger
// one is either streamed through (forward) or read into a scratch buffer
// that grows up to the message limit (body).
const ioBufferSize = 64 << 10

// Startup reads and writes small messages; a session starts with buffers
// of these sizes and only the goroutine engine, which streams through its
// buffers, swaps in ioBufferSize ones (growForGoroutines). With hundreds of
// idle pooled connections, this is most of pgveil's memory.
const (
	startupReadBufferSize = 8 << 10
	eventWriteBufferSize  = 16 << 10
)

// maxStartupPacket bounds the untyped first packets (StartupMessage,
// SSLRequest, CancelRequest) as PostgreSQL does (MAX_STARTUP_PACKET_LENGTH).
const maxStartupPacket = 10000

// MessageTooLargeError is a frame whose declared length exceeds the limit.
// It is answered with a clear error before anything is allocated.
type MessageTooLargeError struct {
	Type  byte
	Size  int
	Limit int
}

func (e *MessageTooLargeError) Error() string {
	return fmt.Sprintf("pgveil: protocol message of %d bytes exceeds the limit of %d bytes (proxy.max_message_size)", e.Size, e.Limit)
}

// SQLState: program_limit_exceeded.
func (e *MessageTooLargeError) SQLState() string { return "54000" }

var errBadFrameLength = errors.New("pgveil: invalid protocol message length")

func isTooLarge(err error) bool {
	var tl *MessageTooLargeError
	return errors.As(err, &tl)
}

// serverTooLarge handles a handler's error: a server message over
// proxy.max_message_size that pgveil would have to hold whole (a DataRow or
// CopyData with a value to decrypt) becomes the FATAL error the client gets
// before the session closes, logged at warn level. Messages pgveil passes
// on unchanged stream through whatever their size; this one cannot be
// skipped without the client losing its place in the reply. Any other
// error is returned as it is.
func (s *Session) serverTooLarge(err error) error {
	var tl *MessageTooLargeError
	if !errors.As(err, &tl) {
		return err
	}
	what := "message"
	switch tl.Type {
	case 'D':
		what = "row (DataRow)"
	case 'd':
		what = "COPY row (CopyData)"
	}
	s.log.Warn("server message over proxy.max_message_size; closing the session",
		"type", string(rune(tl.Type)), "size", tl.Size, "limit", tl.Limit)
	return &fatalError{&pgError{code: codeProgramLimit,
		msg: fmt.Sprintf("pgveil: a %s of %d bytes from PostgreSQL exceeds the limit of %d bytes (proxy.max_message_size); "+
			"pgveil must hold it whole to decrypt it, and closes the connection since the rest of the reply cannot be resumed", what, tl.Size, tl.Limit),
		hint: "raise proxy.max_message_size, or select less data per row"}}
}

// frameSource yields typed protocol frames. frameReader reads them from a
// socket (blocking); memFrames from bytes an event loop has read.
type frameSource interface {
	// next reads the header of the next frame; the previous frame's body
	// must have been consumed.
	next() (byte, int, error)
	// body returns the current frame's body, borrowed until the next call;
	// a *MessageTooLargeError for a frame over the limit.
	body() ([]byte, error)
	// forward copies the current frame, header included, to w; one over
	// the limit streams through without being held whole.
	forward(w *bufio.Writer) error
	// skip discards the current frame.
	skip() error
	// frame returns, after body, the whole frame (header included) as it
	// arrived, or nil when it is not in memory as one piece; borrowed
	// until the next call. Handlers that decode a frame and then forward it
	// unchanged send it from there, without copying it first.
	frame() []byte
	// buffered reports how many input bytes are already in memory.
	buffered() int
}

// frameReader reads typed protocol frames (type byte, int32 length, body)
// from a buffered connection. Bodies are borrowed: valid until the next call.
type frameReader struct {
	src     io.Reader // what r reads from
	r       *bufio.Reader
	limit   int    // maximum body length
	scratch []byte // body of frames larger than the read buffer

	typ  byte // current frame
	size int  // current body length
	read bool // current body already consumed
	// whole is the current frame when body handed it out of the read
	// buffer; nil otherwise.
	whole []byte
}

func newFrameReader(r io.Reader, limit int) *frameReader {
	return newFrameReaderSize(r, limit, ioBufferSize)
}

func newFrameReaderSize(r io.Reader, limit, size int) *frameReader {
	return &frameReader{src: r, r: bufio.NewReaderSize(r, size), limit: limit, read: true}
}

// bufferedBytes takes what the reader has buffered and not yet handed out,
// including a prefixedReader's unread prefix. Only between frames.
func (fr *frameReader) bufferedBytes() []byte {
	b, _ := fr.r.Peek(fr.r.Buffered())
	out := append([]byte(nil), b...)
	_, _ = fr.r.Discard(len(b))
	if pr, ok := fr.src.(*prefixedReader); ok {
		out = append(out, pr.prefix...)
		pr.prefix = nil
	}
	return out
}

// resized returns a reader of size bytes over the same source that first
// yields what fr had buffered. Only between frames.
func (fr *frameReader) resized(size int) *frameReader {
	src := fr.src
	if pr, ok := src.(*prefixedReader); ok {
		src = pr.r
	}
	return newFrameReaderSize(&prefixedReader{prefix: fr.bufferedBytes(), r: src}, fr.limit, size)
}

// next reads the header of the next frame. The previous frame's body must
// have been consumed (body, forward or skip).
func (fr *frameReader) next() (byte, int, error) {
	if !fr.read {
		if err := fr.skip(); err != nil {
			return 0, 0, err
		}
	}
	fr.whole = nil
	hdr, err := fr.r.Peek(5)
	if err != nil {
		return 0, 0, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[1:5])))
	if n < 4 {
		return 0, 0, errBadFrameLength
	}
	fr.typ, fr.size, fr.read = hdr[0], n-4, false
	if fr.size > fr.limit {
		// The frame stays current so the caller can skip it and answer
		// with an error instead of allocating it.
		return fr.typ, fr.size, &MessageTooLargeError{Type: fr.typ, Size: fr.size, Limit: fr.limit}
	}
	return fr.typ, fr.size, nil
}

// body returns the current frame's body. When the whole frame fits in the
// read buffer the slice points into it (no copy). A frame over the limit is
// never read into memory: it stays current, to be skipped or forwarded.
func (fr *frameReader) body() ([]byte, error) {
	if fr.size > fr.limit {
		return nil, &MessageTooLargeError{Type: fr.typ, Size: fr.size, Limit: fr.limit}
	}
	fr.read = true
	fr.whole = nil
	if 5+fr.size <= fr.r.Size() {
		b, err := fr.r.Peek(5 + fr.size)
		if err != nil {
			return nil, err
		}
		body := b[5:]
		// Discard does not overwrite the buffer: b stays valid until the
		// next read (next's Peek).
		_, _ = fr.r.Discard(5 + fr.size)
		fr.whole = b
		return body, nil
	}
	if _, err := fr.r.Discard(5); err != nil {
		return nil, err
	}
	if cap(fr.scratch) < fr.size {
		fr.scratch = make([]byte, fr.size)
	}
	fr.scratch = fr.scratch[:fr.size]
	if _, err := io.ReadFull(fr.r, fr.scratch); err != nil {
		return nil, err
	}
	return fr.scratch, nil
}

func (fr *frameReader) frame() []byte { return fr.whole }

// release drops a scratch buffer that grew past the I/O buffer size, so one
// huge message does not pin memory for the life of the session.
func (fr *frameReader) release() {
	if cap(fr.scratch) > 4*ioBufferSize {
		fr.scratch = nil
	}
}

// forward copies the current frame, header included, to w without decoding
// it. Large frames stream through in buffer-sized pieces.
func (fr *frameReader) forward(w *bufio.Writer) error {
	fr.read = true
	total := 5 + fr.size
	if total <= fr.r.Size() {
		b, err := fr.r.Peek(total)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		_, _ = fr.r.Discard(total)
		return err
	}
	_, err := io.CopyN(w, fr.r, int64(total))
	return err
}

// skip discards the current frame.
func (fr *frameReader) skip() error {
	fr.read = true
	_, err := fr.r.Discard(5 + fr.size)
	return err
}

// buffered reports whether more input is already in memory; when it is not,
// the loop flushes its output before blocking on the next read.
func (fr *frameReader) buffered() int { return fr.r.Buffered() }

// readStartupPacket reads an untyped startup-phase packet (length, then
// body starting with the protocol code).
func readStartupPacket(r *bufio.Reader) ([]byte, error) {
	hdr, err := r.Peek(4)
	if err != nil {
		return nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr)))
	if n < 8 || n > maxStartupPacket {
		return nil, fmt.Errorf("pgveil: invalid startup packet length %d", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	return buf[4:], nil
}

// appendFrameHeader starts a typed frame; finishFrame fills in its length.
func appendFrameHeader(dst []byte, typ byte) ([]byte, int) {
	start := len(dst)
	return append(dst, typ, 0, 0, 0, 0), start
}

func finishFrame(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// cstring reads a NUL-terminated string at the start of b.
func cstring(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

// cstringBytes is cstring without the string allocation.
func cstringBytes(b []byte) ([]byte, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

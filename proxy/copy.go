package proxy

// COPY through pgveil.
//
// COPY ... FROM STDIN: the client's CopyData messages do not align with
// rows, so copyInState keeps the incomplete tail of the stream, rewrites
// every complete row (encrypting the configured fields and appending the
// blind-index fields the rewritten COPY lists last), and sends the rewritten
// rows as CopyData. A value refused (max_size, sanitize_input) turns into
// CopyFail toward PostgreSQL, so nothing of the COPY is written; the client's
// remaining CopyData is dropped and its CopyDone/CopyFail is not forwarded.
//
// COPY ... TO STDOUT: PostgreSQL sends one row per CopyData; copyOutState
// decrypts the configured fields of each and re-escapes them.

import (
	"bytes"
	"errors"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/rewrite"
)

type copyInState struct {
	plan     *rewrite.CopyPlan
	snap     *Snapshot
	s        *Session
	pending  []byte // incomplete row carried to the next CopyData
	out      []byte
	header   bool // the header line is still to come
	failed   error
	sentFail bool
	fields   [][]byte
	values   [][]byte
}

func newCopyInState(cp *rewrite.CopyPlan, snap *Snapshot, s *Session) *copyInState {
	return &copyInState{plan: cp, snap: snap, s: s, header: cp.Header}
}

func (s *Session) onCopyData() error {
	body, err := s.cr.body()
	if err != nil {
		return err
	}
	c := s.copyIn
	if c.failed != nil {
		return c.sendFail()
	}
	c.pending = append(c.pending, body...)
	c.out = c.out[:0]
	if err := c.process(false); err != nil {
		c.failed = err
		return c.sendFail()
	}
	return c.flushOut()
}

func (s *Session) endCopyIn(typ byte) error {
	c := s.copyIn
	s.copyIn = nil
	if typ == 'c' && c.failed == nil && len(c.pending) > 0 {
		c.out = c.out[:0]
		if err := c.process(true); err != nil {
			c.failed = err
		} else if err := c.flushOut(); err != nil {
			return err
		}
	}
	if c.failed != nil {
		if !c.sentFail {
			return c.sendFail()
		}
		// CopyFail already sent; the client's CopyDone/CopyFail would
		// arrive outside COPY and must not reach the server.
		return s.cr.skip()
	}
	return s.cr.forward(s.uw)
}

// sendFail aborts the COPY upstream once, naming the reason (no value).
func (c *copyInState) sendFail() error {
	if c.sentFail {
		return nil
	}
	c.sentFail = true
	c.s.srv.Metrics.Rejection(rejectionReason(c.failed))
	c.s.audit("copy refused", c.failed)
	_, msg, _ := errorFields(c.failed)
	buf, _ := (&pgproto3.CopyFail{Message: msg}).Encode(nil)
	_, err := c.s.uw.Write(buf)
	return err
}

func (c *copyInState) flushOut() error {
	if len(c.out) == 0 {
		return nil
	}
	frame, start := appendFrameHeader(c.s.encBuf[:0], 'd')
	frame = append(frame, c.out...)
	frame = finishFrame(frame, start)
	c.s.encBuf = frame
	_, err := c.s.uw.Write(frame)
	return err
}

// process rewrites every complete row in pending; at the end of the data
// (final) a last row without a newline counts too.
func (c *copyInState) process(final bool) error {
	csv := c.plan.Format == rewrite.CopyCSV
	quote := c.plan.Quote
	if quote == 0 {
		quote = '"'
	}
	p := c.pending
	for len(p) > 0 {
		end := rowEnd(p, csv, quote)
		if end < 0 {
			if !final {
				break
			}
			end = len(p)
		}
		row := p[:end]
		next := end
		if next < len(p) {
			next++ // the newline
		}
		p = p[next:]
		nl := next > end
		if c.header {
			c.header = false
			c.out = append(c.out, row...)
			if nl {
				c.out = append(c.out, '\n')
			}
			continue
		}
		// The end-of-data marker, alone on its line, in text and CSV.
		if bytes.Equal(bytes.TrimRight(row, "\r"), []byte(`\.`)) {
			c.out = append(c.out, row...)
			if nl {
				c.out = append(c.out, '\n')
			}
			continue
		}
		if err := c.rewriteRow(row, csv); err != nil {
			return err
		}
		if nl {
			c.out = append(c.out, '\n')
		}
	}
	c.pending = append(c.pending[:0], p...)
	return nil
}

// rowEnd finds the newline ending the first row (outside CSV quotes).
func rowEnd(p []byte, csv bool, quote byte) int {
	if !csv {
		return bytes.IndexByte(p, '\n')
	}
	inQuote := false
	for i, b := range p {
		switch {
		case b == quote:
			inQuote = !inQuote
		case b == '\n' && !inQuote:
			return i
		}
	}
	return -1
}

var errCopyFieldCount = errors.New("pgveil: COPY row has fewer fields than its column list")

func (c *copyInState) rewriteRow(row []byte, csv bool) error {
	cr := false
	if len(row) > 0 && row[len(row)-1] == '\r' {
		row, cr = row[:len(row)-1], true
	}
	delim := c.plan.Delimiter
	if delim == 0 {
		if csv {
			delim = ','
		} else {
			delim = '\t'
		}
	}
	c.fields = splitCopyRow(c.fields[:0], row, delim, csv, c.plan.Quote)
	null := copyNull(c.plan, csv)
	// Decoded values of the fields pgveil needs.
	need := func(i int) ([]byte, bool, error) {
		if i >= len(c.fields) {
			return nil, false, errCopyFieldCount
		}
		f := c.fields[i]
		if csv {
			if string(f) == null {
				return nil, true, nil
			}
			return unquoteCSV(f, c.plan.Quote, c.plan.Escape), false, nil
		}
		if string(f) == null {
			return nil, true, nil
		}
		return unescapeText(f), false, nil
	}
	replaced := make(map[int][]byte, len(c.plan.EncryptAt))
	for _, f := range c.plan.EncryptAt {
		v, isNull, err := need(f.Index)
		if err != nil {
			return err
		}
		if isNull {
			continue
		}
		tok, err := c.s.apply(c.snap, f.Action, v, nil, false)
		if err != nil {
			return err
		}
		replaced[f.Index] = tok
	}
	for i, f := range c.fields {
		if i > 0 {
			c.out = append(c.out, delim)
		}
		if tok, ok := replaced[i]; ok {
			c.out = append(c.out, tok...)
		} else {
			c.out = append(c.out, f...)
		}
	}
	for _, h := range c.plan.HashFrom {
		c.out = append(c.out, delim)
		v, isNull, err := need(h.Index)
		if err != nil {
			return err
		}
		if isNull {
			c.out = append(c.out, null...)
			continue
		}
		hv, err := c.s.apply(c.snap, h.Action, v, nil, false)
		if err != nil {
			return err
		}
		c.out = append(c.out, hv...)
	}
	if cr {
		c.out = append(c.out, '\r')
	}
	return nil
}

func copyNull(cp *rewrite.CopyPlan, csv bool) string {
	if cp.Null != "" {
		return cp.Null
	}
	if csv {
		return ""
	}
	return `\N`
}

// splitCopyRow splits a row into raw fields (still escaped or quoted).
func splitCopyRow(dst [][]byte, row []byte, delim byte, csv bool, quote byte) [][]byte {
	if quote == 0 {
		quote = '"'
	}
	start := 0
	inQuote := false
	for i := 0; i < len(row); i++ {
		b := row[i]
		if csv {
			if b == quote {
				inQuote = !inQuote
			} else if b == delim && !inQuote {
				dst = append(dst, row[start:i])
				start = i + 1
			}
			continue
		}
		if b == '\\' {
			i++
			continue
		}
		if b == delim {
			dst = append(dst, row[start:i])
			start = i + 1
		}
	}
	return append(dst, row[start:])
}

// unescapeText decodes a text-format COPY field.
func unescapeText(f []byte) []byte {
	if bytes.IndexByte(f, '\\') < 0 {
		return f
	}
	out := make([]byte, 0, len(f))
	for i := 0; i < len(f); i++ {
		b := f[i]
		if b != '\\' || i+1 >= len(f) {
			out = append(out, b)
			continue
		}
		i++
		switch c := f[i]; c {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'v':
			out = append(out, '\v')
		case 'x':
			v, n := 0, 0
			for n < 2 && i+1 < len(f) && isHex(f[i+1]) {
				i++
				v = v*16 + hexVal(f[i])
				n++
			}
			if n == 0 {
				out = append(out, 'x')
			} else {
				out = append(out, byte(v))
			}
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := int(c - '0')
			for n := 1; n < 3 && i+1 < len(f) && f[i+1] >= '0' && f[i+1] <= '7'; n++ {
				i++
				v = v*8 + int(f[i]-'0')
			}
			out = append(out, byte(v))
		default:
			out = append(out, c)
		}
	}
	return out
}

func isHex(b byte) bool {
	return b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F'
}

func hexVal(b byte) int {
	switch {
	case b >= '0' && b <= '9':
		return int(b - '0')
	case b >= 'a' && b <= 'f':
		return int(b-'a') + 10
	default:
		return int(b-'A') + 10
	}
}

// escapeText encodes a value as a text-format COPY field.
func escapeText(dst, v []byte, delim byte) []byte {
	for _, b := range v {
		switch b {
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			if b == delim {
				dst = append(dst, '\\', b)
			} else {
				dst = append(dst, b)
			}
		}
	}
	return dst
}

// unquoteCSV decodes a CSV field.
func unquoteCSV(f []byte, quote, escape byte) []byte {
	if quote == 0 {
		quote = '"'
	}
	if escape == 0 {
		escape = quote
	}
	if len(f) == 0 || bytes.IndexByte(f, quote) < 0 {
		return f
	}
	out := make([]byte, 0, len(f))
	in := false
	for i := 0; i < len(f); i++ {
		b := f[i]
		if in && b == escape && i+1 < len(f) && (f[i+1] == quote || (escape != quote && f[i+1] == escape)) {
			out = append(out, f[i+1])
			i++
			continue
		}
		if b == quote {
			in = !in
			continue
		}
		out = append(out, b)
	}
	return out
}

// quoteCSV encodes a CSV field, quoting when needed.
func quoteCSV(dst, v []byte, delim, quote, escape byte, null string) []byte {
	if quote == 0 {
		quote = '"'
	}
	if escape == 0 {
		escape = quote
	}
	needs := len(v) == 0 && null == "" || string(v) == null
	for _, b := range v {
		if b == delim || b == quote || b == '\n' || b == '\r' || b == escape {
			needs = true
			break
		}
	}
	if !needs {
		return append(dst, v...)
	}
	dst = append(dst, quote)
	for _, b := range v {
		if b == quote || b == escape {
			dst = append(dst, escape)
		}
		dst = append(dst, b)
	}
	return append(dst, quote)
}

// copyOutState decrypts the configured fields of COPY TO STDOUT rows.
type copyOutState struct {
	plan      *rewrite.CopyPlan
	positions map[int]string // field index -> column, to decrypt
	out       []byte
	fields    [][]byte
	header    bool
}

func newCopyOutState(cp *rewrite.CopyPlan, s *Session) *copyOutState {
	pos := map[int]string{}
	for _, f := range cp.EncryptAt {
		pos[f.Index] = f.Action.Column
	}
	for i, col := range copyOutAllColumns(cp, s.cat.Load()) {
		if col != "" {
			pos[i] = col
		}
	}
	if len(pos) == 0 {
		return nil
	}
	return &copyOutState{plan: cp, positions: pos, header: cp.Header}
}

func (c *copyOutState) onData(s *Session) error {
	body, err := s.ur.body()
	if err != nil {
		return err
	}
	if c.header {
		c.header = false
		s.writeClientFrame('d', body)
		return nil
	}
	csv := c.plan.Format == rewrite.CopyCSV
	delim := c.plan.Delimiter
	if delim == 0 {
		delim = '\t'
		if csv {
			delim = ','
		}
	}
	row := body
	nl := len(row) > 0 && row[len(row)-1] == '\n'
	if nl {
		row = row[:len(row)-1]
	}
	c.fields = splitCopyRow(c.fields[:0], row, delim, csv, c.plan.Quote)
	null := copyNull(c.plan, csv)
	snap := s.srv.snap.Load()
	kr := snap.Keyring
	migrating := snap.Config.Encryption.Mode == config.ModeMigrating
	out := c.out[:0]
	for i, f := range c.fields {
		if i > 0 {
			out = append(out, delim)
		}
		col, ok := c.positions[i]
		if !ok || string(f) == null {
			out = append(out, f...)
			continue
		}
		var v []byte
		if csv {
			v = unquoteCSV(f, c.plan.Quote, c.plan.Escape)
		} else {
			v = unescapeText(f)
		}
		plain, _, err := kr.OpenScratch(nil, v, &s.srvState.crypto)
		if err != nil {
			if migrating && errors.Is(err, keyring.ErrNotToken) {
				out = append(out, f...)
				continue
			}
			s.srvState.decErrors++
			return s.failRow(&s.srvState, col, err)
		}
		if csv {
			out = quoteCSV(out, plain, delim, c.plan.Quote, c.plan.Escape, null)
		} else {
			out = escapeText(out, plain, delim)
		}
	}
	if nl {
		out = append(out, '\n')
	}
	c.out = out
	s.writeClientFrame('d', out)
	return nil
}

// copyOutAllColumns marks, for COPY t TO STDOUT without a column list, the
// encrypted columns by position in the table's column order (from the
// catalog): "" for a plain column.
func copyOutAllColumns(cp *rewrite.CopyPlan, cat *catalog) []string {
	if !cp.AllColumns || cat == nil {
		return nil
	}
	cols := cat.columns[cp.Table]
	out := make([]string, len(cols))
	for i, name := range cols {
		for _, ref := range cat.byOrigin {
			if ref.table == cp.Table && ref.column == name {
				out[i] = ref.table + "." + ref.column
			}
		}
	}
	return out
}

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
// PostgreSQL answers the CopyFail with "COPY from stdin failed: ..."
// (57014); the client gets pgveil's own error (22021, 54000) in its place
// (copyFailNote). A row with too few or too many fields is left for
// PostgreSQL to refuse (22P04), its present values encrypted, so the client
// sees what PostgreSQL itself says. CopyInResponse reaches the client
// without the blind-index columns pgveil added.
//
// COPY ... TO STDOUT: PostgreSQL sends one row per CopyData; copyOutState
// decrypts the configured fields of each and re-escapes them as PostgreSQL
// would have written the plaintext (FORCE_QUOTE included).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/rewrite"
)

// codeQueryCanceled is what PostgreSQL answers a CopyFail with.
const codeQueryCanceled = "57014"

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
	// clientCols is how many fields a client row has: the COPY's columns
	// before the blind-index ones pgveil appends.
	clientCols int
	// forceNotNull and forceNull mark, by client field, the columns of
	// the CSV options FORCE_NOT_NULL and FORCE_NULL (nil when unused).
	forceNotNull, forceNull []bool
	// hashForced holds, for each blind-index column pgveil appends, the
	// same two options (in that order): FORCE_NOT_NULL * covers them too.
	hashForced [][2]bool
}

func newCopyInState(cp *rewrite.CopyPlan, snap *Snapshot, s *Session) *copyInState {
	c := &copyInState{plan: cp, snap: snap, s: s, header: cp.Header}
	c.clientCols = len(cp.Columns) - len(cp.HashFrom)
	if cp.Format == rewrite.CopyCSV {
		c.forceNotNull = copyForced(cp.ForceNotNull, cp.Columns[:c.clientCols])
		c.forceNull = copyForced(cp.ForceNull, cp.Columns[:c.clientCols])
		if c.forceNotNull != nil {
			for _, name := range cp.Columns[c.clientCols:] {
				c.hashForced = append(c.hashForced, [2]bool{cp.ForceNotNull.Has(name), cp.ForceNull.Has(name)})
			}
		}
	}
	return c
}

// copyForced marks the columns (by position) a FORCE_* option applies to;
// nil when it applies to none.
func copyForced(opt rewrite.CopyColumns, columns []string) []bool {
	if !opt.All && len(opt.Names) == 0 {
		return nil
	}
	out := make([]bool, len(columns))
	for i, name := range columns {
		out[i] = opt.Has(name)
	}
	return out
}

// isForced reports whether flags marks field i.
func isForced(flags []bool, i int) bool { return i < len(flags) && flags[i] }

// copyFailNote is the refusal pgveil aborted a COPY FROM STDIN for with
// CopyFail. PostgreSQL answers a CopyFail with "COPY from stdin failed:
// <its message>" (57014); forwardCopyError gives the client this error in
// that reply's place. The client side sets it before sending the CopyFail,
// the server side takes it when the reply arrives, or forgets it once the
// COPY's statement is answered (PostgreSQL failed the COPY for a reason of
// its own first and ignored the CopyFail).
type copyFailNote struct {
	err     error
	reason  string // the CopyFail's message
	through uint64 // expect entries pushed when the CopyFail was sent
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
		// pgveil's CopyFail (sent now if not yet) ends the COPY; the
		// client's CopyDone/CopyFail would arrive outside it and must not
		// reach the server. It is consumed first, so the client side sees
		// no input left and flushes the CopyFail before it waits.
		if err := s.cr.skip(); err != nil {
			return err
		}
		return c.sendFail()
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
	note := &copyFailNote{err: c.failed, reason: msg}
	q := &c.s.q
	q.mu.Lock()
	note.through = q.pushed
	q.mu.Unlock()
	c.s.copyFail.Store(note)
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
		end := rowEnd(p, csv, quote, c.plan.Escape)
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

// rowEnd finds the newline ending the first row: outside CSV quotes, as
// PostgreSQL's CopyReadLineText tells them (an ESCAPE other than the quote
// character, inside quotes, makes the quote after it a literal).
func rowEnd(p []byte, csv bool, quote, escape byte) int {
	if !csv {
		return bytes.IndexByte(p, '\n')
	}
	useEsc := escape != 0 && escape != quote
	inQuote, lastEsc := false, false
	for i, b := range p {
		if useEsc {
			if inQuote && b == escape {
				lastEsc = !lastEsc
			}
			if b == quote && !lastEsc {
				inQuote = !inQuote
			}
			if b != escape {
				lastEsc = false
			}
		} else if b == quote {
			inQuote = !inQuote
		}
		if b == '\n' && !inQuote {
			return i
		}
	}
	return -1
}

// rewriteRow appends row to c.out with its encrypted fields replaced by
// tokens and the blind-index fields appended. A row with fewer fields than
// the client's columns gets no blind-index fields: PostgreSQL then refuses
// it naming the first missing column ("missing data for column ..."), as
// it would have without pgveil; one with more fields is refused as "extra
// data after last expected column" either way.
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
	c.fields = splitCopyRowEsc(c.fields[:0], row, delim, csv, c.plan.Quote, c.plan.Escape)
	null := copyNull(c.plan, csv)
	short := len(c.fields) < c.clientCols
	replaced := make(map[int][]byte, len(c.plan.EncryptAt))
	for _, f := range c.plan.EncryptAt {
		if f.Index >= len(c.fields) {
			continue // a short row: PostgreSQL refuses it
		}
		v, isNull := c.value(f.Index, csv, null)
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
	for k, h := range c.plan.HashFrom {
		if short || h.Index >= len(c.fields) {
			break
		}
		c.out = append(c.out, delim)
		v, isNull := c.value(h.Index, csv, null)
		if isNull {
			if err := c.appendNull(k, null); err != nil {
				return err
			}
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

// appendNull appends NULL for the k-th blind-index field: the null string,
// or under FORCE_NOT_NULL (which then covers every column) the quoted null
// string, which FORCE_NULL reads as NULL.
func (c *copyInState) appendNull(k int, null string) error {
	if k >= len(c.hashForced) || !c.hashForced[k][0] {
		c.out = append(c.out, null...)
		return nil
	}
	if !c.hashForced[k][1] {
		// Only when FORCE_NOT_NULL names the column pgveil fills itself.
		name := c.plan.Columns[c.clientCols+k]
		return &pgError{code: codeFeatureNotSupported,
			msg:  "pgveil: FORCE_NOT_NULL covers blind-index column " + name + ", which cannot then hold the NULL of a NULL value",
			hint: "leave the blind-index column out of FORCE_NOT_NULL"}
	}
	quote := c.plan.Quote
	if quote == 0 {
		quote = '"'
	}
	c.out = append(c.out, quote)
	c.out = append(c.out, null...)
	c.out = append(c.out, quote)
	return nil
}

// value decodes field i of the current row as PostgreSQL reads it: NULL
// when it is the null string, unquoted (in CSV, FORCE_NOT_NULL makes that
// the null string as a value; FORCE_NULL makes the null string NULL even
// quoted).
func (c *copyInState) value(i int, csv bool, null string) (v []byte, isNull bool) {
	f := c.fields[i]
	if !csv {
		if string(f) == null {
			return nil, true
		}
		return unescapeText(f), false
	}
	// The null string holds no quote character (PostgreSQL checks), so
	// a field equal to it was not quoted.
	if string(f) == null {
		if isForced(c.forceNotNull, i) {
			return f, false
		}
		return nil, true
	}
	v = unquoteCSV(f, c.plan.Quote, c.plan.Escape)
	if isForced(c.forceNull, i) && string(v) == null {
		return nil, true
	}
	return v, false
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

// splitCopyRow splits a row into raw fields (still escaped or quoted); in
// CSV the escape character is the quote character.
func splitCopyRow(dst [][]byte, row []byte, delim byte, csv bool, quote byte) [][]byte {
	return splitCopyRowEsc(dst, row, delim, csv, quote, quote)
}

// splitCopyRowEsc splits a row into raw fields as PostgreSQL's
// CopyReadAttributesCSV does: inside quotes, the escape character before
// the quote or escape character makes that one a literal.
func splitCopyRowEsc(dst [][]byte, row []byte, delim byte, csv bool, quote, escape byte) [][]byte {
	if quote == 0 {
		quote = '"'
	}
	if escape == 0 {
		escape = quote
	}
	start := 0
	inQuote := false
	for i := 0; i < len(row); i++ {
		b := row[i]
		if csv {
			switch {
			case inQuote && b == escape && i+1 < len(row) && (row[i+1] == escape || row[i+1] == quote):
				i++
			case b == quote:
				inQuote = !inQuote
			case b == delim && !inQuote:
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
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\v':
			dst = append(dst, '\\', 'v')
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
	return quoteCSVField(dst, v, delim, quote, escape, null, false, false)
}

// quoteCSVField encodes a CSV field as PostgreSQL's COPY TO writes a
// non-NULL value (CopyAttributeOutCSV): quoted when FORCE_QUOTE covers the
// column (force), when it equals the null string, when it is \. alone in a
// one-column row (single), or when it holds the delimiter, the quote
// character or a line break.
func quoteCSVField(dst, v []byte, delim, quote, escape byte, null string, force, single bool) []byte {
	if quote == 0 {
		quote = '"'
	}
	if escape == 0 {
		escape = quote
	}
	needs := force || string(v) == null || single && string(v) == `\.`
	for i := 0; !needs && i < len(v); i++ {
		b := v[i]
		needs = b == delim || b == quote || b == '\n' || b == '\r'
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
	// forceQuote marks, by field, the columns of FORCE_QUOTE (CSV).
	forceQuote []bool
}

func newCopyOutState(cp *rewrite.CopyPlan, s *Session) *copyOutState {
	pos := map[int]string{}
	for _, f := range cp.EncryptAt {
		pos[f.Index] = f.Action.Column
	}
	cat := s.cat.Load()
	for i, col := range copyOutAllColumns(cp, cat) {
		if col != "" {
			pos[i] = col
		}
	}
	if len(pos) == 0 {
		return nil
	}
	c := &copyOutState{plan: cp, positions: pos, header: cp.Header}
	if cp.Format == rewrite.CopyCSV {
		names := cp.Columns
		if cp.AllColumns && cat != nil {
			names = cat.columns[cp.Table]
		}
		c.forceQuote = copyForced(cp.ForceQuote, names)
	}
	return c
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
	c.fields = splitCopyRowEsc(c.fields[:0], row, delim, csv, c.plan.Quote, c.plan.Escape)
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
			out = quoteCSVField(out, plain, delim, c.plan.Quote, c.plan.Escape, null,
				isForced(c.forceQuote, i), len(c.fields) == 1)
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

// onCopyInResponse forwards CopyInResponse without the blind-index columns
// pgveil appended to the COPY's column list, so the client sees the column
// count (and formats) of its own COPY. [server]
func (s *Session) onCopyInResponse() error {
	plan := s.frontPlan()
	if plan == nil || plan.Copy == nil || !plan.Copy.In || len(plan.Copy.HashFrom) == 0 {
		return s.ur.forward(s.cw)
	}
	body, err := s.ur.body()
	if err != nil {
		return err
	}
	// Overall format (1 byte), column count (int16), a format per column
	// (int16 each). A count other than the rewritten COPY's is another
	// COPY of the same query: left as it is.
	cp := plan.Copy
	if len(body) < 3 || int(binary.BigEndian.Uint16(body[1:3])) != len(cp.Columns) || len(body) != 3+2*len(cp.Columns) {
		s.forwardServerFrame('G', body)
		return nil
	}
	keep := len(cp.Columns) - len(cp.HashFrom)
	out, start := appendFrameHeader(s.srvState.out[:0], 'G')
	out = append(out, body[0])
	out = binary.BigEndian.AppendUint16(out, uint16(keep))
	out = append(out, body[3:3+2*keep]...)
	out = finishFrame(out, start)
	s.srvState.out = out
	_, err = s.cw.Write(out)
	return err
}

// forwardCopyError forwards an ErrorResponse while a copyFailNote is set:
// PostgreSQL's answer to pgveil's CopyFail (57014, "COPY from stdin failed:
// <reason>", in the server's language) reaches the client as the error
// pgveil refused the COPY for, with PostgreSQL's context (the line); any
// other error goes as it is. Either way it is one ErrorResponse in the
// place of one, so the protocol state stays the same. [server]
func (s *Session) forwardCopyError() error {
	body, err := s.ur.body()
	if err != nil {
		return err
	}
	n := s.copyFail.Load()
	var er pgproto3.ErrorResponse
	if n == nil || er.Decode(body) != nil || er.Code != codeQueryCanceled || !strings.HasSuffix(er.Message, ": "+n.reason) {
		s.forwardServerFrame('E', body)
		return nil
	}
	s.copyFail.CompareAndSwap(n, nil)
	code, msg, hint := errorFields(n.err)
	return s.writeErrorResponse(&pgproto3.ErrorResponse{Severity: er.Severity, SeverityUnlocalized: er.SeverityUnlocalized,
		Code: code, Message: msg, Hint: hint, Where: er.Where})
}

// copyAnswered forgets a copyFailNote once the statement of its COPY is
// answered (ReadyForQuery): PostgreSQL ended that COPY with an error of its
// own before it read the CopyFail. [server]
func (s *Session) copyAnswered() {
	n := s.copyFail.Load()
	if n == nil {
		return
	}
	s.q.mu.Lock()
	done := s.q.popped >= n.through
	s.q.mu.Unlock()
	if done {
		s.copyFail.CompareAndSwap(n, nil)
	}
}

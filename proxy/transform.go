package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/rewrite"
)

// decryptSample: one DataRow in this many is timed for
// encryption_duration_seconds{operation="decrypt"}.
const decryptSample = 16

// rowInfo lists the encrypted columns of a result, by position. Immutable.
type rowInfo struct {
	cols []decryptCol // ascending index
}

type decryptCol struct {
	index  int
	column string // "schema.table.column", for errors and audit
}

// rowInfoFrom reads a RowDescription and marks the columns to decrypt: those
// whose origin (table OID, attnum) is a configured encrypted column, and
// those the plan marks when PostgreSQL names no origin (UNION, VALUES).
// nil when there are none, so DataRows pass through untouched.
func (s *Session) rowInfoFrom(body []byte, plan *rewrite.Plan) *rowInfo {
	cat := s.cat.Load()
	if len(body) < 2 {
		return nil
	}
	// An application repeats its queries: the same RowDescription under the
	// same plan and catalog gives the same answer (rowInfo is immutable).
	// A few are kept: a transaction often alternates between statements.
	st := &s.srvState
	for i := range st.rowMemo {
		if m := &st.rowMemo[i]; m.ok && m.plan == plan && m.cat == cat && bytes.Equal(m.desc, body) {
			return m.ri
		}
	}
	ri := s.buildRowInfo(cat, body, plan)
	m := &st.rowMemo[st.rowMemoNext%len(st.rowMemo)]
	st.rowMemoNext++
	*m = rowInfoMemo{ok: true, desc: append(m.desc[:0], body...), plan: plan, cat: cat, ri: ri}
	return ri
}

// rowInfoMemo is the last RowDescription rowInfoFrom read, and its answer.
type rowInfoMemo struct {
	ok   bool
	desc []byte
	plan *rewrite.Plan
	cat  *catalog
	ri   *rowInfo
}

func (s *Session) buildRowInfo(cat *catalog, body []byte, plan *rewrite.Plan) *rowInfo {
	n := int(binary.BigEndian.Uint16(body))
	p := body[2:]
	var cols []decryptCol
	for i := 0; i < n; i++ {
		_, rest, ok := cstringBytes(p)
		if !ok || len(rest) < 18 {
			return nil
		}
		table := binary.BigEndian.Uint32(rest)
		attr := int16(binary.BigEndian.Uint16(rest[4:]))
		p = rest[18:]
		if ref := cat.lookup(table, attr); ref != nil {
			cols = append(cols, decryptCol{index: i, column: ref.qualified})
			continue
		}
		if plan != nil {
			for _, r := range plan.Results {
				if r.Index == i {
					cols = append(cols, decryptCol{index: i, column: r.Column})
					break
				}
			}
		}
	}
	if len(cols) == 0 {
		return nil
	}
	return &rowInfo{cols: cols}
}

// errValueUndecryptable is a stored value that no key opens (strict mode,
// or any malformed token).
type undecryptableError struct{ column string }

func (e *undecryptableError) Error() string {
	return fmt.Sprintf("pgveil: a value in encrypted column %s cannot be decrypted with any configured key", e.column)
}
func (e *undecryptableError) SQLState() string { return codeDataCorrupted }
func (e *undecryptableError) Hint() string {
	return "check keys.encryption_key and keys.fallback_keys; run pgveil verify to find such rows"
}

// decryptRow rewrites one DataRow with its encrypted columns decrypted and
// writes it to the client. The read buffer is never written to.
func (s *Session) decryptRow(st *serverState, ri *rowInfo) error {
	body, err := s.ur.body()
	if err != nil {
		return err
	}
	// serverLoop reads the snapshot in force itself (clientLoop owns
	// s.snap): rows read after a reload open with the new keys at once.
	snap := s.srv.snap.Load()
	kr := snap.Keyring
	migrating := snap.Config.Encryption.Mode == config.ModeMigrating
	if len(body) < 2 {
		return errBadFrameLength
	}
	// Decryption time is sampled on one row in decryptSample: reading the
	// clock twice per row costs a few percent of a bulk read.
	st.decRows++
	var began time.Time
	sampled := st.decRows%decryptSample == 1
	if sampled {
		began = time.Now()
	}
	n := int(binary.BigEndian.Uint16(body))
	out, start := appendFrameHeader(st.out[:0], 'D')
	out = append(out, body[:2]...)
	p := body[2:]
	ci := 0
	for i := 0; i < n; i++ {
		if len(p) < 4 {
			return errBadFrameLength
		}
		l := int32(binary.BigEndian.Uint32(p))
		p = p[4:]
		if l < 0 {
			out = append(out, 0xff, 0xff, 0xff, 0xff)
			if ci < len(ri.cols) && ri.cols[ci].index == i {
				ci++
			}
			continue
		}
		if int(l) > len(p) {
			return errBadFrameLength
		}
		v := p[:l]
		p = p[l:]
		if ci >= len(ri.cols) || ri.cols[ci].index != i {
			out = binary.BigEndian.AppendUint32(out, uint32(l))
			out = append(out, v...)
			continue
		}
		col := ri.cols[ci]
		ci++
		lenAt := len(out)
		out = append(out, 0, 0, 0, 0)
		var key int
		out, key, err = kr.OpenScratch(out, v, &st.crypto)
		if err != nil {
			out = out[:lenAt+4]
			if migrating && errors.Is(err, keyring.ErrNotToken) {
				out = append(out, v...)
			} else {
				st.decErrors++
				st.out = out
				return s.failRow(st, col.column, err)
			}
		} else {
			for len(st.decrypted) <= key {
				st.decrypted = append(st.decrypted, 0)
			}
			st.decrypted[key]++
		}
		binary.BigEndian.PutUint32(out[lenAt:], uint32(len(out)-lenAt-4))
	}
	out = finishFrame(out, start)
	st.out = out
	if sampled {
		st.decTime += decryptSample * time.Since(began)
	}
	_, err = s.cw.Write(out)
	if cap(st.out) > 4*ioBufferSize {
		st.out = nil
	}
	return err
}

// failRow answers a row that cannot be decrypted with XX001 and drops the
// rest of the server's replies up to ReadyForQuery: wrong rows are never
// returned silently.
func (s *Session) failRow(st *serverState, column string, cause error) error {
	s.srv.KeyMetrics.Error(keyring.ErrorTypeUndecryptable)
	uerr := &undecryptableError{column: column}
	if s.srv.snap.Load().Config.Encryption.Audit() {
		s.log.Warn("decryption failed", "logger", "audit.encryption", "column", column, "sqlstate", codeDataCorrupted)
	}
	s.writeError(uerr, false)
	st.discarding = true
	s.flushDecryptMetrics(st)
	return nil
}

// flushDecryptMetrics publishes the counts gathered during a statement, so
// the per-row path touches only local integers.
func (s *Session) flushDecryptMetrics(st *serverState) {
	total := 0
	if len(st.decrypted) > 0 {
		// The counters of the keys in force, looked up once per snapshot.
		if snap := s.srv.snap.Load(); st.decCountersSnap != snap {
			st.decCountersSnap = snap
			st.decCounters = st.decCounters[:0]
			for _, fp := range snap.Keyring.KeyFingerprints() {
				st.decCounters = append(st.decCounters, s.srv.Metrics.DecryptionCounter(fp))
			}
		}
		for i, n := range st.decrypted {
			if n == 0 {
				continue
			}
			total += n
			if i < len(st.decCounters) && st.decCounters[i] != nil {
				st.decCounters[i].Add(float64(n))
			}
			st.decrypted[i] = 0
		}
	}
	if total > 0 || st.decErrors > 0 {
		s.timings.crypto(s.srv, true, total+st.decErrors, st.decErrors, st.decTime)
	}
	st.decErrors, st.decTime = 0, 0
}

// encStats gathers the encryptions of the client message being handled:
// one clock reading serves as the tokens' timestamp and the start of the
// message's encryption_duration_seconds observation (per message, not per
// value: two clock readings and a histogram per value cost more than a
// token's HMAC). [client]
type encStats struct {
	began     time.Duration // monoNow at the message's first token
	started   bool
	unix      int64
	n, failed int
	wall      wallClock // outlives the message
}

// endEncryptions publishes what encStats gathered for one client message.
func (s *Session) endEncryptions() {
	es := &s.encStats
	if es.n == 0 {
		return
	}
	var d time.Duration
	if es.started {
		d = monoNow() - es.began
	}
	s.timings.crypto(s.srv, false, es.n, es.failed, d)
	*es = encStats{wall: es.wall}
}

// transformer returns the function that computes what an Action makes of a
// value: tokens, blind indexes, arrays of blind indexes.
// The value it returns is borrowed until its next call (Render copies it
// at once), so one scratch buffer serves every value of a statement.
func (s *Session) transformer(snap *Snapshot) func(rewrite.Action, []byte) ([]byte, error) {
	if s.xform == nil || s.xformSnap != snap {
		s.xformSnap = snap
		s.xform = func(a rewrite.Action, v []byte) ([]byte, error) {
			out, err := s.apply(snap, a, v, s.valBuf[:0], false)
			if err == nil && cap(out) <= 4*ioBufferSize {
				s.valBuf = out
			}
			return out, err
		}
	}
	return s.xform
}

// apply computes one value. binary says the value came in binary format
// (only meaningful for OpHashArray).
func (s *Session) apply(snap *Snapshot, a rewrite.Action, v, dst []byte, binaryFmt bool) ([]byte, error) {
	kr := snap.Keyring
	enc := snap.Config.Encryption
	switch a.Op {
	case rewrite.OpEncrypt:
		es := &s.encStats
		es.n++
		if err := keyring.CheckPlain(v, enc.MaxSize, enc.Sanitize()); err != nil {
			es.failed++
			return nil, columnError(err, a.Column)
		}
		if !es.started {
			es.began, es.started = monoNow(), true
			es.unix = es.wall.unixSeconds(es.began)
		}
		out, err := kr.SealScratch(dst, v, es.unix, &s.crypto)
		if err != nil {
			es.failed++
			return nil, err
		}
		return out, nil
	case rewrite.OpHash:
		if err := keyring.CheckPlain(v, enc.MaxSize, enc.Sanitize()); err != nil {
			return nil, columnError(err, a.Column)
		}
		return kr.BlindIndexScratch(dst, a.Domain, v, &s.crypto), nil
	case rewrite.OpHashAll:
		if err := keyring.CheckPlain(v, enc.MaxSize, enc.Sanitize()); err != nil {
			return nil, columnError(err, a.Column)
		}
		return appendHashArray(dst, kr, a.Domain, [][]byte{v}), nil
	case rewrite.OpHashArray:
		var elems [][]byte
		var err error
		if binaryFmt {
			elems, err = parseBinaryArray(v)
		} else {
			elems, err = parseTextArray(v)
		}
		var elemType *arrayElemTypeError
		if errors.As(err, &elemType) {
			return nil, &pgError{code: codeFeatureNotSupported,
				msg:  fmt.Sprintf("pgveil: array parameter for encrypted column %s has elements of type %s; pgveil hashes only text values", a.Column, typeName(elemType.oid)),
				hint: "send the array as text[] or varchar[]"}
		}
		if err != nil {
			return nil, &pgError{code: "22P02", msg: "pgveil: malformed array parameter for encrypted column " + a.Column}
		}
		for _, e := range elems {
			if e == nil {
				continue
			}
			if err := keyring.CheckPlain(e, enc.MaxSize, enc.Sanitize()); err != nil {
				return nil, columnError(err, a.Column)
			}
		}
		return appendHashArray(dst, kr, a.Domain, elems), nil
	default:
		return append(dst, v...), nil
	}
}

// appendHashArray appends a text-format array of the blind indexes of each
// element under every hash key in force (current and fallbacks). NULL
// elements stay NULL (they match nothing, as = NULL does).
func appendHashArray(dst []byte, kr *keyring.Keyring, domain string, elems [][]byte) []byte {
	dst = append(dst, '{')
	first := true
	for _, e := range elems {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		if e == nil {
			dst = append(dst, "NULL"...)
			continue
		}
		for i, h := range kr.BlindIndexAll(domain, e) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, h...)
		}
	}
	return append(dst, '}')
}

// columnError names the column in a value refusal (never the value).
func columnError(err error, column string) error {
	code, msg, _ := errorFields(err)
	return &pgError{code: code, msg: fmt.Sprintf("%s (column %s)", msg, column)}
}

// transformBind applies a statement's parameter actions to a decoded Bind
// and appends the Bind to send to dst: client parameters transformed in
// place, hidden parameters appended.
func (s *Session) transformBind(dst []byte, st *statement, b *bindMsg) ([]byte, error) {
	plan := st.plan
	snap := s.snap
	n := len(b.params)
	// Scratch reused from Bind to Bind: formats, parameters, and one arena
	// holding every computed value (sliced once all are in, as it grows).
	sc := &s.bindScratch
	formats := sc.formats[:0]
	for i := 0; i < n; i++ {
		formats = append(formats, paramFormat(b.formats, i))
	}
	params := append(sc.params[:0], b.params...)
	arena := sc.arena[:0]
	spans := sc.spans[:0]
	for i, a := range plan.ClientParams {
		if a.Op == rewrite.OpNone || i >= n || params[i] == nil {
			continue
		}
		start := len(arena)
		var err error
		arena, err = s.apply(snap, a, st.paramValue(i, params[i]), arena, formats[i] == 1)
		if err != nil {
			return dst, err
		}
		spans = append(spans, valueSpan{param: i, start: start, end: len(arena)})
		if a.Op == rewrite.OpHashArray || a.Op == rewrite.OpHashAll {
			formats[i] = 0
		}
	}
	for _, h := range plan.Hidden {
		if h.From < 0 || h.From >= n {
			return dst, &pgError{code: codeProtocolViolation, msg: fmt.Sprintf("pgveil: Bind supplies %d parameters, the statement needs %d", n, h.From+1)}
		}
		src := b.params[h.From]
		params = append(params, nil)
		if src != nil {
			start := len(arena)
			var err error
			arena, err = s.apply(snap, h.Action, st.paramValue(h.From, src), arena, formats[h.From] == 1)
			if err != nil {
				return dst, err
			}
			spans = append(spans, valueSpan{param: len(params) - 1, start: start, end: len(arena)})
		}
		formats = append(formats, 0)
	}
	for _, sp := range spans {
		params[sp.param] = arena[sp.start:sp.end:sp.end]
	}
	if len(params) > math.MaxUint16 {
		return dst, &pgError{code: codeProgramLimit, msg: fmt.Sprintf("pgveil: a Bind with the blind-index parameters pgveil adds would carry %d parameters; the protocol allows %d", len(params), math.MaxUint16)}
	}
	dst = b.appendTo(dst, compactFormats(formats), params)
	sc.formats, sc.params, sc.spans = formats, params, spans
	if cap(arena) <= 4*ioBufferSize {
		sc.arena = arena
	} else {
		sc.arena = nil
	}
	return dst, nil
}

// paramValue is the text PostgreSQL makes of client parameter i's value v
// when it casts it to text: v itself, without trailing spaces for bpchar.
// checkParamTypes allowed no other type.
func (st *statement) paramValue(i int, v []byte) []byte {
	if i < len(st.bpchar) && st.bpchar[i] {
		for len(v) > 0 && v[len(v)-1] == ' ' {
			v = v[:len(v)-1]
		}
	}
	return v
}

// checkParamTypes checks the types a Parse declares for the parameters
// pgveil encrypts or hashes (in place, or as the source of a hidden
// parameter). It accepts only those whose text and binary forms are both
// the text PostgreSQL would store: text, varchar, unknown, unspecified (0:
// PostgreSQL infers text from where pgveil puts the parameter) and bpchar
// (less trailing spaces, see paramValue); text[] and varchar[] for arrays.
// Any other type would be encrypted as sent, not as PostgreSQL reads it: an
// int4 in binary is 4 raw bytes, '0042' in text PostgreSQL stores as 42.
// name is refused too (PostgreSQL cuts it to 63 bytes). It returns which
// parameters are bpchar (nil for none).
func checkParamTypes(plan *rewrite.Plan, oids []uint32) ([]bool, error) {
	var bpchar []bool
	check := func(i int, a rewrite.Action) error {
		if i < 0 || i >= len(oids) {
			return nil // unspecified
		}
		oid := oids[i]
		if !valueTypeOK(a.Op, oid) {
			hint := "send the value as text: declare the parameter text or varchar, or leave its type unspecified"
			if a.Op == rewrite.OpHashArray {
				hint = "send the values as text: declare the parameter text[] or varchar[], or leave its type unspecified"
			}
			return &pgError{code: codeFeatureNotSupported,
				msg: fmt.Sprintf("pgveil: parameter %d for encrypted column %s is declared %s; pgveil encrypts and hashes only text values",
					i+1, a.Column, typeName(oid)),
				hint: hint}
		}
		if oid == oidBpchar {
			if bpchar == nil {
				bpchar = make([]bool, len(oids))
			}
			bpchar[i] = true
		}
		return nil
	}
	for i, a := range plan.ClientParams {
		if a.Op == rewrite.OpNone {
			continue
		}
		if err := check(i, a); err != nil {
			return nil, err
		}
	}
	for _, h := range plan.Hidden {
		if err := check(h.From, h.Action); err != nil {
			return nil, err
		}
	}
	return bpchar, nil
}

// valueTypeOK reports whether a parameter declared oid may carry a value
// op encrypts or hashes (see checkParamTypes).
func valueTypeOK(op rewrite.Op, oid uint32) bool {
	switch op {
	case rewrite.OpHashArray:
		return oid == 0 || oid == oidTextArray || oid == oidVarcharArray
	default:
		return oid == 0 || oid == oidText || oid == oidVarchar || oid == oidBpchar || oid == oidUnknown
	}
}

// typeName names a type OID in messages: the usual built-in types by name.
func typeName(oid uint32) string {
	switch oid {
	case 16:
		return "bool"
	case 17:
		return "bytea"
	case 18:
		return "char"
	case 19:
		return "name"
	case 20:
		return "int8"
	case 21:
		return "int2"
	case 23:
		return "int4"
	case 26:
		return "oid"
	case 114:
		return "json"
	case 700:
		return "float4"
	case 701:
		return "float8"
	case 1082:
		return "date"
	case 1083:
		return "time"
	case 1114:
		return "timestamp"
	case 1184:
		return "timestamptz"
	case 1186:
		return "interval"
	case 1700:
		return "numeric"
	case 2950:
		return "uuid"
	case 3802:
		return "jsonb"
	case oidBpchar:
		return "bpchar"
	case oidText:
		return "text"
	case oidVarchar:
		return "varchar"
	}
	return fmt.Sprintf("type OID %d", oid)
}

// bindMsg is a Bind decoded in place: names, values and the result format
// codes are views of the frame's body, and the slices are reused from one
// Bind to the next (pgproto3.Bind allocates names and slices each time).
// [client]
type bindMsg struct {
	portal, stmt []byte
	formats      []int16
	params       [][]byte // nil: NULL
	// results is the message's tail, the result format codes, sent on as
	// it came.
	results []byte
}

// decode reads body, which must be a whole, well-formed Bind.
func (b *bindMsg) decode(body []byte) bool {
	var ok bool
	if b.portal, body, ok = cstringBytes(body); !ok {
		return false
	}
	if b.stmt, body, ok = cstringBytes(body); !ok {
		return false
	}
	if len(body) < 2 {
		return false
	}
	nf := int(binary.BigEndian.Uint16(body))
	body = body[2:]
	if len(body) < 2*nf {
		return false
	}
	b.formats = b.formats[:0]
	for i := 0; i < nf; i++ {
		b.formats = append(b.formats, int16(binary.BigEndian.Uint16(body[2*i:])))
	}
	body = body[2*nf:]
	if len(body) < 2 {
		return false
	}
	np := int(binary.BigEndian.Uint16(body))
	body = body[2:]
	b.params = b.params[:0]
	for i := 0; i < np; i++ {
		if len(body) < 4 {
			return false
		}
		l := int32(binary.BigEndian.Uint32(body))
		body = body[4:]
		if l == -1 {
			b.params = append(b.params, nil)
			continue
		}
		if l < 0 || int(l) > len(body) {
			return false
		}
		b.params = append(b.params, body[:l:l])
		body = body[l:]
	}
	if len(body) < 2 || len(body) != 2+2*int(binary.BigEndian.Uint16(body)) {
		return false
	}
	b.results = body
	return true
}

// appendTo appends the Bind frame with the given parameters and their
// format codes to dst.
func (b *bindMsg) appendTo(dst []byte, formats []int16, params [][]byte) []byte {
	dst, start := appendFrameHeader(dst, 'B')
	dst = append(append(dst, b.portal...), 0)
	dst = append(append(dst, b.stmt...), 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(formats)))
	for _, f := range formats {
		dst = binary.BigEndian.AppendUint16(dst, uint16(f))
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(params)))
	for _, p := range params {
		if p == nil {
			dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)
			continue
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(p)))
		dst = append(dst, p...)
	}
	dst = append(dst, b.results...)
	return finishFrame(dst, start)
}

// bindScratch is transformBind's memory, kept between Binds. [client]
type bindScratch struct {
	formats []int16
	params  [][]byte
	arena   []byte
	spans   []valueSpan
}

// valueSpan places a computed value of the arena in a parameter slot.
type valueSpan struct{ param, start, end int }

func paramFormat(codes []int16, i int) int16 {
	switch len(codes) {
	case 0:
		return 0
	case 1:
		return codes[0]
	default:
		if i < len(codes) {
			return codes[i]
		}
		return 0
	}
}

// compactFormats sends no format codes when all are text.
func compactFormats(f []int16) []int16 {
	for _, c := range f {
		if c != 0 {
			return f
		}
	}
	return nil
}

// parseTextArray parses a one-dimensional text-format array ('{a,"b c",NULL}').
func parseTextArray(v []byte) ([][]byte, error) {
	if len(v) < 2 || v[0] != '{' || v[len(v)-1] != '}' {
		return nil, errors.New("not an array")
	}
	body := v[1 : len(v)-1]
	var out [][]byte
	if len(body) == 0 {
		return out, nil
	}
	i := 0
	for {
		for i < len(body) && (body[i] == ' ' || body[i] == '\t') {
			i++
		}
		var elem []byte
		if i < len(body) && body[i] == '"' {
			i++
			elem = []byte{}
			for {
				if i >= len(body) {
					return nil, errors.New("unterminated quote")
				}
				c := body[i]
				if c == '\\' && i+1 < len(body) {
					elem = append(elem, body[i+1])
					i += 2
					continue
				}
				if c == '"' {
					i++
					break
				}
				elem = append(elem, c)
				i++
			}
		} else {
			start := i
			for i < len(body) && body[i] != ',' {
				if body[i] == '{' || body[i] == '"' {
					return nil, errors.New("nested arrays are not supported")
				}
				i++
			}
			raw := body[start:i]
			for len(raw) > 0 && (raw[len(raw)-1] == ' ' || raw[len(raw)-1] == '\t') {
				raw = raw[:len(raw)-1]
			}
			if string(raw) == "NULL" {
				elem = nil
			} else {
				elem = make([]byte, 0, len(raw))
				for j := 0; j < len(raw); j++ {
					if raw[j] == '\\' && j+1 < len(raw) {
						j++
					}
					elem = append(elem, raw[j])
				}
			}
		}
		out = append(out, elem)
		for i < len(body) && (body[i] == ' ' || body[i] == '\t') {
			i++
		}
		if i >= len(body) {
			return out, nil
		}
		if body[i] != ',' {
			return nil, errors.New("expected comma")
		}
		i++
	}
}

// arrayElemTypeError is a binary array whose elements are not text.
type arrayElemTypeError struct{ oid uint32 }

func (e *arrayElemTypeError) Error() string {
	return fmt.Sprintf("array elements of type OID %d", e.oid)
}

// parseBinaryArray parses a one-dimensional binary-format array of a text
// type (elements are their text bytes). Elements of any other type are an
// *arrayElemTypeError: their binary form is not their text.
func parseBinaryArray(v []byte) ([][]byte, error) {
	if len(v) < 12 {
		return nil, errors.New("short array")
	}
	ndim := int(binary.BigEndian.Uint32(v))
	p := v[12:]
	if ndim == 0 {
		return nil, nil
	}
	if elem := binary.BigEndian.Uint32(v[8:]); elem != oidText && elem != oidVarchar {
		return nil, &arrayElemTypeError{oid: elem}
	}
	if ndim != 1 || len(p) < 8 {
		return nil, errors.New("only one-dimensional arrays are supported")
	}
	n := int(int32(binary.BigEndian.Uint32(p)))
	p = p[8:]
	if n < 0 || n > len(p)/4 {
		return nil, errors.New("bad array length")
	}
	out := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		if len(p) < 4 {
			return nil, errors.New("short array")
		}
		l := int32(binary.BigEndian.Uint32(p))
		p = p[4:]
		if l < 0 {
			out = append(out, nil)
			continue
		}
		if int(l) > len(p) {
			return nil, errors.New("short array")
		}
		out = append(out, p[:l])
		p = p[l:]
	}
	return out, nil
}

package rewrite

import (
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// This file holds the hand-written SQL lexer shared by Normalize, the
// skip scan and the analyzer's text patching. It follows PostgreSQL's scan.l
// closely enough to find constants, comments, quoted identifiers and
// parameters; it never fails: malformed input (an unterminated string) ends
// the token at the end of the text and is not treated as a constant, so the
// parser, not the lexer, reports it.

type tokKind uint8

const (
	tkEOF       tokKind = iota
	tkSpace             // white space
	tkComment           // -- ... or /* ... */ (nested)
	tkIdent             // unquoted word
	tkQIdent            // "quoted" or U&"quoted" identifier
	tkString            // '...', E'...', U&'...', B'...', X'...', N'...', $tag$...$tag$
	tkBadString         // an unterminated string or dollar quote
	tkNumber            // numeric constant
	tkParam             // $n
	tkOp                // operator characters
	tkPunct             // ( ) , ; [ ] . :
)

type token struct {
	kind       tokKind
	start, end int
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentCont(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isOpChar(c byte) bool {
	switch c {
	case '+', '-', '*', '/', '<', '>', '=', '~', '!', '@', '#', '%', '^', '&', '|', '`', '?':
		return true
	}
	return false
}

// lexer yields the tokens of s one at a time.
type lexer struct {
	s   string
	pos int
}

func (l *lexer) next() token {
	s, i := l.s, l.pos
	if i >= len(s) {
		return token{kind: tkEOF, start: i, end: i}
	}
	start := i
	c := s[i]
	var k tokKind
	switch {
	case isSpace(c):
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		k = tkSpace
	case c == '-' && i+1 < len(s) && s[i+1] == '-':
		for i < len(s) && s[i] != '\n' {
			i++
		}
		k = tkComment
	case c == '/' && i+1 < len(s) && s[i+1] == '*':
		depth := 0
		for i < len(s) {
			if s[i] == '/' && i+1 < len(s) && s[i+1] == '*' {
				depth++
				i += 2
				continue
			}
			if s[i] == '*' && i+1 < len(s) && s[i+1] == '/' {
				depth--
				i += 2
				if depth == 0 {
					break
				}
				continue
			}
			i++
		}
		k = tkComment
	case c == '\'':
		i, k = scanQuoted(s, i, false)
		i, k = scanContinuation(s, i, k, false)
	case c == '"':
		i, k = scanDoubleQuoted(s, i)
	case (c == 'e' || c == 'E') && i+1 < len(s) && s[i+1] == '\'':
		i, k = scanQuoted(s, i+1, true)
		i, k = scanContinuation(s, i, k, true)
	case (c == 'n' || c == 'N' || c == 'b' || c == 'B' || c == 'x' || c == 'X') && i+1 < len(s) && s[i+1] == '\'':
		// Bit strings continue across a newline as other strings do.
		i, k = scanQuoted(s, i+1, false)
		i, k = scanContinuation(s, i, k, false)
	case (c == 'u' || c == 'U') && i+2 < len(s) && s[i+1] == '&' && (s[i+2] == '\'' || s[i+2] == '"'):
		if s[i+2] == '"' {
			i, k = scanDoubleQuoted(s, i+2)
			break
		}
		i, k = scanQuoted(s, i+2, false)
		i, k = scanContinuation(s, i, k, false)
		if k == tkString {
			i = scanUescape(s, i)
		}
	case isIdentStart(c):
		for i < len(s) && isIdentCont(s[i]) {
			i++
		}
		k = tkIdent
	case c == '$':
		switch {
		case i+1 < len(s) && isDigit(s[i+1]):
			i++
			for i < len(s) && isDigit(s[i]) {
				i++
			}
			k = tkParam
		case i+1 < len(s) && (s[i+1] == '$' || isIdentStart(s[i+1])):
			j := i + 1
			for j < len(s) && s[j] != '$' && isIdentCont(s[j]) {
				j++
			}
			if j >= len(s) || s[j] != '$' {
				i++
				k = tkOp
				break
			}
			tag := s[i : j+1]
			body := j + 1
			if e := strings.Index(s[body:], tag); e >= 0 {
				i = body + e + len(tag)
				k = tkString
			} else {
				i = len(s)
				k = tkBadString
			}
		default:
			i++
			k = tkOp
		}
	case isDigit(c) || c == '.' && i+1 < len(s) && isDigit(s[i+1]):
		i = scanNumber(s, i)
		k = tkNumber
	case c == '(' || c == ')' || c == ',' || c == ';' || c == '[' || c == ']' || c == '.' || c == ':':
		i++
		if c == ':' && i < len(s) && s[i] == ':' {
			i++
		}
		k = tkPunct
	case isOpChar(c):
		for i < len(s) && isOpChar(s[i]) {
			if s[i] == '-' && i+1 < len(s) && s[i+1] == '-' || s[i] == '/' && i+1 < len(s) && s[i+1] == '*' {
				if i == start {
					break
				}
				break
			}
			i++
		}
		if i == start {
			i++
		}
		k = tkOp
	default:
		i++
		k = tkOp
	}
	l.pos = i
	return token{kind: k, start: start, end: i}
}

// scanQuoted scans a single-quoted string whose opening quote is at s[i].
func scanQuoted(s string, i int, backslash bool) (int, tokKind) {
	i++
	for i < len(s) {
		// Jump to the next byte that can end or escape the string
		// (literals of encrypted values run to a hundred bytes and more).
		var j int
		if backslash {
			j = strings.IndexAny(s[i:], `'\`)
		} else {
			j = strings.IndexByte(s[i:], '\'')
		}
		if j < 0 {
			break
		}
		i += j
		switch s[i] {
		case '\\':
			if backslash {
				i += 2
				continue
			}
		case '\'':
			if i+1 < len(s) && s[i+1] == '\'' {
				i += 2
				continue
			}
			return i + 1, tkString
		}
		i++
	}
	return len(s), tkBadString
}

// scanContinuation extends a string by PostgreSQL's quote continuation: a
// second string separated from the first by white space holding a newline.
func scanContinuation(s string, i int, k tokKind, backslash bool) (int, tokKind) {
	for k == tkString {
		j, nl := i, false
		for j < len(s) && isSpace(s[j]) {
			if s[j] == '\n' || s[j] == '\r' {
				nl = true
			}
			j++
		}
		if !nl || j >= len(s) || s[j] != '\'' {
			return i, k
		}
		i, k = scanQuoted(s, j, backslash)
	}
	return i, k
}

// scanUescape consumes an optional `UESCAPE 'c'` after a U&” string.
func scanUescape(s string, i int) int {
	j := i
	for j < len(s) && isSpace(s[j]) {
		j++
	}
	if j+7 > len(s) || !strings.EqualFold(s[j:j+7], "uescape") || j+7 < len(s) && isIdentCont(s[j+7]) {
		return i
	}
	j += 7
	for j < len(s) && isSpace(s[j]) {
		j++
	}
	if j >= len(s) || s[j] != '\'' {
		return i
	}
	e, k := scanQuoted(s, j, false)
	if k != tkString {
		return i
	}
	return e
}

func scanDoubleQuoted(s string, i int) (int, tokKind) {
	i++
	for i < len(s) {
		if s[i] == '"' {
			if i+1 < len(s) && s[i+1] == '"' {
				i += 2
				continue
			}
			return i + 1, tkQIdent
		}
		i++
	}
	return len(s), tkBadString
}

func scanNumber(s string, i int) int {
	if s[i] == '0' && i+2 < len(s) {
		switch s[i+1] {
		case 'x', 'X', 'o', 'O', 'b', 'B':
			j := i + 2
			for j < len(s) && (isDigit(s[j]) || s[j] == '_' || s[j] >= 'a' && s[j] <= 'f' || s[j] >= 'A' && s[j] <= 'F') {
				j++
			}
			if j > i+2 {
				return j
			}
		}
	}
	for i < len(s) && (isDigit(s[i]) || s[i] == '_') {
		i++
	}
	if i < len(s) && s[i] == '.' && !(i+1 < len(s) && s[i+1] == '.') {
		i++
		for i < len(s) && (isDigit(s[i]) || s[i] == '_') {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		if j < len(s) && isDigit(s[j]) {
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			i = j
		}
	}
	return i
}

// Literal is one constant the normalizer cut out of a statement text.
type Literal struct {
	Start, End int // byte span in the original text
}

// exprKeywords are words after which a string constant is an ordinary
// expression operand. After any other word (a type name as in
// `interval '1 day'`, a function name, a COPY option) the string is part of
// the syntax and stays in the text.
var exprKeywords = map[string]bool{
	"select": true, "where": true, "and": true, "or": true, "not": true, "in": true,
	"like": true, "ilike": true, "similar": true, "to": true, "escape": true,
	"then": true, "else": true, "when": true, "case": true, "is": true, "between": true,
	"symmetric": true, "asymmetric": true, "values": true, "set": true, "on": true,
	"by": true, "returning": true, "limit": true, "offset": true, "from": true,
	"distinct": true, "all": true, "any": true, "some": true, "using": true,
	"having": true, "default": true, "fetch": true, "first": true, "next": true,
	"zone": true, "leading": true, "trailing": true, "both": true, "placing": true,
	"for": true, "return": true, "array": true, "row": true, "exists": true,
	"operator": true, "isnull": true, "notnull": true, "over": true, "filter": true,
	"with": true,
}

// typmodTypes are type names whose parenthesized modifiers must stay
// integer constants (`varchar(255)`, `numeric(10,2)`).
var typmodTypes = map[string]bool{
	"numeric": true, "decimal": true, "dec": true, "varchar": true, "char": true,
	"character": true, "varying": true, "bit": true, "varbit": true, "time": true,
	"timestamp": true, "timestamptz": true, "timetz": true, "interval": true,
	"float": true, "bpchar": true, "nchar": true,
}

// lowerWord lowercases w into buf; nil when w does not fit.
func lowerWord(buf []byte, w string) []byte {
	if len(w) > len(buf) {
		return nil
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return buf[:len(w)]
}

// scanConstants lexes sql and returns the constants to extract, the highest
// client parameter number, and whether a lexical problem was seen.
func scanConstants(sql string, lits []Literal) ([]Literal, int) {
	l := lexer{s: sql}
	maxParam := 0
	var prev token
	var stack [32]bool // per paren depth: inside a type modifier list
	depth := 0
	var wb [16]byte
	for {
		t := l.next()
		switch t.kind {
		case tkEOF:
			return lits, maxParam
		case tkSpace, tkComment:
			continue
		case tkParam:
			if n, err := strconv.Atoi(sql[t.start+1 : t.end]); err == nil && n > maxParam && n < 1<<20 {
				maxParam = n
			} else if err != nil || n >= 1<<20 {
				maxParam = 1 << 20
			}
		case tkPunct:
			switch sql[t.start] {
			case '(':
				keep := false
				if prev.kind == tkIdent {
					w := sql[prev.start:prev.end]
					keep = typmodTypes[string(lowerWord(wb[:], w))]
				}
				if depth < len(stack) {
					stack[depth] = keep
				}
				depth++
			case ')':
				if depth > 0 {
					depth--
				}
			}
		case tkString:
			keep := false
			if prev.kind == tkIdent {
				w := sql[prev.start:prev.end]
				lw := lowerWord(wb[:], w)
				keep = lw == nil || !exprKeywords[string(lw)]
			} else if prev.kind == tkQIdent {
				keep = true
			}
			if !keep {
				lits = append(lits, Literal{Start: t.start, End: t.end})
			}
		case tkNumber:
			keep := depth > 0 && depth <= len(stack) && stack[depth-1]
			if !keep {
				lits = append(lits, Literal{Start: t.start, End: t.end})
			}
		}
		prev = t
	}
}

// Normalize replaces every constant of sql (string constants in all their
// forms, numeric constants) by a parameter placeholder numbered after the
// highest parameter the text uses, so that statements differing only in
// their constants share one key (and one plan). Literal i becomes
// $(maxParam+1+i). Constants that are part of the syntax rather than an
// operand (`interval '1 day'`, `varchar(255)`, COPY options) stay in place.
// When sql holds no constant, key is sql itself.
func Normalize(sql string) (key string, lits []Literal) {
	lits, maxParam := scanConstants(sql, nil)
	if len(lits) == 0 {
		return sql, nil
	}
	return buildKey(sql, lits, maxParam), lits
}

func buildKey(sql string, lits []Literal, maxParam int) string {
	return string(appendNormalized(make([]byte, 0, len(sql)+4*len(lits)), sql, lits, maxParam))
}

// appendNormalized appends sql with each literal replaced by $n, numbered
// after the highest parameter the text uses.
func appendNormalized(dst []byte, sql string, lits []Literal, maxParam int) []byte {
	prev := 0
	for i, lit := range lits {
		dst = append(dst, sql[prev:lit.Start]...)
		dst = append(dst, '$')
		dst = strconv.AppendInt(dst, int64(maxParam+1+i), 10)
		prev = lit.End
	}
	return append(dst, sql[prev:]...)
}

// SQLSTATEs of the constants Literal.Value refuses.
const (
	codeInvalidTextRepresentation = "22P02" // a bit string with a digit of the wrong kind, a malformed escape
	codeNumericOutOfRange         = "22003" // a number numeric cannot hold
)

// LiteralError is a constant Literal.Value does not decode: one PostgreSQL
// would reject too, or one whose value pgveil cannot compute exactly as
// PostgreSQL would. Its message names the form of the constant, never its
// value, and reads after "malformed constant for table.column: ".
type LiteralError struct {
	code, msg, hint string
}

func (e *LiteralError) Error() string    { return e.msg }
func (e *LiteralError) SQLState() string { return e.code }
func (e *LiteralError) Hint() string     { return e.hint }

var (
	// ErrBadLiteral is returned by Literal.Value for a constant it cannot
	// decode.
	ErrBadLiteral = &LiteralError{code: codeInvalidTextRepresentation, msg: "invalid constant"}
	// ErrNumberForm is returned for an integer in hexadecimal, octal or
	// binary (0x1F, 0o17, 0b101) or with digit separators (1_000):
	// PostgreSQL 16 reads them, earlier versions reject them.
	ErrNumberForm = &LiteralError{code: CodeFeatureNotSupported,
		msg:  "0x, 0o and 0b integer constants and _ digit separators are not supported for an encrypted column",
		hint: "write the number in decimal digits without separators, or as a quoted string"}
	// ErrNumberRange is returned for a number PostgreSQL's numeric cannot
	// hold (more than 131072 digits before the point or 16383 after it, or
	// an exponent of a billion or more).
	ErrNumberRange = &LiteralError{code: codeNumericOutOfRange,
		msg:  "numeric constant out of range",
		hint: "write the value as a quoted string"}
)

// Value decodes the literal's value from the text it was found in: the text
// PostgreSQL stores when the constant is assigned to a text column, with
// standard_conforming_strings on. For string constants: a doubled quote is
// one quote; backslash escapes (\n, \x.., octal, \u, \U) in E'...' strings;
// Unicode escapes in U&'...' strings; dollar-quoted bodies verbatim;
// N'...' strings (type character) without trailing spaces. Numbers print as
// PostgreSQL prints them (see decodeNumber), bit strings B'...' and X'...'
// as their bits (X'1F' is 00011111). An error is a *LiteralError.
func (l Literal) Value(sql string) ([]byte, error) {
	if l.Start < 0 || l.End > len(sql) || l.Start >= l.End {
		return nil, ErrBadLiteral
	}
	s := sql[l.Start:l.End]
	switch c := s[0]; {
	case c == '\'':
		return decodeSegments(s, false, 0)
	case c == 'e' || c == 'E':
		return decodeSegments(s[1:], true, 0)
	case c == 'n' || c == 'N':
		// N'x' is character 'x' (unbounded): as text, trailing spaces go.
		v, err := decodeSegments(s[1:], false, 0)
		if err != nil {
			return nil, err
		}
		n := len(v)
		for n > 0 && v[n-1] == ' ' {
			n--
		}
		return v[:n], nil
	case c == 'b' || c == 'B' || c == 'x' || c == 'X':
		return decodeBits(s[1:], c == 'x' || c == 'X')
	case c == 'u' || c == 'U':
		if len(s) < 4 || s[1] != '&' {
			return nil, ErrBadLiteral
		}
		return decodeUnicode(s[2:])
	case c == '$':
		j := strings.IndexByte(s[1:], '$')
		if j < 0 {
			return nil, ErrBadLiteral
		}
		tag := s[:j+2]
		if len(s) < 2*len(tag) || !strings.HasSuffix(s, tag) {
			return nil, ErrBadLiteral
		}
		return []byte(s[len(tag) : len(s)-len(tag)]), nil
	case isDigit(c) || c == '.':
		return decodeNumber(s)
	}
	return nil, ErrBadLiteral
}

// decodeBits returns the text of a bit-string constant's quoted part (one
// or more segments): its bits as 0 and 1, four per digit when hex.
func decodeBits(s string, hex bool) ([]byte, error) {
	raw, err := decodeSegments(s, false, 0)
	if err != nil {
		return nil, err
	}
	if !hex {
		for _, c := range raw {
			if c != '0' && c != '1' {
				return nil, ErrBadLiteral
			}
		}
		return raw, nil
	}
	out := make([]byte, 0, 4*len(raw))
	for _, c := range raw {
		v := hexVal(c)
		if v < 0 {
			return nil, ErrBadLiteral
		}
		out = append(out, '0'+byte(v>>3), '0'+byte(v>>2&1), '0'+byte(v>>1&1), '0'+byte(v&1))
	}
	return out, nil
}

// Limits of PostgreSQL's numeric (numeric.c: NUMERIC_WEIGHT_MAX base-10000
// digits before the point, NUMERIC_DSCALE_MAX after it).
const (
	numericMaxIntDigits = 4 * (0x7FFF + 1)
	numericMaxScale     = 0x3FFF
)

// decodeNumber returns the text of a numeric constant as PostgreSQL prints
// it. An integer becomes int4, int8 or, beyond those, numeric; a constant
// with a point or an exponent becomes numeric. Both print in plain decimal
// without leading zeros, numeric with its display scale: the digits written
// after the point less the exponent, at least none (00042 → 42, 4.2e1 → 42,
// 1.50 → 1.50, 1.20e1 → 12.0, 1.5e-3 → 0.0015, .5 → 0.5, 5. → 5).
func decodeNumber(s string) ([]byte, error) {
	if strings.IndexByte(s, '_') >= 0 || len(s) > 1 && s[0] == '0' && strings.IndexByte("xXoObB", s[1]) >= 0 {
		return nil, ErrNumberForm
	}
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	intPart, frac := s[:i], ""
	if i < len(s) && s[i] == '.' {
		j := i + 1
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		frac, i = s[i+1:j], j
	}
	if intPart == "" && frac == "" {
		return nil, ErrBadLiteral
	}
	exp := 0
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		neg := i < len(s) && s[i] == '-'
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := i
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if j == i {
			return nil, ErrBadLiteral
		}
		e := strings.TrimLeft(s[i:j], "0")
		if len(e) > 9 {
			return nil, ErrNumberRange
		}
		for k := 0; k < len(e); k++ {
			exp = exp*10 + int(e[k]-'0')
		}
		if neg {
			exp = -exp
		}
		i = j
	}
	if i != len(s) {
		return nil, ErrBadLiteral
	}
	scale := len(frac) - exp
	if scale < 0 {
		scale = 0
	}
	if scale > numericMaxScale {
		return nil, ErrNumberRange
	}
	// The value is the digits of intPart and frac with the point before
	// the one at index point (which may lie outside them).
	n := len(intPart) + len(frac)
	digit := func(k int) byte {
		switch {
		case k < 0 || k >= n:
			return '0'
		case k < len(intPart):
			return intPart[k]
		}
		return frac[k-len(intPart)]
	}
	point := len(intPart) + exp
	lead := 0
	for lead < n && digit(lead) == '0' {
		lead++
	}
	out := make([]byte, 0, 2+scale)
	switch {
	case lead == n, point <= lead:
		// zero, or no digit before the point
		out = append(out, '0')
	case point-lead > numericMaxIntDigits:
		return nil, ErrNumberRange
	default:
		for k := lead; k < point; k++ {
			out = append(out, digit(k))
		}
	}
	if scale > 0 {
		out = append(out, '.')
		for k := point; k < point+scale; k++ {
			out = append(out, digit(k))
		}
	}
	return out, nil
}

// emptyValue is the value of ”: empty, not nil (nil stands for NULL).
var emptyValue = []byte{}

// view returns the value of a plain single-quoted constant with no quote
// inside ('abc'), the common case, as a read-only view of sql instead of a
// decoded copy; ok is false for every other form (use Value).
func (l Literal) view(sql string) ([]byte, bool) {
	if l.Start < 0 || l.End > len(sql) || l.End-l.Start < 2 {
		return nil, false
	}
	s := sql[l.Start:l.End]
	if s[0] != '\'' || s[len(s)-1] != '\'' {
		return nil, false
	}
	inner := s[1 : len(s)-1]
	if strings.IndexByte(inner, '\'') >= 0 {
		return nil, false
	}
	if inner == "" {
		return emptyValue[:0:0], true
	}
	return unsafe.Slice(unsafe.StringData(inner), len(inner)), true
}

// decodeSegments decodes one or more quoted segments ('a'\n'b').
func decodeSegments(s string, backslash bool, _ int) ([]byte, error) {
	out := make([]byte, 0, len(s))
	i := 0
	for {
		if i >= len(s) || s[i] != '\'' {
			return nil, ErrBadLiteral
		}
		i++
		closed := false
		for i < len(s) && !closed {
			c := s[i]
			switch {
			case c == '\'':
				if i+1 < len(s) && s[i+1] == '\'' {
					out = append(out, '\'')
					i += 2
					continue
				}
				closed = true
				i++
			case c == '\\' && backslash:
				var err error
				out, i, err = decodeBackslash(s, i, out)
				if err != nil {
					return nil, err
				}
			default:
				out = append(out, c)
				i++
			}
		}
		if !closed {
			return nil, ErrBadLiteral
		}
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) {
			return out, nil
		}
	}
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// decodeBackslash decodes the escape at s[i] == '\\' in an E” string.
func decodeBackslash(s string, i int, out []byte) ([]byte, int, error) {
	if i+1 >= len(s) {
		return nil, 0, ErrBadLiteral
	}
	c := s[i+1]
	i += 2
	switch c {
	case 'b':
		return append(out, '\b'), i, nil
	case 'f':
		return append(out, '\f'), i, nil
	case 'n':
		return append(out, '\n'), i, nil
	case 'r':
		return append(out, '\r'), i, nil
	case 't':
		return append(out, '\t'), i, nil
	case 'x':
		v, n := 0, 0
		for n < 2 && i < len(s) && hexVal(s[i]) >= 0 {
			v = v*16 + hexVal(s[i])
			i++
			n++
		}
		if n == 0 {
			return append(out, 'x'), i, nil
		}
		return append(out, byte(v)), i, nil
	case 'u', 'U':
		want := 4
		if c == 'U' {
			want = 8
		}
		if i+want > len(s) {
			return nil, 0, ErrBadLiteral
		}
		v := 0
		for k := 0; k < want; k++ {
			h := hexVal(s[i+k])
			if h < 0 {
				return nil, 0, ErrBadLiteral
			}
			v = v*16 + h
		}
		i += want
		// surrogate pairs: \uD83D\uDE00
		if v >= 0xD800 && v <= 0xDBFF && i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
			lo := 0
			ok := true
			for k := 0; k < 4; k++ {
				h := hexVal(s[i+2+k])
				if h < 0 {
					ok = false
					break
				}
				lo = lo*16 + h
			}
			if ok && lo >= 0xDC00 && lo <= 0xDFFF {
				v = 0x10000 + (v-0xD800)<<10 + (lo - 0xDC00)
				i += 6
			}
		}
		if v == 0 || v > utf8.MaxRune || v >= 0xD800 && v <= 0xDFFF {
			return nil, 0, ErrBadLiteral
		}
		return utf8.AppendRune(out, rune(v)), i, nil
	}
	if c >= '0' && c <= '7' {
		v := int(c - '0')
		for n := 1; n < 3 && i < len(s) && s[i] >= '0' && s[i] <= '7'; n++ {
			v = v*8 + int(s[i]-'0')
			i++
		}
		return append(out, byte(v)), i, nil
	}
	return append(out, c), i, nil
}

// decodeUnicode decodes the body of a U&” string (starting at the quote),
// with its optional UESCAPE clause.
func decodeUnicode(s string) ([]byte, error) {
	esc := byte('\\')
	end := len(s)
	// find the end of the quoted segments
	i := 0
	for i < len(s) && s[i] == '\'' {
		e, k := scanQuoted(s, i, false)
		if k != tkString {
			return nil, ErrBadLiteral
		}
		i = e
		j := i
		for j < len(s) && isSpace(s[j]) {
			j++
		}
		if j < len(s) && s[j] == '\'' {
			i = j
			continue
		}
		break
	}
	end = i
	rest := strings.TrimSpace(s[end:])
	if rest != "" {
		if len(rest) < 10 || !strings.EqualFold(rest[:7], "uescape") {
			return nil, ErrBadLiteral
		}
		q := strings.TrimSpace(rest[7:])
		if len(q) != 3 || q[0] != '\'' || q[2] != '\'' {
			return nil, ErrBadLiteral
		}
		esc = q[1]
		if hexVal(esc) >= 0 || esc == '+' || esc == '\'' || esc == '"' || isSpace(esc) {
			return nil, ErrBadLiteral
		}
	}
	raw, err := decodeSegments(s[:end], false, 0)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(raw))
	for k := 0; k < len(raw); {
		c := raw[k]
		if c != esc {
			out = append(out, c)
			k++
			continue
		}
		if k+1 < len(raw) && raw[k+1] == esc {
			out = append(out, esc)
			k += 2
			continue
		}
		want, p := 4, k+1
		if p < len(raw) && raw[p] == '+' {
			want, p = 6, p+1
		}
		if p+want > len(raw) {
			return nil, ErrBadLiteral
		}
		v := 0
		for n := 0; n < want; n++ {
			h := hexVal(raw[p+n])
			if h < 0 {
				return nil, ErrBadLiteral
			}
			v = v*16 + h
		}
		k = p + want
		if v >= 0xD800 && v <= 0xDBFF && k+want+1 <= len(raw) && raw[k] == esc {
			lo, ok := 0, true
			q := k + 1
			w2 := 4
			if q < len(raw) && raw[q] == '+' {
				w2, q = 6, q+1
			}
			if q+w2 <= len(raw) {
				for n := 0; n < w2; n++ {
					h := hexVal(raw[q+n])
					if h < 0 {
						ok = false
						break
					}
					lo = lo*16 + h
				}
				if ok && lo >= 0xDC00 && lo <= 0xDFFF {
					v = 0x10000 + (v-0xD800)<<10 + (lo - 0xDC00)
					k = q + w2
				}
			}
		}
		if v == 0 || v > utf8.MaxRune || v >= 0xD800 && v <= 0xDFFF {
			return nil, ErrBadLiteral
		}
		out = utf8.AppendRune(out, rune(v))
	}
	return out, nil
}

// Constant types, as PostgreSQL gives them to a constant with no cast:
// what decides whether `col = <constant>` has an operator at all (text =
// integer has none), so plans keyed by the normalized text also key on
// them (see constTypes).
const (
	ctString  byte = 's' // '...', E'...', U&'...', $$...$$ (unknown), N'...' (bpchar)
	ctBit     byte = 'b' // B'...', X'...'
	ctInteger byte = 'i' // digits that fit int4
	ctBigint  byte = 'l' // digits that fit int8
	ctNumeric byte = 'n' // any other number
)

// constType returns the type PostgreSQL gives the constant sql[l.Start:l.End].
func constType(sql string, l Literal) byte {
	s := sql[l.Start:l.End]
	switch c := s[0]; {
	case c == 'b' || c == 'B' || c == 'x' || c == 'X':
		return ctBit
	case c == '.':
		return ctNumeric
	case !isDigit(c):
		return ctString
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return ctNumeric
		}
	}
	for len(s) > 1 && s[0] == '0' {
		s = s[1:]
	}
	switch {
	case len(s) < 10 || len(s) == 10 && s <= "2147483647":
		return ctInteger
	case len(s) < 19 || len(s) == 19 && s <= "9223372036854775807":
		return ctBigint
	}
	return ctNumeric
}

// constTypeName names a constant type in PostgreSQL's error messages.
func constTypeName(t byte) string {
	switch t {
	case ctBit:
		return "bit"
	case ctInteger:
		return "integer"
	case ctBigint:
		return "bigint"
	case ctNumeric:
		return "numeric"
	}
	return "unknown"
}

// appendConstTypes appends the types of lits that are not strings, each
// with its index, to a cache key: "" when every constant is a string (the
// common case costs one byte test per constant).
func appendConstTypes(dst []byte, sql string, lits []Literal) []byte {
	for i, l := range lits {
		if t := constType(sql, l); t != ctString {
			dst = append(dst, t)
			dst = strconv.AppendInt(dst, int64(i), 10)
		}
	}
	return dst
}

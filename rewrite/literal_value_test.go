package rewrite

import (
	"errors"
	"math/big"
	"regexp"
	"strings"
	"testing"
)

// onlyLiteral lexes "SELECT lit" and returns the one literal, failing the
// test unless the lexer cuts out exactly lit.
func onlyLiteral(t testing.TB, lit string) (string, Literal) {
	t.Helper()
	sql := "SELECT " + lit
	_, lits := Normalize(sql)
	if len(lits) != 1 || sql[lits[0].Start:lits[0].End] != lit {
		t.Fatalf("Normalize(%q): literals %v, want exactly %q", sql, lits, lit)
	}
	return sql, lits[0]
}

// Value returns what PostgreSQL stores when the constant is assigned to a
// text column, so that a blind index computed from a constant matches the
// one computed later from the stored value or a quoted lookup. The wanted
// values are PostgreSQL 15's: CREATE TABLE t (v text); INSERT INTO t VALUES
// (constant); SELECT v FROM t.
func TestLiteralValueIsPostgresText(t *testing.T) {
	tests := []struct{ lit, want string }{
		// integers: int4, int8, numeric beyond; canonical decimal
		{"0", "0"},
		{"00", "0"},
		{"42", "42"},
		{"00042", "42"},
		{"2147483648", "2147483648"},
		{"9223372036854775807", "9223372036854775807"},
		{"9223372036854775808", "9223372036854775808"},
		{"000123456789012345678901234567890", "123456789012345678901234567890"},
		// numeric: plain decimal, scale = digits after the point - exponent
		{"4.2e1", "42"},
		{"4.2E+1", "42"},
		{"1.50", "1.50"},
		{"1.5e-3", "0.0015"},
		{"1.20e1", "12.0"},
		{"5.", "5"},
		{".5", "0.5"},
		{".5e1", "5"},
		{"5e-1", "0.5"},
		{"1.e5", "100000"},
		{"0.0", "0.0"},
		{"000.000", "0.000"},
		{"0.00e1", "0.0"},
		{"0e5", "0"},
		{"0e-3", "0.000"},
		{"1e-2", "0.01"},
		{"1e0", "1"},
		{"1e-0", "1"},
		{"1e+0", "1"},
		{"12.345e-1", "1.2345"},
		{"0.000001e3", "0.001"},
		{"100e-2", "1.00"},
		{"1.000e2", "100.0"},
		{"1e10", "10000000000"},
		{"1E400", "1" + strings.Repeat("0", 400)},
		{"000.0012300", "0.0012300"},
		{"9.99e-1", "0.999"},
		{"123.456e2", "12345.6"},
		{"123.456e3", "123456"},
		{"123.456e4", "1234560"},
		{"0.5e-1", "0.05"},
		// numeric's limits, just inside
		{"1e131071", "1" + strings.Repeat("0", 131071)},
		{"1e-16383", "0." + strings.Repeat("0", 16382) + "1"},
		{"0e999999999", "0"},
		// bit strings: their bits
		{"B'101'", "101"},
		{"b'0'", "0"},
		{"B''", ""},
		{"X'1F'", "00011111"},
		{"x'aF'", "10101111"},
		{"X''", ""},
		{"B'10'\n'01'", "1001"},
		{"X'1'\n  'F'", "00011111"},
		// N'' is character: as text, without trailing spaces (only spaces)
		{"N'abc  '", "abc"},
		{"n'a\t '", "a\t"},
		{"N'   '", ""},
		{"N' x'\n'y '", " xy"},
		// strings are unchanged by all this
		{"'00042'", "00042"},
		{"'4.2e1'", "4.2e1"},
		{"'abc  '", "abc  "},
		{"E'1F '", "1F "},
	}
	for _, tt := range tests {
		sql, l := onlyLiteral(t, tt.lit)
		v, err := l.Value(sql)
		if err != nil || string(v) != tt.want || v == nil {
			short := func(s string) string {
				if len(s) > 60 {
					return s[:60] + "..."
				}
				return s
			}
			t.Errorf("Value(%s) = %q, %v; want %q", short(tt.lit), short(string(v)), err, short(tt.want))
		}
	}
}

// Constants whose text pgveil does not compute are refused with a
// SQLSTATE, and the error never holds the constant.
func TestLiteralValueRefused(t *testing.T) {
	tests := []struct {
		lit  string
		err  error
		code string
	}{
		// PostgreSQL 16 syntax, a syntax error before it
		{"0x1F", ErrNumberForm, "0A000"},
		{"0X1f", ErrNumberForm, "0A000"},
		{"0o17", ErrNumberForm, "0A000"},
		{"0b101", ErrNumberForm, "0A000"},
		{"0B101", ErrNumberForm, "0A000"},
		{"0x1_F", ErrNumberForm, "0A000"},
		{"1_000", ErrNumberForm, "0A000"},
		{"1_000.000_5", ErrNumberForm, "0A000"},
		// beyond numeric (PostgreSQL: 22003 value overflows numeric format)
		{"1e131072", ErrNumberRange, "22003"},
		{"10e131071", ErrNumberRange, "22003"},
		{"1" + strings.Repeat("0", 131072), ErrNumberRange, "22003"},
		{"1e-16384", ErrNumberRange, "22003"},
		{"0e-16384", ErrNumberRange, "22003"},
		{"0." + strings.Repeat("0", 16384), ErrNumberRange, "22003"},
		{"1e1000000000", ErrNumberRange, "22003"},
		{"0e99999999999999999999", ErrNumberRange, "22003"},
		// bit strings PostgreSQL rejects (22P02 not a valid binary digit)
		{"B'102'", ErrBadLiteral, "22P02"},
		{"B'1 0'", ErrBadLiteral, "22P02"},
		{"X'1G'", ErrBadLiteral, "22P02"},
		{"B'1''0'", ErrBadLiteral, "22P02"},
	}
	for _, tt := range tests {
		sql, l := onlyLiteral(t, tt.lit)
		v, err := l.Value(sql)
		name := tt.lit
		if len(name) > 30 {
			name = name[:30] + "..."
		}
		if !errors.Is(err, tt.err) {
			t.Errorf("Value(%s) = %q, %v; want %v", name, v, err, tt.err)
			continue
		}
		var s interface{ SQLState() string }
		if !errors.As(err, &s) || s.SQLState() != tt.code {
			t.Errorf("Value(%s): SQLSTATE of %v is not %s", name, err, tt.code)
		}
		var le *LiteralError
		if !errors.As(err, &le) {
			t.Errorf("Value(%s): %T is not a *LiteralError", name, err)
		}
		if strings.Contains(err.Error(), tt.lit) {
			t.Errorf("Value(%s): error %q holds the constant", name, err)
		}
	}
}

// The unary minus and plus are operators applied to a constant, not part
// of it: the analyzer refuses them as expressions aimed at an encrypted
// column, in every position.
func TestSignedNumbersRefused(t *testing.T) {
	r := mustRules(t, Options{})
	for _, sql := range []string{
		`INSERT INTO users (email) VALUES (-5)`,
		`INSERT INTO users (email) VALUES (+5)`,
		`INSERT INTO users (email) VALUES (- 5)`,
		`INSERT INTO users (email) VALUES (-4.2e1)`,
		`UPDATE users SET email = -5 WHERE id = 1`,
		`SELECT id FROM users WHERE email = -5`,
	} {
		p, _, err := r.Analyze(sql)
		if err != nil || p.Kind != KindRefuse || p.Refusal.SQLState() != CodeFeatureNotSupported {
			t.Errorf("%s: %v %v, want a 0A000 refusal", sql, p.Kind, err)
		}
	}
}

// Through the plan cache and Render, the value given to encrypt and hash is
// PostgreSQL's text, whatever plan the statement shares; a constant pgveil
// refuses makes Render fail with the constant's SQLSTATE, and nothing is
// rendered.
func TestLiteralsRenderPostgresText(t *testing.T) {
	rw := New(mustRules(t, Options{}), 64)
	render := func(sql string) ([]string, *Plan, error) {
		t.Helper()
		p, lits, _, err := rw.Plan(sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if p.Kind != KindRewrite {
			return nil, p, nil
		}
		var seen []string
		_, err = p.Render(nil, sql, lits, func(a Action, v []byte) ([]byte, error) {
			seen = append(seen, a.Op.String()+"("+string(v)+")")
			return []byte("T"), nil
		})
		return seen, p, err
	}
	// A string first, so that what follows shares its cached plan
	// (INSERT INTO users (email) VALUES ($1)).
	if seen, _, err := render(`INSERT INTO users (email) VALUES ('42')`); err != nil || strings.Join(seen, " ") != "encrypt(42) hash(42)" {
		t.Fatalf("string: %v %v", seen, err)
	}
	for _, tt := range []struct{ sql, want string }{
		{`INSERT INTO users (email) VALUES (00042)`, "encrypt(42) hash(42)"},
		{`INSERT INTO users (email) VALUES (4.2e1)`, "encrypt(42) hash(42)"},
		{`INSERT INTO users (email) VALUES (1.50)`, "encrypt(1.50) hash(1.50)"},
		{`INSERT INTO users (email) VALUES (.5)`, "encrypt(0.5) hash(0.5)"},
		{`INSERT INTO users (email) VALUES (5.)`, "encrypt(5) hash(5)"},
		{`INSERT INTO users (email) VALUES (X'1F')`, "encrypt(00011111) hash(00011111)"},
		{`INSERT INTO users (email) VALUES (B'101')`, "encrypt(101) hash(101)"},
		{`INSERT INTO users (email) VALUES (N'42  ')`, "encrypt(42) hash(42)"},
		{`INSERT INTO users (email) VALUES (000123456789012345678901234567890)`,
			"encrypt(123456789012345678901234567890) hash(123456789012345678901234567890)"},
		{`UPDATE users SET email = 4.20e1 WHERE id = 7`, "hash(42.0) encrypt(42.0)"},
		{`INSERT INTO users (email) VALUES (00042::text)`, "encrypt(42) hash(42)"},
	} {
		seen, p, err := render(tt.sql)
		if p.Kind == KindRefuse {
			// Refusing is always safe, and the analyzer may refuse bit
			// strings; a number written as PostgreSQL reads it is a value.
			if !strings.Contains(tt.sql, "'") {
				t.Errorf("%s: refused: %v", tt.sql, p.Refusal)
			}
			continue
		}
		if err != nil || strings.Join(seen, " ") != tt.want {
			t.Errorf("%s: transform saw %v (%v), want %s", tt.sql, seen, err, tt.want)
		}
	}
	for _, tt := range []struct{ sql, code string }{
		{`INSERT INTO users (email) VALUES (0x1F)`, "0A000"},
		{`INSERT INTO users (email) VALUES (1_000)`, "0A000"},
		{`UPDATE users SET email = 0b101 WHERE id = 1`, "0A000"},
		{`INSERT INTO users (email) VALUES (1e1000000000)`, "22003"},
		{`INSERT INTO users (email) VALUES (X'1G')`, "22P02"},
	} {
		seen, p, err := render(tt.sql)
		if p.Kind == KindRefuse {
			continue
		}
		var s interface{ SQLState() string }
		if err == nil || len(seen) > 0 || !errors.As(err, &s) || s.SQLState() != tt.code {
			t.Errorf("%s: transform saw %v, error %v; want SQLSTATE %s", tt.sql, seen, err, tt.code)
			continue
		}
		if !strings.HasPrefix(err.Error(), "pgveil: ") || strings.Contains(err.Error(), "1F") || strings.Contains(err.Error(), "1G") {
			t.Errorf("%s: error message %q", tt.sql, err)
		}
	}
}

var canonicalNumber = regexp.MustCompile(`^(0|[1-9][0-9]*)(\.[0-9]+)?$`)

// FuzzNumberValue: the text of any number constant Value accepts is
// canonical (no leading zero, no exponent), equals the constant, and has
// numeric's display scale.
func FuzzNumberValue(f *testing.F) {
	for _, s := range []string{"0", "00042", "4.2e1", "1.50", "1.5e-3", "1.20e1", "5.", ".5", "1e400", "0.00e1", "0x1F", "1_000", "1.e5", "123.456e-7"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) == 0 || len(s) > 200 || !(isDigit(s[0]) || s[0] == '.') {
			return
		}
		sql := "SELECT " + s
		_, lits := Normalize(sql)
		if len(lits) != 1 || sql[lits[0].Start:lits[0].End] != s {
			return
		}
		mant, exp := s, 0
		if i := strings.IndexAny(s, "eE"); i >= 0 {
			mant = s[:i]
			e := strings.TrimLeft(strings.TrimLeft(s[i+1:], "+-"), "0")
			if len(e) > 4 {
				return // big.Rat would compute 10^exp
			}
			for _, c := range e {
				exp = exp*10 + int(c-'0')
			}
			if strings.HasPrefix(s[i+1:], "-") {
				exp = -exp
			}
		}
		v, err := lits[0].Value(sql)
		if err != nil {
			if strings.ContainsAny(s, "_xXoObB") || errors.Is(err, ErrNumberRange) {
				return
			}
			t.Fatalf("Value(%q): %v", s, err)
		}
		if !canonicalNumber.Match(v) {
			t.Fatalf("Value(%q) = %q, not canonical", s, v)
		}
		in, ok1 := new(big.Rat).SetString(s)
		out, ok2 := new(big.Rat).SetString(string(v))
		if !ok1 || !ok2 || in.Cmp(out) != 0 {
			t.Fatalf("Value(%q) = %q: a different number", s, v)
		}
		frac := 0
		if i := strings.IndexByte(mant, '.'); i >= 0 {
			frac = len(mant) - i - 1
		}
		scale := max(frac-exp, 0)
		got := 0
		if i := strings.IndexByte(string(v), '.'); i >= 0 {
			got = len(v) - i - 1
		}
		if got != scale {
			t.Fatalf("Value(%q) = %q: scale %d, want %d", s, v, got, scale)
		}
	})
}

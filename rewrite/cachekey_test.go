package rewrite

import (
	"strings"
	"testing"
)

// A statement with constants and the same statement with parameters in
// their place normalize to the same text; their plans must not be shared.
func TestCacheKeyLiteralsVersusParams(t *testing.T) {
	r := New(mustRules(t, Options{}), 64)
	pairs := [][2]string{
		{"INSERT INTO users (email, full_name) VALUES ('a@x.io', '1')", "INSERT INTO users (email, full_name) VALUES ($1, $2)"},
		{"INSERT INTO users (email, full_name) VALUES ($1, '1')", "INSERT INTO users (email, full_name) VALUES ($1, $2)"},
		{"SELECT id FROM users WHERE email = 'x@x.io' AND id = 3", "SELECT id FROM users WHERE email = $1 AND id = $2"},
	}
	for _, pair := range pairs {
		for _, order := range [][2]string{{pair[0], pair[1]}, {pair[1], pair[0]}} {
			r := New(r.Rules(), 64)
			for _, sql := range order {
				p, lits, _, err := r.Plan(sql)
				if err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
				checkPlanInvariants(t, sql, sql, p, lits)
				if p.NumClientParams > 0 && len(p.ClientParams) == 0 && len(p.Hidden) == 0 {
					t.Fatalf("%s (after %s): parameters of the encrypted column are not transformed", sql, order[0])
				}
			}
		}
	}
}

// Parentheses around a compared value, as pgjdbc's simple mode writes them.
func TestParenthesizedValues(t *testing.T) {
	r := mustRules(t, Options{})
	for sql, want := range map[string]string{
		"SELECT id FROM users WHERE email = ('x')":              "email_hash = ",
		"SELECT id FROM users WHERE email = (('x'))":            "email_hash = ",
		"SELECT id FROM users WHERE email IN ('a')":             "email_hash IN (",
		"SELECT id FROM users WHERE email IN (('a'), ('b'))":    "email_hash IN (",
		"SELECT id FROM users WHERE email IN ('a', ('b'))":      "email_hash IN (",
		"SELECT id FROM users WHERE (email = ('x')) AND id = 1": "email_hash = ",
	} {
		p, lits, err := r.Analyze(sql)
		if err != nil || p.Kind != KindRewrite {
			t.Fatalf("%s: kind %v err %v refusal %v", sql, p.Kind, err, p.Refusal)
		}
		out, err := p.Render(nil, sql, lits, func(a Action, v []byte) ([]byte, error) { return []byte("H"), nil })
		if err != nil || !strings.Contains(string(out), want) || strings.Contains(string(out), "'a'") || strings.Contains(string(out), "'x'") {
			t.Fatalf("%s -> %s (%v)", sql, out, err)
		}
		checkPlanInvariants(t, sql, sql, p, lits)
	}
}

// `email = '42'` and `email = 42` normalize to one text, but PostgreSQL has
// no operator text = integer: the second must get PostgreSQL's error
// whichever of them the cache (or a session's memo) saw first.
func TestCacheKeyConstantTypes(t *testing.T) {
	texts := []struct {
		sql  string
		code string // "" for a rewrite
	}{
		{"SELECT id FROM users WHERE email = '42'", ""},
		{"SELECT id FROM users WHERE email = 42", "42883"},
		{"SELECT id FROM users WHERE email = 4200000000", "42883"},
		{"SELECT id FROM users WHERE email = 4.2", "42883"},
		{"SELECT id FROM users WHERE email = E'4'", ""},
		{"SELECT id FROM users WHERE email = B'101'", "0A000"},
		{"SELECT id FROM users WHERE email = '43'", ""},
	}
	rules := mustRules(t, Options{})
	for first := range texts {
		r := New(rules, 64)
		var sc Scratch
		for i := range texts {
			c := texts[(first+i)%len(texts)]
			for _, scratch := range []*Scratch{nil, &sc} {
				p, _, _, err := r.PlanScratch(c.sql, scratch)
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case c.code == "" && p.Kind != KindRewrite:
					t.Errorf("%s (first %s): %v %v, want a rewrite", c.sql, texts[first].sql, p.Kind, p.Refusal)
				case c.code != "" && (p.Kind != KindRefuse || p.Refusal.SQLState() != c.code):
					t.Errorf("%s (first %s): %v %v, want %s", c.sql, texts[first].sql, p.Kind, p.Refusal, c.code)
				}
			}
		}
	}
}

func TestConstType(t *testing.T) {
	for s, want := range map[string]byte{
		"'x'": ctString, "E'x'": ctString, "N'x'": ctString, "$$x$$": ctString, "U&'x'": ctString,
		"B'1'": ctBit, "X'1F'": ctBit, "0": ctInteger, "2147483647": ctInteger, "002147483647": ctInteger,
		"2147483648": ctBigint, "9223372036854775807": ctBigint, "9223372036854775808": ctNumeric,
		"1.5": ctNumeric, ".5": ctNumeric, "1e3": ctNumeric, "1_000": ctNumeric,
	} {
		if got := constType(s, Literal{Start: 0, End: len(s)}); got != want {
			t.Errorf("constType(%s) = %c, want %c", s, got, want)
		}
	}
}

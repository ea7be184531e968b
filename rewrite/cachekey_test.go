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

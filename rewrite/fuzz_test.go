package rewrite

import (
	"strings"
	"testing"
)

func FuzzRewrite(f *testing.F) {
	for _, c := range cases {
		f.Add(c.sql)
	}
	f.Add(`INSERT INTO users (email, full_name) VALUES ('secret-one', E'secret\\two'), ($$secret3$$, 'x')`)
	f.Add(`UPDATE users SET email = 'secret-upd' WHERE id = 1`)
	f.Add(`SELECT 1; SELECT 'x'`)
	rw := New(mustRules(f, Options{}), 256)
	f.Fuzz(func(t *testing.T, sql string) {
		p, lits, res, err := rw.Plan(sql)
		if err != nil {
			t.Fatalf("error %v for %q", err, sql)
		}
		if !rw.Rules().Mentions(sql) {
			if p.Kind != KindPassthrough || res != CacheSkip {
				t.Fatalf("statement on no configured table not passed through: %q", sql)
			}
			return
		}
		if p.Kind != KindRewrite {
			return
		}
		out, err := p.Render(nil, sql, lits, func(a Action, v []byte) ([]byte, error) { return []byte("TOKEN"), nil })
		if err != nil {
			return // undecodable constant: the proxy answers an error
		}
		// every literal aimed at an encrypted column is gone from the output
		rendered := string(out)
		for _, s := range p.Slots {
			if s.Action.Op == OpNone {
				continue
			}
			v, err := lits[s.Literal].Value(sql)
			if err != nil || len(v) < 4 {
				continue // short values may occur by chance in the SQL text
			}
			if strings.Contains(rendered, string(v)) && !strings.Contains(p.SQL, string(v)) && !otherLiteralHolds(sql, lits, p, string(v)) {
				t.Fatalf("encrypted value %q survives in %q (from %q)", v, rendered, sql)
			}
			raw := sql[lits[s.Literal].Start:lits[s.Literal].End]
			if strings.Contains(rendered, raw) && !strings.Contains(p.SQL, raw) && !otherLiteralHolds(sql, lits, p, raw) {
				t.Fatalf("encrypted literal %s survives in %q", raw, rendered)
			}
		}
	})
}

// otherLiteralHolds reports whether s appears in a literal rendered verbatim.
func otherLiteralHolds(sql string, lits []Literal, p *Plan, s string) bool {
	for _, sl := range p.Slots {
		if sl.Action.Op == OpNone && strings.Contains(sql[lits[sl.Literal].Start:lits[sl.Literal].End], s) {
			return true
		}
	}
	return false
}

func TestEncryptedLiteralsNeverSurvive(t *testing.T) {
	rw := New(mustRules(t, Options{}), 64)
	for _, sql := range []string{
		`INSERT INTO users (email, full_name) VALUES ('secret-one', E'secret\\two'), ($$secret3$$, 'secret4')`,
		`UPDATE users SET email = 'secret-upd', full_name = 'secret-fn' WHERE email = 'secret-lookup'`,
		`INSERT INTO chat_history (user_id, message) VALUES (1, 'secret-msg') ON CONFLICT (id) DO UPDATE SET message = EXCLUDED.message`,
		`SELECT id FROM users WHERE email IN ('secret-a', 'secret-b') OR email = ANY('{secret-c}')`,
		`BEGIN; INSERT INTO tasks (title, description) VALUES ('secret-t', 'secret-d'); COMMIT`,
	} {
		p, lits, _, err := rw.Plan(sql)
		if err != nil || p.Kind != KindRewrite {
			t.Fatalf("%s: %v %v", sql, p.Kind, err)
		}
		out, err := p.Render(nil, sql, lits, func(Action, []byte) ([]byte, error) { return []byte("TOKEN"), nil })
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "secret") {
			t.Errorf("plaintext survives: %s", out)
		}
	}
}

// FuzzPlanMemo: a statement planned right after another, with the scratch
// that remembers the first, gets the plan and constants a fresh scratch
// gets.
func FuzzPlanMemo(f *testing.F) {
	pairs := [][2]string{
		{`SELECT email FROM users WHERE email = 'a@b.c'`, `SELECT email FROM users WHERE email = 'other@example.com'`},
		{`SELECT email FROM users WHERE email = 'a@b.c'`, `SELECT email FROM users WHERE email = 'a''b'`},
		{`SELECT email FROM users WHERE email = 'a@b.c'`, `SELECT email FROM users WHERE email = E'a\\b'`},
		{`SELECT email FROM users WHERE email = 'a'` + "\n" + `'b'`, `SELECT email FROM users WHERE email = 'a'` + "\n" + `'c'`},
		{`SELECT * FROM users WHERE id = 5 LIMIT 10`, `SELECT * FROM users WHERE id = 5e1 LIMIT 10`},
		{`SELECT * FROM users WHERE id = 5 LIMIT 10`, `SELECT * FROM users WHERE id = 5. LIMIT 10`},
		{`SELECT * FROM users WHERE id = 5 e1`, `SELECT * FROM users WHERE id = 5e1`},
		{`INSERT INTO users (email, full_name) VALUES ('x', 'y')`, `INSERT INTO users (email, full_name) VALUES ('x', $$y$$)`},
		{`SELECT interval '1 day', email FROM users WHERE email = 'q'`, `SELECT interval '2 days', email FROM users WHERE email = 'q'`},
		{`SELECT email FROM users WHERE email = 'a' -- c`, `SELECT email FROM users WHERE email = 'b' -- c`},
		{`SELECT email FROM users WHERE email = 'a'`, `SELECT email FROM users WHERE email = 'a`},
		{`SELECT email FROM users WHERE email = $1 AND id = 3`, `SELECT email FROM users WHERE email = $1 AND id = 33`},
	}
	for _, p := range pairs {
		f.Add(p[0], p[1])
	}
	rw := New(mustRules(f, Options{}), 1<<16)
	f.Fuzz(func(t *testing.T, a, b string) {
		checkMemo(t, rw, a, b)
		// b in place of a's first constant: a near miss or a match.
		if _, lits := Normalize(a); len(lits) > 0 {
			checkMemo(t, rw, a, a[:lits[0].Start]+b+a[lits[0].End:])
		}
	})
}

// checkMemo: b planned right after a with one scratch is planned as with a
// fresh scratch.
func checkMemo(t *testing.T, rw *Rewriter, a, b string) {
	var sc Scratch
	rw.PlanScratch(a, &sc)
	p1, l1, _, err1 := rw.PlanScratch(b, &sc)
	l1 = append([]Literal(nil), l1...)
	p2, l2, _, err2 := rw.PlanScratch(b, &Scratch{})
	if (err1 == nil) != (err2 == nil) {
		t.Fatalf("after %q, %q: error %v; fresh: %v", a, b, err1, err2)
	}
	if err1 != nil {
		return
	}
	if p1 != p2 || len(l1) != len(l2) {
		t.Fatalf("after %q, %q planned as %+v %v; fresh: %+v %v", a, b, p1, l1, p2, l2)
	}
	for i := range l1 {
		if l1[i] != l2[i] {
			t.Fatalf("after %q, %q: constant %d at %v; fresh: %v", a, b, i, l1[i], l2[i])
		}
	}
}

// scanQuotedByByte is scanQuoted as the byte-at-a-time loop it replaced.
func scanQuotedByByte(s string, i int, backslash bool) (int, tokKind) {
	i++
	for i < len(s) {
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

// FuzzScanQuoted: scanQuoted's skipping to the next quote or backslash
// ends every string where the byte-at-a-time scan does.
func FuzzScanQuoted(f *testing.F) {
	for _, s := range []string{`'abc'`, `'it''s'`, `'a\'b'`, `'a\\'`, `'unterminated`, `''''`, `'\`, `'x''`} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, backslash bool) {
		s = "'" + s
		i, k := scanQuoted(s, 0, backslash)
		j, l := scanQuotedByByte(s, 0, backslash)
		if i != j || k != l {
			t.Fatalf("scanQuoted(%q, %v) = %d %v, byte by byte %d %v", s, backslash, i, k, j, l)
		}
	})
}

package rewrite

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		sql, key string
		vals     []string
	}{
		{`SELECT 1`, `SELECT $1`, []string{"1"}},
		{`SELECT * FROM t WHERE a = 'x' AND b = $2`, `SELECT * FROM t WHERE a = $3 AND b = $2`, []string{"x"}},
		{`SELECT 'it''s', E'a\nb\\c\x41\101\u00e9', $$dollar 'q'$$, $tag$x$y$tag$`, `SELECT $1, $2, $3, $4`,
			[]string{"it's", "a\nb\\cAAé", "dollar 'q'", "x$y"}},
		{`SELECT U&'d\0061t\+000061', U&'d!0061t' UESCAPE '!'`, `SELECT $1, $2`, []string{"data", "dat"}},
		{"SELECT 'a'\n  'b'", `SELECT $1`, []string{"ab"}},
		{`SELECT 'a' 'b'`, `SELECT $1 $2`, []string{"a", "b"}},
		// numbers as PostgreSQL prints them; 0x and _ are cut out but refused ("!")
		{`SELECT 1.5e3, .5, 0x1F, 1_000, a.b, t1.c2`, `SELECT $1, $2, $3, $4, a.b, t1.c2`, []string{"1500", "0.5", "!", "!"}},
		{`SELECT "it's" FROM "t""x" -- 'no'` + "\n/* 'no' /* nested 'x' */ 5 */ WHERE x = 5", `SELECT "it's" FROM "t""x" -- 'no'` + "\n/* 'no' /* nested 'x' */ 5 */ WHERE x = $1", []string{"5"}},
		{`SELECT interval '1 day', DATE '2020-01-01', '1 day'::interval`, `SELECT interval '1 day', DATE '2020-01-01', $1::interval`, []string{"1 day"}},
		{`CREATE TABLE t (a varchar(255), b numeric(10, 2) DEFAULT 5)`, `CREATE TABLE t (a varchar(255), b numeric(10, 2) DEFAULT $1)`, []string{"5"}},
		{`SELECT B'1010', X'1F', N'nat  '`, `SELECT $1, $2, $3`, []string{"1010", "00011111", "nat"}},
		{"SELECT B'10'\n'01', X'1'\n'F'", `SELECT $1, $2`, []string{"1001", "00011111"}},
		{`SELECT $1, $10 FROM t LIMIT 5`, `SELECT $1, $10 FROM t LIMIT $11`, []string{"5"}},
		{`SELECT x FROM t WHERE y LIKE 'a%' ESCAPE '\'`, `SELECT x FROM t WHERE y LIKE $1 ESCAPE $2`, []string{"a%", `\`}},
		{`SELECT a$1 FROM t`, `SELECT a$1 FROM t`, nil},
		{`SELECT 'unterminated`, `SELECT 'unterminated`, nil},
	}
	for _, tt := range tests {
		key, lits := Normalize(tt.sql)
		if key != tt.key {
			t.Errorf("Normalize(%q)\n got %q\nwant %q", tt.sql, key, tt.key)
			continue
		}
		if len(lits) != len(tt.vals) {
			t.Errorf("Normalize(%q): %d literals, want %d", tt.sql, len(lits), len(tt.vals))
			continue
		}
		for i, l := range lits {
			v, err := l.Value(tt.sql)
			if tt.vals[i] == "!" {
				if err == nil {
					t.Errorf("Normalize(%q): literal %d = %q, want an error", tt.sql, i, v)
				}
				continue
			}
			if err != nil || string(v) != tt.vals[i] {
				t.Errorf("Normalize(%q): literal %d = %q, %v; want %q", tt.sql, i, v, err, tt.vals[i])
			}
		}
	}
}

func TestNormalizeNoAllocWithoutLiterals(t *testing.T) {
	sql := `SELECT id, email FROM users WHERE email = $1`
	if n := testing.AllocsPerRun(100, func() { Normalize(sql) }); n != 0 {
		t.Errorf("Normalize allocates %v times for a text without constants", n)
	}
}

func TestMentions(t *testing.T) {
	r := mustRules(t, Options{})
	for sql, want := range map[string]bool{
		`SELECT 1`:                          false,
		`SELECT * FROM Users`:               true,
		`SELECT * FROM "users"`:             true,
		`SELECT * FROM public.users`:        true,
		`SELECT * FROM users_archive`:       false,
		`SELECT * FROM myusers`:             false,
		`SELECT * FROM x -- users`:          true,
		`SELECT * FROM U&"\0075sers"`:       true,
		`INSERT INTO chat_history VALUES 1`: true,
		`SELECT nextval('tasks_id_seq')`:    false,
	} {
		if got := r.Mentions(sql); got != want {
			t.Errorf("Mentions(%q) = %v, want %v", sql, got, want)
		}
	}
}

func TestRender(t *testing.T) {
	r := mustRules(t, Options{})
	sql := `INSERT INTO users (email, full_name) VALUES ('o''brien@x', E'tab\there\\') RETURNING id -- 'c'`
	p, lits, err := r.Analyze(sql)
	if err != nil || p.Kind != KindRewrite {
		t.Fatalf("plan: %v %v", p.Kind, err)
	}
	var seen []string
	out, err := p.Render([]byte("prefix:"), sql, lits, func(a Action, v []byte) ([]byte, error) {
		seen = append(seen, a.Op.String()+"("+string(v)+")")
		switch a.Op {
		case OpEncrypt:
			return []byte("gAAAA'" + string(v)), nil
		case OpHash:
			return []byte(`h\` + a.Domain), nil
		}
		t.Fatalf("unexpected op %v", a.Op)
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `prefix:INSERT INTO users (email, full_name, email_hash) VALUES ('gAAAA''o''brien@x', E'gAAAA''tab	here\\', E'h\\public.users.email') RETURNING id -- 'c'`
	if string(out) != want {
		t.Errorf("Render:\n got %s\nwant %s", out, want)
	}
	if got := strings.Join(seen, " "); got != `encrypt(o'brien@x) encrypt(tab	here\) hash(o'brien@x)` {
		t.Errorf("transform calls: %s", got)
	}
	if _, err := parseSQL(string(out[len("prefix:"):])); err != nil {
		t.Errorf("rendered SQL does not parse: %v", err)
	}
	// OpNone slots are rendered verbatim and never transformed
	sql2 := `SELECT id FROM users WHERE email = $1 AND id = 42 LIMIT 10`
	p2, lits2, _ := r.Analyze(sql2)
	out2, err := p2.Render(nil, sql2, lits2, func(Action, []byte) ([]byte, error) {
		t.Fatal("transform called for OpNone")
		return nil, nil
	})
	if err != nil || string(out2) != `SELECT id FROM users WHERE email_hash = $1 AND id = 42 LIMIT 10` {
		t.Errorf("Render: %s %v", out2, err)
	}
	// transform errors come back unchanged
	boom := errBoom{}
	if _, err := p.Render(nil, sql, lits, func(Action, []byte) ([]byte, error) { return nil, boom }); err != boom {
		t.Errorf("transform error: %v", err)
	}
}

type errBoom struct{}

func (errBoom) Error() string { return "boom" }

func TestCache(t *testing.T) {
	rw := New(mustRules(t, Options{}), 64)
	p, _, res, err := rw.Plan(`SELECT 1`)
	if err != nil || res != CacheSkip || p.Kind != KindPassthrough {
		t.Fatalf("skip: %v %v %v", p.Kind, res, err)
	}
	p1, lits1, res, _ := rw.Plan(`SELECT id FROM users WHERE email = 'a@x'`)
	if res != CacheMiss || p1.Kind != KindRewrite {
		t.Fatalf("first: %v %v", res, p1.Kind)
	}
	p2, lits2, res, _ := rw.Plan(`SELECT id FROM users WHERE email = 'other@y'`)
	if res != CacheHit || p2 != p1 {
		t.Fatalf("second: %v same=%v", res, p1 == p2)
	}
	if v, _ := lits1[0].Value(`SELECT id FROM users WHERE email = 'a@x'`); string(v) != "a@x" {
		t.Errorf("lits1 = %q", v)
	}
	if v, _ := lits2[0].Value(`SELECT id FROM users WHERE email = 'other@y'`); string(v) != "other@y" {
		t.Errorf("lits2 = %q", v)
	}
	// refusals are cached too
	if p, _, res, _ := rw.Plan(`SELECT id FROM users ORDER BY email`); res != CacheMiss || p.Kind != KindRefuse {
		t.Fatal("refusal miss")
	}
	if _, _, res, _ := rw.Plan(`SELECT id FROM users ORDER BY email`); res != CacheHit {
		t.Fatal("refusal hit")
	}
	// texts whose normalized form does not parse are cached by exact text
	a := `COPY users (email) FROM STDIN WITH (FORMAT csv, ESCAPE '\')`
	b := `COPY users (email) FROM STDIN WITH (FORMAT csv, ESCAPE '!')`
	pa, _, res, _ := rw.Plan(a)
	if res != CacheMiss || pa.Copy == nil || pa.Copy.Escape != '\\' {
		t.Fatalf("exact a: %v %+v", res, pa.Copy)
	}
	pb, _, res, _ := rw.Plan(b)
	if res != CacheMiss || pb.Copy == nil || pb.Copy.Escape != '!' {
		t.Fatalf("exact b: %v %+v", res, pb.Copy)
	}
	if pa2, _, res, _ := rw.Plan(a); res != CacheHit || pa2 != pa {
		t.Fatalf("exact a again: %v", res)
	}
	// bounded
	small := New(mustRules(t, Options{}), 16)
	for i := 0; i < 200; i++ {
		small.Plan(`SELECT id FROM users WHERE email = $1 AND c` + strings.Repeat("x", i) + ` = 1`)
	}
	if n := small.Cache().Len(); n > 16 {
		t.Errorf("cache holds %d plans, want <= 16", n)
	}
}

func TestCacheConcurrent(t *testing.T) {
	rw := New(mustRules(t, Options{}), 32)
	stmts := []string{
		`SELECT id FROM users WHERE email = 'a'`,
		`INSERT INTO users (email, full_name) VALUES ($1, $2)`,
		`SELECT * FROM tasks WHERE title IS NULL`,
		`SELECT 1`,
		`UPDATE users SET email = $1 WHERE id = $2`,
		`SELECT id FROM users ORDER BY email`,
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				sql := stmts[(g+i)%len(stmts)]
				if i%7 == 0 {
					sql += " -- " + strings.Repeat("y", i%50)
				}
				p, lits, _, err := rw.Plan(sql)
				if err != nil {
					t.Error(err)
					return
				}
				if p.Kind == KindRewrite {
					if _, err := p.Render(nil, sql, lits, func(Action, []byte) ([]byte, error) { return []byte("T"), nil }); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
}

func TestLiteralValueErrors(t *testing.T) {
	for _, s := range []string{`E'\u12'`, `U&'\12'`, `E'\u0000'`, `'x`, `B'12'`, `X'1G'`, `1e`, `1.5.5`, `0x1F`} {
		l := Literal{Start: 0, End: len(s)}
		if _, err := l.Value(s); err == nil {
			t.Errorf("Value(%q): no error", s)
		}
	}
	if _, err := (Literal{Start: 5, End: 2}).Value("abc"); err == nil {
		t.Error("out of range literal: no error")
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{`SELECT 'a''b', E'\x41', $$x$$, 1.5, $1`, `U&'\0041' UESCAPE '!'`, `/* /* */ 'x' */ 'y'`,
		`SELECT "a""b", 'c'` + "\n'd'", `$a$ $b$ $a$`, `E'\`, `0x`, `1e`, `'`, `$`, `interval '1'`,
		`SELECT '', 'a\b', e'x', n'y', 'u4242@example.com'`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		key, lits := Normalize(sql)
		prev := 0
		for _, l := range lits {
			if l.Start < prev || l.End <= l.Start || l.End > len(sql) {
				t.Fatalf("bad span %+v (prev end %d) in %q", l, prev, sql)
			}
			prev = l.End
			v, err := l.Value(sql)
			// Render's zero-copy view must agree with the decoder
			// wherever it applies.
			if view, ok := l.view(sql); ok && (err != nil || !bytes.Equal(view, v) || view == nil) {
				t.Fatalf("view %q of %q, Value %q (%v)", view, sql[l.Start:l.End], v, err)
			}
		}
		if len(lits) == 0 && key != sql {
			t.Fatalf("key changed without literals")
		}
		// the key keeps everything outside the literals
		rest := bytes.Buffer{}
		p := 0
		for _, l := range lits {
			rest.WriteString(sql[p:l.Start])
			p = l.End
		}
		rest.WriteString(sql[p:])
		if len(key) < rest.Len() {
			t.Fatalf("key shorter than the non-literal text")
		}
	})
}

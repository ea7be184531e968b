package rewrite

import (
	"strings"
	"testing"

	"github.com/pgveil/pgveil/config"
)

func searchPathRules(t *testing.T) *Rules {
	t.Helper()
	r, err := Compile([]config.Table{
		{Table: "users", Schema: "public", Name: "users", Columns: []config.Column{{Column: "email", BlindIndex: "email_hash"}}},
		{Table: "app.accounts", Schema: "app", Name: "accounts", Columns: []config.Column{{Column: "secret"}}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A name without a schema is the table the session's search path finds.
func TestSearchPathResolution(t *testing.T) {
	r := searchPathRules(t)
	inApp := NewSearchPath(map[string]string{"accounts": "app", "users": "public"})
	inOther := NewSearchPath(map[string]string{"users": "other"})
	for _, c := range []struct {
		name, sql   string
		sp          *SearchPath
		kind        Kind
		unqualified bool
	}{
		{"default/unqualified app table", `INSERT INTO accounts (secret) VALUES ('s')`, nil, KindPassthrough, true},
		{"app path/unqualified app table", `INSERT INTO accounts (secret) VALUES ('s')`, inApp, KindRewrite, true},
		{"default/qualified app table", `INSERT INTO app.accounts (secret) VALUES ('s')`, nil, KindRewrite, false},
		{"other path/qualified public table", `INSERT INTO public.users (email) VALUES ('e')`, inOther, KindRewrite, false},
		{"other path/unqualified name of a public table", `INSERT INTO users (email) VALUES ('e')`, inOther, KindPassthrough, true},
		{"other path/read", `SELECT id FROM users WHERE email = 'e'`, inOther, KindPassthrough, true},
		{"app path/public table", `SELECT id FROM users WHERE email = 'e'`, inApp, KindRewrite, true},
		{"cte shadows", `WITH accounts AS (SELECT 1 AS secret) SELECT secret FROM accounts`, inApp, KindPassthrough, false},
	} {
		p, _, err := r.AnalyzeIn(c.sql, c.sp)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if p.Kind != c.kind || p.Unqualified != c.unqualified {
			t.Errorf("%s: %s\n=> kind %d unqualified %v; want kind %d unqualified %v\n%s", c.name, c.sql, p.Kind, p.Unqualified, c.kind, c.unqualified, summary(p))
		}
	}
	if NewSearchPath(map[string]string{"users": "public"}) != nil {
		t.Error("a path resolving every name to public is not the default")
	}
	if !inApp.Equal(NewSearchPath(map[string]string{"accounts": "app"})) || inApp.Equal(inOther) || inApp.Equal(nil) {
		t.Error("Equal")
	}
}

// Statements that may change how names resolve say so.
func TestSearchPathChange(t *testing.T) {
	r := searchPathRules(t)
	for _, c := range []struct {
		sql  string
		want bool
	}{
		{`SET search_path = app, public`, true},
		{`SET LOCAL search_path TO app`, true},
		{`set search_path to default`, true},
		{`RESET search_path`, true},
		{`RESET ALL`, true},
		{`SET ROLE app_user`, true},
		{`RESET ROLE`, true},
		{`SET SESSION AUTHORIZATION app_user`, true},
		{`DISCARD ALL`, true},
		{`DISCARD TEMP`, true},
		{`SELECT pg_catalog.set_config('search_path', 'app', false)`, true},
		{`SELECT set_config('role', 'x', true), email FROM users`, true},
		{`SET search_path = app; INSERT INTO accounts (secret) VALUES ('s')`, true},
		{`SELECT set_config($1, $2, false)`, true},
		{`DISCARD PLANS`, false},
		{`RESET work_mem`, false},
		{`SET work_mem = '64MB'`, false},
		{`SELECT role FROM members`, false},
		{`SELEC role FROM members`, false},
		{`SELECT email FROM users`, false},
	} {
		p, _, err := r.Analyze(c.sql)
		if err != nil {
			t.Fatal(err)
		}
		if p.SearchPathChange != c.want {
			t.Errorf("%s: SearchPathChange %v, want %v", c.sql, p.SearchPathChange, c.want)
		}
	}
}

// The cache keeps one plan per resolution; sessions on the default share.
func TestSearchPathCache(t *testing.T) {
	r := searchPathRules(t)
	rw := New(r, 64)
	sql := `INSERT INTO accounts (secret) VALUES ('s')`
	var def, app Scratch
	app.SearchPath = NewSearchPath(map[string]string{"accounts": "app"})
	for i := 0; i < 3; i++ {
		pd, _, _, err := rw.PlanScratch(sql, &def)
		if err != nil {
			t.Fatal(err)
		}
		pa, _, _, err := rw.PlanScratch(sql, &app)
		if err != nil {
			t.Fatal(err)
		}
		if pd.Kind != KindPassthrough || pa.Kind != KindRewrite {
			t.Fatalf("round %d: default %d app %d", i, pd.Kind, pa.Kind)
		}
	}
	// the memo of a scratch whose path changed is not used
	app.SearchPath = nil
	if p, _, _, _ := rw.PlanScratch(strings.Replace(sql, "'s'", "'t'", 1), &app); p.Kind != KindPassthrough {
		t.Fatalf("stale memo: %d", p.Kind)
	}
}

// A statement naming a configured table without its schema after DDL or a
// change of search path in the same text is marked: it was planned with
// what the name found before either ran.
func TestSearchPathAfterChange(t *testing.T) {
	r := searchPathRules(t)
	for _, c := range []struct {
		sql        string
		ddl, path  bool
		unqualfied bool
	}{
		{`CREATE TABLE app.items (id int); INSERT INTO accounts (secret) VALUES ('s')`, true, false, true},
		{`DROP SCHEMA staging CASCADE; INSERT INTO users (email) VALUES ('e')`, true, false, true},
		{`SET search_path = app; INSERT INTO accounts (secret) VALUES ('s')`, false, true, true},
		{`INSERT INTO accounts (secret) VALUES ('s'); SET search_path = app`, false, false, true},
		{`CREATE TEMP TABLE users (email text)`, false, false, true},
		{`CREATE TABLE app.items (id int); INSERT INTO app.accounts (secret) VALUES ('s')`, false, false, false},
		{`SET search_path = app; SELECT 1`, false, false, false},
	} {
		p, _, err := r.Analyze(c.sql)
		if err != nil {
			t.Fatal(err)
		}
		if p.UnqualifiedAfterDDL != c.ddl || p.UnqualifiedAfterPathChange != c.path || p.Unqualified != c.unqualfied {
			t.Errorf("%s: after DDL %v, after path %v, unqualified %v", c.sql, p.UnqualifiedAfterDDL, p.UnqualifiedAfterPathChange, p.Unqualified)
		}
	}
}

// A text the skip scan lets through only for a search-path word is not
// refused for a syntax error pgveil's parser finds: PostgreSQL judges it.
func TestSearchPathWordParseError(t *testing.T) {
	r := searchPathRules(t)
	for sql, want := range map[string]Kind{
		`SELEC role FROM members`:      KindPassthrough,
		`SELEC email FROM users`:       KindRefuse,
		`RESET ALL ALL`:                KindPassthrough,
		`SET search_path TO app users`: KindRefuse,
	} {
		p, _, err := r.Analyze(sql)
		if err != nil || p.Kind != want {
			t.Errorf("%s: kind %d, want %d (%v)", sql, p.Kind, want, err)
		}
	}
}

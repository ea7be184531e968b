package proxy

import (
	"testing"

	"github.com/pgveil/pgveil/config"
)

func TestBuildCatalogSearchPath(t *testing.T) {
	tables := []config.Table{
		{Schema: "public", Name: "users", Columns: []config.Column{{Column: "email"}}},
		{Schema: "app", Name: "accounts", Columns: []config.Column{{Column: "secret"}}},
	}
	row := func(f ...string) [][]byte {
		var r [][]byte
		for _, s := range f {
			r = append(r, []byte(s))
		}
		return r
	}
	for _, c := range []struct {
		name          string
		rows          [][][]byte
		users, accts  string
		dynamic       bool
		defaultLookup bool
	}{
		{"default path", [][][]byte{row("0", "-1", "public", "users", "1"), row("0", "-1", "", "accounts", "1")}, "public", "app", false, false},
		{"app first", [][][]byte{row("0", "-1", "app", "users", "2"), row("0", "-1", "app", "accounts", "1")}, "app", "app", true, false},
		{"temp table hides", [][][]byte{row("0", "-1", "pg_temp_3", "users", "2"), row("0", "-1", "app", "accounts", "1")}, "pg_temp_3", "app", true, false},
		{"found nowhere", [][][]byte{row("0", "-1", "", "users", "0"), row("0", "-1", "public", "accounts", "1")}, "public", "public", false, true},
	} {
		cat := buildCatalog(tables, c.rows, 1)
		sp := cat.searchPath
		if got := sp.Schema("users"); got != c.users {
			t.Errorf("%s: users -> %q, want %q", c.name, got, c.users)
		}
		if got := sp.Schema("accounts"); got != c.accts {
			t.Errorf("%s: accounts -> %q, want %q", c.name, got, c.accts)
		}
		if cat.pathDynamic != c.dynamic {
			t.Errorf("%s: dynamic %v", c.name, cat.pathDynamic)
		}
		if (sp == nil) != c.defaultLookup {
			t.Errorf("%s: default resolution %v", c.name, sp == nil)
		}
	}
}

package rewrite

import (
	"sort"
	"strings"
)

// SearchPath is how one session resolves the names of configured tables
// written without a schema: PostgreSQL looks them up along the session's
// search_path (and its temporary schema first), so "accounts" may mean
// app.accounts in one session and public.accounts, or a temporary table,
// in another. The proxy learns it from the database (to_regclass) with its
// catalog and passes it to Rewriter.PlanScratch through the Scratch.
//
// A nil *SearchPath is the default: a name without a schema is the table of
// that name in public. Plans are cached per SearchPath identity (the schemas
// that differ from the default), so sessions on the default path share them.
type SearchPath struct {
	schemas map[string]string // table name -> schema it resolves to
	id      string
}

// NewSearchPath returns the resolution where each name in schemas resolves
// to the schema given; names not listed resolve to public. It returns nil
// (the default) when every listed name resolves to public.
func NewSearchPath(schemas map[string]string) *SearchPath {
	var names []string
	for n, s := range schemas {
		if s != "public" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	sp := &SearchPath{schemas: make(map[string]string, len(names))}
	var b strings.Builder
	for _, n := range names {
		sp.schemas[n] = schemas[n]
		// NUL cannot occur in an identifier: the id is unambiguous.
		b.WriteString(n)
		b.WriteByte(0)
		b.WriteString(schemas[n])
		b.WriteByte(0)
	}
	sp.id = b.String()
	return sp
}

// Schema returns the schema an unqualified name resolves to.
func (sp *SearchPath) Schema(name string) string {
	if sp != nil {
		if s, ok := sp.schemas[name]; ok {
			return s
		}
	}
	return "public"
}

// Equal reports whether sp and o resolve every name alike.
func (sp *SearchPath) Equal(o *SearchPath) bool {
	if sp == nil || o == nil {
		return sp == o
	}
	return sp.id == o.id
}

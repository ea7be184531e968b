package rewrite

import (
	"fmt"
	"strings"
	"testing"

	pgquery "github.com/pganalyze/pg_query_go/v5"
	"github.com/pgveil/pgveil/config"
)

func testTables() []config.Table {
	return []config.Table{
		{Table: "users", Schema: "public", Name: "users", Columns: []config.Column{
			{Column: "email", BlindIndex: "email_hash", HashDomain: "public.users.email"},
			{Column: "full_name", HashDomain: "public.users.full_name"},
		}},
		{Table: "tasks", Schema: "public", Name: "tasks", Columns: []config.Column{
			{Column: "title", HashDomain: "public.tasks.title"}, {Column: "description", HashDomain: "public.tasks.description"},
		}},
		{Table: "chat_history", Schema: "public", Name: "chat_history", Columns: []config.Column{
			{Column: "message", HashDomain: "public.chat_history.message"},
		}},
	}
}

func mustRules(t testing.TB, opts Options) *Rules {
	t.Helper()
	r, err := Compile(testTables(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var opNames = [...]string{"none", "encrypt", "hash", "hashall", "hasharray"}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("op%d", o)
}

// summary renders a plan compactly for golden comparisons.
func summary(p *Plan) string {
	var b strings.Builder
	switch p.Kind {
	case KindPassthrough:
		b.WriteString("passthrough")
	case KindRewrite:
		b.WriteString("rewrite")
	case KindRefuse:
		fmt.Fprintf(&b, "refuse %s %s: %s | hint: %s", p.Refusal.SQLState(), p.Refusal.Reason, p.Refusal.Error(), p.Refusal.Hint)
	}
	if p.Kind == KindRewrite {
		fmt.Fprintf(&b, "\nsql: %s", p.SQL)
		for _, s := range p.Slots {
			fmt.Fprintf(&b, "\nslot @%d lit%d %s", s.Offset, s.Literal, s.Action.Op)
		}
		for i, a := range p.ClientParams {
			if a.Op != OpNone {
				fmt.Fprintf(&b, "\nparam $%d %s %s", i+1, a.Op, a.Column)
			}
		}
		for i, h := range p.Hidden {
			fmt.Fprintf(&b, "\nhidden $%d from $%d %s %s", p.NumClientParams+1+i, h.From+1, h.Action.Op, h.Action.Column)
		}
		for _, r := range p.Results {
			fmt.Fprintf(&b, "\nresult %d %s", r.Index, r.Column)
		}
		if c := p.Copy; c != nil {
			fmt.Fprintf(&b, "\ncopy in=%v format=%d delim=%q null=%q quote=%q escape=%q header=%v cols=%v all=%v table=%s", c.In, c.Format, c.Delimiter, c.Null, c.Quote, c.Escape, c.Header, c.Columns, c.AllColumns, c.Table)
			for _, f := range c.EncryptAt {
				fmt.Fprintf(&b, "\n  encrypt_at %d %s", f.Index, f.Action.Column)
			}
			for _, f := range c.HashFrom {
				fmt.Fprintf(&b, "\n  hash_from %d %s", f.Index, f.Action.Column)
			}
		}
	}
	if len(p.Tables) > 0 {
		fmt.Fprintf(&b, "\ntables: %s", strings.Join(p.Tables, ","))
	}
	if p.DDL {
		b.WriteString("\nddl")
	}
	return b.String()
}

func parseSQL(s string) (any, error) { return pgquery.Parse(s) }

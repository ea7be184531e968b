package proxy

// How pgveil knows which result columns to decrypt.
//
// PostgreSQL's RowDescription names, for each output column that is a plain
// column reference (also through aliases, joins, subqueries, CTEs, views and
// RETURNING), the table OID and attribute number it comes from. pgveil keeps
// a catalog mapping (table OID, attnum) to the configured encrypted column,
// per session, because OIDs are per database.
//
// When it is loaded: at the end of startup, before the client sees its first
// ReadyForQuery, the session runs catalogQuery on its own upstream
// connection (one round trip per connection; the client never sees it).
//
// When it is refreshed, always before the next statement and outside an
// extended-protocol batch (where a simple Query would be out of place):
//   - after any statement the rewriter marks as DDL (CREATE/ALTER/DROP/
//     RENAME), so a table created, renamed or recreated through this
//     connection is picked up;
//   - when a statement names a configured table the catalog does not hold
//     (created by another connection after this one opened), at most once
//     a second;
//   - after a reload (SIGHUP), whose new snapshot generation every session
//     compares against at statement boundaries.
//
// The same query tells how the session resolves configured table names
// written without a schema (search_path, "$user", temporary tables): the
// catalog's searchPath, which the rewriter plans with. When no configured
// name belongs to two relations the session can see, that resolution
// cannot change without DDL (static); otherwise (pathDynamic) a statement
// that may change it (SET search_path, SET ROLE, RESET ALL, DISCARD, ...)
// also asks for a reload, and so does every statement of a transaction in
// which one ran, until a reload finds the session outside a transaction
// (ROLLBACK and ROLLBACK TO undo SET).
//
// A database created later is covered because each connection loads the
// catalog of its own database. What is not seen at once: a configured table
// dropped and recreated by another connection keeps its old OID in older
// sessions until one of the events above; docs/RUNBOOK.md tells operators
// to send SIGHUP after out-of-band DDL on configured tables.

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/rewrite"
)

// columnRef is one configured encrypted column as found in the database.
type columnRef struct {
	table     string // "schema.table"
	column    string
	qualified string // "schema.table.column"
	cfg       config.Column
}

// catalog maps result-column origins to configured columns. Immutable.
type catalog struct {
	generation uint64
	// searchPath: how this session resolves configured names without a
	// schema; pathDynamic: some configured name belongs to more than one
	// relation, so changes of search_path or role change the resolution.
	searchPath  *rewrite.SearchPath
	pathDynamic bool
	byOrigin    map[origin]*columnRef
	// columns lists, per configured table, every column in attnum order
	// (for COPY ... TO STDOUT without a column list).
	columns map[string][]string
}

type origin struct {
	table uint32
	attr  int16
}

func (c *catalog) lookup(table uint32, attr int16) *columnRef {
	if c == nil || table == 0 {
		return nil
	}
	return c.byOrigin[origin{table, attr}]
}

// catalogQuery lists the attributes of every configured table or view.
func catalogQuery(tables []config.Table) string {
	var b strings.Builder
	b.WriteString("SELECT c.oid, a.attnum, n.nspname, c.relname, a.attname FROM pg_catalog.pg_class c" +
		" JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace" +
		" JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid" +
		" WHERE a.attnum > 0 AND NOT a.attisdropped AND (n.nspname, c.relname) IN (")
	for i, t := range tables {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(%s, %s)", quoteLiteral(t.Schema), quoteLiteral(t.Name))
	}
	// One row per configured name (attnum -1): the schema of the relation
	// the name finds along the session's search path ("" for none) and
	// how many relations of that name the session can see.
	b.WriteString(") UNION ALL SELECT 0::pg_catalog.oid, (-1)::pg_catalog.int2," +
		" COALESCE((SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace" +
		" WHERE c.oid = pg_catalog.to_regclass(pg_catalog.quote_ident(x.name))), '')::pg_catalog.name, x.name::pg_catalog.name," +
		" (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c WHERE c.relname = x.name" +
		" AND NOT pg_catalog.pg_is_other_temp_schema(c.relnamespace))::pg_catalog.text::pg_catalog.name" +
		" FROM (VALUES ")
	seen := map[string]bool{}
	for _, t := range tables {
		if seen[t.Name] {
			continue
		}
		if len(seen) > 0 {
			b.WriteString(", ")
		}
		seen[t.Name] = true
		fmt.Fprintf(&b, "(%s)", quoteLiteral(t.Name))
	}
	b.WriteString(") AS x(name) ORDER BY 1, 2")
	return b.String()
}

// buildCatalog turns catalogQuery's rows (text format) into a catalog.
func buildCatalog(tables []config.Table, rows [][][]byte, generation uint64) *catalog {
	want := map[string]config.Column{}
	for _, t := range tables {
		for _, c := range t.Columns {
			want[t.Schema+"."+t.Name+"."+strings.ToLower(c.Column)] = c
		}
	}
	// configured schemas of each name, for a name the path does not find
	schemasOf := map[string][]string{}
	for _, t := range tables {
		schemasOf[t.Name] = append(schemasOf[t.Name], t.Schema)
	}
	resolved := map[string]string{}
	cat := &catalog{generation: generation, byOrigin: map[origin]*columnRef{}, columns: map[string][]string{}}
	for _, r := range rows {
		if len(r) != 5 {
			continue
		}
		oid, err1 := strconv.ParseUint(string(r[0]), 10, 32)
		att, err2 := strconv.ParseInt(string(r[1]), 10, 16)
		if err1 != nil || err2 != nil {
			continue
		}
		if att == -1 {
			name, schema := string(r[3]), string(r[2])
			if n, err := strconv.Atoi(string(r[4])); err != nil || n > 1 {
				cat.pathDynamic = true
			}
			if schema == "" && len(schemasOf[name]) == 1 {
				// Found nowhere: PostgreSQL will fail the statement, but
				// its values are still encrypted, so that no plaintext
				// reaches its error log.
				schema = schemasOf[name][0]
			}
			if schema != "" {
				resolved[name] = schema
			}
			continue
		}
		table := string(r[2]) + "." + string(r[3])
		col := string(r[4])
		cat.columns[table] = append(cat.columns[table], col)
		if cc, ok := want[table+"."+strings.ToLower(col)]; ok {
			cat.byOrigin[origin{uint32(oid), int16(att)}] = &columnRef{table: table, column: col, qualified: table + "." + col, cfg: cc}
		}
	}
	cat.searchPath = rewrite.NewSearchPath(resolved)
	return cat
}

// containsWordFold reports whether s holds word (lower case ASCII) as a
// word, in any case.
func containsWordFold(s, word string) bool {
	for i := 0; i+len(word) <= len(s); i++ {
		if (i == 0 || !isWordByte(s[i-1])) && strings.EqualFold(s[i:i+len(word)], word) &&
			(i+len(word) == len(s) || !isWordByte(s[i+len(word)])) {
			return true
		}
	}
	return false
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z' || c >= 0x80
}

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
	byOrigin   map[origin]*columnRef
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
	b.WriteString(") ORDER BY c.oid, a.attnum")
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
		table := string(r[2]) + "." + string(r[3])
		col := string(r[4])
		cat.columns[table] = append(cat.columns[table], col)
		if cc, ok := want[table+"."+strings.ToLower(col)]; ok {
			cat.byOrigin[origin{uint32(oid), int16(att)}] = &columnRef{table: table, column: col, qualified: table + "." + col, cfg: cc}
		}
	}
	return cat
}

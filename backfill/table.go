package backfill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/pgveil/pgveil/config"
)

// ErrNoPrimaryKey is wrapped by the error for a configured table without a
// primary key: batches are cut by primary key, so such a table is refused.
var ErrNoPrimaryKey = errors.New("pgveil: table has no primary key")

// ErrView is wrapped by the error for a configured view: the data commands
// work on its base table, never through a view.
var ErrView = errors.New("pgveil: configured relation is a view")

// SchemaError is a configured table or column the database does not have,
// or one the data commands cannot work on. It is a configuration problem
// (exit 2), with the fix in Hint.
type SchemaError struct {
	Table  string // schema.table
	Column string // "" for the table itself
	Reason string
	Fix    string
	Err    error // ErrNoPrimaryKey, ErrView or nil
}

func (e *SchemaError) Error() string {
	what := "table " + e.Table
	if e.Column != "" {
		what = "column " + e.Table + "." + e.Column
	}
	return "pgveil: " + what + " " + e.Reason
}

// Hint says how to fix it.
func (e *SchemaError) Hint() string { return e.Fix }

func (e *SchemaError) Unwrap() error { return e.Err }

// keyCol is one primary-key column.
type keyCol struct {
	name  string // quoted identifier
	typ   string // format_type, usable as a cast target
	plain string // unquoted name, for messages
}

// dataCol is one configured column of a table as the data commands see it.
type dataCol struct {
	cfg    config.Column
	name   string // quoted
	hash   string // quoted blind-index column, "" if not searchable
	domain string // hash domain, "" if not searchable
}

// tableInfo is a configured table with what the catalog says about it.
type tableInfo struct {
	cfg     config.Table
	qname   string // "schema"."name"
	display string // the table as written in the config, for progress lines
	full    string // schema.name, unquoted, for reports
	key     []keyCol
	cols    []dataCol
	types   map[string]string // every column's format_type, by name

	mu      sync.Mutex
	uniques map[string]*uniqueIndex // by index name, loaded on demand
}

// displayName is how progress lines name a table: "users" in public,
// "app.users" elsewhere.
func displayName(schema, name string) string {
	if schema == "public" {
		return name
	}
	return schema + "." + name
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

func qualified(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }

func schemaOf(t config.Table) string {
	if t.Schema != "" {
		return t.Schema
	}
	if i := strings.IndexByte(t.Table, '.'); i >= 0 {
		return t.Table[:i]
	}
	return "public"
}

func nameOf(t config.Table) string {
	if t.Name != "" {
		return t.Name
	}
	if i := strings.IndexByte(t.Table, '.'); i >= 0 {
		return t.Table[i+1:]
	}
	return t.Table
}

func domainOf(t config.Table, c config.Column) string {
	if c.HashDomain != "" {
		return c.HashDomain
	}
	return schemaOf(t) + "." + nameOf(t) + "." + c.Column
}

// querier is what both *pgx.Conn and pgxpool.Pool offer.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// loadTable looks t up in the catalog: it must exist, have a primary key,
// and have every configured column and blind-index column.
func loadTable(ctx context.Context, q querier, t config.Table) (*tableInfo, error) {
	schema, name := schemaOf(t), nameOf(t)
	ti := &tableInfo{
		cfg:     t,
		qname:   qualified(schema, name),
		display: displayName(schema, name),
		full:    schema + "." + name,
	}
	var oid uint32
	var kind string
	err := q.QueryRow(ctx, `SELECT c.oid, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm')`, schema, name).Scan(&oid, &kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &SchemaError{Table: ti.full, Reason: "does not exist in the database",
			Fix: "create it, or fix the table name in the config (tables[].table, schema-qualified if not in public)"}
	}
	if err != nil {
		return nil, fmt.Errorf("pgveil: looking up table %s: %w", ti.full, err)
	}
	if kind == "v" || kind == "m" {
		// Rows live in the base table: encrypting through a view would
		// need the view to be updatable and would leave rows it does not
		// show.
		base := "its base table"
		if bases, err := viewBases(ctx, q, oid); err == nil && len(bases) > 0 {
			base = strings.Join(bases, ", ")
		}
		what := "a view"
		if kind == "m" {
			what = "a materialized view"
		}
		return nil, &SchemaError{Table: ti.full, Err: ErrView,
			Reason: "is " + what + ": the data commands (backfill, reencrypt, rehash, decrypt, verify) work on tables, never through a view",
			Fix:    "run them on " + base + " (configured with the same columns and hash_domain); with other tables it is skipped"}
	}

	rows, err := q.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod)
		FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
		WHERE i.indrelid = $1 AND i.indisprimary
		ORDER BY array_position(i.indkey::int2[], a.attnum)`, oid)
	if err != nil {
		return nil, fmt.Errorf("pgveil: reading the primary key of %s: %w", ti.full, err)
	}
	for rows.Next() {
		var k keyCol
		if err := rows.Scan(&k.plain, &k.typ); err != nil {
			return nil, err
		}
		k.name = quoteIdent(k.plain)
		ti.key = append(ti.key, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgveil: reading the primary key of %s: %w", ti.full, err)
	}
	if len(ti.key) == 0 {
		return nil, &SchemaError{Table: ti.full, Err: ErrNoPrimaryKey,
			Reason: "has no primary key; the data commands work in batches by primary key",
			Fix:    "add one (ALTER TABLE " + ti.qname + " ADD PRIMARY KEY (...), or ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY)"}
	}

	attrs := map[string]string{}
	ti.types = attrs
	rows, err = q.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, oid)
	if err != nil {
		return nil, fmt.Errorf("pgveil: reading the columns of %s: %w", ti.full, err)
	}
	for rows.Next() {
		var n, typ string
		if err := rows.Scan(&n, &typ); err != nil {
			return nil, err
		}
		attrs[n] = typ
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgveil: reading the columns of %s: %w", ti.full, err)
	}
	for _, c := range t.Columns {
		if _, ok := attrs[c.Column]; !ok {
			return nil, &SchemaError{Table: ti.full, Column: c.Column, Reason: "does not exist",
				Fix: "fix tables[].columns[].column in the config, or add the column"}
		}
		for _, k := range ti.key {
			if k.plain == c.Column {
				return nil, &SchemaError{Table: ti.full, Column: c.Column,
					Reason: "is part of the primary key and cannot be encrypted in place",
					Fix:    "remove it from the config, or give the table a surrogate primary key"}
			}
		}
		dc := dataCol{cfg: c, name: quoteIdent(c.Column)}
		if c.Searchable() {
			if _, ok := attrs[c.BlindIndex]; !ok {
				return nil, &SchemaError{Table: ti.full, Column: c.BlindIndex, Reason: "(blind index of " + c.Column + ") does not exist",
					Fix: "run pgveil schema --apply (or ALTER TABLE " + ti.qname + " ADD COLUMN " + quoteIdent(c.BlindIndex) + " text)"}
			}
			dc.hash = quoteIdent(c.BlindIndex)
			dc.domain = domainOf(t, c)
		}
		ti.cols = append(ti.cols, dc)
	}
	return ti, nil
}

// keyList is "k1, k2".
func (ti *tableInfo) keyList(prefix string) string {
	var b strings.Builder
	for i, k := range ti.key {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(prefix)
		b.WriteString(k.name)
	}
	return b.String()
}

// keyParams is "($n::T1, $n+1::T2)" for a row comparison with the key.
func (ti *tableInfo) keyParams(first int) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, k := range ti.key {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(first+i) + "::text::" + k.typ)
	}
	b.WriteByte(')')
	return b.String()
}

// shardFilter is the condition selecting shard i of n, "" when n <= 1.
// Rows are spread by a hash of the primary key, which every pod of an
// Indexed Job computes alike whatever the others do.
func (ti *tableInfo) shardFilter(s Shard) string {
	if s.Count <= 1 {
		return ""
	}
	return fmt.Sprintf("abs(hashtext(ROW(%s)::text)::bigint) %% %d = %d", ti.keyList("t."), s.Count, s.Index)
}

// selectList is the columns a batch reads: the key as text, xmin, then
// per configured column its value and, if searchable, its blind index.
func (ti *tableInfo) selectList() string {
	var b strings.Builder
	for _, k := range ti.key {
		b.WriteString("t." + k.name + "::text, ")
	}
	b.WriteString("t.xmin::text")
	for _, c := range ti.cols {
		b.WriteString(", t." + c.name + "::text")
		if c.hash != "" {
			b.WriteString(", t." + c.hash + "::text")
		}
	}
	return b.String()
}

// batchQuery reads the next batch after a key (after=true) or from the
// start: $1..$k the last key, then the limit.
func (ti *tableInfo) batchQuery(after bool, s Shard) string {
	var where []string
	n := 1
	if after {
		where = append(where, "("+ti.keyList("t.")+") > "+ti.keyParams(1))
		n += len(ti.key)
	}
	if f := ti.shardFilter(s); f != "" {
		where = append(where, f)
	}
	q := "SELECT " + ti.selectList() + " FROM " + ti.qname + " t"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY " + ti.keyList("t.") + " LIMIT $" + strconv.Itoa(n)
	return q
}

// rereadQuery reads the rows whose keys are given as text arrays.
func (ti *tableInfo) rereadQuery() string {
	var cols, on []string
	for i, k := range ti.key {
		cols = append(cols, "pgveil_k"+strconv.Itoa(i))
		on = append(on, fmt.Sprintf("t.%s = v.pgveil_k%d::%s", k.name, i, k.typ))
	}
	var arrs []string
	for i := range ti.key {
		arrs = append(arrs, "$"+strconv.Itoa(i+1)+"::text[]")
	}
	return "SELECT " + ti.selectList() + " FROM " + ti.qname + " t JOIN unnest(" + strings.Join(arrs, ", ") +
		") AS v(" + strings.Join(cols, ", ") + ") ON " + strings.Join(on, " AND ") +
		" ORDER BY " + ti.keyList("t.")
}

// updateQuery writes one batch. Parameters, all arrays of the same length:
// the key columns as text, xmin as text, then per configured column a
// "set" flag and the new value, and if searchable a "set" flag and the new
// blind index. A row is written only if its xmin is still the one the batch
// read (compare-and-swap: the application has not changed it since) and no
// other transaction holds its lock (SKIP LOCKED: the backfill never waits on
// the application, so it cannot deadlock with it). RETURNING names the rows
// written; the others are read again.
func (ti *tableInfo) updateQuery() string {
	vcols, arrs, on, n := ti.keyValues("t")
	var lon, sets []string
	for _, k := range ti.key {
		lon = append(lon, fmt.Sprintf("t.%s = l.%s", k.name, k.name))
	}
	vcols = append(vcols, "pgveil_x")
	arrs = append(arrs, "$"+strconv.Itoa(n)+"::text[]")
	n++
	for i, c := range ti.cols {
		s := strconv.Itoa(i)
		vcols = append(vcols, "pgveil_s"+s, "pgveil_c"+s)
		arrs = append(arrs, "$"+strconv.Itoa(n)+"::bool[]", "$"+strconv.Itoa(n+1)+"::text[]")
		n += 2
		sets = append(sets, fmt.Sprintf("%s = CASE WHEN l.pgveil_s%s THEN l.pgveil_c%s ELSE t.%s END", c.name, s, s, c.name))
		if c.hash != "" {
			vcols = append(vcols, "pgveil_hs"+s, "pgveil_h"+s)
			arrs = append(arrs, "$"+strconv.Itoa(n)+"::bool[]", "$"+strconv.Itoa(n+1)+"::text[]")
			n += 2
			sets = append(sets, fmt.Sprintf("%s = CASE WHEN l.pgveil_hs%s THEN l.pgveil_h%s ELSE t.%s END", c.hash, s, s, c.hash))
		}
	}
	return "WITH v AS (SELECT * FROM unnest(" + strings.Join(arrs, ", ") + ") AS v(" + strings.Join(vcols, ", ") + ")), " +
		"l AS (SELECT " + ti.keyList("t.") + ", v.* FROM " + ti.qname + " t JOIN v ON " + strings.Join(on, " AND ") +
		" WHERE t.xmin = v.pgveil_x::xid FOR UPDATE OF t SKIP LOCKED) " +
		"UPDATE " + ti.qname + " t SET " + strings.Join(sets, ", ") +
		" FROM l WHERE " + strings.Join(lon, " AND ") +
		" RETURNING " + keyTextList(ti)
}

// keyValues is how a batch's primary keys reach a query: one text[]
// parameter per key column ($1 ...), unnested as the columns pgveil_k0 ...
// of v, and the join of the table aliased alias to them. n is the number
// of the next parameter.
func (ti *tableInfo) keyValues(alias string) (vcols, arrs, on []string, n int) {
	n = 1
	for i, k := range ti.key {
		vcols = append(vcols, "pgveil_k"+strconv.Itoa(i))
		arrs = append(arrs, "$"+strconv.Itoa(n)+"::text[]")
		n++
		on = append(on, fmt.Sprintf("%s.%s = v.pgveil_k%d::%s", alias, k.name, i, k.typ))
	}
	return vcols, arrs, on, n
}

func keyTextList(ti *tableInfo) string {
	var out []string
	for _, k := range ti.key {
		out = append(out, "t."+k.name+"::text")
	}
	return strings.Join(out, ", ")
}

// countQuery counts the rows of the shard, after a key if after.
func (ti *tableInfo) countQuery(after bool, s Shard) string {
	var where []string
	if after {
		where = append(where, "("+ti.keyList("t.")+") <= "+ti.keyParams(1))
	}
	if f := ti.shardFilter(s); f != "" {
		where = append(where, f)
	}
	q := "SELECT count(*) FROM " + ti.qname + " t"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return q
}

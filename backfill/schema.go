package backfill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
)

// Statement is one DDL statement the config needs.
type Statement struct {
	SQL string
	// Why is the problem it fixes, for check and for the printed plan.
	Why string
	// Concurrent statements (CREATE/DROP INDEX CONCURRENTLY) run outside
	// any transaction.
	Concurrent bool
	// Finish marks the last step of a migration: dropping what only the
	// plaintext needed (its UNIQUE constraint, the index pgveil added for
	// lookups during the migration) once every row has its blind index.
	// check reports it as pending, not as a problem.
	Finish bool
}

// SchemaPlan is what a database still needs for a config.
type SchemaPlan struct {
	// Statements to run, in order (pgveil schema --apply).
	Statements []Statement
	// Problems DDL cannot fix, each with its fix.
	Problems []Problem
	// Notes say what is deliberately left for later and when to come back.
	Notes []string
	// Info is what pgveil cannot do for the schema as it is and no later
	// run changes: a configured view is backfilled through its base table,
	// server-side code (triggers, rules, functions) writes around pgveil.
	Info []string
}

// Problem is something check found, with its fix.
type Problem struct {
	What string
	Fix  string
}

func (p Problem) String() string { return "pgveil: " + p.What + "\n  fix: " + p.Fix }

// GenericSchema returns the DDL for tables without looking at a database:
// every encrypted column widened to text, every blind-index column added
// and indexed. Statements are idempotent where PostgreSQL allows.
func GenericSchema(tables []config.Table) []Statement {
	var out []Statement
	for _, t := range tables {
		schema, name := schemaOf(t), nameOf(t)
		q := qualified(schema, name)
		for _, c := range t.Columns {
			out = append(out, Statement{
				SQL: fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE text USING %s::text", q, quoteIdent(c.Column), quoteIdent(c.Column)),
				Why: fmt.Sprintf("encrypted column %s.%s.%s must be text to hold tokens", schema, name, c.Column),
			})
			if !c.Searchable() {
				continue
			}
			out = append(out, Statement{
				SQL: fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s text COLLATE \"C\"", q, quoteIdent(c.BlindIndex)),
				// COLLATE "C": hex compares byte by byte, and the index
				// descends without the database locale's strcoll().
				Why: fmt.Sprintf("blind index %s of %s.%s.%s", c.BlindIndex, schema, name, c.Column),
			})
			out = append(out, Statement{
				SQL: fmt.Sprintf("CREATE INDEX CONCURRENTLY IF NOT EXISTS %s ON %s (%s)",
					quoteIdent(indexName(name, c.BlindIndex, "idx")), q, quoteIdent(c.BlindIndex)),
				Why:        fmt.Sprintf("lookups on %s.%s.%s use an index on %s", schema, name, c.Column, c.BlindIndex),
				Concurrent: true,
			})
		}
	}
	return out
}

// indexName builds a name PostgreSQL keeps whole (63 bytes).
func indexName(table, col, suffix string) string {
	n := table + "_" + col + "_" + suffix
	if len(n) > 63 {
		n = n[:63-len(suffix)-1] + "_" + suffix
	}
	return n
}

// attr is a column of a table in the catalog.
type attr struct {
	num     int16
	typ     string // format_type
	typname string // pg_type.typname
	typmod  int32
	// def is the column's default expression ("" for none; a NULL default
	// counts as none), generated whether it is a generated column's.
	def       string
	generated bool
}

// index is an index of a table in the catalog.
type index struct {
	name       string
	am         string // access method: btree, hash, ...
	unique     bool
	primary    bool
	valid      bool
	keys       []int16 // attnums; 0 = expression
	partial    bool
	expression bool
	constraint string // name of the UNIQUE constraint using it, ""
}

type tableState struct {
	exists bool
	oid    uint32
	// kind is pg_class.relkind: r (table), p (partitioned table), v
	// (view) or m (materialized view).
	kind    string
	schema  string
	name    string
	attrs   map[string]attr
	byNum   map[int16]string
	indexes []index
	// unfilled[column] of a searchable column: some row holds a value
	// without its blind index (the blind-index column may not exist yet).
	unfilled map[string]bool
	// hashed[column]: some row has a blind index, so pgveil (the proxy or
	// the backfill) has written to the table.
	hashed map[string]bool
	// parts of a partitioned table: every partition at every level,
	// each after its parent.
	parts []partition
}

// partition is one partition of a partitioned table (kind r or p).
type partition struct {
	schema, name, kind string
	parent             string // schema.name of the partitioned table above it
}

func inspect(ctx context.Context, q querier, t config.Table) (*tableState, error) {
	st := &tableState{schema: schemaOf(t), name: nameOf(t), attrs: map[string]attr{}, byNum: map[int16]string{}, unfilled: map[string]bool{}, hashed: map[string]bool{}}
	var oid uint32
	err := q.QueryRow(ctx, `SELECT c.oid, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm')`, st.schema, st.name).Scan(&oid, &st.kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pgveil: looking up table %s.%s: %w", st.schema, st.name, err)
	}
	st.exists = true
	st.oid = oid
	rows, err := q.Query(ctx, `SELECT a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), t.typname, a.atttypmod,
			coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attgenerated <> ''
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`, oid)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var n string
		var a attr
		if err := rows.Scan(&n, &a.num, &a.typ, &a.typname, &a.typmod, &a.def, &a.generated); err != nil {
			return nil, err
		}
		if strings.HasPrefix(a.def, "NULL::") || a.def == "NULL" {
			a.def = ""
		}
		st.attrs[n] = a
		st.byNum[a.num] = n
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if st.view() {
		// A view has no index and no rows of its own: the base table's
		// are checked there.
		return st, nil
	}
	if st.kind == "p" {
		rows, err := q.Query(ctx, `WITH RECURSIVE tree(oid, parent, depth) AS (
				SELECT inhrelid, inhparent, 1 FROM pg_inherits WHERE inhparent = $1
				UNION ALL
				SELECT i.inhrelid, i.inhparent, tree.depth + 1 FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid)
			SELECT n.nspname, c.relname, c.relkind::text, pn.nspname || '.' || pc.relname
			FROM tree JOIN pg_class c ON c.oid = tree.oid JOIN pg_namespace n ON n.oid = c.relnamespace
			JOIN pg_class pc ON pc.oid = tree.parent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
			WHERE c.relkind IN ('r', 'p')
			ORDER BY tree.depth, n.nspname, c.relname`, oid)
		if err != nil {
			return nil, fmt.Errorf("pgveil: looking up the partitions of %s.%s: %w", st.schema, st.name, err)
		}
		for rows.Next() {
			var pt partition
			if err := rows.Scan(&pt.schema, &pt.name, &pt.kind, &pt.parent); err != nil {
				return nil, err
			}
			st.parts = append(st.parts, pt)
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	rows, err = q.Query(ctx, `SELECT c.relname, am.amname, i.indisunique, i.indisprimary, i.indisvalid, i.indkey::int2[],
			i.indpred IS NOT NULL, i.indexprs IS NOT NULL, coalesce(k.conname, '')
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
		LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('u', 'p')
		WHERE i.indrelid = $1 ORDER BY c.relname`, oid)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var ix index
		if err := rows.Scan(&ix.name, &ix.am, &ix.unique, &ix.primary, &ix.valid, &ix.keys, &ix.partial, &ix.expression, &ix.constraint); err != nil {
			return nil, err
		}
		st.indexes = append(st.indexes, ix)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Whether the blind index of each searchable column is filled decides
	// what the plaintext column still needs. The query stops at the first
	// such row; once the index is filled it reads only the rows whose blind
	// index is NULL (through its index).
	qt := qualified(st.schema, st.name)
	for _, c := range t.Columns {
		if !c.Searchable() {
			continue
		}
		if _, ok := st.attrs[c.Column]; !ok {
			continue
		}
		sql := fmt.Sprintf("SELECT EXISTS (SELECT 1 FROM %s WHERE %s IS NOT NULL)", qt, quoteIdent(c.Column))
		if _, ok := st.attrs[c.BlindIndex]; ok {
			sql = fmt.Sprintf("SELECT EXISTS (SELECT 1 FROM %s WHERE %s IS NULL AND %s IS NOT NULL)", qt, quoteIdent(c.BlindIndex), quoteIdent(c.Column))
		}
		var unfilled bool
		if err := q.QueryRow(ctx, sql).Scan(&unfilled); err != nil {
			return nil, fmt.Errorf("pgveil: looking for rows of %s.%s.%s without a blind index: %w", st.schema, st.name, c.Column, err)
		}
		st.unfilled[c.Column] = unfilled
		if _, ok := st.attrs[c.BlindIndex]; ok && !unfilled {
			var hashed bool
			if err := q.QueryRow(ctx, fmt.Sprintf("SELECT EXISTS (SELECT 1 FROM %s WHERE %s IS NOT NULL)", qt, quoteIdent(c.BlindIndex))).Scan(&hashed); err != nil {
				return nil, fmt.Errorf("pgveil: looking for blind indexes in %s.%s: %w", st.schema, st.name, err)
			}
			st.hashed[c.Column] = hashed
		}
	}
	return st, nil
}

// view reports whether the relation is a view or a materialized view.
func (st *tableState) view() bool { return st.kind == "v" || st.kind == "m" }

// holdsTokens reports whether a column of this type holds any token.
func (a attr) holdsTokens() bool {
	switch a.typname {
	case "text":
		return true
	case "varchar":
		return a.typmod < 0 // no length limit
	}
	return false
}

// holdsBlindIndex reports whether a column holds 64 hex characters.
func (a attr) holdsBlindIndex() bool {
	switch a.typname {
	case "text":
		return true
	case "varchar":
		return a.typmod < 0 || a.typmod-4 >= keyring.BlindIndexLen
	case "bpchar":
		return a.typmod-4 == keyring.BlindIndexLen
	}
	return false
}

// plan compares the catalog with the config and returns the DDL still
// needed, the problems DDL cannot fix, and what is left for later.
//
// A searchable column is migrated in two steps, so that the plaintext
// column keeps what the application relies on until the blind index can
// take over:
//
//  1. prepare (while rows are being encrypted): add the blind-index column
//     and build, CONCURRENTLY, a unique index on it for each UNIQUE
//     constraint or unique index of the plaintext column, which stays: it
//     keeps duplicates out and ON CONFLICT (col) working for clients that
//     still reach PostgreSQL directly, and its index serves the lookups of
//     mode: migrating on rows not encrypted yet. Tokens never collide (each
//     has a random IV), so it never refuses a write pgveil makes. A column
//     with no index usable for equality gets one, hash and partial (only
//     rows whose blind index is still NULL), for those lookups.
//  2. finish (pgveil schema --apply run again once every row has its blind
//     index, that is after pgveil backfill and pgveil verify): drop the
//     plaintext column's UNIQUE constraints and pgveil's migration index.
//     A unique index on the blind index built by this very run is never
//     followed by the drop in the same run, and a table where no row has a
//     blind index yet (empty, say) keeps its constraint: nothing shows the
//     application has moved to pgveil.
func plan(st *tableState, t config.Table) SchemaPlan {
	q := qualified(st.schema, st.name)
	full := st.schema + "." + st.name
	var p SchemaPlan
	if !st.exists {
		p.Problems = append(p.Problems, Problem{What: "table " + full + " does not exist",
			Fix: "create it, or fix tables[].table in the config (schema-qualified if not in public)"})
		return p
	}
	if st.view() {
		return planView(st, t)
	}
	hasPK := false
	for _, ix := range st.indexes {
		hasPK = hasPK || ix.primary
	}
	if !hasPK {
		p.Problems = append(p.Problems, Problem{What: "table " + full + " has no primary key; pgveil backfill works in batches by primary key",
			Fix: "ALTER TABLE " + q + " ADD PRIMARY KEY (...), or ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY"})
	}
	for _, c := range t.Columns {
		a, ok := st.attrs[c.Column]
		if !ok {
			p.Problems = append(p.Problems, Problem{What: "column " + full + "." + c.Column + " does not exist",
				Fix: "fix tables[].columns[].column in the config, or add the column"})
			continue
		}
		switch {
		case a.generated:
			p.Statements = append(p.Statements, Statement{SQL: fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP EXPRESSION", q, quoteIdent(c.Column)),
				Why: fmt.Sprintf("encrypted column %s.%s is generated: PostgreSQL computes and stores it unencrypted", full, c.Column)})
		case a.def != "":
			p.Statements = append(p.Statements, Statement{SQL: fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT", q, quoteIdent(c.Column)),
				Why: fmt.Sprintf("encrypted column %s.%s has a default: PostgreSQL stores it unencrypted in every row inserted without the column", full, c.Column)})
		}
		if !a.holdsTokens() {
			why := fmt.Sprintf("encrypted column %s.%s is %s, which cannot hold tokens (they are longer than the plaintext)", full, c.Column, a.typ)
			if a.typname == "varchar" {
				why += "; changing varchar to text does not rewrite the table"
			} else {
				why += "; this changes the column's type and rewrites the table"
			}
			p.Statements = append(p.Statements, Statement{SQL: fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE text USING %s::text", q, quoteIdent(c.Column), quoteIdent(c.Column)), Why: why})
		}
		// Unique indexes on the plaintext column: equality of tokens means
		// nothing (each has a random IV), so uniqueness moves to the blind
		// index.
		var uniques []index
		for _, ix := range st.indexes {
			if ix.primary || !ix.unique || ix.expression || !containsAttr(ix.keys, a.num) {
				continue
			}
			uniques = append(uniques, ix)
		}
		if !c.Searchable() {
			for _, ix := range uniques {
				p.Problems = append(p.Problems, Problem{
					What: fmt.Sprintf("%s on encrypted column %s.%s cannot be enforced on tokens", describeIndex(ix), full, c.Column),
					Fix:  fmt.Sprintf("give the column a blind_index in the config (pgveil schema then moves the constraint to it), or drop %s", ix.name),
				})
			}
			continue
		}
		h, hok := st.attrs[c.BlindIndex]
		if !hok {
			p.Statements = append(p.Statements, Statement{SQL: fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s text COLLATE \"C\"", q, quoteIdent(c.BlindIndex)),
				Why: fmt.Sprintf("blind index column %s of %s.%s does not exist", c.BlindIndex, full, c.Column)})
		} else if !h.holdsBlindIndex() {
			p.Statements = append(p.Statements, Statement{SQL: fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE text USING %s::text", q, quoteIdent(c.BlindIndex), quoteIdent(c.BlindIndex)),
				Why: fmt.Sprintf("blind index column %s.%s is %s, which cannot hold %d hex characters", full, c.BlindIndex, h.typ, keyring.BlindIndexLen)})
		}
		unfilled := st.unfilled[c.Column]
		migName := indexName(st.name, c.Column, "pgveil_migrating")
		var mig *index
		hashIndexed := false
		for i := range st.indexes {
			ix := &st.indexes[i]
			if ix.name == migName {
				mig = ix
				continue
			}
			if !hok || ix.expression || ix.partial || !containsAttr(ix.keys, h.num) {
				continue
			}
			if ix.keys[0] == h.num {
				hashIndexed = true
			}
			if !ix.valid {
				// Left by an interrupted CREATE INDEX CONCURRENTLY: build it
				// again, as it was meant to be.
				why := fmt.Sprintf("index %s on %s.%s is invalid (an interrupted CREATE INDEX CONCURRENTLY)", ix.name, full, c.BlindIndex)
				p.Statements = append(p.Statements, st.dropIndex(ix.name, why, false))
				p.Statements = append(p.Statements, st.createIndex(ix.unique, ix.name, " ("+st.columnList(ix.keys, 0, "")+")", why)...)
			}
		}
		var finish []Statement
		for _, ix := range uniques {
			if ix.partial {
				p.Problems = append(p.Problems, Problem{
					What: fmt.Sprintf("partial %s on encrypted column %s.%s cannot be enforced on tokens", describeIndex(ix), full, c.Column),
					Fix:  fmt.Sprintf("create a matching unique index on %s by hand, then drop %s", c.BlindIndex, ix.name),
				})
				continue
			}
			if ix.keys[0] == a.num {
				hashIndexed = true // the unique index on the blind index serves lookups too
			}
			var twin *index
			if hok {
				twin = st.twin(ix, a.num, h.num)
			}
			kept := fmt.Sprintf("%s on encrypted column %s.%s stays while rows are encrypted: it keeps duplicates out and ON CONFLICT (%s) working for clients that reach PostgreSQL directly, and serves lookups of rows not encrypted yet",
				describeIndex(ix), full, c.Column, c.Column)
			if twin == nil {
				newName := indexName(st.name, strings.Join(st.columnNames(ix.keys, a.num, c.BlindIndex), "_"), "key")
				p.Statements = append(p.Statements, st.createIndex(true, newName, " ("+st.columnList(ix.keys, a.num, c.BlindIndex)+")",
					fmt.Sprintf("%s on encrypted column %s.%s cannot be enforced on tokens; its blind index %s gets the same uniqueness", describeIndex(ix), full, c.Column, c.BlindIndex))...)
				p.Notes = append(p.Notes, kept+"; once every row has its blind index (after pgveil backfill and pgveil verify), run pgveil schema --apply again to drop it")
				continue
			}
			if unfilled || !twin.valid {
				p.Notes = append(p.Notes, kept+fmt.Sprintf("; some rows have no blind index %s yet: run pgveil backfill, then pgveil verify, then pgveil schema --apply again to drop it", c.BlindIndex))
				continue
			}
			if !st.hashed[c.Column] {
				// No row has a value, so none has a blind index either: no
				// sign yet that the application writes through pgveil.
				p.Notes = append(p.Notes, kept+fmt.Sprintf("; no row has a blind index %s yet: run pgveil schema --apply again once the application writes through pgveil", c.BlindIndex))
				continue
			}
			why := fmt.Sprintf("every row of %s has its blind index %s and %s enforces uniqueness there, so %s on encrypted column %s.%s is no longer needed", full, c.BlindIndex, twin.name, describeIndex(ix), full, c.Column)
			if ix.constraint != "" {
				finish = append(finish, Statement{SQL: fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT %s", q, quoteIdent(ix.constraint)), Why: why, Finish: true})
			} else {
				finish = append(finish, st.dropIndex(ix.name, why, true))
			}
		}
		if !hashIndexed {
			p.Statements = append(p.Statements, st.createIndex(false, indexName(st.name, c.BlindIndex, "idx"), " ("+quoteIdent(c.BlindIndex)+")",
				fmt.Sprintf("blind index %s.%s has no index, so lookups on %s would scan the table", full, c.BlindIndex, c.Column))...)
		}
		// While some rows have no blind index, mode: migrating looks them up
		// by their plaintext (blind IS NULL AND col = value): without an
		// index on the plaintext column every lookup scans them.
		plainIndexed := false
		for _, ix := range st.indexes {
			if ix.name != migName && ix.valid && !ix.partial && !ix.expression && len(ix.keys) > 0 && ix.keys[0] == a.num && (ix.am == "btree" || ix.am == "hash") {
				plainIndexed = true
			}
		}
		migTail := fmt.Sprintf(" USING hash (%s) WHERE %s IS NULL", quoteIdent(c.Column), quoteIdent(c.BlindIndex))
		migWhy := fmt.Sprintf("during the migration (mode: migrating) lookups on %s.%s also match rows without a blind index by their plaintext, and no index on %s serves that, so every lookup scans those rows; %s indexes only them, and pgveil schema --apply drops it once every row has its blind index",
			full, c.Column, c.Column, migName)
		switch {
		case mig != nil && !mig.valid:
			p.Statements = append(p.Statements, st.dropIndex(migName,
				fmt.Sprintf("index %s on %s.%s is invalid (an interrupted CREATE INDEX CONCURRENTLY)", migName, full, c.Column), false))
			if unfilled && !plainIndexed {
				p.Statements = append(p.Statements, st.createIndex(false, migName, migTail, migWhy)...)
			}
		case mig == nil && unfilled && !plainIndexed:
			p.Statements = append(p.Statements, st.createIndex(false, migName, migTail, migWhy)...)
		case mig != nil && !unfilled:
			finish = append(finish, st.dropIndex(migName,
				fmt.Sprintf("every row of %s has its blind index %s, so %s (plaintext lookups during the migration) is no longer needed", full, c.BlindIndex, migName), true))
		}
		p.Statements = append(p.Statements, finish...)
	}
	return p
}

// planView checks a configured view: its configured columns and their
// blind-index columns must be columns of the view. Keys, indexes and types
// belong to its base table (see checkShapes for how the view and its base
// table must agree); there is no DDL to plan.
func planView(st *tableState, t config.Table) SchemaPlan {
	full := st.schema + "." + st.name
	var p SchemaPlan
	for _, c := range t.Columns {
		if _, ok := st.attrs[c.Column]; !ok {
			p.Problems = append(p.Problems, Problem{What: "column " + full + "." + c.Column + " does not exist (" + full + " is a view)",
				Fix: "fix tables[].columns[].column in the config, or recreate the view with the column"})
			continue
		}
		if c.Searchable() {
			if _, ok := st.attrs[c.BlindIndex]; !ok {
				p.Problems = append(p.Problems, Problem{
					What: fmt.Sprintf("blind index column %s of %s.%s is not a column of view %s: lookups through the view need it", c.BlindIndex, full, c.Column, full),
					Fix:  fmt.Sprintf("recreate the view with its base table's blind index column as %s (CREATE OR REPLACE VIEW can add it as the last column)", c.BlindIndex),
				})
			}
		}
	}
	return p
}

// createIndex builds index name on the table, tail being what follows
// "ON table" (" (cols)", or " USING ... WHERE ..."), without blocking
// writes: CONCURRENTLY. PostgreSQL cannot build an index on a partitioned
// table concurrently, so there the index is created on the partitioned
// table alone (ON ONLY, at once, not valid yet), built concurrently on each
// partition and attached to it; it becomes valid when every partition's is
// attached. Each step is idempotent: a run interrupted anywhere is finished
// by the next.
func (st *tableState) createIndex(unique bool, name, tail, why string) []Statement {
	q := qualified(st.schema, st.name)
	if st.kind != "p" {
		return []Statement{{SQL: createIndexSQL(unique, name, q, "", tail), Why: why, Concurrent: true}}
	}
	u := ""
	if unique {
		u = "UNIQUE "
	}
	out := []Statement{{SQL: fmt.Sprintf("CREATE %sINDEX IF NOT EXISTS %s ON ONLY %s%s", u, quoteIdent(name), q, tail), Why: why}}
	idx := map[string]string{st.schema + "." + st.name: qualified(st.schema, name)} // table -> its index
	for _, pt := range st.parts {
		pname := partIndexName(name, pt.name)
		pq := qualified(pt.schema, pt.name)
		pwhy := fmt.Sprintf("%s, on partition %s.%s", name, pt.schema, pt.name)
		if pt.kind == "p" {
			out = append(out, Statement{SQL: fmt.Sprintf("CREATE %sINDEX IF NOT EXISTS %s ON ONLY %s%s", u, quoteIdent(pname), pq, tail), Why: pwhy})
		} else {
			out = append(out, Statement{SQL: createIndexSQL(unique, pname, pq, "", tail), Why: pwhy, Concurrent: true})
		}
		idx[pt.schema+"."+pt.name] = qualified(pt.schema, pname)
		if parent, ok := idx[pt.parent]; ok {
			out = append(out, Statement{SQL: fmt.Sprintf("ALTER INDEX %s ATTACH PARTITION %s", parent, qualified(pt.schema, pname)), Why: pwhy})
		}
	}
	return out
}

// partIndexName names a partition's part of index name.
func partIndexName(name, partition string) string {
	n := partition + "_" + name
	if len(n) > 63 {
		n = n[:63]
	}
	return n
}

// dropIndex drops index name: CONCURRENTLY, but on a partitioned table,
// where PostgreSQL cannot, at once (with every partition's part).
func (st *tableState) dropIndex(name, why string, finish bool) Statement {
	if st.kind == "p" {
		return Statement{SQL: "DROP INDEX IF EXISTS " + qualified(st.schema, name), Why: why, Finish: finish}
	}
	return Statement{SQL: "DROP INDEX CONCURRENTLY IF EXISTS " + qualified(st.schema, name), Why: why, Concurrent: true, Finish: finish}
}

// createIndexSQL is CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS; tail,
// when set, replaces " (cols)".
func createIndexSQL(unique bool, name, table, cols, tail string) string {
	u := ""
	if unique {
		u = "UNIQUE "
	}
	if tail == "" {
		tail = " (" + cols + ")"
	}
	return fmt.Sprintf("CREATE %sINDEX CONCURRENTLY IF NOT EXISTS %s ON %s%s", u, quoteIdent(name), table, tail)
}

// columnNames names the key columns of an index, with column from (0:
// none) replaced by to.
func (st *tableState) columnNames(keys []int16, from int16, to string) []string {
	cols := make([]string, len(keys))
	for i, k := range keys {
		cols[i] = st.byNum[k]
		if from != 0 && k == from {
			cols[i] = to
		}
	}
	return cols
}

// columnList is columnNames quoted, comma-separated.
func (st *tableState) columnList(keys []int16, from int16, to string) string {
	cols := st.columnNames(keys, from, to)
	for i, n := range cols {
		cols[i] = quoteIdent(n)
	}
	return strings.Join(cols, ", ")
}

// twin finds the unique index on the blind index that matches ix, a unique
// index on the plaintext column from: the same keys with from replaced by
// to (the blind-index column).
func (st *tableState) twin(ix index, from, to int16) *index {
	for i := range st.indexes {
		o := &st.indexes[i]
		if !o.unique || o.primary || o.partial || o.expression || len(o.keys) != len(ix.keys) {
			continue
		}
		same := true
		for k, n := range ix.keys {
			if n == from {
				n = to
			}
			same = same && o.keys[k] == n
		}
		if same {
			return o
		}
	}
	return nil
}

func describeIndex(ix index) string {
	if ix.constraint != "" {
		return "UNIQUE constraint " + ix.constraint
	}
	return "unique index " + ix.name
}

func containsAttr(keys []int16, n int16) bool {
	for _, k := range keys {
		if k == n {
			return true
		}
	}
	return false
}

// PlanSchema inspects the database and returns what the config still
// needs: DDL, problems DDL cannot fix, and notes on what is left for a
// later run.
func PlanSchema(ctx context.Context, pool *pgxpool.Pool, tables []config.Table) (*SchemaPlan, error) {
	out := &SchemaPlan{}
	var rels []*relation
	for _, t := range tables {
		st, err := inspect(ctx, pool, t)
		if err != nil {
			return nil, err
		}
		p := plan(st, t)
		out.Statements = append(out.Statements, p.Statements...)
		out.Problems = append(out.Problems, p.Problems...)
		out.Notes = append(out.Notes, p.Notes...)
		if st.exists {
			rels = append(rels, &relation{cfg: t, st: st})
		}
	}
	probs, info, err := checkShapes(ctx, pool, rels)
	if err != nil {
		return nil, err
	}
	out.Problems = append(out.Problems, probs...)
	out.Info = append(out.Info, info...)
	return out, nil
}

// CheckSchema returns every problem of the database's schema for the
// config, each with its fix: what PlanSchema would change, and what it
// cannot. The finishing step of a migration (Statement.Finish) and what is
// deliberately kept until then come back as notes, not problems.
func CheckSchema(ctx context.Context, pool *pgxpool.Pool, tables []config.Table) (probs []Problem, notes []string, err error) {
	p, err := PlanSchema(ctx, pool, tables)
	if err != nil {
		return nil, nil, err
	}
	probs = make([]Problem, 0, len(p.Statements)+len(p.Problems))
	for _, s := range p.Statements {
		if s.Finish {
			notes = append(notes, s.Why+"; to finish the migration run pgveil schema --apply (runs: "+s.SQL+")")
			continue
		}
		probs = append(probs, Problem{What: s.Why, Fix: "pgveil schema --apply (runs: " + s.SQL + ")"})
	}
	notes = append(append(notes, p.Notes...), p.Info...)
	return append(probs, p.Problems...), notes, nil
}

// WriteStatements prints statements as a SQL script.
func WriteStatements(w io.Writer, stmts []Statement) {
	for _, s := range stmts {
		fmt.Fprintf(w, "-- %s\n%s;\n", s.Why, s.SQL)
	}
}

// ApplySchema runs stmts in order, each on its own (CONCURRENTLY ones
// cannot run in a transaction), printing each before it runs. ALTER TABLE
// waits at most 5 s for its lock, so it never queues the application
// behind it for long; rerun to retry.
func ApplySchema(ctx context.Context, pool *pgxpool.Pool, stmts []Statement, w io.Writer) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	for _, s := range stmts {
		// CONCURRENTLY waits for older transactions without blocking
		// anyone, so it may wait as long as it needs.
		timeout := "SET lock_timeout = '5s'"
		if s.Concurrent {
			timeout = "SET lock_timeout = 0"
		}
		if _, err := conn.Exec(ctx, timeout); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s;\n", s.SQL)
		if _, err := conn.Exec(ctx, s.SQL); err != nil {
			return fmt.Errorf("pgveil: %s: %w", s.Why, err)
		}
	}
	return nil
}

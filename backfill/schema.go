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
				SQL: fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s text", q, quoteIdent(c.BlindIndex)),
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
}

// index is an index of a table in the catalog.
type index struct {
	name       string
	unique     bool
	primary    bool
	valid      bool
	keys       []int16 // attnums; 0 = expression
	partial    bool
	expression bool
	constraint string // name of the UNIQUE constraint using it, ""
}

type tableState struct {
	exists  bool
	schema  string
	name    string
	attrs   map[string]attr
	byNum   map[int16]string
	indexes []index
}

func inspect(ctx context.Context, q querier, t config.Table) (*tableState, error) {
	st := &tableState{schema: schemaOf(t), name: nameOf(t), attrs: map[string]attr{}, byNum: map[int16]string{}}
	var oid uint32
	err := q.QueryRow(ctx, `SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, st.schema, st.name).Scan(&oid)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pgveil: looking up table %s.%s: %w", st.schema, st.name, err)
	}
	st.exists = true
	rows, err := q.Query(ctx, `SELECT a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), t.typname, a.atttypmod
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`, oid)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var n string
		var a attr
		if err := rows.Scan(&n, &a.num, &a.typ, &a.typname, &a.typmod); err != nil {
			return nil, err
		}
		st.attrs[n] = a
		st.byNum[a.num] = n
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = q.Query(ctx, `SELECT c.relname, i.indisunique, i.indisprimary, i.indisvalid, i.indkey::int2[],
			i.indpred IS NOT NULL, i.indexprs IS NOT NULL, coalesce(k.conname, '')
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('u', 'p')
		WHERE i.indrelid = $1 ORDER BY c.relname`, oid)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var ix index
		if err := rows.Scan(&ix.name, &ix.unique, &ix.primary, &ix.valid, &ix.keys, &ix.partial, &ix.expression, &ix.constraint); err != nil {
			return nil, err
		}
		st.indexes = append(st.indexes, ix)
	}
	return st, rows.Err()
}

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
// needed, plus problems DDL cannot fix.
func plan(st *tableState, t config.Table) ([]Statement, []Problem) {
	q := qualified(st.schema, st.name)
	full := st.schema + "." + st.name
	if !st.exists {
		return nil, []Problem{{What: "table " + full + " does not exist",
			Fix: "create it, or fix tables[].table in the config (schema-qualified if not in public)"}}
	}
	var out []Statement
	var probs []Problem
	hasPK := false
	for _, ix := range st.indexes {
		hasPK = hasPK || ix.primary
	}
	if !hasPK {
		probs = append(probs, Problem{What: "table " + full + " has no primary key; pgveil backfill works in batches by primary key",
			Fix: "ALTER TABLE " + q + " ADD PRIMARY KEY (...), or ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY"})
	}
	for _, c := range t.Columns {
		a, ok := st.attrs[c.Column]
		if !ok {
			probs = append(probs, Problem{What: "column " + full + "." + c.Column + " does not exist",
				Fix: "fix tables[].columns[].column in the config, or add the column"})
			continue
		}
		if !a.holdsTokens() {
			why := fmt.Sprintf("encrypted column %s.%s is %s, which cannot hold tokens (they are longer than the plaintext)", full, c.Column, a.typ)
			if a.typname == "varchar" {
				why += "; changing varchar to text does not rewrite the table"
			} else {
				why += "; this changes the column's type and rewrites the table"
			}
			out = append(out, Statement{SQL: fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE text USING %s::text", q, quoteIdent(c.Column), quoteIdent(c.Column)), Why: why})
		}
		// Unique indexes on the plaintext column: equality of tokens means
		// nothing (each has a random IV), so uniqueness moves to the blind
		// index.
		hashIndexed := false
		var uniques []index
		for _, ix := range st.indexes {
			if ix.primary || !ix.unique || ix.expression || !containsAttr(ix.keys, a.num) {
				continue
			}
			uniques = append(uniques, ix)
		}
		if !c.Searchable() {
			for _, ix := range uniques {
				probs = append(probs, Problem{
					What: fmt.Sprintf("%s on encrypted column %s.%s cannot be enforced on tokens", describeIndex(ix), full, c.Column),
					Fix:  fmt.Sprintf("give the column a blind_index in the config (pgveil schema then moves the constraint to it), or drop %s", ix.name),
				})
			}
			continue
		}
		h, hok := st.attrs[c.BlindIndex]
		if !hok {
			out = append(out, Statement{SQL: fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s text", q, quoteIdent(c.BlindIndex)),
				Why: fmt.Sprintf("blind index column %s of %s.%s does not exist", c.BlindIndex, full, c.Column)})
		} else if !h.holdsBlindIndex() {
			out = append(out, Statement{SQL: fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE text USING %s::text", q, quoteIdent(c.BlindIndex), quoteIdent(c.BlindIndex)),
				Why: fmt.Sprintf("blind index column %s.%s is %s, which cannot hold %d hex characters", full, c.BlindIndex, h.typ, keyring.BlindIndexLen)})
		}
		if hok {
			for _, ix := range st.indexes {
				if len(ix.keys) > 0 && ix.keys[0] == h.num && !ix.expression && !ix.partial {
					hashIndexed = true
					if !ix.valid {
						// Left by an interrupted CREATE INDEX CONCURRENTLY:
						// build it again, as it was meant to be.
						why := fmt.Sprintf("index %s on %s.%s is invalid (an interrupted CREATE INDEX CONCURRENTLY)", ix.name, full, c.BlindIndex)
						cols := make([]string, len(ix.keys))
						for i, k := range ix.keys {
							cols[i] = quoteIdent(st.byNum[k])
						}
						unique := ""
						if ix.unique {
							unique = "UNIQUE "
						}
						out = append(out,
							Statement{SQL: "DROP INDEX CONCURRENTLY IF EXISTS " + qualified(st.schema, ix.name), Why: why, Concurrent: true},
							Statement{SQL: fmt.Sprintf("CREATE %sINDEX CONCURRENTLY IF NOT EXISTS %s ON %s (%s)", unique, quoteIdent(ix.name), q, strings.Join(cols, ", ")),
								Why: why, Concurrent: true})
					}
				}
			}
		}
		for _, ix := range uniques {
			if ix.partial {
				probs = append(probs, Problem{
					What: fmt.Sprintf("partial %s on encrypted column %s.%s cannot be enforced on tokens", describeIndex(ix), full, c.Column),
					Fix:  fmt.Sprintf("create a matching unique index on %s by hand, then drop %s", c.BlindIndex, ix.name),
				})
				continue
			}
			cols := make([]string, len(ix.keys))
			names := make([]string, len(ix.keys))
			for i, k := range ix.keys {
				n := st.byNum[k]
				if k == a.num {
					n = c.BlindIndex
				}
				cols[i], names[i] = quoteIdent(n), n
			}
			newName := indexName(st.name, strings.Join(names, "_"), "key")
			out = append(out, Statement{
				SQL:        fmt.Sprintf("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS %s ON %s (%s)", quoteIdent(newName), q, strings.Join(cols, ", ")),
				Why:        fmt.Sprintf("%s on encrypted column %s.%s cannot be enforced on tokens; uniqueness moves to its blind index %s", describeIndex(ix), full, c.Column, c.BlindIndex),
				Concurrent: true,
			})
			if ix.keys[0] == a.num {
				hashIndexed = true // the unique index serves lookups too
			}
			if ix.constraint != "" {
				out = append(out, Statement{SQL: fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT %s", q, quoteIdent(ix.constraint)),
					Why: fmt.Sprintf("UNIQUE constraint %s on encrypted column %s.%s is to be dropped once %s enforces uniqueness", ix.constraint, full, c.Column, newName)})
			} else {
				out = append(out, Statement{SQL: "DROP INDEX CONCURRENTLY IF EXISTS " + qualified(st.schema, ix.name),
					Why:        fmt.Sprintf("unique index %s on encrypted column %s.%s is to be dropped once %s enforces uniqueness", ix.name, full, c.Column, newName),
					Concurrent: true})
			}
		}
		if !hashIndexed {
			out = append(out, Statement{
				SQL: fmt.Sprintf("CREATE INDEX CONCURRENTLY IF NOT EXISTS %s ON %s (%s)",
					quoteIdent(indexName(st.name, c.BlindIndex, "idx")), q, quoteIdent(c.BlindIndex)),
				Why:        fmt.Sprintf("blind index %s.%s has no index, so lookups on %s would scan the table", full, c.BlindIndex, c.Column),
				Concurrent: true,
			})
		}
	}
	return out, probs
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

// PlanSchema inspects the database and returns the DDL the config still
// needs and the problems DDL cannot fix.
func PlanSchema(ctx context.Context, pool *pgxpool.Pool, tables []config.Table) ([]Statement, []Problem, error) {
	var stmts []Statement
	var probs []Problem
	for _, t := range tables {
		st, err := inspect(ctx, pool, t)
		if err != nil {
			return nil, nil, err
		}
		s, p := plan(st, t)
		stmts = append(stmts, s...)
		probs = append(probs, p...)
	}
	return stmts, probs, nil
}

// CheckSchema returns every problem of the database's schema for the
// config, each with its fix: what PlanSchema would change, and what it
// cannot.
func CheckSchema(ctx context.Context, pool *pgxpool.Pool, tables []config.Table) ([]Problem, error) {
	stmts, probs, err := PlanSchema(ctx, pool, tables)
	if err != nil {
		return nil, err
	}
	out := make([]Problem, 0, len(stmts)+len(probs))
	for _, s := range stmts {
		out = append(out, Problem{What: s.Why, Fix: "pgveil schema --apply (runs: " + s.SQL + ")"})
	}
	return append(out, probs...), nil
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

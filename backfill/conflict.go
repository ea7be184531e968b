package backfill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Duplicates
//
// A blind index inherits the uniqueness of its plaintext column (pgveil
// schema). Two rows can still come to hold the same plaintext while a
// column is migrated: a row not encrypted yet has no blind index, so a
// write through pgveil of the same value (which gets one) is not refused,
// and during a hash-key rotation rows hashed under the old and the new key
// do not collide either. Writing the second blind index then violates the
// unique index (23505). The data commands find the rows involved, leave
// those columns of the row as they are, count the row as failed (reason
// "duplicate") and go on; verify finds them before any write.

// maxDuplicates bounds how many duplicate rows a summary lists by key.
const maxDuplicates = 20

// Duplicate is a row whose value in a configured column could not be
// written because other rows already hold the same value (plaintext, or
// blind index) where a unique index wants it once.
type Duplicate struct {
	Column string   `json:"column"` // configured column
	Index  string   `json:"index"`  // unique index violated
	Row    string   `json:"row"`    // primary key, as text
	Others []string `json:"others"` // primary keys of rows holding it already (up to five; none found: empty)
}

// uniqueIndex is a unique index as the duplicate lookups need it.
type uniqueIndex struct {
	name string
	cols []string // key columns; nil when a key is an expression
	pred string   // WHERE of a partial index, "" if none
}

// uniqueViolation returns the PostgreSQL error of a unique violation.
func uniqueViolation(err error) (*pgconn.PgError, bool) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return pe, true
	}
	return nil, false
}

// uniqueIndex looks up a unique index of the table by name (cached).
func (ti *tableInfo) uniqueIndex(ctx context.Context, q querier, name string) (*uniqueIndex, error) {
	ti.mu.Lock()
	ix, ok := ti.uniques[name]
	ti.mu.Unlock()
	if ok {
		return ix, nil
	}
	all, err := ti.uniqueIndexes(ctx, q)
	if err != nil {
		return nil, err
	}
	for _, u := range all {
		if u.name == name {
			return u, nil
		}
	}
	return nil, nil
}

// uniqueIndexes lists the valid unique indexes of the table (primary key
// excluded) and caches them by name.
func (ti *tableInfo) uniqueIndexes(ctx context.Context, q querier) ([]*uniqueIndex, error) {
	rows, err := q.Query(ctx, `SELECT c.relname, i.indexprs IS NOT NULL, coalesce(pg_get_expr(i.indpred, i.indrelid), ''),
			ARRAY(SELECT coalesce(a.attname::text, '') FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(n, o)
				LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
				WHERE k.o <= i.indnkeyatts ORDER BY k.o)
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indisvalid AND NOT i.indisprimary
		ORDER BY c.relname`, ti.qname)
	if err != nil {
		return nil, fmt.Errorf("pgveil: reading the unique indexes of %s: %w", ti.full, err)
	}
	var out []*uniqueIndex
	for rows.Next() {
		var ix uniqueIndex
		var expr bool
		var cols []string
		if err := rows.Scan(&ix.name, &expr, &ix.pred, &cols); err != nil {
			return nil, err
		}
		if !expr {
			ix.cols = cols
		}
		out = append(out, &ix)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgveil: reading the unique indexes of %s: %w", ti.full, err)
	}
	ti.mu.Lock()
	if ti.uniques == nil {
		ti.uniques = map[string]*uniqueIndex{}
	}
	for _, ix := range out {
		ti.uniques[ix.name] = ix
	}
	ti.mu.Unlock()
	return out, nil
}

// involves reports whether the index has column col among its keys; an
// index on an expression involves every column.
func (ix *uniqueIndex) involves(col string) bool {
	if ix.cols == nil {
		return true
	}
	for _, c := range ix.cols {
		if c == col {
			return true
		}
	}
	return false
}

// probe is a row that would get new values in some columns of a unique
// index.
type probe struct {
	key  []string // primary key, as text
	vals []string // new values, one per column of holders' set
}

// holders finds, for each probe, the other rows that already hold what the
// probe would hold in the key columns of ix: the new values of the columns
// set, the row's current values of the others. It returns up to five
// primary keys (as text) per probe, in key order, and nothing for an index
// on an expression. Values travel as parameters and never come back.
func (ti *tableInfo) holders(ctx context.Context, q querier, ix *uniqueIndex, set []string, probes []probe) ([][]string, error) {
	out := make([][]string, len(probes))
	if ix.cols == nil || len(probes) == 0 {
		return out, nil
	}
	nk := len(ti.key)
	vcols, arrs, onN, n := ti.keyValues("n")
	var onO, ok, nk2 []string
	args := make([]any, 0, nk+len(set))
	for i, k := range ti.key {
		ok = append(ok, "o."+k.name)
		nk2 = append(nk2, "n."+k.name)
		ks := make([]string, len(probes))
		for p := range probes {
			ks[p] = probes[p].key[i]
		}
		args = append(args, ks)
	}
	setAt := map[string]int{}
	for i, c := range set {
		setAt[c] = i
		vcols = append(vcols, "pgveil_v"+strconv.Itoa(i))
		arrs = append(arrs, "$"+strconv.Itoa(n)+"::text[]")
		n++
		vs := make([]string, len(probes))
		for p := range probes {
			vs[p] = probes[p].vals[i]
		}
		args = append(args, vs)
	}
	for _, c := range ix.cols {
		typ, known := ti.types[c]
		if !known {
			return out, nil
		}
		if i, isSet := setAt[c]; isSet {
			onO = append(onO, fmt.Sprintf("o.%s = v.pgveil_v%d::%s", quoteIdent(c), i, typ))
		} else {
			onO = append(onO, fmt.Sprintf("o.%s = n.%s", quoteIdent(c), quoteIdent(c)))
		}
	}
	other := ti.qname
	if ix.pred != "" {
		other = "(SELECT * FROM " + ti.qname + " WHERE " + ix.pred + ")"
	}
	var sel []string
	for _, k := range ok {
		sel = append(sel, k+"::text")
	}
	sql := "SELECT v.pgveil_i::text, " + strings.Join(sel, ", ") +
		" FROM unnest(" + strings.Join(arrs, ", ") + ") WITH ORDINALITY AS v(" + strings.Join(vcols, ", ") + ", pgveil_i)" +
		" JOIN " + ti.qname + " n ON " + strings.Join(onN, " AND ") +
		" JOIN " + other + " o ON " + strings.Join(onO, " AND ") +
		" AND (" + strings.Join(ok, ", ") + ") <> (" + strings.Join(nk2, ", ") + ")" +
		" ORDER BY v.pgveil_i, " + strings.Join(ok, ", ")
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("pgveil: looking for rows of %s holding the same value: %w", ti.full, err)
	}
	defer rows.Close()
	for rows.Next() {
		raw := rows.RawValues()
		i, err := strconv.Atoi(string(raw[0]))
		if err != nil || i < 1 || i > len(probes) {
			return nil, fmt.Errorf("pgveil: BUG: holders: ordinality %q", raw[0])
		}
		if len(out[i-1]) >= defaultSamples {
			continue
		}
		parts := make([]string, nk)
		for k := range parts {
			parts[k] = string(raw[1+k])
		}
		out[i-1] = append(out[i-1], keyString(parts))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgveil: looking for rows of %s holding the same value: %w", ti.full, err)
	}
	return out, nil
}

// duplicate handles a row whose write violated the unique index named by
// pe: it finds the rows already holding the value, leaves the row's
// columns of that index as they are (value and blind index together, so
// the row stays consistent: a plaintext with no blind index, or a token
// with its own) and marks them failed. It reports whether some other
// column of the row still needs writing.
func (j *Job) duplicate(ctx context.Context, q querier, ti *tableInfo, b *batch, cells []cell, row int, pe *pgconn.PgError) (Duplicate, bool) {
	ncols := len(ti.cols)
	d := Duplicate{Index: pe.ConstraintName, Row: b.keyText(row), Others: []string{}}
	ix, err := ti.uniqueIndex(ctx, q, pe.ConstraintName)
	if err != nil || ix == nil {
		ix = &uniqueIndex{name: pe.ConstraintName} // unknown: every column involved
	}
	var set []string
	var vals []string
	nullNew := false
	var involved []int
	for ci, c := range ti.cols {
		cl := &cells[row*ncols+ci]
		if !cl.setValue && !cl.setHash {
			continue
		}
		valueIn, hashIn := ix.involves(c.cfg.Column), c.hash != "" && ix.involves(c.cfg.BlindIndex)
		if !(valueIn && cl.setValue) && !(hashIn && cl.setHash) {
			continue
		}
		involved = append(involved, ci)
		if ix.cols == nil {
			continue
		}
		if valueIn && cl.setValue {
			set = append(set, c.cfg.Column)
			vals = append(vals, string(cl.value))
			nullNew = nullNew || cl.value == nil
		}
		if hashIn && cl.setHash {
			set = append(set, c.cfg.BlindIndex)
			vals = append(vals, string(cl.newHash))
			nullNew = nullNew || cl.newHash == nil
		}
	}
	if len(involved) == 0 {
		// Not a column this write changes (a concurrent change of the
		// index's other columns?): hold back the whole row.
		for ci := range ti.cols {
			if cl := &cells[row*ncols+ci]; cl.setValue || cl.setHash {
				involved = append(involved, ci)
			}
		}
		set = nil
	}
	if len(set) > 0 && !nullNew {
		key := make([]string, len(ti.key))
		for i := range key {
			key[i] = b.keys[i][row]
		}
		if hs, err := ti.holders(ctx, q, ix, set, []probe{{key: key, vals: vals}}); err == nil && len(hs[0]) > 0 {
			d.Others = hs[0]
		}
	}
	for n, ci := range involved {
		cl := &cells[row*ncols+ci]
		cl.setValue, cl.setHash, cl.value, cl.newHash = false, false, nil, nil
		cl.fail = failDuplicate
		if n == 0 {
			d.Column = ti.cols[ci].cfg.Column
		}
	}
	more := false
	for ci := range ti.cols {
		if cl := &cells[row*ncols+ci]; cl.setValue || cl.setHash {
			more = true
		}
	}
	return d, more
}

// writeRows writes rows idx like write. When a unique index refuses the
// batch (23505, which rolls it back as a whole), the rows are written in
// halves until each row that violates it is alone; such a row is written
// without the columns of that index (see duplicate), and the others as
// usual. Rows written before an error stay in the map it returns.
func (j *Job) writeRows(ctx context.Context, q writer, ti *tableInfo, b *batch, cells []cell, idx []int, dups *[]Duplicate) (map[string]bool, error) {
	written, err := j.write(ctx, q, ti, b, cells, idx)
	pe, dup := uniqueViolation(err)
	if !dup {
		if written == nil {
			written = map[string]bool{}
		}
		return written, err
	}
	out := map[string]bool{}
	if len(idx) > 1 {
		mid := len(idx) / 2
		for _, half := range [][]int{idx[:mid], idx[mid:]} {
			w, err := j.writeRows(ctx, q, ti, b, cells, half, dups)
			for k := range w {
				out[k] = true
			}
			if err != nil {
				return out, err
			}
		}
		return out, nil
	}
	d, more := j.duplicate(ctx, q, ti, b, cells, idx[0], pe)
	*dups = append(*dups, d)
	if !more {
		return out, nil
	}
	return j.writeRows(ctx, q, ti, b, cells, idx, dups)
}

// writer is what write needs from a pool.
type writer interface {
	querier
	Begin(ctx context.Context) (pgx.Tx, error)
}

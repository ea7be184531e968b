package backfill

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgveil/pgveil/keyring"
)

// Report is what pgveil verify found (its --json output).
type Report struct {
	// OK is true when every value of every configured column is NULL or a
	// token under the primary key with a correct blind index.
	OK           bool            `json:"ok"`
	PrimaryKey   string          `json:"primary_key"`   // fingerprint
	FallbackKeys []string        `json:"fallback_keys"` // fingerprints, in order
	HashKey      string          `json:"hash_key"`      // fingerprint
	MaxSize      int             `json:"max_size"`      // encryption.max_size in force (0: no limit)
	Columns      []*ColumnReport `json:"columns"`
}

// ColumnReport counts the values of one configured column.
type ColumnReport struct {
	Table             string           `json:"table"` // schema.table
	Column            string           `json:"column"`
	BlindIndex        string           `json:"blind_index,omitempty"`
	Rows              int64            `json:"rows"`
	Null              int64            `json:"null"`
	PrimaryKeyTokens  int64            `json:"primary_key_tokens"`
	FallbackKeyTokens map[string]int64 `json:"fallback_key_tokens"` // by fingerprint
	Plaintext         int64            `json:"plaintext"`
	Undecryptable     int64            `json:"undecryptable"`
	BlindIndexMissing int64            `json:"blind_index_missing"`
	BlindIndexWrong   int64            `json:"blind_index_wrong"`
	// Of the plaintext values, those backfill cannot encrypt as they are:
	// over encryption.max_size, or refused by sanitize_input.
	OverMaxSize  int64 `json:"over_max_size"`
	InvalidInput int64 `json:"invalid_input"`
	// Duplicate counts values (plaintext, or tokens whose blind index is
	// missing or stale) whose blind index another row already holds under
	// a unique index: backfill or rehash cannot write it until the rows
	// are told apart. DuplicateRows lists up to five as [row, other rows...].
	Duplicate     int64      `json:"duplicate"`
	DuplicateRows [][]string `json:"duplicate_rows,omitempty"`
	// plainDuplicate: the duplicates that are plaintext (text output).
	plainDuplicate int64
	OK             bool `json:"ok"`
	// Samples holds up to five primary keys (as text) per problem:
	// "fallback_key", "plaintext" (values backfill can encrypt),
	// "over_max_size", "invalid_input", "undecryptable",
	// "blind_index_missing", "blind_index_wrong". Never a value.
	Samples map[string][]string `json:"samples,omitempty"`
}

func (c *ColumnReport) sample(problem, key string) {
	if c.Samples == nil {
		c.Samples = map[string][]string{}
	}
	if len(c.Samples[problem]) < defaultSamples {
		c.Samples[problem] = append(c.Samples[problem], key)
	}
}

func (c *ColumnReport) add(o *ColumnReport) {
	c.Rows += o.Rows
	c.Null += o.Null
	c.PrimaryKeyTokens += o.PrimaryKeyTokens
	for k, v := range o.FallbackKeyTokens {
		c.FallbackKeyTokens[k] += v
	}
	c.Plaintext += o.Plaintext
	c.Undecryptable += o.Undecryptable
	c.BlindIndexMissing += o.BlindIndexMissing
	c.BlindIndexWrong += o.BlindIndexWrong
	c.OverMaxSize += o.OverMaxSize
	c.InvalidInput += o.InvalidInput
	c.Duplicate += o.Duplicate
	c.plainDuplicate += o.plainDuplicate
	for _, d := range o.DuplicateRows {
		if len(c.DuplicateRows) < defaultSamples {
			c.DuplicateRows = append(c.DuplicateRows, d)
		}
	}
	for p, keys := range o.Samples {
		for _, k := range keys {
			c.sample(p, k)
		}
	}
}

// Verify reads every configured column of j.Tables (in j.Shard) and
// counts what is stored. It writes nothing; Op, DryRun, MaxRate and the
// failure settings are ignored.
func (j *Job) Verify(ctx context.Context, pool *pgxpool.Pool) (*Report, error) {
	j.defaults()
	fps := j.Keys.KeyFingerprints()
	rep := &Report{OK: true, PrimaryKey: fps[0], FallbackKeys: append([]string{}, fps[1:]...), HashKey: j.Keys.HashKeyFingerprint(), MaxSize: j.MaxSize}
	infos, err := loadTables(ctx, pool, j.Tables, j.Out)
	if err != nil {
		return rep, err
	}
	for _, ti := range infos {
		cols, err := j.verifyTable(ctx, pool, ti, fps)
		if err != nil {
			return rep, err
		}
		for _, c := range cols {
			c.OK = c.Rows == c.Null+c.PrimaryKeyTokens && c.BlindIndexMissing == 0 && c.BlindIndexWrong == 0
			rep.OK = rep.OK && c.OK
			rep.Columns = append(rep.Columns, c)
		}
	}
	return rep, nil
}

func newColumnReports(ti *tableInfo, fps []string) []*ColumnReport {
	out := make([]*ColumnReport, len(ti.cols))
	for i, c := range ti.cols {
		out[i] = &ColumnReport{Table: ti.full, Column: c.cfg.Column, BlindIndex: c.cfg.BlindIndex, FallbackKeyTokens: map[string]int64{}}
		for _, fp := range fps[1:] {
			out[i].FallbackKeyTokens[fp] = 0
		}
	}
	return out
}

func (j *Job) verifyTable(ctx context.Context, pool *pgxpool.Pool, ti *tableInfo, fps []string) ([]*ColumnReport, error) {
	var total int64
	if err := pool.QueryRow(ctx, ti.countQuery(false, j.Shard)).Scan(&total); err != nil {
		return nil, fmt.Errorf("pgveil: counting rows of %s: %w", ti.full, err)
	}
	prog := NewProgress(j.Out, ti.display, total, j.terminal())
	defer prog.Finish()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan *batch, j.Workers)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(work)
		var after []string
		for {
			b, err := j.readBatch(ctx, pool, ti, after, 0)
			if err != nil {
				cancel(fmt.Errorf("pgveil: reading %s: %w", ti.full, err))
				return
			}
			if b.n == 0 {
				return
			}
			select {
			case work <- b:
			case <-ctx.Done():
				return
			}
			if b.n < j.BatchSize {
				return
			}
			after = b.lastKey()
		}
	}()

	// Unique indexes on each blind index: a value whose blind index
	// another row holds already is a duplicate, which backfill and rehash
	// cannot write.
	uniques, err := ti.uniqueIndexes(ctx, pool)
	if err != nil {
		cancel(err)
	}
	uniq := make([][]*uniqueIndex, len(ti.cols))
	for ci, c := range ti.cols {
		if c.hash == "" {
			continue
		}
		for _, ix := range uniques {
			if ix.cols != nil && ix.involves(c.cfg.BlindIndex) {
				uniq[ci] = append(uniq[ci], ix)
			}
		}
	}

	total2 := newColumnReports(ti, fps)
	var mu sync.Mutex
	for w := 0; w < j.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc := &rowCodec{op: opVerify, keys: j.Keys, maxSize: j.MaxSize, sanitize: j.Sanitize}
			var c cell
			var arena []byte
			type eval struct {
				class    class
				keyIndex int
				hash     hashState
				fail     failure
			}
			var evs []eval
			for b := range work {
				part := newColumnReports(ti, fps)
				for ci, col := range ti.cols {
					cr := part[ci]
					evs = evs[:0]
					var probes []probe
					var probeRows []int
					for row := 0; row < b.n; row++ {
						arena = rc.eval(&c, col.domain, b.vals[ci][row], b.hash[ci][row], arena[:0])
						e := eval{class: c.class, keyIndex: c.keyIndex, hash: c.hash}
						if c.class == classPlain {
							if err := keyring.CheckPlain(b.vals[ci][row], j.MaxSize, j.Sanitize); err != nil {
								e.fail = plainFailure(err)
							}
						}
						if len(uniq[ci]) > 0 && e.fail == failNone && (c.class == classPlain || c.class == classToken) &&
							(c.hash == hashMissing || c.hash == hashWrong) {
							key := make([]string, len(ti.key))
							for k := range key {
								key[k] = b.keys[k][row]
							}
							probes = append(probes, probe{key: key, vals: []string{string(rc.idx)}})
							probeRows = append(probeRows, row)
						}
						evs = append(evs, e)
					}
					dupOf := map[int][]string{}
					for _, ix := range uniq[ci] {
						hs, err := ti.holders(ctx, pool, ix, []string{col.cfg.BlindIndex}, probes)
						if err != nil {
							cancel(err)
							return
						}
						for p, h := range hs {
							if len(h) > 0 && dupOf[probeRows[p]] == nil {
								dupOf[probeRows[p]] = h
							}
						}
					}
					for row := 0; row < b.n; row++ {
						e := evs[row]
						cr.Rows++
						switch e.class {
						case classNull:
							cr.Null++
						case classToken:
							if e.keyIndex == 0 {
								cr.PrimaryKeyTokens++
							} else {
								cr.FallbackKeyTokens[fps[e.keyIndex]]++
								cr.sample("fallback_key", b.keyText(row))
							}
						case classPlain:
							cr.Plaintext++
							switch {
							case e.fail == failTooLarge:
								cr.OverMaxSize++
								cr.sample("over_max_size", b.keyText(row))
							case e.fail == failInvalidInput:
								cr.InvalidInput++
								cr.sample("invalid_input", b.keyText(row))
							case dupOf[row] == nil:
								cr.sample("plaintext", b.keyText(row))
							}
						case classUndecryptable:
							cr.Undecryptable++
							cr.sample("undecryptable", b.keyText(row))
						}
						if others := dupOf[row]; others != nil {
							cr.Duplicate++
							if e.class == classPlain {
								cr.plainDuplicate++
							}
							if len(cr.DuplicateRows) < defaultSamples {
								cr.DuplicateRows = append(cr.DuplicateRows, append([]string{b.keyText(row)}, others...))
							}
						}
						switch e.hash {
						case hashMissing:
							cr.BlindIndexMissing++
							cr.sample("blind_index_missing", b.keyText(row))
						case hashWrong:
							cr.BlindIndexWrong++
							cr.sample("blind_index_wrong", b.keyText(row))
						}
					}
				}
				mu.Lock()
				for i := range total2 {
					total2[i].add(part[i])
				}
				mu.Unlock()
				prog.Add(int64(b.n))
			}
		}()
	}
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil {
		return nil, cause
	}
	return total2, nil
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people: one block per column, each
// problem with its fix.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "primary key %s", r.PrimaryKey)
	if len(r.FallbackKeys) > 0 {
		fmt.Fprintf(w, ", fallback keys %s", strings.Join(r.FallbackKeys, ", "))
	}
	fmt.Fprintf(w, ", hash key %s\n", r.HashKey)
	for _, c := range r.Columns {
		status := "OK"
		if !c.OK {
			status = "PROBLEM"
		}
		name := c.Table + "." + c.Column
		if c.BlindIndex != "" {
			name += " (blind index " + c.BlindIndex + ")"
		}
		fmt.Fprintf(w, "%s: %s\n", name, status)
		fmt.Fprintf(w, "  rows %d, null %d, tokens under the primary key %d", c.Rows, c.Null, c.PrimaryKeyTokens)
		for _, fp := range r.FallbackKeys {
			fmt.Fprintf(w, ", under fallback %s %d", fp, c.FallbackKeyTokens[fp])
		}
		fmt.Fprintf(w, ", plaintext %d", c.Plaintext)
		if c.OverMaxSize > 0 || c.InvalidInput > 0 {
			fmt.Fprintf(w, " (over max_size %d, invalid input %d)", c.OverMaxSize, c.InvalidInput)
		}
		fmt.Fprintf(w, ", undecryptable %d", c.Undecryptable)
		if c.Duplicate > 0 {
			fmt.Fprintf(w, ", duplicate %d", c.Duplicate)
		}
		if c.BlindIndex != "" {
			fmt.Fprintf(w, ", blind index missing %d, wrong %d", c.BlindIndexMissing, c.BlindIndexWrong)
		}
		fmt.Fprintln(w)
		var fallback int64
		for _, v := range c.FallbackKeyTokens {
			fallback += v
		}
		problem := func(n int64, key, what, fix string) {
			if n == 0 {
				return
			}
			fmt.Fprintf(w, "  problem: %d %s (rows %s)\n    fix: %s\n", n, what, strings.Join(c.Samples[key], ", "), fix)
		}
		problem(fallback, "fallback_key", "tokens under a fallback key", "run pgveil reencrypt")
		problem(c.Plaintext-c.OverMaxSize-c.InvalidInput-c.plainDuplicate, "plaintext", "plaintext values", "run pgveil backfill")
		problem(c.OverMaxSize, "over_max_size", fmt.Sprintf("plaintext values over encryption.max_size (%d bytes), which pgveil backfill cannot encrypt", r.MaxSize),
			"raise encryption.max_size (ENCRYPTION_MAX_SIZE) above the largest of them, or shorten them; then run pgveil backfill")
		problem(c.InvalidInput, "invalid_input", "plaintext values refused by sanitize_input (invalid UTF-8 or a NUL byte), which pgveil backfill cannot encrypt",
			"correct them, or set encryption.sanitize_input: false if the column takes any bytes; then run pgveil backfill")
		if c.Duplicate > 0 {
			pairs := make([]string, len(c.DuplicateRows))
			for i, d := range c.DuplicateRows {
				pairs[i] = d[0] + " (same as " + strings.Join(d[1:], ", ") + ")"
			}
			fmt.Fprintf(w, "  problem: %d values whose blind index other rows hold already under a unique index: the same plaintext twice (rows %s)\n    fix: keep one row of each group (merge, delete or change the others, directly or through pgveil), then run pgveil backfill (pgveil rehash during a hash-key rotation)\n",
				c.Duplicate, strings.Join(pairs, ", "))
		}
		problem(c.Undecryptable, "undecryptable", "values that are not a token pgveil can open: tokens of another key, or plaintext that looks like one",
			"if they are tokens of a key pgveil no longer has, add it to keys.fallback_keys (ENCRYPTION_KEY_FALLBACK), then run pgveil reencrypt; if they are plaintext that starts like a token (gAAAAA...), write them again through pgveil, which encrypts them (UPDATE ... SET col = 'the value' WHERE <primary key>)")
		missingFix := "run pgveil backfill"
		if c.OverMaxSize+c.InvalidInput+c.Duplicate+c.Undecryptable > 0 {
			missingFix += " (for the rows of the problems above, once those are fixed)"
		}
		problem(c.BlindIndexMissing, "blind_index_missing", "blind indexes missing", missingFix)
		problem(c.BlindIndexWrong, "blind_index_wrong", "blind indexes not made with the current hash key",
			"run pgveil rehash (keep the old hash key in keys.fallback_hash_keys meanwhile)")
	}
	if r.OK {
		fmt.Fprintln(w, "verify: OK: every value is a token under the primary key with a correct blind index")
	} else {
		fmt.Fprintln(w, "verify: FAILED")
	}
}

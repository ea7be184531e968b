package backfill

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Report is what pgveil verify found (its --json output).
type Report struct {
	// OK is true when every value of every configured column is NULL or a
	// token under the primary key with a correct blind index.
	OK           bool            `json:"ok"`
	PrimaryKey   string          `json:"primary_key"`   // fingerprint
	FallbackKeys []string        `json:"fallback_keys"` // fingerprints, in order
	HashKey      string          `json:"hash_key"`      // fingerprint
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
	OK                bool             `json:"ok"`
	// Samples holds up to five primary keys (as text) per problem:
	// "fallback_key", "plaintext", "undecryptable", "blind_index_missing",
	// "blind_index_wrong". Never a value.
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
	rep := &Report{OK: true, PrimaryKey: fps[0], FallbackKeys: append([]string{}, fps[1:]...), HashKey: j.Keys.HashKeyFingerprint()}
	for _, t := range j.Tables {
		ti, err := loadTable(ctx, pool, t)
		if err != nil {
			return rep, err
		}
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

	total2 := newColumnReports(ti, fps)
	var mu sync.Mutex
	for w := 0; w < j.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc := &rowCodec{op: opVerify, keys: j.Keys, maxSize: j.MaxSize, sanitize: j.Sanitize}
			var c cell
			var arena []byte
			for b := range work {
				part := newColumnReports(ti, fps)
				for ci, col := range ti.cols {
					cr := part[ci]
					for row := 0; row < b.n; row++ {
						arena = rc.eval(&c, col.domain, b.vals[ci][row], b.hash[ci][row], arena[:0])
						cr.Rows++
						switch c.class {
						case classNull:
							cr.Null++
						case classToken:
							if c.keyIndex == 0 {
								cr.PrimaryKeyTokens++
							} else {
								cr.FallbackKeyTokens[fps[c.keyIndex]]++
								cr.sample("fallback_key", b.keyText(row))
							}
						case classPlain:
							cr.Plaintext++
							cr.sample("plaintext", b.keyText(row))
						case classUndecryptable:
							cr.Undecryptable++
							cr.sample("undecryptable", b.keyText(row))
						}
						switch c.hash {
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
		fmt.Fprintf(w, ", plaintext %d, undecryptable %d", c.Plaintext, c.Undecryptable)
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
		problem(c.Plaintext, "plaintext", "plaintext values", "run pgveil backfill")
		problem(c.Undecryptable, "undecryptable", "values no configured key decrypts",
			"add the key that encrypted them to keys.fallback_keys (ENCRYPTION_KEY_FALLBACK), then run pgveil reencrypt")
		problem(c.BlindIndexMissing, "blind_index_missing", "blind indexes missing", "run pgveil backfill")
		problem(c.BlindIndexWrong, "blind_index_wrong", "blind indexes not made with the current hash key",
			"run pgveil rehash (keep the old hash key in keys.fallback_hash_keys meanwhile)")
	}
	if r.OK {
		fmt.Fprintln(w, "verify: OK: every value is a token under the primary key with a correct blind index")
	} else {
		fmt.Fprintln(w, "verify: FAILED")
	}
}

package backfill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
)

// Op is what a data command does to the configured columns.
type Op string

// The data commands.
const (
	OpEncrypt   Op = "encrypt"   // pgveil backfill: plaintext to tokens, fill blind indexes
	OpReencrypt Op = "reencrypt" // pgveil reencrypt: tokens of fallback keys to the primary key
	OpRehash    Op = "rehash"    // pgveil rehash: blind indexes under the current hash key
	OpDecrypt   Op = "decrypt"   // pgveil decrypt: tokens back to plaintext, blind indexes emptied

	opVerify Op = "verify" // classify only (Job.Verify)
)

// verb is how summaries say what happened to a value.
func (o Op) verb() string {
	switch o {
	case OpEncrypt:
		return "encrypted"
	case OpReencrypt:
		return "re-encrypted"
	case OpRehash:
		return "rehashed"
	case OpDecrypt:
		return "decrypted"
	}
	return string(o)
}

// Shard selects part of every table: rows whose primary key hashes to
// Index modulo Count. Count 0 or 1 means the whole table.
type Shard struct{ Index, Count int }

func (s Shard) String() string {
	if s.Count <= 1 {
		return "0/1"
	}
	return strconv.Itoa(s.Index) + "/" + strconv.Itoa(s.Count)
}

// ParseShard parses "I/N" with 0 <= I < N.
func ParseShard(s string) (Shard, error) {
	i, n, ok := strings.Cut(s, "/")
	a, err1 := strconv.Atoi(i)
	b, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || b < 1 || a < 0 || a >= b {
		return Shard{}, fmt.Errorf("pgveil: --shard must be I/N with 0 <= I < N (for a Kubernetes Indexed Job: --shard $(JOB_COMPLETION_INDEX)/N), not %q", s)
	}
	return Shard{Index: a, Count: b}, nil
}

// Defaults of a Job.
const (
	DefaultBatchSize   = 1000
	DefaultMaxFailures = 0.01
	defaultSamples     = 5
)

// Job is one run of a data command over the configured tables.
type Job struct {
	Op     Op
	Tables []config.Table
	Keys   Keys
	// MaxSize and Sanitize are encryption.max_size and sanitize_input:
	// plaintext they refuse is a failed row, never encrypted.
	MaxSize  int
	Sanitize bool

	BatchSize int   // rows per batch and transaction; default 1000
	Workers   int   // batches processed in parallel; default 1
	Shard     Shard // part of each table this run covers
	// MaxRate caps rows per second over all workers; 0 means no cap.
	MaxRate float64
	// MaxFailures is the fraction of failed rows (undecryptable, over
	// max_size, invalid input) above which the run stops with a
	// *FailureError. Default 0.01; negative means 0.
	MaxFailures float64
	// DryRun reads and evaluates everything and writes nothing: the
	// summary counts what would change and samples primary keys.
	DryRun  bool
	Verbose bool

	// Out receives progress and the summary: a live bar when it is a
	// terminal, a line per batch otherwise.
	Out io.Writer
	// Terminal forces (true) the live bar; by default it is used when Out
	// is a terminal.
	Terminal *bool
	Metrics  *keyring.Metrics
	// NoResume ignores and clears saved progress.
	NoResume bool
}

// FailureError is a run stopped because more than MaxFailures of its rows
// failed (exit 1: the runbook's rollback criterion).
type FailureError struct {
	Table  string
	Failed int64
	Rows   int64
	Max    float64
	// Reasons counts the failed values by reason ("undecryptable", "over
	// max_size", "invalid input", "duplicate").
	Reasons map[string]int64
}

func (e *FailureError) Error() string {
	return fmt.Sprintf("pgveil: stopped: %d of %d rows of %s failed (%.2f%%), above --max-failures %.2f%%",
		e.Failed, e.Rows, e.Table, 100*float64(e.Failed)/float64(max(e.Rows, 1)), 100*e.Max)
}

// Hint says how to fix it, for the reasons the rows failed.
func (e *FailureError) Hint() string {
	fixes := failureFixes(e.Reasons)
	if len(fixes) == 0 {
		fixes = failureFixes(map[string]int64{reasonUndecryptable: 1, reasonTooLarge: 1, reasonInvalidInput: 1, reasonDuplicate: 1})
	}
	return strings.Join(fixes, "; ") + "; then run the same command again (pgveil verify names the rows, by primary key)"
}

// failureFixes says, per reason rows failed for, what to do about them.
func failureFixes(reasons map[string]int64) []string {
	var out []string
	if reasons[reasonUndecryptable] > 0 {
		out = append(out, "undecryptable values are not a token any configured key opens: a token of another key (add that key to keys.fallback_keys) or a plaintext that looks like a token (write it again through pgveil, which encrypts it)")
	}
	if reasons[reasonTooLarge] > 0 {
		out = append(out, "values over encryption.max_size: raise encryption.max_size (ENCRYPTION_MAX_SIZE) above the largest, or shorten those values")
	}
	if reasons[reasonInvalidInput] > 0 {
		out = append(out, "values refused by sanitize_input (invalid UTF-8 or a NUL byte): correct them, or set encryption.sanitize_input: false if the column takes any bytes")
	}
	if reasons[reasonDuplicate] > 0 {
		out = append(out, "duplicates: rows listed above hold the same value of a column whose blind index is unique; keep one row of each group (merge, delete or change the others, directly or through pgveil)")
	}
	return out
}

// Summary is what a run did.
type Summary struct {
	Op     Op
	DryRun bool
	Shard  Shard
	Tables []*TableSummary
}

// TableSummary is what a run did to one table.
type TableSummary struct {
	Table    string
	Rows     int64 // rows examined in this run
	Written  int64 // rows written (dry run: that would be)
	Failed   int64 // rows with a value that failed
	Resumed  bool  // continued from saved progress
	Retries  int64 // rows read again because they changed or were locked
	Duration time.Duration
	Columns  []*ColumnSummary
	// FailedKeys samples primary keys (as text) of failed rows.
	FailedKeys []string
	// Failures counts failed values by reason.
	Failures map[string]int64
	// Duplicates lists (up to 20) rows not written because other rows hold
	// the same value where a unique index wants it once.
	Duplicates []Duplicate
	// Skipped: an earlier run of the same command, interrupted before it
	// got through all its tables, finished this one (see ProgressTable).
	Skipped bool
	// FinishedAt is when that run finished it (Skipped only).
	FinishedAt time.Time
}

// ColumnSummary is what a run did to one column.
type ColumnSummary struct {
	Column     string
	BlindIndex string
	Values     int64    // values changed (dry run: that would be)
	Hashes     int64    // blind indexes written
	Failed     int64    // values that failed
	Samples    []string // dry run: primary keys of rows that would change
}

func (j *Job) defaults() {
	if j.BatchSize <= 0 {
		j.BatchSize = DefaultBatchSize
	}
	if j.Workers <= 0 {
		j.Workers = 1
	}
	if j.MaxFailures < 0 {
		j.MaxFailures = 0
	}
	if j.Out == nil {
		j.Out = io.Discard
	}
}

// Run runs the job on every table in turn. pool must allow Workers+2
// connections. It returns the summary of what was done even when it
// returns an error (a *FailureError, a *SchemaError, a database error or
// the context's).
func (j *Job) Run(ctx context.Context, pool *pgxpool.Pool) (*Summary, error) {
	j.defaults()
	sum := &Summary{Op: j.Op, DryRun: j.DryRun, Shard: j.Shard}
	switch j.Op {
	case OpEncrypt, OpReencrypt, OpRehash, OpDecrypt:
	default:
		return sum, fmt.Errorf("pgveil: BUG: unknown operation %q", j.Op)
	}
	infos, err := loadTables(ctx, pool, j.Tables, j.Out)
	if err != nil {
		return sum, err
	}
	var store *progressStore
	if !j.DryRun {
		store = newProgressStore(ctx, pool, j.Out)
	}
	if store != nil && j.NoResume {
		for _, ti := range infos {
			store.clear(ctx, ti.full, j.Op, j.Shard)
		}
	}
	lim := newLimiter(j.MaxRate)
	for _, ti := range infos {
		if j.Op == OpRehash && !hasSearchable(ti) {
			fmt.Fprintf(j.Out, "%s: no searchable column, nothing to rehash\n", ti.display)
			continue
		}
		// A table an interrupted run had finished (without failures) is
		// not done again until a run gets through all its tables.
		if saved, ok := store.load(ctx, ti.full, j.Op, j.Shard, j.signature(ti)); ok && saved.done {
			fmt.Fprintf(j.Out, "%s: %s finished by an earlier run at %s, which stopped before its other tables; skipped (--resume=false checks it again)\n",
				ti.display, j.Op, saved.at.Format(time.RFC3339))
			sum.Tables = append(sum.Tables, &TableSummary{Table: ti.display, Rows: saved.rows, Skipped: true, FinishedAt: saved.at})
			continue
		}
		ts, err := j.runTable(ctx, pool, ti, store, lim)
		if ts != nil {
			sum.Tables = append(sum.Tables, ts)
		}
		if err != nil {
			return sum, err
		}
	}
	// The run got through every table: the next one starts afresh and
	// looks at everything again.
	for _, ti := range infos {
		store.clear(context.WithoutCancel(ctx), ti.full, j.Op, j.Shard)
	}
	return sum, nil
}

// loadTables loads every table; a configured view is skipped, with a line
// on out saying so, unless it is all there is to do: then its error (with
// the base table to use) is returned.
func loadTables(ctx context.Context, q querier, tables []config.Table, out io.Writer) ([]*tableInfo, error) {
	infos := make([]*tableInfo, 0, len(tables))
	var view error
	for _, t := range tables {
		ti, err := loadTable(ctx, q, t)
		if errors.Is(err, ErrView) {
			if view == nil {
				view = err
			}
			var se *SchemaError
			if errors.As(err, &se) {
				fmt.Fprintf(out, "%s: skipped: %s; %s\n", displayName(schemaOf(t), nameOf(t)), strings.TrimPrefix(se.Error(), "pgveil: "), se.Fix)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		infos = append(infos, ti)
	}
	if len(infos) == 0 && view != nil {
		return nil, view
	}
	return infos, nil
}

func hasSearchable(ti *tableInfo) bool {
	for _, c := range ti.cols {
		if c.hash != "" {
			return true
		}
	}
	return false
}

// signature identifies what saved progress is valid for: the columns, and
// the key the operation converges to.
func (j *Job) signature(ti *tableInfo) string {
	var b strings.Builder
	for _, c := range ti.cols {
		b.WriteString(c.cfg.Column + ":" + c.cfg.BlindIndex + ":" + c.domain + ";")
	}
	switch j.Op {
	case OpReencrypt:
		b.WriteString("key=" + j.Keys.KeyFingerprints()[0])
	case OpRehash:
		b.WriteString("hash=" + j.Keys.HashKeyFingerprint())
	}
	return b.String()
}

// batch is a run of rows read together, in key order.
type batch struct {
	seq   int
	keys  [][]string // [key column][row]
	xmin  []string
	vals  [][][]byte // [configured column][row], nil = NULL
	hash  [][][]byte // [configured column][row], nil = NULL or not searchable
	arena []byte
	n     int
}

func newBatch(ti *tableInfo, capacity int) *batch {
	b := &batch{keys: make([][]string, len(ti.key)), vals: make([][][]byte, len(ti.cols)), hash: make([][][]byte, len(ti.cols))}
	for i := range b.keys {
		b.keys[i] = make([]string, 0, capacity)
	}
	for i := range b.vals {
		b.vals[i] = make([][]byte, 0, capacity)
		b.hash[i] = make([][]byte, 0, capacity)
	}
	b.xmin = make([]string, 0, capacity)
	return b
}

// lastKey is the key of the last row, as text.
func (b *batch) lastKey() []string {
	out := make([]string, len(b.keys))
	for i := range b.keys {
		out[i] = b.keys[i][b.n-1]
	}
	return out
}

// keyText is the primary key of row r as shown to people: "7" or "(7,3)".
func (b *batch) keyText(r int) string {
	if len(b.keys) == 1 {
		return b.keys[0][r]
	}
	parts := make([]string, len(b.keys))
	for i := range b.keys {
		parts[i] = b.keys[i][r]
	}
	return "(" + strings.Join(parts, ",") + ")"
}

// keyID is a map key for row r's primary key.
func (b *batch) keyID(r int) string {
	if len(b.keys) == 1 {
		return b.keys[0][r]
	}
	parts := make([]string, len(b.keys))
	for i := range b.keys {
		parts[i] = b.keys[i][r]
	}
	return strings.Join(parts, "\x00")
}

// scan reads rows (as selectList lays them out) into a new batch.
// readBatch reads the next batch in primary-key order after the key after
// (nil: from the start), for the job's shard.
func (j *Job) readBatch(ctx context.Context, pool *pgxpool.Pool, ti *tableInfo, after []string, sizeHint int) (*batch, error) {
	var rows pgx.Rows
	var err error
	if after == nil {
		rows, err = pool.Query(ctx, ti.batchQuery(false, j.Shard), j.BatchSize)
	} else {
		args := make([]any, 0, len(after)+1)
		for _, k := range after {
			args = append(args, k)
		}
		rows, err = pool.Query(ctx, ti.batchQuery(true, j.Shard), append(args, j.BatchSize)...)
	}
	if err != nil {
		return nil, err
	}
	return scanBatch(ti, rows, j.BatchSize, sizeHint)
}

func scanBatch(ti *tableInfo, rows pgx.Rows, capacity, sizeHint int) (*batch, error) {
	defer rows.Close()
	b := newBatch(ti, capacity)
	b.arena = make([]byte, 0, sizeHint)
	type span struct{ off, n int } // n < 0: NULL
	spans := make([]span, 0, capacity*(len(ti.cols)+1))
	nk := len(ti.key)
	for rows.Next() {
		raw := rows.RawValues()
		for i := 0; i < nk; i++ {
			b.keys[i] = append(b.keys[i], string(raw[i]))
		}
		b.xmin = append(b.xmin, string(raw[nk]))
		for _, v := range raw[nk+1:] {
			if v == nil {
				spans = append(spans, span{n: -1})
				continue
			}
			spans = append(spans, span{off: len(b.arena), n: len(v)})
			b.arena = append(b.arena, v...)
		}
		b.n++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Slice the arena only now that it has stopped growing.
	k := 0
	for r := 0; r < b.n; r++ {
		for ci, c := range ti.cols {
			b.vals[ci] = append(b.vals[ci], spanBytes(b.arena, spans[k].off, spans[k].n))
			k++
			if c.hash != "" {
				b.hash[ci] = append(b.hash[ci], spanBytes(b.arena, spans[k].off, spans[k].n))
				k++
			} else {
				b.hash[ci] = append(b.hash[ci], nil)
			}
		}
	}
	return b, nil
}

func spanBytes(arena []byte, off, n int) []byte {
	if n < 0 {
		return nil
	}
	return arena[off : off+n : off+n]
}

// result is what a worker did with one batch.
type result struct {
	seq     int
	n       int      // rows examined
	last    []string // key of the batch's last row
	written int64
	failed  int64
	retries int64
	values  []int64 // per column
	hashes  []int64
	cfailed []int64
	samples [][]string
	fkeys   []string
	reasons map[string]int64
	dups    []Duplicate
	err     error
}

func (j *Job) runTable(ctx context.Context, pool *pgxpool.Pool, ti *tableInfo, store *progressStore, lim *limiter) (*TableSummary, error) {
	start := time.Now()
	ts := &TableSummary{Table: ti.display, Failures: map[string]int64{}}
	for _, c := range ti.cols {
		if j.Op == OpRehash && c.hash == "" {
			continue
		}
		ts.Columns = append(ts.Columns, &ColumnSummary{Column: c.cfg.Column, BlindIndex: c.cfg.BlindIndex})
	}
	colIndex := map[string]int{}
	for i, cs := range ts.Columns {
		colIndex[cs.Column] = i
	}

	sig := j.signature(ti)
	var lastKey []string
	var doneBefore, failedBefore int64
	if saved, ok := store.load(ctx, ti.full, j.Op, j.Shard, sig); ok && !saved.done && len(saved.key) == len(ti.key) {
		lastKey, doneBefore, failedBefore = saved.key, saved.rows, saved.failed
		ts.Resumed = true
		fmt.Fprintf(j.Out, "%s: resuming %s after key %s (%d rows done before)\n", ti.display, j.Op, keyString(saved.key), saved.rows)
	}

	var total int64
	if err := pool.QueryRow(ctx, ti.countQuery(false, j.Shard)).Scan(&total); err != nil {
		return ts, fmt.Errorf("pgveil: counting rows of %s: %w", ti.full, err)
	}
	if lastKey != nil {
		args := make([]any, len(lastKey))
		for i, k := range lastKey {
			args[i] = k
		}
		if err := pool.QueryRow(ctx, ti.countQuery(true, j.Shard), args...).Scan(&doneBefore); err != nil {
			return ts, fmt.Errorf("pgveil: counting rows of %s: %w", ti.full, err)
		}
	}

	prog := NewProgress(j.Out, ti.display, total, j.terminal())
	prog.Set(doneBefore)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	work := make(chan *batch, j.Workers)
	results := make(chan result, j.Workers*2)
	var wg sync.WaitGroup

	// Reader: keyset pagination by primary key.
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(work)
		after := lastKey
		hint := 0
		for seq := 0; ; seq++ {
			b, err := j.readBatch(ctx, pool, ti, after, hint)
			if err != nil {
				cancel(fmt.Errorf("pgveil: reading %s: %w", ti.full, err))
				return
			}
			if b.n == 0 {
				return
			}
			hint = len(b.arena) + len(b.arena)/8
			b.seq = seq
			if err := lim.wait(ctx, b.n); err != nil {
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

	for w := 0; w < j.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc := &rowCodec{op: j.Op, keys: j.Keys, maxSize: j.MaxSize, sanitize: j.Sanitize}
			for b := range work {
				r := j.process(ctx, pool, ti, rc, b)
				select {
				case results <- r:
				case <-ctx.Done():
					return
				}
				if r.err != nil {
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(results) }()

	// Tracker: totals, progress, the failure threshold and the saved
	// watermark (the last key of the highest batch below which every batch
	// is done).
	pending := map[int]result{}
	next := 0
	watermark := lastKey
	done := doneBefore
	var failedDone int64 // failed rows below the watermark
	var lastSave time.Time
	var runErr error
	save := func(force bool) {
		if store == nil || watermark == nil || (!force && time.Since(lastSave) < 200*time.Millisecond) {
			return
		}
		lastSave = time.Now()
		store.save(context.WithoutCancel(ctx), ti.full, j.Op, j.Shard, sig, watermark, done, failedBefore+failedDone)
	}
	for r := range results {
		if r.err != nil {
			if runErr == nil {
				runErr = r.err
				cancel(r.err)
			}
			continue
		}
		ts.Rows += int64(r.n)
		ts.Written += r.written
		ts.Failed += r.failed
		ts.Retries += r.retries
		for i := range r.values {
			ts.Columns[i].Values += r.values[i]
			ts.Columns[i].Hashes += r.hashes[i]
			ts.Columns[i].Failed += r.cfailed[i]
			for _, s := range r.samples[i] {
				if len(ts.Columns[i].Samples) < defaultSamples {
					ts.Columns[i].Samples = append(ts.Columns[i].Samples, s)
				}
			}
		}
		for _, k := range r.fkeys {
			if len(ts.FailedKeys) < defaultSamples {
				ts.FailedKeys = append(ts.FailedKeys, k)
			}
		}
		for k, v := range r.reasons {
			ts.Failures[k] += v
		}
		for _, d := range r.dups {
			if len(ts.Duplicates) < maxDuplicates {
				ts.Duplicates = append(ts.Duplicates, d)
			}
		}
		prog.Add(int64(r.n))
		if j.Verbose {
			prog.Logf("%s: batch %d: %d rows read, %d written, %d failed, %d read again", ti.display, r.seq, r.n, r.written, r.failed, r.retries)
		}
		pending[r.seq] = r
		for {
			p, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			watermark = p.last
			done += int64(p.n)
			failedDone += p.failed
			next++
		}
		save(false)
		if runErr == nil && float64(ts.Failed) > j.MaxFailures*float64(ts.Rows) {
			runErr = &FailureError{Table: ti.full, Failed: ts.Failed, Rows: ts.Rows, Max: j.MaxFailures, Reasons: ts.Failures}
			cancel(runErr)
		}
	}
	prog.Finish()
	ts.Duration = time.Since(start)
	if runErr == nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			runErr = cause
		} else if ctx.Err() != nil {
			runErr = ctx.Err()
		}
	}
	var fe *FailureError
	switch {
	case runErr == nil && failedBefore+ts.Failed == 0:
		// Done: a rerun of this run (after a kill) skips the table, until
		// a run gets through all its tables.
		store.markDone(context.WithoutCancel(ctx), ti.full, j.Op, j.Shard, sig, done)
	case runErr == nil || errors.As(runErr, &fe):
		// Done with failures, or stopped by --max-failures: the next run
		// goes over the whole table again, retrying the failed rows.
		store.clear(context.WithoutCancel(ctx), ti.full, j.Op, j.Shard)
	default:
		// Interrupted: keep where we got to.
		save(true)
	}
	return ts, runErr
}

func keyString(k []string) string {
	if len(k) == 1 {
		return k[0]
	}
	return "(" + strings.Join(k, ",") + ")"
}

func (j *Job) terminal() bool {
	if j.Terminal != nil {
		return *j.Terminal
	}
	return isTerminal(j.Out)
}

// process evaluates a batch and, unless dry run, writes it: rows that
// changed since they were read, or are locked by another transaction, are
// read again and retried until each is written, found deleted or found to
// need nothing.
func (j *Job) process(ctx context.Context, pool *pgxpool.Pool, ti *tableInfo, rc *rowCodec, b *batch) result {
	ncols := len(ti.cols)
	r := result{seq: b.seq, n: b.n, last: b.lastKey(),
		values: make([]int64, ncols), hashes: make([]int64, ncols), cfailed: make([]int64, ncols),
		samples: make([][]string, ncols), reasons: map[string]int64{}}
	cells := make([]cell, b.n*ncols)
	var arena []byte
	backoff := 5 * time.Millisecond
	for attempt := 0; ; attempt++ {
		t0 := time.Now()
		// Room for every new value, so the arena never moves.
		need := 0
		for ci := range ti.cols {
			for _, v := range b.vals[ci] {
				need += keyring.TokenLen(len(v)) + keyring.BlindIndexLen
			}
		}
		if cap(arena) < need {
			arena = make([]byte, 0, need)
		}
		arena = arena[:0]
		var opened, undecryptable, sealed, refused int
		for row := 0; row < b.n; row++ {
			for ci, c := range ti.cols {
				cl := &cells[row*ncols+ci]
				arena = rc.eval(cl, c.domain, b.vals[ci][row], b.hash[ci][row], arena)
				switch cl.class {
				case classToken:
					opened++
				case classUndecryptable:
					undecryptable++
				}
				if cl.setValue && (j.Op == OpEncrypt || j.Op == OpReencrypt) {
					sealed++
				}
				if cl.fail == failTooLarge || cl.fail == failInvalidInput {
					refused++
				}
			}
		}
		if !j.DryRun || attempt == 0 {
			d := time.Since(t0)
			j.Metrics.ObserveDecrypt(opened+undecryptable, undecryptable, d)
			j.Metrics.ObserveEncrypt(sealed+refused, refused, d)
		}

		// Rows to write.
		var idx []int
		for row := 0; row < b.n; row++ {
			for ci := 0; ci < ncols; ci++ {
				cl := &cells[row*ncols+ci]
				if cl.setValue || cl.setHash {
					idx = append(idx, row)
					break
				}
			}
		}
		written := map[string]bool{}
		if !j.DryRun && len(idx) > 0 {
			var err error
			written, err = j.writeRows(ctx, pool, ti, b, cells, idx, &r.dups)
			// A retryable error rolled back what its statement would have
			// written; those rows are read again below (rows written by
			// earlier statements stay written).
			if err != nil && (!retryable(err) || attempt >= maxWriteRetries) {
				r.err = fmt.Errorf("pgveil: writing a batch of %s: %w", ti.full, err)
				return r
			}
		}

		// Tally the rows that are final: written, or needing no write.
		var missed []int
		for row := 0; row < b.n; row++ {
			needs := false
			for ci := 0; ci < ncols; ci++ {
				cl := &cells[row*ncols+ci]
				if cl.setValue || cl.setHash {
					needs = true
				}
			}
			if needs && !j.DryRun && !written[b.keyID(row)] {
				missed = append(missed, row)
				continue
			}
			if needs {
				r.written++
			}
			rowFailed := false
			for ci := 0; ci < ncols; ci++ {
				cl := &cells[row*ncols+ci]
				si := ci
				if cl.setValue {
					r.values[si]++
				}
				if cl.setHash {
					r.hashes[si]++
				}
				if (cl.setValue || (j.Op == OpRehash && cl.setHash)) && j.DryRun && len(r.samples[si]) < defaultSamples {
					r.samples[si] = append(r.samples[si], b.keyText(row))
				}
				if cl.fail != failNone {
					r.cfailed[si]++
					r.reasons[cl.fail.String()]++
					if cl.fail != failDuplicate { // not an encryption error
						j.Metrics.Error(metricErrorType(cl.fail))
					}
					rowFailed = true
				}
			}
			if rowFailed {
				r.failed++
				if len(r.fkeys) < defaultSamples {
					r.fkeys = append(r.fkeys, b.keyText(row))
				}
			}
		}
		if len(missed) == 0 {
			break
		}
		r.retries += int64(len(missed))
		// Read the missed rows again: they changed since the batch read
		// them, or another transaction holds their lock.
		select {
		case <-ctx.Done():
			r.err = context.Cause(ctx)
			return r
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
		args := make([]any, len(ti.key))
		for i := range ti.key {
			ks := make([]string, len(missed))
			for n, row := range missed {
				ks[n] = b.keys[i][row]
			}
			args[i] = ks
		}
		rows, err := pool.Query(ctx, ti.rereadQuery(), args...)
		if err != nil {
			r.err = fmt.Errorf("pgveil: reading %s again: %w", ti.full, err)
			return r
		}
		nb, err := scanBatch(ti, rows, len(missed), 0)
		if err != nil {
			r.err = fmt.Errorf("pgveil: reading %s again: %w", ti.full, err)
			return r
		}
		nb.seq = b.seq
		b = nb
		cells = cells[:b.n*ncols]
	}
	if ti.columnsFor(j.Op) != nil {
		r.values, r.hashes, r.cfailed, r.samples = project(ti, j.Op, r.values, r.hashes, r.cfailed, r.samples)
	}
	return r
}

// columnsFor returns the indexes of the columns a summary lists for op (nil
// when all of them).
func (ti *tableInfo) columnsFor(op Op) []int {
	if op != OpRehash {
		return nil
	}
	var out []int
	for i, c := range ti.cols {
		if c.hash != "" {
			out = append(out, i)
		}
	}
	return out
}

// project keeps the columns of columnsFor(op).
func project(ti *tableInfo, op Op, v, h, f []int64, s [][]string) ([]int64, []int64, []int64, [][]string) {
	keep := ti.columnsFor(op)
	var v2, h2, f2 []int64
	var s2 [][]string
	for _, i := range keep {
		v2, h2, f2, s2 = append(v2, v[i]), append(h2, h[i]), append(f2, f[i]), append(s2, s[i])
	}
	return v2, h2, f2, s2
}

// maxWriteRetries bounds how often one batch is retried after errors that
// roll it back (lock timeout, deadlock, serialization failure).
const maxWriteRetries = 50

// retryable reports whether a batch's UPDATE failed only because of
// concurrency: lock_timeout (55P03, e.g. a unique index check waiting on
// an application transaction), deadlock (40P01) or serialization failure
// (40001).
func retryable(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "55P03", "40P01", "40001":
		return true
	}
	return false
}

func metricErrorType(f failure) string {
	switch f {
	case failUndecryptable:
		return keyring.ErrorTypeUndecryptable
	case failTooLarge:
		return keyring.ErrorTypeTooLarge
	case failInvalidInput:
		return keyring.ErrorTypeInvalidInput
	}
	return keyring.ErrorTypeInvalidKey
}

// write runs the batch's UPDATE for rows idx and returns the keys of the
// rows written.
func (j *Job) write(ctx context.Context, pool writer, ti *tableInfo, b *batch, cells []cell, idx []int) (map[string]bool, error) {
	ncols := len(ti.cols)
	args := make([]any, 0, len(ti.key)+1+4*ncols)
	for i := range ti.key {
		ks := make([]string, len(idx))
		for n, row := range idx {
			ks[n] = b.keys[i][row]
		}
		args = append(args, ks)
	}
	xs := make([]string, len(idx))
	for n, row := range idx {
		xs[n] = b.xmin[row]
	}
	args = append(args, xs)
	for ci, c := range ti.cols {
		set := make([]bool, len(idx))
		vals := make([][]byte, len(idx))
		var hset []bool
		var hvals [][]byte
		if c.hash != "" {
			hset = make([]bool, len(idx))
			hvals = make([][]byte, len(idx))
		}
		for n, row := range idx {
			cl := &cells[row*ncols+ci]
			if cl.setValue {
				set[n], vals[n] = true, cl.value
			}
			if c.hash != "" && cl.setHash {
				hset[n], hvals[n] = true, cl.newHash
			}
		}
		args = append(args, set, vals)
		if c.hash != "" {
			args = append(args, hset, hvals)
		}
	}
	// One transaction per batch: it commits or not at all. Row locks are
	// never waited on (SKIP LOCKED); other waits (a unique index check on
	// an application transaction's uncommitted row) give up after
	// batchLockTimeout, well before deadlock_timeout, so the application is
	// never the victim of a deadlock with the backfill; the batch is then
	// retried.
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit a no-op
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '"+batchLockTimeout+"'"); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, ti.updateQuery(), args...)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(idx))
	nk := len(ti.key)
	for rows.Next() {
		raw := rows.RawValues()
		if nk == 1 {
			out[string(raw[0])] = true
			continue
		}
		parts := make([]string, nk)
		for i := range parts {
			parts[i] = string(raw[i])
		}
		out[strings.Join(parts, "\x00")] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

// batchLockTimeout is how long a batch's UPDATE may wait for a lock.
const batchLockTimeout = "500ms"

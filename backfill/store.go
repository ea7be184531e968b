package backfill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ProgressTable keeps, per table, operation and shard, how far a run got:
// the primary key up to which every batch had finished (with the rows done
// and failed below it), or that the table is done. A run that stops early
// (kill -9, an interruption, a database error, --max-failures) leaves its
// rows there, and the next run of the same operation and shard resumes:
// tables marked done are skipped, a table in progress continues after its
// key. Batches after the saved key that had committed before a kill -9 are
// done again, which changes nothing: every operation skips values already
// in the wanted state. A table is marked done only when it finished
// without failed rows; one with failures is gone over again, so that its
// failed rows are retried. A run that gets through all its tables deletes
// their rows, so the next run starts afresh and looks at every row again;
// --resume=false does the same at the start.
const ProgressTable = "pgveil.backfill_progress"

const progressDDL = `CREATE SCHEMA IF NOT EXISTS pgveil;
CREATE TABLE IF NOT EXISTS pgveil.backfill_progress (
	table_name text NOT NULL,
	operation  text NOT NULL,
	shard      text NOT NULL,
	signature  text NOT NULL,
	last_key   text[] NOT NULL,
	rows_done  bigint NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (table_name, operation, shard)
);
DO $pgveil$ BEGIN
	-- Added after the first release; ALTER only when missing (it takes a
	-- lock, and needs the owner).
	IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'pgveil.backfill_progress'::regclass AND attname = 'done') THEN
		ALTER TABLE pgveil.backfill_progress ADD COLUMN IF NOT EXISTS rows_failed bigint NOT NULL DEFAULT 0,
			ADD COLUMN IF NOT EXISTS done boolean NOT NULL DEFAULT false;
	END IF;
END $pgveil$`

// savedProgress is a row of ProgressTable.
type savedProgress struct {
	key    []string // last key below which every batch finished
	rows   int64    // rows done below key (done: in the table)
	failed int64    // rows failed below key
	done   bool     // the table is finished
	at     time.Time
}

// progressStore reads and writes ProgressTable. A nil or disabled store
// does nothing: without the privilege to create it, runs still work but a
// rerun starts from the beginning.
type progressStore struct {
	pool    *pgxpool.Pool
	enabled bool
	out     io.Writer
}

func newProgressStore(ctx context.Context, pool *pgxpool.Pool, out io.Writer) *progressStore {
	s := &progressStore{pool: pool, out: out}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if _, err = pool.Exec(ctx, progressDDL); err == nil {
			s.enabled = true
			return s
		}
		// Two pods creating it at once: one wins, the other retries.
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || (pe.Code != "23505" && pe.Code != "42P06" && pe.Code != "42P07") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(out, "pgveil: warning: cannot keep progress in %s (%v); an interrupted run will start again from the beginning. Fix: GRANT CREATE ON DATABASE to this role, or create the table as its owner\n", ProgressTable, err)
	return s
}

func (s *progressStore) load(ctx context.Context, table string, op Op, sh Shard, sig string) (savedProgress, bool) {
	var p savedProgress
	if s == nil || !s.enabled {
		return p, false
	}
	var storedSig string
	err := s.pool.QueryRow(ctx, `SELECT signature, last_key, rows_done, rows_failed, done, updated_at FROM pgveil.backfill_progress
		WHERE table_name = $1 AND operation = $2 AND shard = $3`, table, string(op), sh.String()).Scan(&storedSig, &p.key, &p.rows, &p.failed, &p.done, &p.at)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, false
	}
	if err != nil {
		fmt.Fprintf(s.out, "pgveil: warning: reading saved progress of %s: %v; starting from the beginning\n", table, err)
		return p, false
	}
	if storedSig != sig {
		fmt.Fprintf(s.out, "%s: saved %s progress is for other columns or keys; starting from the beginning\n", table, op)
		return p, false
	}
	return p, true
}

func (s *progressStore) save(ctx context.Context, table string, op Op, sh Shard, sig string, key []string, done, failed int64) {
	s.put(ctx, table, op, sh, sig, key, done, failed, false)
}

// markDone records that the table is finished (without failed rows).
func (s *progressStore) markDone(ctx context.Context, table string, op Op, sh Shard, sig string, rows int64) {
	s.put(ctx, table, op, sh, sig, []string{}, rows, 0, true)
}

func (s *progressStore) put(ctx context.Context, table string, op Op, sh Shard, sig string, key []string, rows, failed int64, done bool) {
	if s == nil || !s.enabled {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := s.pool.Exec(ctx, `INSERT INTO pgveil.backfill_progress (table_name, operation, shard, signature, last_key, rows_done, rows_failed, done)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (table_name, operation, shard) DO UPDATE
		SET signature = EXCLUDED.signature, last_key = EXCLUDED.last_key, rows_done = EXCLUDED.rows_done,
			rows_failed = EXCLUDED.rows_failed, done = EXCLUDED.done, updated_at = now()`,
		table, string(op), sh.String(), sig, key, rows, failed, done)
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(s.out, "pgveil: warning: saving progress of %s: %v\n", table, err)
	}
}

func (s *progressStore) clear(ctx context.Context, table string, op Op, sh Shard) {
	if s == nil || !s.enabled {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, _ = s.pool.Exec(ctx, `DELETE FROM pgveil.backfill_progress WHERE table_name = $1 AND operation = $2 AND shard = $3`,
		table, string(op), sh.String())
}

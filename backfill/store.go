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

// ProgressTable keeps, per table, operation and shard, the primary key up
// to which an interrupted run had finished every batch. A rerun continues
// after it; a run that ends (done, or stopped by --max-failures) deletes
// its row, so the next run starts from the beginning. Batches after the
// saved key that had committed before a kill -9 are done again, which
// changes nothing: every operation skips values already in the wanted
// state.
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
)`

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

func (s *progressStore) load(ctx context.Context, table string, op Op, sh Shard, sig string) (key []string, done int64, ok bool) {
	if s == nil || !s.enabled {
		return nil, 0, false
	}
	var storedSig string
	err := s.pool.QueryRow(ctx, `SELECT signature, last_key, rows_done FROM pgveil.backfill_progress
		WHERE table_name = $1 AND operation = $2 AND shard = $3`, table, string(op), sh.String()).Scan(&storedSig, &key, &done)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, false
	}
	if err != nil {
		fmt.Fprintf(s.out, "pgveil: warning: reading saved progress of %s: %v; starting from the beginning\n", table, err)
		return nil, 0, false
	}
	if storedSig != sig {
		fmt.Fprintf(s.out, "%s: saved %s progress is for other columns or keys; starting from the beginning\n", table, op)
		return nil, 0, false
	}
	return key, done, true
}

func (s *progressStore) save(ctx context.Context, table string, op Op, sh Shard, sig string, key []string, done int64) {
	if s == nil || !s.enabled {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := s.pool.Exec(ctx, `INSERT INTO pgveil.backfill_progress (table_name, operation, shard, signature, last_key, rows_done)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (table_name, operation, shard) DO UPDATE
		SET signature = EXCLUDED.signature, last_key = EXCLUDED.last_key, rows_done = EXCLUDED.rows_done, updated_at = now()`,
		table, string(op), sh.String(), sig, key, done)
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

package backfill

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/test/pgtest"
)

// benchRows is the size of the benchmark table (PGVEIL_BENCH_ROWS, default
// 1,000,000: the target).
func benchRows() int {
	if s := os.Getenv("PGVEIL_BENCH_ROWS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return n
		}
	}
	return 1_000_000
}

const benchCreate = `DROP TABLE IF EXISTS users;
CREATE TABLE users (id bigint PRIMARY KEY, email text, email_hash text, full_name text, bio text, age int);
INSERT INTO users SELECT g, 'user' || g || '@example.com', NULL, 'Full Name ' || g,
	'Short biography of user number ' || g || ' with some words', g %% 90 FROM generate_series(1, %d) g;
CREATE INDEX users_email_hash_idx ON users (email_hash);`

// tokenLenSQL is the length of the Fernet token of a text column, so the
// baseline UPDATE writes values of the same size as the backfill.
func resetBench(b *testing.B, pool *pgxpool.Pool, n int) {
	for _, q := range []string{fmt.Sprintf(benchCreate, n), "VACUUM ANALYZE users", "CHECKPOINT"} {
		if _, err := pool.Exec(context.Background(), q); err != nil {
			b.Fatal(err)
		}
	}
}

func tokenLenSQL(col string) string {
	return fmt.Sprintf("((57 + 16 * (octet_length(%s) / 16 + 1) + 2) / 3 * 4)", col)
}

// BenchmarkBackfill compares, in one run, the rate of pgveil backfill over
// a users table (three encrypted columns, one searchable) with the rate of
// the database's own single UPDATE that rewrites the same columns with
// values of the same size. Run it with
//
//	go test ./backfill -run '^$' -bench Backfill -benchtime 1x
//
// It reports update_rows/s, backfill_rows/s and their ratio.
func BenchmarkBackfill(b *testing.B) {
	c := pgtest.Get(b)
	db := c.NewDB(b)
	ctx := context.Background()
	n := benchRows()
	workers := 2
	if s := os.Getenv("PGVEIL_BENCH_WORKERS"); s != "" {
		workers, _ = strconv.Atoi(s)
	}
	batch := 5000
	if s := os.Getenv("PGVEIL_BENCH_BATCH"); s != "" {
		batch, _ = strconv.Atoi(s)
	}
	pc, err := pgxpool.ParseConfig(c.DSN(pgtest.SuperUser, db))
	if err != nil {
		b.Fatal(err)
	}
	pc.MaxConns = int32(workers + 2)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	kr := testKeyring(b)
	tbl := config.Table{Table: "users", Schema: "public", Name: "users", Columns: []config.Column{
		{Column: "email", BlindIndex: "email_hash", HashDomain: "public.users.email"},
		{Column: "full_name", HashDomain: "public.users.full_name"},
		{Column: "bio", HashDomain: "public.users.bio"},
	}}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		resetBench(b, pool, n)
		t0 := time.Now()
		if _, err := pool.Exec(ctx, "UPDATE users SET email = repeat('x', "+tokenLenSQL("email")+
			"), email_hash = md5(email) || md5(email), full_name = repeat('x', "+tokenLenSQL("full_name")+
			"), bio = repeat('x', "+tokenLenSQL("bio")+")"); err != nil {
			b.Fatal(err)
		}
		upd := time.Since(t0)

		resetBench(b, pool, n)
		b.StartTimer()
		j := &Job{Op: OpEncrypt, Tables: []config.Table{tbl}, Keys: kr, Sanitize: true, MaxSize: 10 << 20,
			BatchSize: batch, Workers: workers, Out: io.Discard}
		t1 := time.Now()
		sum, err := j.Run(ctx, pool)
		if err != nil {
			b.Fatal(err)
		}
		bf := time.Since(t1)
		b.StopTimer()
		if sum.Tables[0].Written != int64(n) {
			b.Fatalf("backfill wrote %d rows, want %d", sum.Tables[0].Written, n)
		}
		updRate := float64(n) / upd.Seconds()
		bfRate := float64(n) / bf.Seconds()
		b.ReportMetric(updRate, "update_rows/s")
		b.ReportMetric(bfRate, "backfill_rows/s")
		b.ReportMetric(bfRate/updRate, "ratio")
		fmt.Fprintf(os.Stderr, "rows %d: single UPDATE %.2fs (%.0f rows/s); backfill (workers %d, batch %d) %.2fs (%.0f rows/s); ratio %.2f\n",
			n, upd.Seconds(), updRate, workers, batch, bf.Seconds(), bfRate, bfRate/updRate)
	}
}

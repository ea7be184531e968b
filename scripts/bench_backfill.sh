#!/bin/sh
# Measures pgveil backfill against the database's own single UPDATE that
# rewrites the same columns with values of the same size, in one run, on a
# throwaway PostgreSQL (test/pgtest: fsync off). Prints both rates.
#
#   scripts/bench_backfill.sh                 # 1,000,000 rows, 2 workers, batches of 5000
#   ROWS=200000 WORKERS=3 BATCH=2000 scripts/bench_backfill.sh
set -eu
cd "$(dirname "$0")/.."
PGVEIL_BENCH_ROWS="${ROWS:-1000000}" \
PGVEIL_BENCH_WORKERS="${WORKERS:-2}" \
PGVEIL_BENCH_BATCH="${BATCH:-5000}" \
	exec go test ./backfill -run '^$' -bench '^BenchmarkBackfill$' -benchtime 1x -timeout 60m

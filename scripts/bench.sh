#!/usr/bin/env bash
# scripts/bench.sh: the benchmarks behind `make bench`, written to
# docs/BENCHMARKS.md.
#
# In one run, on this machine, with nothing to set up by hand:
#   1. a throwaway PostgreSQL cluster (or DATABASE_URL), PgBouncer in session
#      mode and pgveil, each on a free port;
#   2. pgbench -S in -M simple | extended | prepared against Postgres
#      directly, PgBouncer and pgveil, interleaved, with the proxies' CPU time
#      per transaction; pgveil's memory with 200 idle clients;
#   3. encrypted OLTP: pgbench custom scripts through pgveil (encrypted
#      schema) against the same scripts through PgBouncer (plaintext schema);
#   4. bulk read of 200,000 rows with two encrypted columns through pgveil
#      against the plaintext table read directly;
#   5. backfill of a 1,000,000-row users table against the database's own
#      single UPDATE of the same columns.
#
# Environment (all optional):
#   DATABASE_URL          use this server (a superuser DSN) instead of a
#                         throwaway cluster; databases pgveil_bench_* are
#                         created and dropped
#   BENCH_OUT             output file (default docs/BENCHMARKS.md)
#   BENCH_DURATION        seconds per pgbench -S run (default 10)
#   BENCH_ROUNDS          interleaved rounds (default 5)
#   BENCH_OLTP_DURATION   seconds per encrypted OLTP run (default 5)
#   BENCH_OLTP_ROUNDS     interleaved rounds of the OLTP runs (default 9:
#                         short runs on a noisy machine, whose medians
#                         need more of them)
#   BENCH_OLTP_USERS      users in the OLTP tables (default 100000)
#   BENCH_BULK_ROWS       rows of the bulk read (default 200000)
#   BENCH_BACKFILL_ROWS   rows of the backfill table (default 1000000)
#   BENCH_IDLE_CONNS      idle clients for the memory figure (default 200)
#   PGBIN                 PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   PGBOUNCER             PgBouncer binary (default /usr/sbin/pgbouncer)
#   PYTHON                Python with psycopg2 (default /usr/bin/python3)
#   BENCH_PGO_OUT         profile instead of measure (make pgo): build pgveil
#                         with -tags pgoprofile, have every pgveil serve write
#                         a CPU profile, merge them into this file (the
#                         profile-guided optimization input,
#                         cmd/pgveil/default.pgo) and leave BENCH_OUT alone
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}
PYTHON=${PYTHON:-/usr/bin/python3}
OUT=${BENCH_OUT:-$ROOT/docs/BENCHMARKS.md}
PGO_OUT=${BENCH_PGO_OUT:-}
[ -z "$PGO_OUT" ] || PGO_OUT=$(realpath -m "$PGO_OUT")
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-5}
OLTP_DURATION=${BENCH_OLTP_DURATION:-5}
OLTP_ROUNDS=${BENCH_OLTP_ROUNDS:-9}
OLTP_USERS=${BENCH_OLTP_USERS:-100000}
BULK_ROWS=${BENCH_BULK_ROWS:-200000}
BACKFILL_ROWS=${BENCH_BACKFILL_ROWS:-1000000}
IDLE_CONNS=${BENCH_IDLE_CONNS:-200}
CLIENTS=8
THREADS=2
SCALE=10
CLK_TCK=$(getconf CLK_TCK)

DB_PGBENCH=pgveil_bench_pgbench
DB_ENC=pgveil_bench_enc
DB_PLAIN=pgveil_bench_plain
DB_BF=pgveil_bench_backfill
DB_BFU=pgveil_bench_update

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in "$PGBIN/pgbench" "$PGBIN/psql" "$PGBOUNCER" "$PYTHON"; do
	[ -x "$tool" ] || die "$tool not found (Debian packages: postgresql, pgbounce, python3-psycopg2)"
done
"$PYTHON" -c 'import psycopg2' 2>/dev/null || die "$PYTHON has no psycopg2 (Debian package python3-psycopg2)"
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || die "go not found"
export PATH=$PATH:/usr/local/go/bin

WORK=$(mktemp -d /tmp/pgveil-bench.XXXXXX)
chmod 755 "$WORK"
RESULTS=$WORK/results.tsv # section group target round tps tx cpu_ticks
FACTS=$WORK/facts         # key<TAB>value
: >"$RESULTS"
: >"$FACTS"
START_EPOCH=$(date +%s)
printf 'loadavg_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$FACTS"

PIDS_TO_KILL=()
PG_STARTED=""
BOUNCER_PID=""
PGVEIL_PID=""

as_service_user() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

cleanup() {
	local rc=$?
	set +e
	for pid in "${PIDS_TO_KILL[@]}"; do
		kill "$pid" 2>/dev/null
	done
	[ -n "$PGVEIL_PID" ] && end_profile "$PGVEIL_PID" && kill "$PGVEIL_PID" 2>/dev/null && wait "$PGVEIL_PID" 2>/dev/null
	[ -n "$BOUNCER_PID" ] && kill "$BOUNCER_PID" 2>/dev/null
	if [ -n "$PG_STARTED" ]; then
		as_service_user "$PGBIN/pg_ctl" -D "$WORK/pgdata" -m immediate -w stop >/dev/null 2>&1
	elif [ -n "${DATABASE_URL:-}" ]; then
		for db in $DB_PGBENCH $DB_ENC $DB_PLAIN $DB_BF $DB_BFU; do
			psql_admin -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
		done
	fi
	if [ $rc -ne 0 ]; then
		log "failed (exit $rc); logs were in $WORK:"
		tail -n 20 "$WORK"/*.log 2>/dev/null >&2
	fi
	rm -rf "$WORK"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	"$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

fact() { printf '%s\t%s\n' "$1" "$2" >>"$FACTS"; }

# Profiling (BENCH_PGO_OUT): profile_env sets PROF_ENV, the environment of
# the next pgveil serve, which then profiles itself into a file of its own;
# end_profile PID makes one write its profile before it is stopped.
PROF_N=0
PROF_ENV=()
profile_env() {
	PROF_ENV=()
	if [ -n "$PGO_OUT" ]; then
		PROF_N=$((PROF_N + 1))
		PROF_ENV=("PGVEIL_CPUPROFILE=$WORK/cpu-$PROF_N.pprof")
	fi
}
end_profile() {
	if [ -n "$PGO_OUT" ] && kill -USR2 "$1" 2>/dev/null; then
		sleep 0.5
	fi
	return 0
}

# cpu_ticks PID: utime+stime of a process (all its threads), in clock ticks.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# ---------------------------------------------------------------------------
# 1. Postgres, PgBouncer, pgveil

log "building pgveil"
if [ -n "$PGO_OUT" ]; then
	go build -tags pgoprofile -pgo=off -o "$WORK/pgveil" ./cmd/pgveil
else
	go build -o "$WORK/pgveil" ./cmd/pgveil # with cmd/pgveil/default.pgo, as make build
fi
go build -o "$WORK/relay" ./scripts/bench/relay
PGVEIL=$WORK/pgveil

if [ -n "${DATABASE_URL:-}" ]; then
	eval "$("$PYTHON" - "$DATABASE_URL" <<'EOF'
import shlex, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
q = urllib.parse.parse_qs(u.query)
print("PGHOST=%s" % shlex.quote(u.hostname or q.get("host", ["127.0.0.1"])[0]))
print("PGPORT=%s" % shlex.quote(str(u.port or 5432)))
print("PGUSER=%s" % shlex.quote(urllib.parse.unquote(u.username or "postgres")))
print("PGPASSWORD=%s" % shlex.quote(urllib.parse.unquote(u.password or "")))
print("ADMIN_DB=%s" % shlex.quote((u.path or "/postgres").lstrip("/") or "postgres"))
EOF
	)"
	UPSTREAM_TLS=prefer
	PG_SOURCE="DATABASE_URL server"
else
	log "starting a throwaway PostgreSQL cluster"
	PGHOST=127.0.0.1
	PGPORT=$(free_port)
	PGUSER=postgres
	PGPASSWORD=""
	ADMIN_DB=postgres
	UPSTREAM_TLS=disable
	# shared_buffers holds every table of the run (pgbench's, both users
	# and tasks copies, the backfill's): the run compares proxies, and with
	# 256 MB the encrypted tables, 3-5 times the plaintext ones, paid
	# PostgreSQL's buffer evictions and reads too.
	PG_SOURCE="throwaway cluster (initdb), fsync=off, shared_buffers=1GB"
	mkdir -p "$WORK/pgdata" "$WORK/sock"
	[ "$(id -u)" = 0 ] && chown postgres "$WORK/pgdata" "$WORK/sock"
	as_service_user "$PGBIN/initdb" -D "$WORK/pgdata" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$WORK/initdb.log" 2>&1
	cat >>"$WORK/pgdata/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK/sock'
max_connections = 300
shared_buffers = 1GB
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
checkpoint_timeout = 1h
EOF
	touch "$WORK/postgres.log"
	[ "$(id -u)" = 0 ] && chown postgres "$WORK/postgres.log"
	as_service_user "$PGBIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/postgres.log" -w -t 60 start >/dev/null
	PG_STARTED=1
fi
export PGHOST PGPORT PGUSER PGPASSWORD
export PGCONNECT_TIMEOUT=10
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1)
psql_admin() { "${PSQL[@]}" -h "$PGHOST" -p "$PGPORT" -d "$ADMIN_DB" "$@"; }
psql_direct() { local db=$1; shift; "${PSQL[@]}" -h "$PGHOST" -p "$PGPORT" -d "$db" "$@"; }

PG_VERSION=$(psql_admin -Atc "SHOW server_version")
for db in $DB_PGBENCH $DB_ENC $DB_PLAIN $DB_BF $DB_BFU; do
	psql_admin -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
done

log "starting PgBouncer (session mode), twice"
# start_bouncer NAME PORT [SETTING...]: a PgBouncer in session mode with its
# own directory; prints its pid.
start_bouncer() {
	local name=$1 port=$2 dir="$WORK/$1"
	shift 2
	mkdir -p "$dir"
	{
		cat <<EOF
[databases]
* = host=$PGHOST port=$PGPORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = session
max_client_conn = 1000
default_pool_size = 280
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
ignore_startup_parameters = extra_float_digits,options
EOF
		printf '%s\n' "$@"
	} >"$dir/pgbouncer.ini"
	[ "$(id -u)" = 0 ] && chown -R postgres "$dir"
	as_service_user "$PGBOUNCER" -d "$dir/pgbouncer.ini" >&2 # stdout is the pid
	for _ in $(seq 100); do [ -s "$dir/pgbouncer.pid" ] && break; sleep 0.1; done
	cat "$dir/pgbouncer.pid"
}
printf '"%s" "%s"\n' "$PGUSER" "$PGPASSWORD" >"$WORK/userlist.txt"
chmod 600 "$WORK/userlist.txt"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/userlist.txt"
# The PgBouncer of the comparisons, as configured out of the box: a client
# that disconnects leaves its server connection in the pool, and the next
# client (the next pgbench run) gets that backend, warm from the runs before.
BOUNCER_PORT=$(free_port)
BOUNCER_PID=$(start_bouncer bouncer "$BOUNCER_PORT")
BOUNCER_VERSION=$("$PGBOUNCER" --version | head -1)

log "starting pgveil"
ENCRYPTION_KEY=$("$PGVEIL" keygen)
ENCRYPTION_HASH_KEY=$("$PGVEIL" keygen)
export ENCRYPTION_KEY ENCRYPTION_HASH_KEY
PGVEIL_PORT=$(free_port)
PGVEIL_ADMIN_PORT=$(free_port)
write_config() { # file listen: the app tables of SPEC §3, users with a third column
	cat >"$1" <<EOF
listen: 127.0.0.1:$2
upstream: $PGHOST:$PGPORT
admin_listen: 127.0.0.1:$PGVEIL_ADMIN_PORT
upstream_tls:
  mode: $UPSTREAM_TLS
keys:
  encryption_key: env:ENCRYPTION_KEY
  hash_key: env:ENCRYPTION_HASH_KEY
tables:
  - table: users
    columns:
      - column: email
        blind_index: email_hash
      - column: full_name
      - column: phone
  - table: tasks
    columns: [{column: title}, {column: description}]
  - table: chat_history
    columns: [{column: message}]
EOF
}
write_config "$WORK/pgveil.yaml" "$PGVEIL_PORT"
PGVEIL_STARTS=0
start_pgveil() {
	PGVEIL_STARTS=$((PGVEIL_STARTS + 1))
	# Its own session, as PgBouncer (a daemon) and Postgres (pg_ctl) have:
	# with the kernel's autogroup scheduling each session gets an equal CPU
	# share, so pgveil does not share one with the pgbench clients.
	profile_env
	setsid env "${PROF_ENV[@]}" "$PGVEIL" serve --config "$WORK/pgveil.yaml" >"$WORK/pgveil-$PGVEIL_STARTS.log" 2>&1 &
	PGVEIL_PID=$!
	for _ in $(seq 100); do
		if "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGVEIL_PORT" -d "$ADMIN_DB" -Atc "SELECT 1" >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$PGVEIL_PID" 2>/dev/null || die "pgveil exited: $(tail -n 5 "$WORK/pgveil-$PGVEIL_STARTS.log")"
		sleep 0.1
	done
	die "pgveil did not accept connections"
}
stop_pgveil() {
	end_profile "$PGVEIL_PID"
	kill "$PGVEIL_PID" 2>/dev/null || true
	wait "$PGVEIL_PID" 2>/dev/null || true
	PGVEIL_PID=""
}
start_pgveil
# A reference: pgveil with proxy.max_idle_upstreams: 0, which closes each
# client's PostgreSQL connection with the client, so that every client runs
# on a backend started for it, as a direct connection does. pgveil as
# configured out of the box keeps the backend of a client that leaves idle
# (reset with DISCARD ALL) for the next client that logs in as the same
# user, as PgBouncer's pool does; the two differ by that alone.
VEIL_FRESH_PORT=$(free_port)
write_config "$WORK/pgveil-fresh.yaml" "$VEIL_FRESH_PORT"
sed -i 's/^admin_listen: .*/admin_listen: "off"/' "$WORK/pgveil-fresh.yaml"
printf 'proxy:\n  max_idle_upstreams: 0\n' >>"$WORK/pgveil-fresh.yaml"
VEIL_FRESH_PID=""
start_pgveil_fresh() {
	[ -n "$VEIL_FRESH_PID" ] && { end_profile "$VEIL_FRESH_PID"; kill "$VEIL_FRESH_PID" 2>/dev/null; wait "$VEIL_FRESH_PID" 2>/dev/null; }
	profile_env
	setsid env "${PROF_ENV[@]}" "$PGVEIL" serve --config "$WORK/pgveil-fresh.yaml" >>"$WORK/pgveil-fresh.log" 2>&1 &
	VEIL_FRESH_PID=$!
	PIDS_TO_KILL+=("$VEIL_FRESH_PID")
	for _ in $(seq 100); do
		"$PGBIN/psql" -X -q -h 127.0.0.1 -p "$VEIL_FRESH_PORT" -d "$ADMIN_DB" -Atc "SELECT 1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "pgveil (max_idle_upstreams: 0) did not accept connections"
}
start_pgveil_fresh
psql_veil() { local db=$1; shift; "${PSQL[@]}" -h 127.0.0.1 -p "$PGVEIL_PORT" -d "$db" "$@"; }

# ---------------------------------------------------------------------------
# Data

log "pgbench -i -s $SCALE"
"$PGBIN/pgbench" -i -s "$SCALE" -q -h "$PGHOST" -p "$PGPORT" "$DB_PGBENCH" >"$WORK/pgbench-init.log" 2>&1

log "OLTP and bulk-read schemas: plaintext copy directly, encrypted copy through pgveil"
SCHEMA_PLAIN="
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, full_name text, phone text,
                    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE tasks (id bigserial PRIMARY KEY, user_id bigint NOT NULL, title text NOT NULL, description text,
                    done boolean NOT NULL DEFAULT false);"
# The encrypted schema is what \`pgveil schema\` makes of the plaintext one:
# text columns, the blind index email_hash carrying the unique constraint.
SCHEMA_ENC="
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, email_hash text UNIQUE, full_name text, phone text,
                    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE tasks (id bigserial PRIMARY KEY, user_id bigint NOT NULL, title text NOT NULL, description text,
                    done boolean NOT NULL DEFAULT false);"
psql_direct "$DB_PLAIN" -c "$SCHEMA_PLAIN"
psql_direct "$DB_ENC" -c "$SCHEMA_ENC"
seq 1 "$OLTP_USERS" | awk '{printf "u%d@example.com\tUser Number %d\t+1-555-%07d\n", $1, $1, $1}' >"$WORK/users.tsv"
seq 1 "$BULK_ROWS" | awk -v u="$OLTP_USERS" '{printf "%d\tTask %d: prepare the quarterly report\tCall the client about invoice %d, then update the shared notes and the tracker.\n", ($1 % u) + 1, $1, $1}' >"$WORK/tasks.tsv"
for db in "$DB_PLAIN" "$DB_ENC"; do
	if [ "$db" = "$DB_PLAIN" ]; then run=psql_direct; else run=psql_veil; fi
	$run "$db" -c "COPY users (email, full_name, phone) FROM STDIN" <"$WORK/users.tsv"
	$run "$db" -c "COPY tasks (user_id, title, description) FROM STDIN" <"$WORK/tasks.tsv"
	psql_direct "$db" -c "VACUUM ANALYZE users" -c "VACUUM ANALYZE tasks"
done
# The reference for the encrypted OLTP runs (scripts/bench/shape_*.sql): a
# copy of the encrypted users table, the same tokens, with keys pgbench can
# spell in place of the blind index.
psql_direct "$DB_ENC" -c "CREATE TABLE users_shape (LIKE users INCLUDING ALL)" \
	-c "INSERT INTO users_shape SELECT id, email, '3f9a1c0d5e7b2a4f6c8e0d1b3a5c7e9f1d3b5a7c9e1f3d5b7' || id, full_name, phone, created_at FROM users" \
	-c "VACUUM ANALYZE users_shape"

# Sanity: the encrypted copy holds tokens and reads back as plaintext.
stored=$(psql_direct "$DB_ENC" -Atc "SELECT count(*) FILTER (WHERE email LIKE 'gAAAAA%' AND full_name LIKE 'gAAAAA%' AND phone LIKE 'gAAAAA%' AND length(email_hash) = 64) || '/' || count(*) FROM users")
fact sanity_users_tokens "$stored"
stored=$(psql_direct "$DB_ENC" -Atc "SELECT count(*) FILTER (WHERE title LIKE 'gAAAAA%' AND description LIKE 'gAAAAA%') || '/' || count(*) FROM tasks")
fact sanity_tasks_tokens "$stored"
fact sanity_read_back "$(psql_veil "$DB_ENC" -Atc "SELECT full_name FROM users WHERE email = 'u42@example.com'")"

log "backfill tables: $BACKFILL_ROWS users, plaintext, in the shape pgveil schema leaves them"
for db in "$DB_BF" "$DB_BFU"; do
	psql_direct "$db" <<EOF
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, email_hash text UNIQUE, full_name text, phone text,
                    created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO users (email, full_name, phone)
SELECT 'user' || g || '@example.com', 'Full Name Number ' || g, '+1-555-' || lpad(g::text, 7, '0')
FROM generate_series(1, $BACKFILL_ROWS) g;
VACUUM ANALYZE users;
EOF
done

# ---------------------------------------------------------------------------
# Quiet between runs
#
# A run must not pay for the one before it. Left alone, PostgreSQL vacuums a
# table some time after a run inserted into it (autovacuum looks at each
# database once a minute) and writes dirty buffers out at a checkpoint every
# few minutes; on two cores either takes a share of the CPU from whichever
# run it lands in, by chance one target's more than the other's. So the
# tables the runs write do not autovacuum; the runner vacuums the table a run
# wrote and checkpoints before the next run, outside the measured time (a
# throwaway cluster also checkpoints only when asked: checkpoint_timeout 1h).

# no_autovacuum DB TABLE...
no_autovacuum() {
	local db=$1 t
	shift
	for t in "$@"; do
		psql_direct "$db" -c "ALTER TABLE $t SET (autovacuum_enabled = off, toast.autovacuum_enabled = off)" >/dev/null
	done
}

# quiesce [DB TABLE]: after a run that inserted into TABLE, delete the rows
# it added (every table starts with ids 1..OLTP_USERS), VACUUM it, then
# CHECKPOINT (best effort: with DATABASE_URL the role may lack the right).
# So every run meets the same table: left to grow, the encrypted users table,
# which two pgveil targets insert into, reached twice the rows of the
# plaintext one (and of users_shape) by the last rounds, a bigger index for
# its inserts and lookups alike.
quiesce() {
	if [ $# -ge 2 ]; then
		psql_direct "$1" -c "DELETE FROM $2 WHERE id > $OLTP_USERS" -c "VACUUM $2" >/dev/null
	fi
	psql_admin -c "CHECKPOINT" >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------
# pgbench runner

# run_pgbench SECTION GROUP TARGET ROUND PORT DB PROXY_PID ARGS...: one run,
# one line in $RESULTS. A failed run is recorded (tps "failed"), not fatal.
run_pgbench() {
	local section=$1 group=$2 target=$3 round=$4 port=$5 db=$6 pid=$7
	shift 7
	local logf="$WORK/pgbench-$section-${group//\//-}-$target-$round.log"
	local before=0 after=0 rc=0
	[ "$pid" != - ] && before=$(cpu_ticks "$pid")
	"$PGBIN/pgbench" -n -h 127.0.0.1 -p "$port" "$@" "$db" >"$logf" 2>&1 || rc=$?
	[ "$pid" != - ] && after=$(cpu_ticks "$pid")
	local tps tx failed
	tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$logf" | head -1)
	tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$logf" | head -1)
	failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$logf" | head -1)
	if [ $rc -ne 0 ] || [ -z "$tps" ] || [ -z "$tx" ] || [ "${failed:-0}" != 0 ] || grep -q 'aborted' "$logf"; then
		log "  $section $group $target round $round FAILED: $(grep -m1 -iE 'error|abort' "$logf" || tail -n1 "$logf")"
		printf '%s\t%s\t%s\t%s\tfailed\t0\t0\n' "$section" "$group" "$target" "$round" >>"$RESULTS"
		grep -m1 -iE 'error' "$logf" | cut -c1-300 | while read -r line; do fact "error_${section}_${group}_$target" "$line"; done
		return 0
	fi
	local cpu=-
	[ "$pid" != - ] && cpu=$((after - before))
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$section" "$group" "$target" "$round" "$tps" "$tx" "$cpu" >>"$RESULTS"
	log "  $section $group $target round $round: tps $tps, tx $tx, proxy cpu ticks $cpu"
}

# profile PID NAME TITLE COMMAND...: run COMMAND while perf samples PID (the
# run is not counted in the results) and summarise where PID's CPU went.
PERF_OK=""
if command -v perf >/dev/null && perf record -q -o "$WORK/perf-probe.data" -- true >/dev/null 2>&1; then
	PERF_OK=1
fi
profile() {
	local pid=$1 name=$2 title=$3
	shift 3
	[ -n "$PERF_OK" ] || return 0
	perf record -q -F 999 -g -p "$pid" -o "$WORK/perf-$name.data" >/dev/null 2>&1 &
	local perf_pid=$!
	sleep 1
	"$@" >"$WORK/profile-$name.log" 2>&1 || true
	kill -INT "$perf_pid" 2>/dev/null || true
	wait "$perf_pid" 2>/dev/null || true
	perf report -i "$WORK/perf-$name.data" --children --sort symbol -g none --stdio >"$WORK/perf-$name.txt" 2>/dev/null || true
	"$PYTHON" scripts/bench/perf_summary.py "$WORK/perf-$name.txt" "$title" >"$WORK/profile-$name.md" || true
	rm -f "$WORK/perf-$name.data"
}

# ---------------------------------------------------------------------------
# 2. pgbench -S: direct, PgBouncer, pgveil, interleaved

no_autovacuum "$DB_PLAIN" users tasks
no_autovacuum "$DB_ENC" users tasks users_shape
quiesce

log "pgbench -S -c $CLIENTS -j $THREADS -T $DURATION, $ROUNDS rounds"
# The order of the targets alternates from round to round (forward in odd
# rounds, backward in even ones), so that no target always runs in the
# same place: first after a mode's change, or right after another's load.
for round in $(seq "$ROUNDS"); do
	for mode in simple extended prepared; do
		args=(-S -c "$CLIENTS" -j "$THREADS" -T "$DURATION" -M "$mode")
		targets=(direct pgbouncer pgveil pgveil-fresh)
		if [ $((round % 2)) = 0 ]; then targets=(pgveil-fresh pgveil pgbouncer direct); fi
		for target in "${targets[@]}"; do
			case $target in
			direct) run_pgbench select "$mode" direct "$round" "$PGPORT" "$DB_PGBENCH" - "${args[@]}" ;;
			pgbouncer) run_pgbench select "$mode" pgbouncer "$round" "$BOUNCER_PORT" "$DB_PGBENCH" "$BOUNCER_PID" "${args[@]}" ;;
			pgveil) run_pgbench select "$mode" pgveil "$round" "$PGVEIL_PORT" "$DB_PGBENCH" "$PGVEIL_PID" "${args[@]}" ;;
			pgveil-fresh) run_pgbench select "$mode" pgveil-fresh "$round" "$VEIL_FRESH_PORT" "$DB_PGBENCH" "$VEIL_FRESH_PID" "${args[@]}" ;;
			esac
		done
	done
done

if [ -n "$PERF_OK" ]; then
	log "profiling pgveil and PgBouncer under pgbench -S -M extended (not counted)"
	profile "$PGVEIL_PID" select-pgveil "pgveil, pgbench -S -M extended" \
		"$PGBIN/pgbench" -n -h 127.0.0.1 -p "$PGVEIL_PORT" -S -c "$CLIENTS" -j "$THREADS" -T 5 -M extended "$DB_PGBENCH"
	profile "$BOUNCER_PID" select-pgbouncer "PgBouncer, pgbench -S -M extended" \
		"$PGBIN/pgbench" -n -h 127.0.0.1 -p "$BOUNCER_PORT" -S -c "$CLIENTS" -j "$THREADS" -T 5 -M extended "$DB_PGBENCH"
fi

# Reference: bare Go relays (scripts/bench/relay) that only move bytes, one
# with a goroutine per direction, one with a raw epoll loop as PgBouncer and
# pgveil's event loop on epoll, one on io_uring as pgveil's event loop where
# the kernel offers it, next to PgBouncer, pgveil and pgveil with its other
# I/O engines, interleaved.
log "reference relays: pgbench -S -M prepared, 5 s, 2 rounds"
# The I/O engine pgveil's event loops chose (its log says).
fact pgveil_io "$(grep -ho '"msg":"event loops started".*"io":"[a-z_]*"' "$WORK"/pgveil-*.log | head -1 | sed 's/.*"io":"\([a-z_]*\)"/\1/')"
RELAY_PIDS=()
for mode in goroutines epoll uring; do
	port=$(free_port)
	setsid "$WORK/relay" -mode "$mode" "127.0.0.1:$port" "$PGHOST:$PGPORT" >"$WORK/relay-$mode.log" 2>&1 &
	RELAY_PIDS+=("$!")
	PIDS_TO_KILL+=("$!")
	eval "RELAY_${mode}_PORT=$port RELAY_${mode}_PID=$!"
done
# pgveil itself with its other I/O engines: the event loops on epoll
# (proxy.io_uring: off), and every session on two goroutines
# (proxy.event_loops: 0), as TLS sessions always are.
VEIL_PIDS=()
for engine in epoll goroutines; do
	port=$(free_port)
	write_config "$WORK/pgveil-$engine.yaml" "$port"
	sed -i 's/^admin_listen: .*/admin_listen: "off"/' "$WORK/pgveil-$engine.yaml"
	if [ "$engine" = epoll ]; then
		printf 'proxy:\n  io_uring: "off"\n' >>"$WORK/pgveil-$engine.yaml"
	else
		printf 'proxy:\n  event_loops: 0\n' >>"$WORK/pgveil-$engine.yaml"
	fi
	setsid "$PGVEIL" serve --config "$WORK/pgveil-$engine.yaml" >"$WORK/pgveil-$engine.log" 2>&1 &
	VEIL_PIDS+=("$!")
	PIDS_TO_KILL+=("$!")
	eval "VEIL_${engine}_PORT=$port VEIL_${engine}_PID=$!"
done
sleep 1
for round in 1 2; do
	args=(-S -c "$CLIENTS" -j "$THREADS" -T 5 -M prepared)
	run_pgbench relay prepared pgbouncer "$round" "$BOUNCER_PORT" "$DB_PGBENCH" "$BOUNCER_PID" "${args[@]}"
	run_pgbench relay prepared pgveil "$round" "$PGVEIL_PORT" "$DB_PGBENCH" "$PGVEIL_PID" "${args[@]}"
	run_pgbench relay prepared pgveil-epoll "$round" "$VEIL_epoll_PORT" "$DB_PGBENCH" "$VEIL_epoll_PID" "${args[@]}"
	run_pgbench relay prepared pgveil-goroutines "$round" "$VEIL_goroutines_PORT" "$DB_PGBENCH" "$VEIL_goroutines_PID" "${args[@]}"
	run_pgbench relay prepared relay-goroutines "$round" "$RELAY_goroutines_PORT" "$DB_PGBENCH" "$RELAY_goroutines_PID" "${args[@]}"
	run_pgbench relay prepared relay-epoll "$round" "$RELAY_epoll_PORT" "$DB_PGBENCH" "$RELAY_epoll_PID" "${args[@]}"
	run_pgbench relay prepared relay-uring "$round" "$RELAY_uring_PORT" "$DB_PGBENCH" "$RELAY_uring_PID" "${args[@]}"
done
kill "${RELAY_PIDS[@]}" "${VEIL_PIDS[@]}" 2>/dev/null || true
wait "${RELAY_PIDS[@]}" "${VEIL_PIDS[@]}" 2>/dev/null || true

# ---------------------------------------------------------------------------
# 3. Encrypted OLTP: pgveil + encrypted schema vs PgBouncer + plaintext schema

log "encrypted OLTP, $OLTP_DURATION s per run, $OLTP_ROUNDS rounds"
# pgveil starts each protocol mode's block fresh, with an empty plan cache:
# the simple-protocol statements, their literals normalized to $n, must not
# meet the prepared ones in the cache (the probe below records whether they
# can).
for mode in simple prepared; do
	stop_pgveil
	start_pgveil
	start_pgveil_fresh
	for round in $(seq "$OLTP_ROUNDS"); do
		for script in lookup insert; do
			args=(-c "$CLIENTS" -j "$THREADS" -T "$OLTP_DURATION" -M "$mode" -D "users=$OLTP_USERS" -f "scripts/bench/${script}_$mode.sql")
			# Only the inserts write; each target's run is followed by
			# the deletion of its rows, a vacuum and a checkpoint (see
			# quiesce). The order alternates from round to round, as
			# above.
			targets=(pgbouncer pgveil pgveil-fresh)
			if [ "$mode" = simple ]; then targets+=(pgbouncer-shape); fi
			if [ $((round % 2)) = 0 ]; then
				reversed=()
				for ((k = ${#targets[@]} - 1; k >= 0; k--)); do reversed+=("${targets[k]}"); done
				targets=("${reversed[@]}")
			fi
			for target in "${targets[@]}"; do
				case $target in
				pgbouncer)
					run_pgbench oltp "$script/$mode" pgbouncer "$round" "$BOUNCER_PORT" "$DB_PLAIN" "$BOUNCER_PID" "${args[@]}"
					if [ "$script" = insert ]; then quiesce "$DB_PLAIN" users; fi ;;
				pgveil)
					run_pgbench oltp "$script/$mode" pgveil "$round" "$PGVEIL_PORT" "$DB_ENC" "$PGVEIL_PID" "${args[@]}"
					if [ "$script" = insert ]; then quiesce "$DB_ENC" users; fi ;;
				pgveil-fresh)
					run_pgbench oltp "$script/$mode" pgveil-fresh "$round" "$VEIL_FRESH_PORT" "$DB_ENC" "$VEIL_FRESH_PID" "${args[@]}"
					if [ "$script" = insert ]; then quiesce "$DB_ENC" users; fi ;;
				pgbouncer-shape)
					run_pgbench oltp "$script/$mode" pgbouncer-shape "$round" "$BOUNCER_PORT" "$DB_ENC" "$BOUNCER_PID" \
						-c "$CLIENTS" -j "$THREADS" -T "$OLTP_DURATION" -M simple -D "users=$OLTP_USERS" -f "scripts/bench/shape_${script}_simple.sql"
					if [ "$script" = insert ]; then quiesce "$DB_ENC" users_shape; fi ;;
				esac
			done
		done
	done
	profile "$PGVEIL_PID" "oltp-$mode" "pgveil, encrypted OLTP -M $mode (lookup and insert scripts mixed)" \
		"$PGBIN/pgbench" -n -h 127.0.0.1 -p "$PGVEIL_PORT" -c "$CLIENTS" -j "$THREADS" -T 5 -M "$mode" -D "users=$OLTP_USERS" \
		-f "scripts/bench/lookup_$mode.sql" -f "scripts/bench/insert_$mode.sql" "$DB_ENC"
done

# Probe: the same lookup through one pgveil, first with an inlined literal
# (simple protocol), then as a prepared statement, then inlined again.
stop_pgveil
start_pgveil
probe="ok: both forms answered, in either order"
for mode in simple prepared simple; do
	if ! "$PGBIN/pgbench" -n -h 127.0.0.1 -p "$PGVEIL_PORT" -M "$mode" -t 1 -c 1 -D "users=$OLTP_USERS" \
		-f "scripts/bench/lookup_$mode.sql" "$DB_ENC" >"$WORK/probe.log" 2>&1 || grep -q aborted "$WORK/probe.log"; then
		probe="failed: the $mode-protocol lookup after the other form: $(grep -m1 'ERROR' "$WORK/probe.log" | sed 's/.*ERROR: *//' | cut -c1-200)"
		break
	fi
done
fact oltp_mixed_probe "$probe"

# ---------------------------------------------------------------------------
# Memory with idle clients (a fresh pgveil)

log "pgveil memory with $IDLE_CONNS idle clients"
stop_pgveil
start_pgveil
sleep 1
fact rss_fresh_kb "$(status_kb "$PGVEIL_PID" VmRSS)"
READY=$WORK/idle.ready
"$PYTHON" scripts/bench/idle_conns.py 127.0.0.1 "$PGVEIL_PORT" "$PGUSER" "$DB_PGBENCH" "$IDLE_CONNS" "$READY" >"$WORK/idle.log" 2>&1 &
IDLE_PID=$!
PIDS_TO_KILL+=("$IDLE_PID")
for _ in $(seq 600); do
	[ -s "$READY" ] && break
	kill -0 "$IDLE_PID" 2>/dev/null || die "idle clients failed: $(tail -n 3 "$WORK/idle.log")"
	sleep 0.1
done
[ -s "$READY" ] || die "idle clients did not connect"
sleep 3
fact idle_conns "$IDLE_CONNS"
fact rss_idle_kb "$(status_kb "$PGVEIL_PID" VmRSS)"
fact hwm_idle_kb "$(status_kb "$PGVEIL_PID" VmHWM)"
fact threads_idle "$(status_kb "$PGVEIL_PID" Threads)"
kill "$IDLE_PID" 2>/dev/null || true
wait "$IDLE_PID" 2>/dev/null || true

# ---------------------------------------------------------------------------
# 4. Bulk read (a fresh pgveil, so VmHWM is this section's peak)

log "bulk read: $BULK_ROWS rows, two encrypted columns"
quiesce
stop_pgveil
start_pgveil
fact bulk_rows "$BULK_ROWS"
fact bulk_rss_start_kb "$(status_kb "$PGVEIL_PID" VmRSS)"
BULK_SQL="SELECT id, user_id, title, description FROM tasks"
for round in $(seq "$ROUNDS"); do
	t0=$(now)
	psql_direct "$DB_PLAIN" -At -c "$BULK_SQL" >/dev/null
	t1=$(now)
	printf 'bulk\tread\tdirect\t%s\t%s\t%s\t-\n' "$round" "$(elapsed "$t0" "$t1")" "$BULK_ROWS" >>"$RESULTS"
	c0=$(cpu_ticks "$PGVEIL_PID")
	t0=$(now)
	psql_veil "$DB_ENC" -At -c "$BULK_SQL" >"$WORK/bulk.out"
	t1=$(now)
	c1=$(cpu_ticks "$PGVEIL_PID")
	printf 'bulk\tread\tpgveil\t%s\t%s\t%s\t%s\n' "$round" "$(elapsed "$t0" "$t1")" "$BULK_ROWS" "$((c1 - c0))" >>"$RESULTS"
	log "  bulk round $round: pgveil $(elapsed "$t0" "$t1") s, cpu ticks $((c1 - c0))"
done
fact bulk_rows_read "$(wc -l <"$WORK/bulk.out")"
fact bulk_plain_sample "$(grep -c 'prepare the quarterly report' "$WORK/bulk.out")"
rm -f "$WORK/bulk.out"
fact bulk_hwm_kb "$(status_kb "$PGVEIL_PID" VmHWM)"
fact bulk_rss_end_kb "$(status_kb "$PGVEIL_PID" VmRSS)"
profile "$PGVEIL_PID" bulk-pgveil "pgveil, bulk read" psql_veil "$DB_ENC" -At -c "$BULK_SQL" -o /dev/null

# ---------------------------------------------------------------------------
# 5. Backfill vs the database's own UPDATE

log "backfill: single UPDATE of $BACKFILL_ROWS rows (same columns, token-sized values)"
# The UPDATE leaves a million dead rows, whose autovacuum would land in the
# backfill that follows; the backfill's own table vacuums as it would in
# production, within its run.
no_autovacuum "$DB_BFU" users
quiesce
psql_direct "$DB_BFU" -c "CHECKPOINT" >/dev/null
# Fernet token length for n bytes of plaintext: 57 bytes of envelope plus
# the ciphertext padded to 16, base64 with padding.
TOKLEN="4 * ceil((57 + 16 * (octet_length(%s) / 16 + 1)) / 3.0)::int"
tl() { printf "$TOKLEN" "$1"; }
t0=$(now)
psql_direct "$DB_BFU" -c "UPDATE users SET email = rpad(email, $(tl email), 'x'), full_name = rpad(full_name, $(tl full_name), 'x'), phone = rpad(phone, $(tl phone), 'x'), email_hash = md5(email) || md5(full_name)"
t1=$(now)
fact update_seconds "$(elapsed "$t0" "$t1")"
fact update_avg_len "$(psql_direct "$DB_BFU" -Atc "SELECT round(avg(length(email))) || '/' || round(avg(length(full_name))) || '/' || round(avg(length(phone))) FROM users")"

log "backfill: pgveil backfill of $BACKFILL_ROWS rows"
cat >"$WORK/backfill.yaml" <<EOF
upstream: $PGHOST:$PGPORT
upstream_tls:
  mode: $UPSTREAM_TLS
keys:
  encryption_key: env:ENCRYPTION_KEY
  hash_key: env:ENCRYPTION_HASH_KEY
tables:
  - table: users
    columns:
      - column: email
        blind_index: email_hash
      - column: full_name
      - column: phone
EOF
BF_WORKERS=2
BF_DSN="postgres://$(printf %s "$PGUSER" | "$PYTHON" -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.stdin.read(),safe=""))'):$(printf %s "$PGPASSWORD" | "$PYTHON" -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.stdin.read(),safe=""))')@$PGHOST:$PGPORT/$DB_BF?sslmode=$UPSTREAM_TLS"
psql_direct "$DB_BF" -c "CHECKPOINT" >/dev/null
t0=$(now)
rc=0
"$PGVEIL" backfill --config "$WORK/backfill.yaml" --dsn "$BF_DSN" --workers "$BF_WORKERS" >"$WORK/backfill.log" 2>&1 || rc=$?
t1=$(now)
fact backfill_workers "$BF_WORKERS"
fact backfill_exit "$rc"
fact backfill_seconds "$(elapsed "$t0" "$t1")"
fact backfill_summary "$(grep -v '^Progress' "$WORK/backfill.log" | tail -n 3 | tr '\n' ' ' | cut -c1-400)"
fact backfill_check "$(psql_direct "$DB_BF" -Atc "SELECT count(*) FILTER (WHERE email LIKE 'gAAAAA%' AND full_name LIKE 'gAAAAA%' AND phone LIKE 'gAAAAA%' AND length(email_hash) = 64) || '/' || count(*) FROM users")"
fact backfill_avg_len "$(psql_direct "$DB_BF" -Atc "SELECT round(avg(length(email))) || '/' || round(avg(length(full_name))) || '/' || round(avg(length(phone))) FROM users")"
fact backfill_rows "$BACKFILL_ROWS"
log "  update $(grep update_seconds "$FACTS" | cut -f2) s, backfill $(elapsed "$t0" "$t1") s (exit $rc)"

# ---------------------------------------------------------------------------
# Report

fact nproc "$(nproc)"
fact cpu_model "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
fact mem_total "$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
fact kernel "$(uname -sr)"
fact pg_version "$PG_VERSION"
fact pg_source "$PG_SOURCE"
fact pgbouncer_version "$BOUNCER_VERSION"
fact go_version "$(go version | awk '{print $3, $4}')"
fact commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- . ':!docs/BENCHMARKS.md' 2>/dev/null || echo ' (with uncommitted changes)')"
fact date "$(date -u '+%Y-%m-%d %H:%M UTC')"
fact loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
fact runtime_seconds "$(($(date +%s) - START_EPOCH))"
fact clk_tck "$CLK_TCK"
fact duration "$DURATION"
fact oltp_duration "$OLTP_DURATION"
fact oltp_rounds "$OLTP_ROUNDS"
fact oltp_users "$OLTP_USERS"
fact rounds "$ROUNDS"
fact clients "$CLIENTS"
fact threads "$THREADS"
fact scale "$SCALE"

if [ -n "$PGO_OUT" ]; then
	for pid in "$PGVEIL_PID" "$VEIL_FRESH_PID"; do
		[ -n "$pid" ] && end_profile "$pid"
	done
	go tool pprof -proto "$WORK"/cpu-*.pprof >"$PGO_OUT.tmp" 2>"$WORK/pprof.log" || die "merging profiles: $(tail -n 3 "$WORK/pprof.log")"
	mv "$PGO_OUT.tmp" "$PGO_OUT"
	log "wrote $PGO_OUT from $PROF_N profiles ($(($(date +%s) - START_EPOCH)) s); $OUT unchanged"
	exit 0
fi
mkdir -p "$(dirname "$OUT")"
"$PYTHON" scripts/bench/report.py "$RESULTS" "$FACTS" "$WORK" >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "wrote $OUT ($(($(date +%s) - START_EPOCH)) s)"

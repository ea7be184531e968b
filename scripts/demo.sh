#!/usr/bin/env bash
# scripts/demo.sh: what `make demo` runs.
#
#   1. builds bin/pgveil;
#   2. starts a throwaway PostgreSQL under ./.demo from the installed binaries
#      (as the postgres OS user when run as root), or uses DATABASE_URL (a
#      postgres:// URL of a role that may CREATE DATABASE) if set;
#   3. generates the keys with `pgveil keygen` into ./.demo/keys, writes the
#      config ./.demo/pgveil.yaml (users.email searchable through
#      users.email_hash, users.full_name, tasks.title, tasks.description,
#      chat_history.message), and creates the schema directly with psql;
#   4. starts `pgveil serve` in front of PostgreSQL;
#   5. runs an "app" through pgveil with psql (sign-up, login by email, tasks,
#      chat) and shows what the app sees next to what PostgreSQL stores;
#   6. keeps serving and prints the DSNs, until Ctrl-C, which stops everything
#      and removes ./.demo.
#
# Options: --once   stop and clean up right after step 5 (no waiting).
# Environment: DATABASE_URL (see above), PGBIN (PostgreSQL binaries; default
# `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin),
# DEMO_LISTEN, DEMO_ADMIN_LISTEN (default 127.0.0.1:6432 and 127.0.0.1:9187,
# or free ports when those are taken).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DEMO=$ROOT/.demo
ONCE=0
for a in "$@"; do
	case $a in
	--once) ONCE=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "demo: unknown argument $a (try --help)" >&2
		exit 2
		;;
	esac
done

if [ -t 1 ]; then
	B=$'\e[1m' D=$'\e[2m' G=$'\e[32m' C=$'\e[36m' Y=$'\e[33m' R=$'\e[0m'
else
	B= D= G= C= Y= R=
fi
say() { printf '%s\n' "${B}==> $*${R}"; }
note() { printf '%s\n' "${D}$*${R}"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------- binaries
if [ -z "${PGBIN:-}" ]; then
	PGBIN=$(pg_config --bindir 2>/dev/null || true)
	if [ ! -x "$PGBIN/initdb" ]; then
		PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n | tail -n1 || true)
	fi
fi
PSQL=psql
[ -x "${PGBIN:-}/psql" ] && PSQL=$PGBIN/psql
command -v "$PSQL" >/dev/null || die "psql not found: install the Debian package postgresql-client (or postgresql)"
if [ -z "${DATABASE_URL:-}" ] && [ ! -x "${PGBIN:-}/initdb" ]; then
	die "PostgreSQL server binaries not found: install the Debian package postgresql, set PGBIN, or set DATABASE_URL"
fi
PYTHON=/usr/bin/python3
[ -x $PYTHON ] || PYTHON=python3

psqlq() { "$PSQL" -X -q -v ON_ERROR_STOP=1 "$@"; }

# A free TCP port on 127.0.0.1, preferring $1.
free_port() {
	local p=$1
	while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
	echo "$p"
}

# ---------------------------------------------------------------- clean-up
PGVEIL_PID=
PG_STARTED=0
CREATED_DB=
PGDATA_REAL=
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	echo
	say "Stopping and cleaning up"
	if [ -n "$PGVEIL_PID" ] && kill -0 "$PGVEIL_PID" 2>/dev/null; then
		kill -TERM "$PGVEIL_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$PGVEIL_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$PGVEIL_PID" 2>/dev/null || true
	fi
	if [ -n "$CREATED_DB" ]; then
		psqlq "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $CREATED_DB WITH (FORCE)" >/dev/null 2>&1 || true
	fi
	if [ "$PG_STARTED" = 1 ]; then
		as_pg "$PGBIN/pg_ctl" -D "$DEMO/pgdata" -m fast -w stop >/dev/null 2>&1 || true
	fi
	[ -n "$PGDATA_REAL" ] && rm -rf "$PGDATA_REAL"
	rm -rf "$DEMO"
	note "removed $DEMO"
	exit "$rc"
}

# A previous demo that was killed without its trap: stop what it left.
if [ -d "$DEMO" ]; then
	if [ -f "$DEMO/pgveil.pid" ]; then kill -TERM "$(cat "$DEMO/pgveil.pid")" 2>/dev/null || true; fi
	if [ -f "$DEMO/pgdata/postmaster.pid" ] && [ -x "${PGBIN:-}/pg_ctl" ]; then
		as_pg "$PGBIN/pg_ctl" -D "$DEMO/pgdata" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	[ -L "$DEMO/pgdata" ] && rm -rf "$(readlink "$DEMO/pgdata")"
	rm -rf "$DEMO"
fi
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- build
say "Building bin/pgveil"
VERSION=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
CGO_ENABLED=1 go build -ldflags "-X main.version=$VERSION -X main.commit=$COMMIT" -o bin/pgveil ./cmd/pgveil
PGVEIL=$ROOT/bin/pgveil
note "$("$PGVEIL" version | head -n1)"

mkdir -p "$DEMO/keys"
chmod 755 "$DEMO"
PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

# ---------------------------------------------------------------- postgres
if [ -n "${DATABASE_URL:-}" ]; then
	say "Using the PostgreSQL of DATABASE_URL"
	CREATED_DB=pgveil_demo_$$
	psqlq "$DATABASE_URL" -c "CREATE DATABASE $CREATED_DB" >/dev/null ||
		die "could not CREATE DATABASE with DATABASE_URL (the demo needs its own database)"
	# Same server and role, the demo's database; host:port for pgveil.
	read -r ADMIN_URL UPSTREAM < <("$PYTHON" - "$DATABASE_URL" "$CREATED_DB" <<'EOF'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
if p.scheme not in ("postgres", "postgresql") or not p.hostname:
    sys.exit("demo: DATABASE_URL must be a postgres://user:password@host:port/db URL")
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])), f"{p.hostname}:{p.port or 5432}")
EOF
	)
	[ -n "${UPSTREAM:-}" ] || die "could not parse DATABASE_URL"
else
	PGPORT=$(free_port 54320)
	say "Starting PostgreSQL ($("$PGBIN/postgres" --version | awk '{print $3}')) on 127.0.0.1:$PGPORT, data in .demo/pgdata"
	PGDATA_DIR=$DEMO/pgdata
	if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$DEMO"; then
		# The postgres user cannot reach ./.demo (a private home directory):
		# keep the data directory in /tmp and link it as .demo/pgdata.
		PGDATA_REAL=$(mktemp -d /tmp/pgveil-demo-XXXXXX)
		chmod 755 "$PGDATA_REAL"
		PGDATA_DIR=$PGDATA_REAL/pgdata
		ln -s "$PGDATA_DIR" "$DEMO/pgdata"
	fi
	mkdir -p "$DEMO/run" "$PGDATA_DIR"
	chmod 700 "$PGDATA_DIR"
	PWFILE=$DEMO/run/pwfile
	printf '%s\n' "$PASSWORD" >"$PWFILE"
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres: "$DEMO/run" "$PWFILE" "$PGDATA_DIR"
	fi
	as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --pwfile="$PWFILE" \
		--auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale --no-sync >"$DEMO/initdb.log" 2>&1 ||
		{ cat "$DEMO/initdb.log" >&2; die "initdb failed"; }
	rm -f "$PWFILE"
	touch "$DEMO/postgres.log"
	[ "$(id -u)" -eq 0 ] && chown postgres: "$DEMO/postgres.log"
	as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$DEMO/postgres.log" -w -t 60 \
		-o "-p $PGPORT -k $DEMO/run -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null ||
		{ tail -n 20 "$DEMO/postgres.log" >&2; die "PostgreSQL did not start"; }
	PG_STARTED=1
	# The application's own role and database, as in production.
	psqlq -h "$DEMO/run" -p "$PGPORT" -U postgres -d postgres >/dev/null <<EOF
CREATE ROLE app LOGIN PASSWORD '$PASSWORD';
CREATE DATABASE app OWNER app;
EOF
	ADMIN_URL="postgres://app:$PASSWORD@127.0.0.1:$PGPORT/app?sslmode=disable"
	UPSTREAM=127.0.0.1:$PGPORT
fi

# ---------------------------------------------------------------- keys, config
say "Generating keys with pgveil keygen (.demo/keys)"
umask 077
"$PGVEIL" keygen >"$DEMO/keys/encryption_key"
"$PGVEIL" keygen >"$DEMO/keys/hash_key"
: >"$DEMO/keys/encryption_key_fallback" # empty: no fallback key (key rotation fills it)
umask 022
note "encryption_key, hash_key and an empty encryption_key_fallback (mode 600); the keys never leave the files"

LISTEN=${DEMO_LISTEN:-127.0.0.1:$(free_port 6432)}
ADMIN_LISTEN=${DEMO_ADMIN_LISTEN:-127.0.0.1:$(free_port 9187)}
APP_URL=$("$PYTHON" - "$ADMIN_URL" "$LISTEN" <<'EOF'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
auth = p.netloc.rpartition("@")[0]
print(u.urlunsplit(p._replace(netloc=(auth + "@" if auth else "") + sys.argv[2])))
EOF
)

CONFIG=$DEMO/pgveil.yaml
cat >"$CONFIG" <<EOF
# Written by scripts/demo.sh (make demo). See docs/CONFIG.md.
listen: $LISTEN
upstream: $UPSTREAM
admin_listen: $ADMIN_LISTEN
upstream_tls:
  mode: prefer
keys:
  encryption_key: file:$DEMO/keys/encryption_key
  fallback_keys: file:$DEMO/keys/encryption_key_fallback
  key_version: 1
  hash_key: file:$DEMO/keys/hash_key
encryption:
  mode: strict
  on_unsupported: reject
tables:
  - table: users
    columns:
      - column: email
        blind_index: email_hash
      - column: full_name
  - table: tasks
    columns: [{column: title}, {column: description}]
  - table: chat_history
    columns: [{column: message}]
EOF
say "Config .demo/pgveil.yaml"
sed -n '/^tables:/,$p' "$CONFIG" | sed 's/^/    /'

say "Creating the schema directly in PostgreSQL (psql)"
psqlq "$ADMIN_URL" <<'EOF'
CREATE TABLE users (
    id         bigserial PRIMARY KEY,
    email      text NOT NULL,          -- Fernet token
    email_hash text,                   -- blind index: HMAC-SHA256, 64 hex
    full_name  text,                   -- Fernet token
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_hash_key ON users (email_hash);
CREATE TABLE tasks (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id),
    title       text NOT NULL,
    description text,
    done        boolean NOT NULL DEFAULT false
);
CREATE TABLE chat_history (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users(id),
    message    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
EOF
note "users(id, email, email_hash UNIQUE, full_name), tasks(id, user_id, title, description, done), chat_history(id, user_id, message)"
unset PGPASSWORD
# The files of the config are the only key source: variables from the
# caller's shell would override them.
unset ENCRYPTION_KEY ENCRYPTION_KEY_FILE ENCRYPTION_KEY_FALLBACK ENCRYPTION_KEY_FALLBACK_FILE \
	ENCRYPTION_HASH_KEY ENCRYPTION_HASH_KEY_FILE ENCRYPTION_HASH_KEY_FALLBACK ENCRYPTION_HASH_KEY_FALLBACK_FILE \
	ENCRYPTION_KEY_VERSION MAINTENANCE_MODE PGVEIL_CONFIG
"$PGVEIL" check --config "$CONFIG" --dsn "$ADMIN_URL" 2>&1 | sed 's/^/    /' ||
	die "pgveil check failed"

# ---------------------------------------------------------------- pgveil
say "Starting pgveil serve on $LISTEN (admin $ADMIN_LISTEN), logs in .demo/pgveil.log"
"$PGVEIL" serve --config "$CONFIG" 2>"$DEMO/pgveil.log" &
PGVEIL_PID=$!
echo "$PGVEIL_PID" >"$DEMO/pgveil.pid"
for i in $(seq 100); do
	if curl -fsS "http://$ADMIN_LISTEN/readyz" >/dev/null 2>&1; then break; fi
	kill -0 "$PGVEIL_PID" 2>/dev/null || { cat "$DEMO/pgveil.log" >&2; die "pgveil exited"; }
	[ "$i" = 100 ] && { cat "$DEMO/pgveil.log" >&2; die "pgveil not ready after 10s"; }
	sleep 0.1
done
note "$(grep -m1 'Encryption service initialized' "$DEMO/pgveil.log" || true)"

# ---------------------------------------------------------------- the app
app() { psqlq "$APP_URL" "$@"; }
stored() { psqlq "$ADMIN_URL" "$@"; }
header() { printf '\n%s\n' "${C}${B}-- $* --${R}"; }

say "The app, through pgveil ($LISTEN): plain SQL, no code change"
header "sign-up"
app -c "INSERT INTO users (email, full_name) VALUES
  ('alice@example.com', 'Alice Liddell'),
  ('bob@example.com',   'Bob Martin'),
  ('carol@example.com', 'Carol Shaw')
RETURNING id, email, full_name"
header "login: SELECT ... FROM users WHERE email = 'bob@example.com'  (rewritten to email_hash = <HMAC>)"
app -c "SELECT id, email, full_name FROM users WHERE email = 'bob@example.com'"
header "lookup of several users: email IN (...) (each value hashed)"
app -c "SELECT id, email FROM users WHERE email IN ('alice@example.com', 'carol@example.com', 'nobody@example.com') ORDER BY id"
header "sign-up again with the same email: the unique index on email_hash still says no"
app -c "INSERT INTO users (email, full_name) VALUES ('alice@example.com', 'Impostor')" 2>&1 | sed 's/^/  /' || true
header "tasks"
app <<'EOF'
SELECT id AS bob FROM users WHERE email = 'bob@example.com' \gset
SELECT id AS alice FROM users WHERE email = 'alice@example.com' \gset
INSERT INTO tasks (user_id, title, description) VALUES
  (:bob,   'Write the quarterly report', 'Numbers for the board, due Friday'),
  (:alice, 'Renew passport',             'Appointment at 9:30, bring two photos');
SELECT u.email, t.title, t.description
FROM tasks t JOIN users u ON u.id = t.user_id
ORDER BY t.id;
EOF
header "chat"
app <<'EOF'
SELECT id AS bob FROM users WHERE email = 'bob@example.com' \gset
INSERT INTO chat_history (user_id, message) VALUES
  (:bob, 'Hi, my card ending 4242 was charged twice'),
  (:bob, 'Thanks, the refund arrived!');
SELECT c.id, c.message FROM chat_history c JOIN users u ON u.id = c.user_id
WHERE u.email = 'bob@example.com' ORDER BY c.id;
EOF
header "what cannot be computed on ciphertext is refused, never answered wrongly"
app -c "SELECT id FROM users WHERE email LIKE '%@example.com'" 2>&1 | sed 's/^/  /' || true

say "What PostgreSQL stores (queried directly, bypassing pgveil)"
header "users"
stored -c "SELECT id, left(email, 28) || '...' AS email, email_hash, left(full_name, 28) || '...' AS full_name FROM users ORDER BY id"
header "tasks"
stored -c "SELECT id, user_id, left(title, 28) || '...' AS title, left(description, 28) || '...' AS description FROM tasks ORDER BY id"
header "chat_history"
stored -c "SELECT id, user_id, left(message, 28) || '...' AS message, length(message) AS token_length FROM chat_history ORDER BY id"
header "the runbook's checks"
stored <<'EOF'
SELECT (SELECT bool_and(email LIKE 'gAAAAA%' AND full_name LIKE 'gAAAAA%') FROM users)      AS users_are_tokens,
       (SELECT bool_and(email_hash ~ '^[0-9a-f]{64}$') FROM users)                            AS hashes_are_64_hex,
       (SELECT bool_and(title LIKE 'gAAAAA%' AND description LIKE 'gAAAAA%') FROM tasks)      AS tasks_are_tokens,
       (SELECT bool_and(message LIKE 'gAAAAA%') FROM chat_history)                            AS chat_is_tokens,
       (SELECT count(*) FROM users WHERE email LIKE '%@example.com' OR full_name LIKE '%Martin%')
     + (SELECT count(*) FROM chat_history WHERE message LIKE '%4242%')                        AS plaintext_left;
EOF
header "pgveil verify (per column: tokens under the primary key, correct blind indexes)"
"$PGVEIL" verify --config "$CONFIG" --dsn "$ADMIN_URL" 2>&1 | sed 's/^/  /' || true

header "metrics (http://$ADMIN_LISTEN/metrics), the runbook's names"
curl -fsS "http://$ADMIN_LISTEN/metrics" 2>/dev/null |
	grep -E '^(encryption_operations_total|active_encryption_key_version|pgveil_queries_total|pgveil_rejections_total)' |
	grep -v ' 0$' | sed 's/^/  /' || true

# ---------------------------------------------------------------- serve
if [ "$ONCE" = 1 ]; then
	exit 0
fi
cat <<EOF

${G}${B}pgveil is running.${R} Connect your app (or psql) to pgveil instead of PostgreSQL:

    ${B}psql '$APP_URL'${R}

  application DSN (through pgveil)   $APP_URL
  admin DSN (PostgreSQL directly)    $ADMIN_URL
  config                             $CONFIG
  keys                               $DEMO/keys/ (encryption_key, encryption_key_fallback, hash_key)
  logs                               $DEMO/pgveil.log, $DEMO/postgres.log
  metrics                            curl http://$ADMIN_LISTEN/metrics   (also /healthz, /readyz)

To follow docs/RUNBOOK.md against this demo:

    export PATH=$ROOT/bin:\$PATH
    export PGVEIL_CONFIG=$CONFIG
    export DATABASE_URL='$ADMIN_URL'
    export APP_URL='$APP_URL'
    export ADMIN=http://$ADMIN_LISTEN
    reload() { kill -HUP $PGVEIL_PID; }

${Y}Press Ctrl-C to stop pgveil and PostgreSQL and remove .demo.${R}
EOF
wait "$PGVEIL_PID" || true
die "pgveil exited; its log was $DEMO/pgveil.log:
$(tail -n 20 "$DEMO/pgveil.log" 2>/dev/null)"

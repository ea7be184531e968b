package backfill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/test/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testKeyring(t testing.TB, fallbacks ...*keyring.Key) *keyring.Keyring {
	t.Helper()
	s, err := keyring.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := keyring.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return keyring.New(k, fallbacks, 1, []byte("0123456789abcdef0123456789abcdef"), nil)
}

func newKey(t testing.TB) *keyring.Key {
	t.Helper()
	s, err := keyring.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := keyring.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testDB creates a database with a users table of n rows and returns a pool.
func testDB(t testing.TB, n int, extra string) *pgxpool.Pool {
	t.Helper()
	c := pgtest.Get(t)
	db := c.NewDB(t)
	pool, err := pgxpool.New(ctxT(t), c.DSN(pgtest.SuperUser, db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctxT(t), `CREATE TABLE users (id bigint PRIMARY KEY, email text, email_hash text, full_name text, bio text);
		CREATE INDEX ON users (email_hash);
		INSERT INTO users SELECT g, 'user' || g || '@example.com', NULL, CASE WHEN g % 7 = 0 THEN NULL ELSE 'Name ' || g END,
			CASE WHEN g % 5 = 0 THEN '' ELSE repeat('bio ', g % 20) END FROM generate_series(1, `+fmt.Sprint(n)+`) g;`+extra)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

var usersTable = config.Table{Table: "users", Schema: "public", Name: "users", Columns: []config.Column{
	{Column: "email", BlindIndex: "email_hash", HashDomain: "public.users.email"},
	{Column: "full_name", HashDomain: "public.users.full_name"},
	{Column: "bio", HashDomain: "public.users.bio"},
}}

func snapshot(t testing.TB, pool *pgxpool.Pool) map[int64][4]*string {
	t.Helper()
	rows, err := pool.Query(ctxT(t), "SELECT id, email, email_hash, full_name, bio FROM users")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64][4]*string{}
	for rows.Next() {
		var id int64
		var v [4]*string
		if err := rows.Scan(&id, &v[0], &v[1], &v[2], &v[3]); err != nil {
			t.Fatal(err)
		}
		out[id] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRunAndVerify(t *testing.T) {
	pool := testDB(t, 2500, "")
	before := snapshot(t, pool)
	kr := testKeyring(t)
	var out bytes.Buffer
	j := &Job{Op: OpEncrypt, Tables: []config.Table{usersTable}, Keys: kr, Sanitize: true, MaxSize: 1 << 20,
		BatchSize: 300, Workers: 3, Out: &out, MaxFailures: 0.01}
	sum, err := j.Run(ctxT(t), pool)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	sum.Write(&out)
	t.Log(out.String()[max(0, out.Len()-600):])
	if !strings.Contains(out.String(), "Progress: 2500/2500 users processed") {
		t.Errorf("no final progress line")
	}
	after := snapshot(t, pool)
	for id, b := range before {
		a := after[id]
		for ci, vi := range []int{0, 2, 3} {
			_ = ci
			if b[vi] == nil {
				if a[vi] != nil {
					t.Fatalf("row %d: NULL became non-NULL", id)
				}
				continue
			}
			p, ki, err := kr.Open(nil, []byte(*a[vi]))
			if err != nil || ki != 0 || string(p) != *b[vi] {
				t.Fatalf("row %d col %d: does not decrypt to its original (%v)", id, vi, err)
			}
		}
		want := string(kr.BlindIndex(nil, "public.users.email", []byte(*b[0])))
		if a[1] == nil || *a[1] != want {
			t.Fatalf("row %d: wrong blind index", id)
		}
	}
	rep, err := (&Job{Tables: []config.Table{usersTable}, Keys: kr, Workers: 2, BatchSize: 700}).Verify(ctxT(t), pool)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		var b bytes.Buffer
		rep.WriteText(&b)
		t.Fatalf("verify not OK:\n%s", b.String())
	}
	// A second run changes nothing.
	sum2, err := j.Run(ctxT(t), pool)
	if err != nil {
		t.Fatal(err)
	}
	if sum2.Tables[0].Written != 0 {
		t.Fatalf("second run wrote %d rows", sum2.Tables[0].Written)
	}
	again := snapshot(t, pool)
	for id := range after {
		if after[id] != again[id] && fmt.Sprint(deref(after[id])) != fmt.Sprint(deref(again[id])) {
			t.Fatalf("row %d changed on the second run", id)
		}
	}
	_ = pgx.Identifier{}
}

func deref(v [4]*string) [4]string {
	var out [4]string
	for i, p := range v {
		if p == nil {
			out[i] = "<NULL>"
		} else {
			out[i] = *p
		}
	}
	return out
}

// readBatch reads the first batch of users as a worker would.
func readBatch(t *testing.T, pool *pgxpool.Pool, ti *tableInfo, n int) *batch {
	t.Helper()
	rows, err := pool.Query(ctxT(t), ti.batchQuery(false, Shard{}), n)
	if err != nil {
		t.Fatal(err)
	}
	b, err := scanBatch(ti, rows, n, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCompareAndSwap changes a row after the batch read it: the write must
// not overwrite it; the row is read again and its new value encrypted.
func TestCompareAndSwap(t *testing.T) {
	pool := testDB(t, 50, "")
	kr := testKeyring(t)
	ti, err := loadTable(ctxT(t), pool, usersTable)
	if err != nil {
		t.Fatal(err)
	}
	b := readBatch(t, pool, ti, 50)
	if _, err := pool.Exec(ctxT(t), "UPDATE users SET email = 'changed@example.com' WHERE id = 7"); err != nil {
		t.Fatal(err)
	}
	j := &Job{Op: OpEncrypt, Keys: kr, Sanitize: true}
	j.defaults()
	r := j.process(ctxT(t), pool, ti, &rowCodec{op: OpEncrypt, keys: kr, sanitize: true}, b)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.retries != 1 || r.written != 50 {
		t.Fatalf("retries %d written %d, want 1 and 50", r.retries, r.written)
	}
	var email, hash string
	if err := pool.QueryRow(ctxT(t), "SELECT email, email_hash FROM users WHERE id = 7").Scan(&email, &hash); err != nil {
		t.Fatal(err)
	}
	p, _, err := kr.Open(nil, []byte(email))
	if err != nil || string(p) != "changed@example.com" {
		t.Fatalf("the concurrent update was lost (%v)", err)
	}
	if hash != string(kr.BlindIndex(nil, "public.users.email", p)) {
		t.Fatal("blind index not of the new value")
	}
}

// TestLockedRowsAreSkippedNotWaitedOn holds a row lock in an open
// transaction: the batch writes every other row at once, retries the
// locked one, and writes it after the transaction commits, without
// overwriting what that transaction wrote.
func TestLockedRowsAreSkippedNotWaitedOn(t *testing.T) {
	pool := testDB(t, 20, "")
	kr := testKeyring(t)
	ti, err := loadTable(ctxT(t), pool, usersTable)
	if err != nil {
		t.Fatal(err)
	}
	b := readBatch(t, pool, ti, 20)
	tx, err := pool.Begin(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctxT(t), "SELECT 1 FROM users WHERE id = 3 FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	j := &Job{Op: OpEncrypt, Keys: kr, Sanitize: true}
	j.defaults()
	res := make(chan result, 1)
	go func() { res <- j.process(ctxT(t), pool, ti, &rowCodec{op: OpEncrypt, keys: kr, sanitize: true}, b) }()

	// The other rows are written while row 3 stays locked.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := pool.QueryRow(ctxT(t), "SELECT count(*) FROM users WHERE email LIKE 'gAAAAA%'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 19 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows written while one row was locked, want 19", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case r := <-res:
		t.Fatalf("batch finished while a row was locked: %+v", r)
	default:
	}
	if _, err := tx.Exec(ctxT(t), "UPDATE users SET email = 'locker@example.com' WHERE id = 3"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || r.written != 20 || r.retries == 0 {
		t.Fatalf("written %d retries %d err %v", r.written, r.retries, r.err)
	}
	var email string
	if err := pool.QueryRow(ctxT(t), "SELECT email FROM users WHERE id = 3").Scan(&email); err != nil {
		t.Fatal(err)
	}
	if p, _, err := kr.Open(nil, []byte(email)); err != nil || string(p) != "locker@example.com" {
		t.Fatalf("the locking transaction's write was lost (%v)", err)
	}
}

func sqlOf(stmts []Statement) string {
	var sqls []string
	for _, s := range stmts {
		sqls = append(sqls, s.SQL)
	}
	return strings.Join(sqls, "\n")
}

// TestSchemaPlanIdempotent applies the plan and plans again: nothing left
// but the finishing step, which waits until every row has its blind index.
func TestSchemaPlanIdempotent(t *testing.T) {
	pool := testDB(t, 5, `;ALTER TABLE users ALTER COLUMN full_name TYPE varchar(20); ALTER TABLE users DROP COLUMN email_hash;
		ALTER TABLE users ADD CONSTRAINT users_email_uniq UNIQUE (email)`)
	p, err := PlanSchema(ctxT(t), pool, []config.Table{usersTable})
	if err != nil || len(p.Problems) != 0 {
		t.Fatal(err, p)
	}
	want := strings.Join([]string{
		`ALTER TABLE "public"."users" ADD COLUMN IF NOT EXISTS "email_hash" text COLLATE "C"`,
		`CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "users_email_hash_key" ON "public"."users" ("email_hash")`,
		`ALTER TABLE "public"."users" ALTER COLUMN "full_name" TYPE text USING "full_name"::text`,
	}, "\n")
	if got := sqlOf(p.Statements); got != want {
		t.Fatalf("plan:\n%s\nwant:\n%s", got, want)
	}
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "UNIQUE constraint users_email_uniq on encrypted column public.users.email stays") {
		t.Fatalf("notes: %q", p.Notes)
	}
	var out bytes.Buffer
	if err := ApplySchema(ctxT(t), pool, p.Statements, &out); err != nil {
		t.Fatal(err)
	}
	probs, notes, err := CheckSchema(ctxT(t), pool, []config.Table{usersTable})
	if err != nil || len(probs) != 0 || len(notes) != 1 || !strings.Contains(notes[0], "some rows have no blind index email_hash yet") {
		t.Fatalf("after apply: %v %q %v", probs, notes, err)
	}
	// Every row gets its blind index (the backfill): the constraint on the
	// plaintext column can go, as the finishing step.
	if _, err := pool.Exec(ctxT(t), "UPDATE users SET email_hash = md5(email) || md5(email)"); err != nil {
		t.Fatal(err)
	}
	p, err = PlanSchema(ctxT(t), pool, []config.Table{usersTable})
	if err != nil || len(p.Statements) != 1 || !p.Statements[0].Finish ||
		p.Statements[0].SQL != `ALTER TABLE "public"."users" DROP CONSTRAINT "users_email_uniq"` {
		t.Fatalf("finishing plan: %+v %v", p, err)
	}
	probs, notes, err = CheckSchema(ctxT(t), pool, []config.Table{usersTable})
	if err != nil || len(probs) != 0 || len(notes) != 1 || !strings.Contains(notes[0], "to finish the migration run pgveil schema --apply") {
		t.Fatalf("check before finishing: %v %q %v", probs, notes, err)
	}
	if err := ApplySchema(ctxT(t), pool, p.Statements, &out); err != nil {
		t.Fatal(err)
	}
	if p, err = PlanSchema(ctxT(t), pool, []config.Table{usersTable}); err != nil || len(p.Statements)+len(p.Notes)+len(p.Problems) != 0 {
		t.Fatalf("after finishing: %+v %v", p, err)
	}
	// An invalid index left by an interrupted CREATE INDEX CONCURRENTLY is
	// dropped and built again.
	if _, err := pool.Exec(ctxT(t), "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'users_email_hash_key'::regclass"); err != nil {
		t.Fatal(err)
	}
	p, err = PlanSchema(ctxT(t), pool, []config.Table{usersTable})
	if err != nil || len(p.Statements) != 2 || !strings.HasPrefix(p.Statements[0].SQL, "DROP INDEX CONCURRENTLY") || p.Statements[1].SQL != `CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "users_email_hash_key" ON "public"."users" ("email_hash")` {
		t.Fatalf("invalid index: %+v %v", p.Statements, err)
	}
}

// TestSchemaMigrationIndex: a searchable column with no index on its
// plaintext gets one for the lookups of mode: migrating (only rows without
// a blind index), dropped when every row has one.
func TestSchemaMigrationIndex(t *testing.T) {
	pool := testDB(t, 50, `;ALTER TABLE users DROP COLUMN email_hash`)
	p, err := PlanSchema(ctxT(t), pool, []config.Table{usersTable})
	if err != nil || len(p.Problems)+len(p.Notes) != 0 {
		t.Fatal(err, p)
	}
	want := strings.Join([]string{
		`ALTER TABLE "public"."users" ADD COLUMN IF NOT EXISTS "email_hash" text COLLATE "C"`,
		`CREATE INDEX CONCURRENTLY IF NOT EXISTS "users_email_hash_idx" ON "public"."users" ("email_hash")`,
		`CREATE INDEX CONCURRENTLY IF NOT EXISTS "users_email_pgveil_migrating" ON "public"."users" USING hash ("email") WHERE "email_hash" IS NULL`,
	}, "\n")
	if got := sqlOf(p.Statements); got != want {
		t.Fatalf("plan:\n%s\nwant:\n%s", got, want)
	}
	var out bytes.Buffer
	if err := ApplySchema(ctxT(t), pool, p.Statements, &out); err != nil {
		t.Fatal(err)
	}
	// The lookup of mode: migrating can use it (the table is too small for
	// the planner to prefer it on its own).
	tx, err := pool.Begin(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctxT(t)) //nolint:errcheck
	if _, err := tx.Exec(ctxT(t), "SET LOCAL enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctxT(t), `EXPLAIN SELECT id FROM users WHERE (email_hash = $1 OR (email_hash IS NULL AND email = $2))`, "x", "user3@example.com")
	if err != nil {
		t.Fatal(err)
	}
	var explain []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		explain = append(explain, line)
	}
	if err := rows.Err(); err != nil || !strings.Contains(strings.Join(explain, "\n"), "users_email_pgveil_migrating") {
		t.Fatalf("the migrating lookup does not use the index (%v):\n%s", err, strings.Join(explain, "\n"))
	}
	_ = tx.Rollback(ctxT(t))
	if p, err = PlanSchema(ctxT(t), pool, []config.Table{usersTable}); err != nil || len(p.Statements) != 0 {
		t.Fatalf("again: %+v %v", p, err)
	}
	if _, err := pool.Exec(ctxT(t), "UPDATE users SET email_hash = md5(email) || md5(email)"); err != nil {
		t.Fatal(err)
	}
	p, err = PlanSchema(ctxT(t), pool, []config.Table{usersTable})
	if err != nil || sqlOf(p.Statements) != `DROP INDEX CONCURRENTLY IF EXISTS "public"."users_email_pgveil_migrating"` || !p.Statements[0].Finish {
		t.Fatalf("finishing plan: %+v %v", p, err)
	}
}

// TestUniqueWaitRetries: an application transaction holds an uncommitted
// row with the blind index a batch is about to write; the batch gives up
// waiting (lock_timeout), retries, and succeeds once that transaction
// rolls back.
func TestUniqueWaitRetries(t *testing.T) {
	pool := testDB(t, 30, ";DROP INDEX users_email_hash_idx; CREATE UNIQUE INDEX ON users (email_hash)")
	kr := testKeyring(t)
	tx, err := pool.Begin(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	clash := string(kr.BlindIndex(nil, "public.users.email", []byte("user5@example.com")))
	if _, err := tx.Exec(ctxT(t), "INSERT INTO users (id, email_hash) VALUES (1000, $1)", clash); err != nil {
		t.Fatal(err)
	}
	j := &Job{Op: OpEncrypt, Tables: []config.Table{usersTable}, Keys: kr, Sanitize: true, BatchSize: 10}
	done := make(chan error, 1)
	var sum *Summary
	go func() {
		var err error
		sum, err = j.Run(ctxT(t), pool)
		done <- err
	}()
	// Wait until the batch really waits on the uncommitted row (a loaded
	// machine may take a while to get there), then long enough for
	// lock_timeout to end at least one attempt.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		if err := pool.QueryRow(ctxT(t), "SELECT count(*) FROM pg_locks WHERE NOT granted").Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run finished while a unique check had to wait: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the batch never waited on the uncommitted row")
		}
	}
	select {
	case err := <-done:
		t.Fatalf("run finished while a unique check had to wait: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}
	if err := tx.Rollback(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if sum.Tables[0].Written != 30 || sum.Tables[0].Retries == 0 {
		t.Fatalf("written %d retries %d", sum.Tables[0].Written, sum.Tables[0].Retries)
	}
	var h string
	if err := pool.QueryRow(ctxT(t), "SELECT email_hash FROM users WHERE id = 5").Scan(&h); err != nil || h != clash {
		t.Fatalf("row 5 blind index: %v", err)
	}
}

// TestSchemaColumnDefaults: a default or generated value on an encrypted
// column would be stored unencrypted; schema drops it (a NULL default is
// no default).
func TestSchemaColumnDefaults(t *testing.T) {
	pool := testDB(t, 1, `;ALTER TABLE users ALTER COLUMN full_name SET DEFAULT 'Anonymous'; ALTER TABLE users ALTER COLUMN email SET DEFAULT NULL`)
	p, err := PlanSchema(ctxT(t), pool, []config.Table{usersTable})
	if err != nil {
		t.Fatal(err)
	}
	want := `ALTER TABLE "public"."users" ALTER COLUMN "full_name" DROP DEFAULT`
	if got := sqlOf(p.Statements); !strings.Contains(got, want) || strings.Contains(got, `"email" DROP DEFAULT`) {
		t.Fatalf("plan:\n%s\nwant %s", got, want)
	}
	probs, _, err := CheckSchema(ctxT(t), pool, []config.Table{usersTable})
	found := false
	for _, pr := range probs {
		found = found || strings.Contains(pr.What, "full_name has a default")
	}
	if err != nil || !found {
		t.Fatalf("check: %v %v", probs, err)
	}
	var out bytes.Buffer
	if err := ApplySchema(ctxT(t), pool, p.Statements, &out); err != nil {
		t.Fatal(err)
	}
	var def *string
	if err := pool.QueryRow(ctxT(t), "SELECT column_default FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'full_name'").Scan(&def); err != nil || def != nil {
		t.Fatalf("default left: %v %v", def, err)
	}
}

// shapeOf runs CheckSchema and returns its problems (as "what | fix"
// lines) but those of the DDL plan, and its notes.
func shapeOf(t *testing.T, pool *pgxpool.Pool, tables ...config.Table) ([]string, []string) {
	t.Helper()
	probs, notes, err := CheckSchema(ctxT(t), pool, tables)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range probs {
		if strings.HasPrefix(p.Fix, "pgveil schema --apply") || strings.Contains(p.What, "has no primary key") {
			continue // the DDL plan's, tested elsewhere
		}
		out = append(out, p.What+" | "+p.Fix)
	}
	return out, notes
}

func findLine(lines []string, parts ...string) bool {
	for _, l := range lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}

func evTable(name, domain string) config.Table {
	return config.Table{Table: name, Schema: "public", Name: name, Columns: []config.Column{
		{Column: "secret", BlindIndex: "secret_hash", HashDomain: domain}}}
}

// TestSchemaPartitions: a partition (any depth) or inheritance child of a
// configured table is reached by name only, so check wants it configured
// the same way; and the parent of a configured table too.
func TestSchemaPartitions(t *testing.T) {
	pool := testDB(t, 1, `;CREATE TABLE ev (id bigint, at date, secret text, secret_hash text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
		CREATE INDEX ON ev (secret_hash);
		CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY RANGE (at);
		CREATE TABLE ev_2024_h1 PARTITION OF ev_2024 FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
		CREATE TABLE users_old () INHERITS (users)`)
	ev := evTable("ev", "public.ev.secret")
	probs, _ := shapeOf(t, pool, usersTable, ev)
	for _, name := range []string{"public.ev_2024 is a partition", "public.ev_2024_h1 is a partition"} {
		if !findLine(probs, "table "+name+" of configured table public.ev: statements addressed to it directly are not encrypted",
			"configure it too, with the same columns and hash_domain: public.ev's (e.g. hash_domain: public.ev.secret)", "or never address it directly") {
			t.Fatalf("%s not reported:\n%s", name, strings.Join(probs, "\n"))
		}
	}
	if !findLine(probs, "table public.users_old is an inheritance child of configured table public.users", "hash_domain: public.users.email") {
		t.Fatalf("inheritance child not reported:\n%s", strings.Join(probs, "\n"))
	}

	// Configured, but h1 with its default hash domain: lookups through ev
	// would miss its rows.
	users := usersTable
	old := usersTable
	old.Table, old.Name = "users_old", "users_old"
	probs, _ = shapeOf(t, pool, users, old, ev, evTable("ev_2024", "public.ev.secret"), evTable("ev_2024_h1", "public.ev_2024_h1.secret"))
	if len(probs) != 1 || !findLine(probs, "hash_domain of public.ev_2024_h1.secret is public.ev_2024_h1.secret but that of public.ev_2024.secret, whose partition it is, is public.ev.secret", "set hash_domain: public.ev.secret on public.ev_2024_h1.secret") {
		t.Fatalf("wrong hash domain:\n%s", strings.Join(probs, "\n"))
	}
	// A partition that leaves a column of its parent unencrypted.
	probs, _ = shapeOf(t, pool, users, old, ev, evTable("ev_2024", "public.ev.secret"),
		config.Table{Table: "ev_2024_h1", Schema: "public", Name: "ev_2024_h1"})
	if !findLine(probs, "encrypted column public.ev_2024.secret is not configured on its partition public.ev_2024_h1", "{column: secret, blind_index: secret_hash, hash_domain: public.ev.secret}") {
		t.Fatalf("missing column:\n%s", strings.Join(probs, "\n"))
	}
	// The right domains: nothing to report.
	probs, _ = shapeOf(t, pool, users, old, ev, evTable("ev_2024", "public.ev.secret"), evTable("ev_2024_h1", "public.ev.secret"))
	if len(probs) != 0 {
		t.Fatalf("configured alike, still:\n%s", strings.Join(probs, "\n"))
	}
	// Only a partition configured: its parent is the hole.
	probs, _ = shapeOf(t, pool, users, old, evTable("ev_2024_h1", "public.ev.secret"))
	if !findLine(probs, "configured table public.ev_2024_h1 is a partition of table public.ev, which is not configured") ||
		!findLine(probs, "configured table public.ev_2024_h1 is a partition of table public.ev_2024, which is not configured") {
		t.Fatalf("unconfigured parents:\n%s", strings.Join(probs, "\n"))
	}
}

// TestSchemaViews: a view over an encrypted column must be configured like
// its base table; a configured view is checked, not reported missing, and
// the data commands skip it.
func TestSchemaViews(t *testing.T) {
	pool := testDB(t, 3, `;CREATE VIEW user_emails AS SELECT id, email, email_hash FROM users;
		CREATE VIEW named AS SELECT id, email AS mail FROM users WHERE full_name IS NOT NULL`)
	probs, notes := shapeOf(t, pool, usersTable)
	if !findLine(probs, "view public.user_emails reads encrypted column public.users.email: writes through it (an updatable view) store plaintext and lookups through it miss",
		"configure the view with the same columns and hash_domain as public.users (hash_domain: public.users.email)",
		"{column: email, blind_index: email_hash, hash_domain: public.users.email}", "or drop/replace it") {
		t.Fatalf("unconfigured view:\n%s", strings.Join(probs, "\n"))
	}
	if !findLine(probs, "view public.named reads encrypted column public.users.email", "{column: mail, blind_index: email_hash, hash_domain: public.users.email}", "exposing public.users's blind index email_hash") {
		t.Fatalf("renamed column:\n%s", strings.Join(probs, "\n"))
	}
	if findLine(probs, "public.named reads encrypted column public.users.full_name") || !findLine(notes, "view public.named reads encrypted column public.users.full_name other than as one of its columns") {
		t.Fatalf("column read in WHERE:\n%s\nnotes:\n%s", strings.Join(probs, "\n"), strings.Join(notes, "\n"))
	}

	view := config.Table{Table: "user_emails", Schema: "public", Name: "user_emails", Columns: []config.Column{
		{Column: "email", BlindIndex: "email_hash", HashDomain: "public.users.email"}}}
	named := config.Table{Table: "named", Schema: "public", Name: "named", Columns: []config.Column{
		{Column: "mail", HashDomain: "public.users.email"}}}
	probs, notes = shapeOf(t, pool, usersTable, view)
	if findLine(probs, "user_emails") || findLine(probs, "does not exist") {
		t.Fatalf("configured view:\n%s", strings.Join(probs, "\n"))
	}
	if !findLine(notes, "public.user_emails is a view: pgveil backfill, reencrypt, rehash, decrypt and verify skip it and work on public.users") {
		t.Fatalf("notes:\n%s", strings.Join(notes, "\n"))
	}
	// The default hash domain of the view is not the base table's.
	view.Columns[0].HashDomain = "public.user_emails.email"
	probs, _ = shapeOf(t, pool, usersTable, view)
	if !findLine(probs, "hash_domain of public.user_emails.email is public.user_emails.email but that of public.users.email", "set hash_domain: public.users.email on public.user_emails.email") {
		t.Fatalf("wrong domain:\n%s", strings.Join(probs, "\n"))
	}
	view.Columns[0].HashDomain = "public.users.email"
	// A view column left unsearchable while its base column is searchable.
	probs, _ = shapeOf(t, pool, usersTable, view, named)
	if !findLine(probs, "public.named.mail has no blind_index but public.users.email, which it shows, has email_hash") {
		t.Fatalf("unsearchable view column:\n%s", strings.Join(probs, "\n"))
	}
	// A view configured over a table that is not.
	probs, _ = shapeOf(t, pool, view)
	if !findLine(probs, "column public.user_emails.email is encrypted but public.users.email, which it shows, is not configured", "configure public.users.email too") {
		t.Fatalf("unconfigured base:\n%s", strings.Join(probs, "\n"))
	}

	// The data commands work on the base table and skip the view.
	var out bytes.Buffer
	j := &Job{Op: OpEncrypt, Tables: []config.Table{usersTable, view}, Keys: testKeyring(t), Sanitize: true, BatchSize: 10, Out: &out}
	if _, err := j.Run(ctxT(t), pool); err != nil || !strings.Contains(out.String(), "user_emails: skipped: table public.user_emails is a view") {
		t.Fatalf("backfill with a view: %v\n%s", err, out.String())
	}
	j = &Job{Op: OpEncrypt, Tables: []config.Table{view}, Keys: testKeyring(t), BatchSize: 10}
	_, err := j.Run(ctxT(t), pool)
	var se *SchemaError
	if !errors.As(err, &se) || !errors.Is(err, ErrView) || !strings.Contains(se.Fix, "run them on public.users") {
		t.Fatalf("backfill of a view alone: %v", err)
	}
	if _, err := j.Verify(ctxT(t), pool); !errors.Is(err, ErrView) {
		t.Fatalf("verify of a view alone: %v", err)
	}
}

// TestSchemaServerCode: triggers, rules and functions that use a configured
// table are notes: pgveil cannot encrypt what they write.
func TestSchemaServerCode(t *testing.T) {
	pool := testDB(t, 1, `;CREATE TABLE signup (id bigint, email text);
		CREATE FUNCTION copy_user() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN INSERT INTO public.Users (id, email) VALUES (NEW.id, NEW.email); RETURN NEW; END $$;
		CREATE TRIGGER signup_copy AFTER INSERT ON signup FOR EACH ROW EXECUTE FUNCTION copy_user();
		CREATE FUNCTION lower_email() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.email := lower(NEW.email); RETURN NEW; END $$;
		CREATE TRIGGER users_lower BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION lower_email();
		CREATE TABLE inbox (id bigint, email text);
		CREATE RULE to_users AS ON INSERT TO inbox DO INSTEAD INSERT INTO users (id, email) VALUES (NEW.id, NEW.email);
		CREATE FUNCTION find_user(e text) RETURNS bigint LANGUAGE sql AS $$ SELECT id FROM users WHERE email = e $$;
		CREATE TABLE users_archive (id bigint);
		CREATE FUNCTION archive() RETURNS void LANGUAGE sql AS $$ DELETE FROM users_archive $$;
		CREATE FUNCTION count_people() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM public.users; END`)
	probs, notes := shapeOf(t, pool, usersTable)
	if len(probs) != 0 {
		t.Fatalf("problems:\n%s", strings.Join(probs, "\n"))
	}
	for _, want := range [][]string{
		{"trigger signup_copy on public.signup runs function public.copy_user(), which uses configured table public.users", "pgveil cannot encrypt values written by server-side code"},
		{"trigger users_lower on configured table public.users runs function public.lower_email()", "tokens"},
		{"rule to_users on public.inbox acts on configured table public.users", "pgveil cannot encrypt values written by server-side code"},
		{"function public.find_user(e text) uses configured table public.users"},
		{"function public.count_people() uses configured table public.users"}, // SQL-standard body: by its dependencies
	} {
		if !findLine(notes, want...) {
			t.Fatalf("no note %q:\n%s", want, strings.Join(notes, "\n"))
		}
	}
	if findLine(notes, "archive()") || strings.HasPrefix(strings.Join(notes, "\n"), "function public.copy_user") || strings.Contains(strings.Join(notes, "\n"), "\nfunction public.copy_user") {
		t.Fatalf("unexpected notes:\n%s", strings.Join(notes, "\n"))
	}
}

// TestSchemaPartitionedIndexes: PostgreSQL builds no index CONCURRENTLY on a
// partitioned table. The plan creates it on the partitioned table alone,
// builds it concurrently on each partition (two levels here) and attaches
// it; applied, the indexes are valid, the unique twin (which keeps the
// partition key) refuses duplicates across the tree, and a second plan has
// nothing left to create.
func TestSchemaPartitionedIndexes(t *testing.T) {
	pool := testDB(t, 1, `;CREATE TABLE ev (id bigint, at date, region text, secret text, PRIMARY KEY (id, at), UNIQUE (secret, at)) PARTITION BY RANGE (at);
		CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY RANGE (at);
		CREATE TABLE ev_2024_h1 PARTITION OF ev_2024 FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
		CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
		INSERT INTO ev VALUES (1, '2024-02-01', 'eu', 's1'), (2, '2025-02-01', 'us', 's2')`)
	ev := evTable("ev", "public.ev.secret")
	p, err := PlanSchema(ctxT(t), pool, []config.Table{usersTable, ev})
	if err != nil {
		t.Fatal(err)
	}
	got := sqlOf(p.Statements)
	for _, want := range []string{
		`CREATE UNIQUE INDEX IF NOT EXISTS "ev_secret_hash_at_key" ON ONLY "public"."ev" ("secret_hash", "at")`,
		`CREATE UNIQUE INDEX IF NOT EXISTS "ev_2024_ev_secret_hash_at_key" ON ONLY "public"."ev_2024" ("secret_hash", "at")`,
		`CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "ev_2024_h1_ev_secret_hash_at_key" ON "public"."ev_2024_h1" ("secret_hash", "at")`,
		`ALTER INDEX "public"."ev_2024_ev_secret_hash_at_key" ATTACH PARTITION "public"."ev_2024_h1_ev_secret_hash_at_key"`,
		`ALTER INDEX "public"."ev_secret_hash_at_key" ATTACH PARTITION "public"."ev_2025_ev_secret_hash_at_key"`,
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("plan lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, `CONCURRENTLY IF NOT EXISTS "ev_secret_hash_at_key" ON "public"."ev"`) {
		t.Fatalf("concurrent index on the partitioned table:\n%s", got)
	}
	var out bytes.Buffer
	if err := ApplySchema(ctxT(t), pool, p.Statements, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	var invalid int
	if err := pool.QueryRow(ctxT(t), `SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE c.relname LIKE '%secret_hash%' AND NOT i.indisvalid`).Scan(&invalid); err != nil || invalid != 0 {
		t.Fatalf("%d invalid indexes (%v)", invalid, err)
	}
	if _, err := pool.Exec(ctxT(t), `UPDATE ev SET secret_hash = 'h' || id`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctxT(t), `INSERT INTO ev (id, at, secret, secret_hash) VALUES (3, '2024-02-01', 't', 'h1')`); err == nil || !strings.Contains(err.Error(), "23505") {
		t.Fatalf("the unique twin let a duplicate in: %v", err)
	}
	p, err = PlanSchema(ctxT(t), pool, []config.Table{usersTable, ev})
	if err != nil {
		t.Fatal(err)
	}
	if got := sqlOf(p.Statements); strings.Contains(got, "CREATE") || strings.Contains(got, "ATTACH") {
		t.Fatalf("second plan still creates:\n%s", got)
	}
}

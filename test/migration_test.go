package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/test/pgtest"
)

// The runbook's rollout on a table whose plaintext column is UNIQUE, with
// the application on it the whole time: first straight to PostgreSQL
// (rollout step 3), then through pgveil in mode: migrating (steps 4 to 6),
// then the finishing step.

const migrationTables = `
tables:
  - table: users
    columns:
      - {column: email, blind_index: email_hash}
      - {column: full_name}
`

// migrationDB is a users table as an application has it before pgveil:
// email varchar UNIQUE, n rows in plaintext.
func migrationDB(t *testing.T, n int) (*bfEnv, testKeys) {
	t.Helper()
	c := pgtest.Get(t)
	db := createAppDB(t, c, fmt.Sprintf(`CREATE TABLE users (id bigserial PRIMARY KEY, email varchar(255) UNIQUE, full_name text);
		INSERT INTO users (email, full_name) SELECT 'user' || g || '@example.com', 'Name ' || g FROM generate_series(1, %d) g`, n))
	keys := newTestKeys(t)
	e := &bfEnv{c: c, db: db, dsn: c.DSN(pgtest.SuperUser, db), su: c.Superuser(t, db), keys: keys.env()}
	e.writeConfig(t, "encryption: {mode: migrating}\n"+migrationTables)
	return e, keys
}

func migratingProxy(t *testing.T, e *bfEnv, keys testKeys) *testProxy {
	t.Helper()
	return serveProxy(t, e.c, e.db, keys, proxyOpts{yaml: migrationTables, mutate: func(c *config.Config) {
		c.Encryption.Mode = config.ModeMigrating
	}})
}

func mustExecT(t *testing.T, conn *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	tag, err := conn.Exec(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return tag.RowsAffected()
}

func TestMigrationKeepsPlaintextUnique(t *testing.T) {
	e, keys := migrationDB(t, 200)
	ctx := context.Background()
	// Step 3: the schema, while the application still talks to PostgreSQL.
	out, errs, code := e.run(t, "schema", "--apply")
	if code != 0 || !strings.Contains(out, `CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "users_email_hash_key"`) ||
		strings.Contains(out, "DROP CONSTRAINT") || !strings.Contains(out, "-- later: UNIQUE constraint users_email_key") {
		t.Fatalf("schema --apply: exit %d\n%s\n%s", code, out, errs)
	}
	direct := pgtest.ConnectDSN(t, e.c.DSN(pgtest.TrustUser, e.db))
	// The application's upsert and its duplicate check keep working.
	if n := mustExecT(t, direct, "INSERT INTO users (email, full_name) VALUES ('user3@example.com', 'Again') ON CONFLICT (email) DO NOTHING"); n != 0 {
		t.Fatalf("ON CONFLICT (email) DO NOTHING inserted %d rows", n)
	}
	mustExecT(t, direct, "INSERT INTO users (email, full_name) VALUES ('user4@example.com', 'Renamed') ON CONFLICT (email) DO UPDATE SET full_name = EXCLUDED.full_name")
	if _, err := direct.Exec(ctx, "INSERT INTO users (email) VALUES ('user5@example.com')"); sqlState(err) != "23505" {
		t.Fatalf("direct duplicate insert: %v, want 23505", err)
	}
	if out, errs, code := e.run(t, "check"); code != 0 || !strings.Contains(out, "schema OK") {
		t.Fatalf("check after schema --apply: exit %d\n%s\n%s", code, out, errs)
	}

	// Step 4: the application goes through pgveil (mode: migrating).
	p := migratingProxy(t, e, keys)
	app := p.Conn(t)
	mustExecT(t, app, "INSERT INTO users (email, full_name) VALUES ('new@example.com', 'New')")
	// ON CONFLICT (email) becomes ON CONFLICT (email_hash): it works while
	// both unique indexes exist.
	if n := mustExecT(t, app, "INSERT INTO users (email, full_name) VALUES ('new@example.com', 'Again') ON CONFLICT (email) DO NOTHING"); n != 0 {
		t.Fatalf("through pgveil, ON CONFLICT (email) DO NOTHING inserted %d rows", n)
	}
	if _, err := app.Exec(ctx, "INSERT INTO users (email) VALUES ('new@example.com')"); sqlState(err) != "23505" {
		t.Fatalf("duplicate of a row written through pgveil: %v, want 23505", err)
	}
	var name string
	if err := app.QueryRow(ctx, "SELECT full_name FROM users WHERE email = $1", "user4@example.com").Scan(&name); err != nil || name != "Renamed" {
		t.Fatalf("lookup of a plaintext row through pgveil: %q %v", name, err)
	}
	// The window: a row not encrypted yet has no blind index, so the same
	// email written through pgveil is not refused by PostgreSQL (see
	// TestMigratingDuplicateRefusedThroughProxy). The backfill finds it.
	var dupID int64
	err := app.QueryRow(ctx, "INSERT INTO users (email, full_name) VALUES ('user15@example.com', 'Twin') RETURNING id").Scan(&dupID)
	if sqlState(err) == "23505" {
		t.Log("pgveil refused the duplicate itself")
	} else if err != nil {
		t.Fatal(err)
	}

	// Step 5: the backfill finishes the other rows and names the duplicate.
	out, errs, code = e.run(t, "backfill", "--batch-size", "50", "--max-failures", "0.05")
	if code != 0 || strings.Contains(out+errs, "@example.com") {
		t.Fatalf("backfill: exit %d\n%s\n%s", code, out, errs)
	}
	if dupID != 0 {
		want := fmt.Sprintf("duplicate: row 15 of users holds the same email as row %d (unique index users_email_hash_key)", dupID)
		if !strings.Contains(out, want) || !strings.Contains(out, "1 duplicate") || !strings.Contains(out, "keep one row of each group") {
			t.Fatalf("backfill does not name the duplicate rows:\n%s", out)
		}
		out, _, code = e.run(t, "verify")
		if code != 1 || !strings.Contains(out, fmt.Sprintf("15 (same as %d)", dupID)) {
			t.Fatalf("verify: exit %d\n%s", code, out)
		}
		out, _, code = e.run(t, "schema")
		if code != 0 || strings.Contains(out, "DROP CONSTRAINT") {
			t.Fatalf("schema drops the plaintext constraint before every row has its blind index:\n%s", out)
		}
		// Resolved: the copy goes; the rerun encrypts row 15.
		mustExecT(t, app, "DELETE FROM users WHERE id = $1", dupID)
		if out, errs, code := e.run(t, "backfill"); code != 0 || !strings.Contains(out, "0 failed") {
			t.Fatalf("backfill after resolving: exit %d\n%s\n%s", code, out, errs)
		}
	}
	if out, _, code := e.run(t, "verify"); code != 0 {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}

	// The finishing step.
	out, errs, code = e.run(t, "check")
	if code != 0 || !strings.Contains(out, "to finish the migration run pgveil schema --apply") {
		t.Fatalf("check before finishing: exit %d\n%s\n%s", code, out, errs)
	}
	out, errs, code = e.run(t, "schema", "--apply")
	if code != 0 || !strings.Contains(out, `ALTER TABLE "public"."users" DROP CONSTRAINT "users_email_key"`) {
		t.Fatalf("schema --apply, finishing: exit %d\n%s\n%s", code, out, errs)
	}
	if out, _, code := e.run(t, "schema"); code != 0 || !strings.Contains(out, "already has everything") {
		t.Fatalf("schema after finishing: exit %d\n%s", code, out)
	}
	// Through pgveil uniqueness and upserts hold on the blind index alone.
	if n := mustExecT(t, app, "INSERT INTO users (email, full_name) VALUES ('user3@example.com', 'Again') ON CONFLICT (email) DO NOTHING"); n != 0 {
		t.Fatalf("after finishing, ON CONFLICT (email) DO NOTHING inserted %d rows", n)
	}
	if _, err := app.Exec(ctx, "INSERT INTO users (email) VALUES ('user3@example.com')"); sqlState(err) != "23505" {
		t.Fatalf("after finishing, duplicate through pgveil: %v, want 23505", err)
	}
}

// TestBackfillResumeSkipsFinishedTables kills the backfill (SIGKILL) in
// its second table: the rerun skips the first, which it had finished, and
// continues the second; the run after that looks at everything again.
func TestBackfillResumeSkipsFinishedTables(t *testing.T) {
	e := bfSetup(t, 300)
	pgtest.Exec(t, e.su, `CREATE TABLE notes (id bigint PRIMARY KEY, body text);
		INSERT INTO notes SELECT g, 'note number ' || g FROM generate_series(1, 20000) g;
		GRANT ALL ON notes TO `+pgtest.AppRole)
	e.writeConfig(t, bfTables+"  - table: notes\n    columns: [{column: body}]\n")

	outPath := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd, _, errb := e.command(t, "backfill", "--batch-size", "100", "--max-rate", "4000")
	cmd.Stdout = f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(outPath)
		var n int
		for _, line := range strings.Split(string(b), "\n") {
			fmt.Sscanf(line, "Progress: %d/20000 notes processed", &n)
		}
		if n >= 2000 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("backfill ended before the kill: %v\n%s\n%s", err, b, errb)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress on notes:\n%s", b)
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	if err := <-done; err == nil || err.(*exec.ExitError).Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("backfill ended with %v, not SIGKILL", err)
	}

	out, errs, code := e.run(t, "backfill", "--batch-size", "1000")
	if code != 0 || !strings.Contains(out, "users: encrypt finished by an earlier run at ") ||
		!strings.Contains(out, "users: skipped, encrypted by an earlier run") || !strings.Contains(out, "notes: resuming encrypt after key ") ||
		strings.Contains(out, "Progress: 300/300 users processed") {
		t.Fatalf("rerun after kill -9: exit %d\n%s\n%s", code, out, errs)
	}
	if rep, code := e.verifyJSON(t); code != 0 {
		t.Fatalf("verify after the rerun: exit %d %+v", code, rep)
	}
	// A new run after a complete one goes over every table again.
	out, errs, code = e.run(t, "backfill")
	if code != 0 || !strings.Contains(out, "users: 300 rows examined, 0 written") || !strings.Contains(out, "notes: 20000 rows examined, 0 written") {
		t.Fatalf("new run: exit %d\n%s\n%s", code, out, errs)
	}
}

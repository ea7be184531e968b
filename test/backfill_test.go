package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgveil/pgveil/backfill"
	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/test/pgtest"
)

// The admin data commands (issue 4) against real PostgreSQL, run as the
// real binary: backfill, reencrypt, rehash, decrypt, verify, schema, check.

// bfEnv is one test's database, keys and config file.
type bfEnv struct {
	c       *pgtest.Cluster
	db      string
	dsn     string // as the login role the commands use
	cfgPath string
	keys    map[string]string // ENCRYPTION_KEY etc.
	su      *pgx.Conn
}

const bfTables = `
tables:
  - table: users
    columns:
      - column: email
        blind_index: email_hash
      - column: full_name
      - column: bio
`

// bfSetup creates a users table of n rows (email, full_name with some
// NULLs, bio with some empty strings) and a config with fresh keys.
func bfSetup(t *testing.T, n int) *bfEnv {
	t.Helper()
	c := pgtest.Get(t)
	db := c.NewDB(t)
	su := c.Superuser(t, db)
	pgtest.Exec(t, su, `CREATE TABLE users (id bigint PRIMARY KEY, email text, email_hash text, full_name text, bio text, age int)`)
	pgtest.Exec(t, su, `CREATE UNIQUE INDEX users_email_hash_key ON users (email_hash)`)
	pgtest.Exec(t, su, fmt.Sprintf(`INSERT INTO users SELECT g, 'user' || g || '@example.com', NULL,
		CASE WHEN g %% 7 = 0 THEN NULL ELSE 'Name ' || g || ' Ünïcødé' END,
		CASE WHEN g %% 5 = 0 THEN '' ELSE repeat('bio ', g %% 30) END, g %% 90 FROM generate_series(1, %d) g`, n))
	pgtest.Exec(t, su, "GRANT ALL ON ALL TABLES IN SCHEMA public TO "+pgtest.AppRole)
	e := &bfEnv{c: c, db: db, dsn: c.DSN(pgtest.ScramUser, db), su: su, keys: map[string]string{
		"ENCRYPTION_KEY": bfKeygen(t), "ENCRYPTION_HASH_KEY": bfKeygen(t)}}
	e.writeConfig(t, bfTables)
	return e
}

func (e *bfEnv) writeConfig(t *testing.T, tables string) {
	t.Helper()
	e.cfgPath = filepath.Join(t.TempDir(), "pgveil.yaml")
	yml := fmt.Sprintf("upstream: %s\nupstream_tls: {mode: disable}\n", e.c.Addr()) + tables
	if err := os.WriteFile(e.cfgPath, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
}

func bfKeygen(t testing.TB) string {
	t.Helper()
	k, err := keyring.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keyring builds the keyring the commands see.
func (e *bfEnv) keyring(t testing.TB) *keyring.Keyring {
	t.Helper()
	kr, err := keyring.Load(config.Keys{EncryptionKey: "env:ENCRYPTION_KEY", FallbackKeys: "env:ENCRYPTION_KEY_FALLBACK",
		HashKey: "env:ENCRYPTION_HASH_KEY", FallbackHashKeys: "env:ENCRYPTION_HASH_KEY_FALLBACK", KeyVersion: 1},
		func(k string) (string, bool) { v, ok := e.keys[k]; return v, ok && v != "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func (e *bfEnv) environ() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range e.keys {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// command builds a pgveil command with the config and DSN.
func (e *bfEnv) command(t testing.TB, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	full := append([]string{args[0], "--config", e.cfgPath, "--dsn", e.dsn}, args[1:]...)
	cmd := exec.Command(pgtest.Pgveil(t), full...)
	cmd.Env = e.environ()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	return cmd, &out, &errb
}

// run runs pgveil with the config and DSN and returns stdout, stderr and
// the exit code.
func (e *bfEnv) run(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	cmd, out, errb := e.command(t, args...)
	return bfWait(t, cmd, out, errb)
}

// runRaw runs pgveil with exactly args.
func (e *bfEnv) runRaw(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(pgtest.Pgveil(t), args...)
	cmd.Env = e.environ()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	return bfWait(t, cmd, &out, &errb)
}

func bfWait(t testing.TB, cmd *exec.Cmd, out, errb *bytes.Buffer) (string, string, int) {
	t.Helper()
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("running pgveil: %v", err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

// bfRow is a users row as stored.
type bfRow struct{ email, hash, name, bio *string }

func bfRows(t testing.TB, conn *pgx.Conn) map[int64]bfRow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := conn.Query(ctx, "SELECT id, email, email_hash, full_name, bio FROM users")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]bfRow{}
	for rows.Next() {
		var id int64
		var r bfRow
		if err := rows.Scan(&id, &r.email, &r.hash, &r.name, &r.bio); err != nil {
			t.Fatal(err)
		}
		out[id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// plainOf returns what a stored value means: itself when not a token, its
// plaintext when a token. A token whose plaintext is itself a token (the
// sign of double encryption) fails the test.
func plainOf(t testing.TB, kr *keyring.Keyring, id int64, v *string) *string {
	t.Helper()
	if v == nil || !keyring.IsToken([]byte(*v)) {
		return v
	}
	p, _, err := kr.Open(nil, []byte(*v))
	if err != nil {
		t.Fatalf("row %d: stored token does not decrypt: %v", id, err)
	}
	if keyring.IsToken(p) {
		t.Fatalf("row %d: value encrypted twice", id)
	}
	s := string(p)
	return &s
}

func eqp(a, b *string) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// checkConsistent checks that every row means what it meant in want, and
// that each email's blind index matches its state: the current key's index
// of the plaintext when encrypted, NULL while plaintext. With final, every
// value must be a token under the primary key.
func checkConsistent(t testing.TB, kr *keyring.Keyring, want, got map[int64]bfRow, final bool) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			t.Fatalf("row %d lost", id)
		}
		for _, pair := range [][2]*string{{w.email, g.email}, {w.name, g.name}, {w.bio, g.bio}} {
			if !eqp(plainOf(t, kr, id, pair[1]), pair[0]) {
				t.Fatalf("row %d: a value does not mean what it did before", id)
			}
			if final && pair[1] != nil {
				if _, ki, err := kr.Open(nil, []byte(*pair[1])); err != nil || ki != 0 {
					t.Fatalf("row %d: value is not a token under the primary key (key %d, %v)", id, ki, err)
				}
			}
		}
		if g.email != nil && keyring.IsToken([]byte(*g.email)) {
			wantHash := string(kr.BlindIndex(nil, "public.users.email", []byte(*w.email)))
			if g.hash == nil || *g.hash != wantHash {
				t.Fatalf("row %d: encrypted email without its blind index", id)
			}
		}
	}
}

func (e *bfEnv) verifyJSON(t testing.TB) (*backfill.Report, int) {
	t.Helper()
	out, errs, code := e.run(t, "verify", "--json")
	var rep backfill.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("verify --json: %v\nstdout: %s\nstderr: %s", err, out, errs)
	}
	return &rep, code
}

func TestBackfillVerifyAndIdempotence(t *testing.T) {
	e := bfSetup(t, 3000)
	before := bfRows(t, e.su)
	kr := e.keyring(t)

	rep, code := e.verifyJSON(t)
	if code != 1 || rep.OK || rep.Columns[0].Plaintext != 3000 || rep.Columns[0].BlindIndexMissing != 3000 {
		t.Fatalf("verify before backfill: exit %d, %+v", code, rep.Columns[0])
	}

	out, errs, code := e.run(t, "backfill", "--batch-size", "400", "--workers", "2")
	if code != 0 {
		t.Fatalf("backfill exit %d\n%s\n%s", code, out, errs)
	}
	if !strings.Contains(out, "Progress: 3000/3000 users processed") {
		t.Errorf("no runbook progress line:\n%s", out)
	}
	if !strings.Contains(out, "3000 values encrypted, 3000 blind indexes written") {
		t.Errorf("summary:\n%s", out)
	}
	after := bfRows(t, e.su)
	checkConsistent(t, kr, before, after, true)
	for id, r := range after {
		if !strings.HasPrefix(*r.email, "gAAAAA") || len(*r.hash) != 64 {
			t.Fatalf("row %d not in the runbook's shape", id)
		}
	}

	rep, code = e.verifyJSON(t)
	if code != 0 || !rep.OK {
		t.Fatalf("verify after backfill: exit %d %+v", code, rep)
	}
	c := rep.Columns[0]
	if c.Rows != 3000 || c.PrimaryKeyTokens != 3000 || c.Plaintext != 0 || c.BlindIndexMissing != 0 || c.BlindIndexWrong != 0 {
		t.Fatalf("email column: %+v", c)
	}
	if n := rep.Columns[1]; n.Null != 3000/7 || n.PrimaryKeyTokens != 3000-3000/7 {
		t.Fatalf("full_name column: %+v", n)
	}

	// A second run changes nothing: already-encrypted values are skipped.
	out, _, code = e.run(t, "backfill")
	if code != 0 || !strings.Contains(out, "3000 rows examined, 0 written") {
		t.Fatalf("second run: exit %d\n%s", code, out)
	}
	again := bfRows(t, e.su)
	for id, r := range after {
		if *again[id].email != *r.email {
			t.Fatalf("row %d rewritten by an idempotent rerun", id)
		}
	}
	// Text output names every column and says OK.
	out, _, code = e.run(t, "verify")
	if code != 0 || !strings.Contains(out, "public.users.email (blind index email_hash): OK") || !strings.Contains(out, "verify: OK") {
		t.Fatalf("verify text: exit %d\n%s", code, out)
	}
}

// TestBackfillKill9 kills the backfill with SIGKILL at random points, at
// least ten times, checking after each that nothing is half-done, then
// lets a rerun finish.
func TestBackfillKill9(t *testing.T) {
	const n = 40000
	e := bfSetup(t, n)
	before := bfRows(t, e.su)
	kr := e.keyring(t)
	kills, resumed := 0, 0
	for attempt := 0; kills < 12 && attempt < 40; attempt++ {
		cmd, out, errb := e.command(t, "backfill", "--batch-size", "100", "--workers", "2", "--max-rate", "3000")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		delay := time.Duration(100+rand.IntN(900)) * time.Millisecond
		select {
		case err := <-done:
			t.Logf("attempt %d finished before the kill (%v)\n%s%s", attempt, err, out, errb)
			continue
		case <-time.After(delay):
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := <-done
		if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Logf("attempt %d: ended with %v before SIGKILL landed", attempt, err)
			continue
		}
		kills++
		if strings.Contains(out.String(), "resuming encrypt after key") {
			resumed++
		}
		// Whatever the point of the kill, every row is either untouched or
		// fully done (value and blind index in one transaction).
		checkConsistent(t, kr, before, bfRows(t, e.su), false)
	}
	if kills < 10 {
		t.Fatalf("only %d kills landed mid-run", kills)
	}
	// A kill before the first batch committed leaves nothing to resume
	// from; the others must continue where the last run got to.
	if resumed < kills/2 {
		t.Errorf("only %d of %d restarts resumed from saved progress", resumed, kills)
	}
	out, errs, code := e.run(t, "backfill", "--batch-size", "1000", "--workers", "2")
	if code != 0 {
		t.Fatalf("rerun: exit %d\n%s\n%s", code, out, errs)
	}
	checkConsistent(t, kr, before, bfRows(t, e.su), true)
	if _, code := e.verifyJSON(t); code != 0 {
		t.Fatalf("verify after kills and rerun: exit %d", code)
	}
	t.Logf("%d kills, %d resumed", kills, resumed)
}

// TestBackfillConcurrentWriter runs an application writer during the
// backfill: direct plaintext updates (the app before it moved to the
// proxy, mode: migrating) and token updates made with the keyring (what
// the proxy writes). No update may be lost.
func TestBackfillConcurrentWriter(t *testing.T) {
	const n = 20000
	e := bfSetup(t, n)
	kr := e.keyring(t)
	want := bfRows(t, e.su)
	var mu sync.Mutex
	writer := pgtest.ConnectDSN(t, e.c.DSN(pgtest.MD5User, e.db))

	cmd, out, errb := e.command(t, "backfill", "--batch-size", "200", "--workers", "3", "--max-rate", "20000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var updates atomic.Int64
	ctx := context.Background()
	stop := false
	for seq := 0; !stop; seq++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("backfill: %v\n%s\n%s", err, out, errb)
			}
			stop = true
			continue
		default:
		}
		id := int64(1 + rand.IntN(n))
		email := fmt.Sprintf("w%d-%d@example.com", id, seq)
		name := fmt.Sprintf("Writer %d", seq)
		// Half the writes in a multi-row transaction holding row locks for a
		// while, so the backfill meets locked rows too.
		tx, err := writer.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if seq%2 == 0 {
			_, err = tx.Exec(ctx, "UPDATE users SET email = $1, email_hash = NULL, full_name = $2 WHERE id = $3", email, name, id)
		} else {
			tok, _ := kr.Seal(nil, []byte(email))
			ntok, _ := kr.Seal(nil, []byte(name))
			_, err = tx.Exec(ctx, "UPDATE users SET email = $1, email_hash = $2, full_name = $3 WHERE id = $4",
				string(tok), string(kr.BlindIndex(nil, "public.users.email", []byte(email))), string(ntok), id)
		}
		if err != nil {
			t.Fatal(err)
		}
		if seq%10 == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		r := want[id]
		r.email, r.name = &email, &name
		want[id] = r
		mu.Unlock()
		updates.Add(1)
	}
	if updates.Load() < 100 {
		t.Fatalf("only %d concurrent updates; the test did not overlap the backfill", updates.Load())
	}
	if !strings.Contains(out.String(), "read again after concurrent changes") {
		t.Logf("no compare-and-swap retry was needed this time:\n%s", out.String())
	}
	// Every update survived (plaintext written after the backfill passed a
	// row is still plaintext, with its own meaning).
	checkConsistent(t, kr, want, bfRows(t, e.su), false)
	// A rerun encrypts what the writer left in plaintext.
	if o, errs, code := e.run(t, "backfill"); code != 0 {
		t.Fatalf("rerun: %d\n%s\n%s", code, o, errs)
	}
	checkConsistent(t, kr, want, bfRows(t, e.su), true)
	if _, code := e.verifyJSON(t); code != 0 {
		t.Fatal("verify failed after concurrent writer")
	}
	t.Logf("%d concurrent updates", updates.Load())
}

func TestReencryptAfterRotation(t *testing.T) {
	e := bfSetup(t, 2000)
	before := bfRows(t, e.su)
	if out, errs, code := e.run(t, "backfill"); code != 0 {
		t.Fatalf("backfill: %d\n%s\n%s", code, out, errs)
	}
	oldKey := e.keys["ENCRYPTION_KEY"]
	oldOnly := e.keyring(t)
	oldFP := oldOnly.KeyFingerprints()[0]

	// Rotate: new primary, old one as fallback.
	e.keys["ENCRYPTION_KEY"] = bfKeygen(t)
	e.keys["ENCRYPTION_KEY_FALLBACK"] = oldKey
	kr := e.keyring(t)
	rep, code := e.verifyJSON(t)
	if code != 1 || rep.OK {
		t.Fatalf("verify after rotation: exit %d, want 1", code)
	}
	if got := rep.Columns[0].FallbackKeyTokens[oldFP]; got != 2000 {
		t.Fatalf("tokens under fallback %s: %d, want 2000 (%+v)", oldFP, got, rep.Columns[0])
	}
	out, _, _ := e.run(t, "verify")
	if !strings.Contains(out, "tokens under a fallback key") || !strings.Contains(out, "run pgveil reencrypt") {
		t.Fatalf("verify text does not name the problem and fix:\n%s", out)
	}

	// A dry run changes nothing.
	snap := bfRows(t, e.su)
	out, errs, code := e.run(t, "reencrypt", "--dry-run")
	if code != 0 || !strings.Contains(out, "2000 values would be re-encrypted") {
		t.Fatalf("reencrypt --dry-run: %d\n%s\n%s", code, out, errs)
	}
	for id, r := range bfRows(t, e.su) {
		if *r.email != *snap[id].email {
			t.Fatal("dry run changed a row")
		}
	}

	out, errs, code = e.run(t, "reencrypt", "--workers", "2", "--batch-size", "300")
	if code != 0 || !strings.Contains(out, "2000 values re-encrypted") {
		t.Fatalf("reencrypt: %d\n%s\n%s", code, out, errs)
	}
	after := bfRows(t, e.su)
	checkConsistent(t, kr, before, after, true)
	for id, r := range after {
		for _, v := range []*string{r.email, r.name, r.bio} {
			if v != nil {
				if _, _, err := oldOnly.Open(nil, []byte(*v)); err == nil {
					t.Fatalf("row %d: a token under the old key is left", id)
				}
			}
		}
	}
	rep, code = e.verifyJSON(t)
	if code != 0 || rep.Columns[0].FallbackKeyTokens[oldFP] != 0 {
		t.Fatalf("verify after reencrypt: exit %d %+v", code, rep.Columns[0])
	}
	// Retire the old key: everything still opens.
	delete(e.keys, "ENCRYPTION_KEY_FALLBACK")
	if _, code := e.verifyJSON(t); code != 0 {
		t.Fatal("verify without the retired key failed")
	}
}

func TestRehash(t *testing.T) {
	e := bfSetup(t, 1500)
	before := bfRows(t, e.su)
	if out, errs, code := e.run(t, "backfill"); code != 0 {
		t.Fatalf("backfill: %d\n%s\n%s", code, out, errs)
	}
	oldHash := e.keys["ENCRYPTION_HASH_KEY"]
	e.keys["ENCRYPTION_HASH_KEY"] = bfKeygen(t)
	e.keys["ENCRYPTION_HASH_KEY_FALLBACK"] = oldHash
	kr := e.keyring(t)
	rep, code := e.verifyJSON(t)
	if code != 1 || rep.Columns[0].BlindIndexWrong != 1500 {
		t.Fatalf("verify after hash key change: exit %d %+v", code, rep.Columns[0])
	}
	// During the run, every row is found by the current or the fallback
	// hash key (what the proxy looks up while fallback_hash_keys is set).
	cmd, out, errb := e.command(t, "rehash", "--batch-size", "50", "--max-rate", "3000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	lookups := 0
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("rehash: %v\n%s\n%s", err, out, errb)
			}
			running = false
		default:
			id := int64(1 + rand.IntN(1500))
			email := fmt.Sprintf("user%d@example.com", id)
			all := kr.BlindIndexAll("public.users.email", []byte(email))
			hs := make([]string, len(all))
			for i, h := range all {
				hs[i] = string(h)
			}
			var got int64
			if err := e.su.QueryRow(context.Background(), "SELECT id FROM users WHERE email_hash = ANY($1)", hs).Scan(&got); err != nil || got != id {
				t.Fatalf("lookup of row %d during rehash: got %d, %v", id, got, err)
			}
			lookups++
		}
	}
	if !strings.Contains(out.String(), "1500 blind indexes written") {
		t.Fatalf("rehash summary:\n%s", out)
	}
	checkConsistent(t, kr, before, bfRows(t, e.su), true)
	delete(e.keys, "ENCRYPTION_HASH_KEY_FALLBACK")
	if rep, code := e.verifyJSON(t); code != 0 {
		t.Fatalf("verify after rehash: %+v", rep.Columns[0])
	}
	t.Logf("%d lookups during rehash", lookups)
}

func TestDecryptRestoresOriginals(t *testing.T) {
	e := bfSetup(t, 1200)
	before := bfRows(t, e.su)
	if out, errs, code := e.run(t, "backfill"); code != 0 {
		t.Fatalf("backfill: %d\n%s\n%s", code, out, errs)
	}
	// Without --yes: refused, nothing changed.
	_, errs, code := e.run(t, "decrypt")
	if code != 2 || !strings.Contains(errs, "--yes") {
		t.Fatalf("decrypt without --yes: exit %d\n%s", code, errs)
	}
	out, errs, code := e.run(t, "decrypt", "--yes", "--workers", "2")
	if code != 0 || !strings.Contains(out, "1200 values decrypted, 1200 blind indexes cleared") {
		t.Fatalf("decrypt: %d\n%s\n%s", code, out, errs)
	}
	after := bfRows(t, e.su)
	for id, b := range before {
		a := after[id]
		if !eqp(a.email, b.email) || !eqp(a.name, b.name) || !eqp(a.bio, b.bio) || a.hash != nil {
			t.Fatalf("row %d not restored exactly", id)
		}
	}
	// verify agrees: plaintext with an empty blind index.
	rep, code := e.verifyJSON(t)
	if code != 1 || rep.Columns[0].Plaintext != 1200 || rep.Columns[0].BlindIndexMissing != 1200 {
		t.Fatalf("verify after decrypt: %d %+v", code, rep.Columns[0])
	}
	// And the round trip works again.
	if out, errs, code := e.run(t, "backfill"); code != 0 {
		t.Fatalf("backfill again: %d\n%s\n%s", code, out, errs)
	}
	if _, code := e.verifyJSON(t); code != 0 {
		t.Fatal("verify after the second backfill failed")
	}
}

func TestBackfillDryRun(t *testing.T) {
	e := bfSetup(t, 500)
	before := bfRows(t, e.su)
	out, errs, code := e.run(t, "backfill", "--dry-run", "--batch-size", "64")
	if code != 0 {
		t.Fatalf("dry run: %d\n%s\n%s", code, out, errs)
	}
	if !strings.Contains(out, "nothing was changed") || !strings.Contains(out, "500 values would be encrypted") ||
		!regexp.MustCompile(`\(e\.g\. rows \d+, \d+, \d+, \d+, \d+\)`).MatchString(out) {
		t.Fatalf("dry run output:\n%s", out)
	}
	after := bfRows(t, e.su)
	for id, b := range before {
		a := after[id]
		if !eqp(a.email, b.email) || !eqp(a.name, b.name) || !eqp(a.bio, b.bio) || !eqp(a.hash, b.hash) {
			t.Fatalf("dry run changed row %d", id)
		}
	}
	if strings.Contains(out+errs, "@example.com") || strings.Contains(out+errs, "Name 1") {
		t.Fatal("dry run printed a plaintext value")
	}
	var n int
	if err := e.su.QueryRow(context.Background(), "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgveil'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("dry run created the progress schema (%d, %v)", n, err)
	}
}

func TestBackfillMaxFailures(t *testing.T) {
	e := bfSetup(t, 2000)
	// 3% of rows hold tokens no configured key opens.
	stranger, _ := keyring.ParseKey(bfKeygen(t))
	other := keyring.New(stranger, nil, 1, make([]byte, 32), nil)
	for id := 1; id <= 2000; id += 33 {
		tok, _ := other.Seal(nil, []byte("lost"))
		pgtest.Exec(t, e.su, "UPDATE users SET full_name = $1 WHERE id = $2", string(tok), id)
	}
	out, errs, code := e.run(t, "backfill", "--batch-size", "100")
	if code != 1 || !strings.Contains(errs, "above --max-failures 1.00%") || !strings.Contains(errs, "fix:") {
		t.Fatalf("default --max-failures: exit %d\n%s\n%s", code, out, errs)
	}
	if strings.Contains(out, "2000 rows examined") {
		t.Fatalf("the run did not stop early:\n%s", out)
	}
	out, errs, code = e.run(t, "backfill", "--max-failures", "0.05")
	if code != 0 || !strings.Contains(out, "61 failed") || !strings.Contains(out, "61 undecryptable") {
		t.Fatalf("--max-failures 0.05: exit %d\n%s\n%s", code, out, errs)
	}
	rep, code := e.verifyJSON(t)
	if code != 1 || rep.Columns[1].Undecryptable != 61 || rep.Columns[0].PrimaryKeyTokens != 2000 {
		t.Fatalf("verify: exit %d %+v", code, rep.Columns[1])
	}
	// Samples name rows holding a stranger's token (ids 1, 34, 67, ...);
	// which ones depends on which worker finished first.
	samples := rep.Columns[1].Samples["undecryptable"]
	if len(samples) == 0 {
		t.Fatalf("verify samples: %+v", rep.Columns[1].Samples)
	}
	for _, id := range samples {
		if n, err := strconv.Atoi(id); err != nil || n%33 != 1 {
			t.Fatalf("verify sample %q is not a row with an undecryptable token: %+v", id, rep.Columns[1].Samples)
		}
	}
	// Undecryptable tokens were left alone, not encrypted again.
	var stored string
	if err := e.su.QueryRow(context.Background(), "SELECT full_name FROM users WHERE id = 34").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if p, _, err := other.Open(nil, []byte(stored)); err != nil || string(p) != "lost" {
		t.Fatal("an undecryptable token was modified")
	}
}

func TestAdminUsageErrors(t *testing.T) {
	e := bfSetup(t, 10)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backfill", "--batch-size", "0"}, "--batch-size"},
		{[]string{"backfill", "--workers", "many"}, "invalid value"},
		{[]string{"backfill", "--shard", "4/4"}, "--shard"},
		{[]string{"backfill", "--max-failures", "2"}, "--max-failures"},
		{[]string{"backfill", "--no-such-flag"}, "flag provided but not defined"},
		{[]string{"backfill", "stray"}, "unexpected argument"},
		{[]string{"backfill", "--table", "nope"}, "not a configured table"},
		{[]string{"verify", "--dry-run"}, "flag provided but not defined"},
	} {
		_, errs, code := e.run(t, tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) || !strings.HasPrefix(errs, "pgveil: ") {
			t.Errorf("%v: exit %d, stderr %q", tc.args, code, errs)
		}
	}
	// No DSN at all.
	_, errs, code := e.runRaw(t, "backfill", "--config", e.cfgPath)
	if code != 2 || !strings.Contains(errs, "DATABASE_URL") {
		t.Errorf("no dsn: exit %d %q", code, errs)
	}
	// DATABASE_URL is used when --dsn is absent.
	e.keys["DATABASE_URL"] = e.dsn
	if out, errs, code := e.runRaw(t, "verify", "--config", e.cfgPath); code != 1 || !strings.Contains(out, "plaintext 10") {
		t.Errorf("DATABASE_URL: exit %d\n%s\n%s", code, out, errs)
	}
	delete(e.keys, "DATABASE_URL")
	// Unreachable database.
	dead := fmt.Sprintf("postgres://nobody@127.0.0.1:%d/x?sslmode=disable&connect_timeout=3", pgtest.FreePort(t))
	for _, cmd := range []string{"backfill", "verify", "check", "schema"} {
		_, errs, code := e.runRaw(t, cmd, "--config", e.cfgPath, "--dsn", dead)
		if code != 2 || !strings.Contains(errs, "pgveil: cannot connect to the database") || !strings.Contains(errs, "fix:") {
			t.Errorf("%s against an unreachable database: exit %d %q", cmd, code, errs)
		}
	}
	// Missing key.
	delete(e.keys, "ENCRYPTION_KEY")
	_, errs, code = e.run(t, "backfill")
	if code != 2 || !strings.Contains(errs, "ENCRYPTION_KEY") || !strings.Contains(errs, "pgveil keygen") {
		t.Errorf("missing key: exit %d %q", code, errs)
	}
}

func TestBackfillNoPrimaryKey(t *testing.T) {
	e := bfSetup(t, 10)
	pgtest.Exec(t, e.su, "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('secret')")
	e.writeConfig(t, "tables:\n  - table: notes\n    columns: [{column: body}]\n")
	_, errs, code := e.run(t, "backfill")
	if code != 2 || !strings.Contains(errs, "table public.notes has no primary key") || !strings.Contains(errs, "fix: add one") {
		t.Fatalf("exit %d %q", code, errs)
	}
	_, errs, code = e.run(t, "check")
	if code != 1 || !strings.Contains(errs, "no primary key") {
		t.Fatalf("check: exit %d %q", code, errs)
	}
}

// TestBackfillCompositeKeyShards covers a composite primary key, --table,
// and a table spread over three shards run concurrently (a Kubernetes
// Indexed Job), in another schema.
func TestBackfillCompositeKeyShards(t *testing.T) {
	e := bfSetup(t, 10)
	pgtest.Exec(t, e.su, `CREATE SCHEMA app; CREATE TABLE app.messages (tenant int, seq text, body text, PRIMARY KEY (tenant, seq));
		INSERT INTO app.messages SELECT g % 13, 's' || g, 'message ' || g FROM generate_series(1, 5000) g;
		GRANT USAGE ON SCHEMA app TO veil_app; GRANT ALL ON ALL TABLES IN SCHEMA app TO veil_app`)
	e.writeConfig(t, bfTables+"  - table: app.messages\n    columns: [{column: body}]\n")
	var wg sync.WaitGroup
	outs := make([]string, 3)
	codes := make([]int, 3)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, errs, code := e.run(t, "backfill", "--table", "app.messages", "--shard", fmt.Sprintf("%d/3", i), "--batch-size", "100")
			outs[i], codes[i] = o+errs, code
		}()
	}
	wg.Wait()
	total := 0
	for i := range outs {
		if codes[i] != 0 {
			t.Fatalf("shard %d: exit %d\n%s", i, codes[i], outs[i])
		}
		var rows, written int
		for _, line := range strings.Split(outs[i], "\n") {
			if _, err := fmt.Sscanf(line, "app.messages: %d rows examined, %d written", &rows, &written); err == nil {
				break
			}
		}
		if rows == 0 || rows != written {
			t.Fatalf("shard %d: %d rows, %d written\n%s", i, rows, written, outs[i])
		}
		total += rows
	}
	if total != 5000 {
		t.Fatalf("shards covered %d rows, want 5000", total)
	}
	// users was not touched (--table), messages all encrypted.
	out, _, code := e.run(t, "verify", "--table", "app.messages")
	if code != 0 {
		t.Fatalf("verify messages: %d\n%s", code, out)
	}
	var plain int
	if err := e.su.QueryRow(context.Background(), "SELECT count(*) FROM users WHERE email NOT LIKE 'gAAAAA%'").Scan(&plain); err != nil || plain != 10 {
		t.Fatalf("--table touched users (%d plaintext left, %v)", plain, err)
	}
	kr := e.keyring(t)
	var tok string
	if err := e.su.QueryRow(context.Background(), "SELECT body FROM app.messages WHERE tenant = 7 AND seq = 's7'").Scan(&tok); err != nil {
		t.Fatal(err)
	}
	if p, _, err := kr.Open(nil, []byte(tok)); err != nil || string(p) != "message 7" {
		t.Fatalf("composite-key row: %v", err)
	}
}

func TestSchemaApplyAndCheck(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDB(t)
	su := c.Superuser(t, db)
	pgtest.Exec(t, su, `CREATE TABLE users (id bigint PRIMARY KEY, tenant int, email varchar(100) UNIQUE, full_name varchar(40), bio text);
		CREATE UNIQUE INDEX users_tenant_email ON users (tenant, email);
		INSERT INTO users VALUES (1, 1, 'a@example.com', 'A', 'x'), (2, 1, 'b@example.com', 'B', NULL)`)
	e := &bfEnv{c: c, db: db, dsn: c.DSN(pgtest.SuperUser, db), su: su, keys: map[string]string{
		"ENCRYPTION_KEY": bfKeygen(t), "ENCRYPTION_HASH_KEY": bfKeygen(t)}}
	e.writeConfig(t, bfTables)

	out, errs, code := e.run(t, "check")
	if code != 1 || !strings.Contains(errs, "character varying(100), which cannot hold tokens") ||
		!strings.Contains(errs, "blind index column email_hash of public.users.email does not exist") ||
		!strings.Contains(errs, "fix: pgveil schema --apply") {
		t.Fatalf("check before schema: exit %d\n%s\n%s", code, out, errs)
	}
	// Without a DSN: generic DDL.
	out, _, code = e.runRaw(t, "schema", "--config", e.cfgPath)
	if code != 0 || !strings.Contains(out, `CREATE INDEX CONCURRENTLY IF NOT EXISTS "users_email_hash_idx"`) {
		t.Fatalf("generic schema: %d\n%s", code, out)
	}
	out, errs, code = e.run(t, "schema")
	if code != 0 || !strings.Contains(out, `CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "users_email_hash_key" ON "public"."users" ("email_hash")`) ||
		!strings.Contains(out, `CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "users_tenant_email_hash_key" ON "public"."users" ("tenant", "email_hash")`) ||
		strings.Contains(out, `DROP CONSTRAINT`) || strings.Contains(out, `DROP INDEX`) ||
		!strings.Contains(out, "-- later: UNIQUE constraint users_email_key on encrypted column public.users.email stays") {
		t.Fatalf("schema plan: %d\n%s\n%s", code, out, errs)
	}
	// Printing changed nothing.
	var typ string
	if err := su.QueryRow(context.Background(), "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'email'").Scan(&typ); err != nil || typ != "character varying(100)" {
		t.Fatalf("schema without --apply changed the table (%s, %v)", typ, err)
	}
	out, errs, code = e.run(t, "schema", "--apply")
	if code != 0 {
		t.Fatalf("schema --apply: %d\n%s\n%s", code, out, errs)
	}
	out, errs, code = e.run(t, "check")
	if code != 0 || !strings.Contains(out, "schema OK") || !strings.Contains(out, "note: UNIQUE constraint users_email_key") {
		t.Fatalf("check after apply: %d\n%s\n%s", code, out, errs)
	}
	out, _, code = e.run(t, "schema")
	if code != 0 || !strings.Contains(out, "nothing to apply now") || !strings.Contains(out, "some rows have no blind index email_hash yet") {
		t.Fatalf("schema after apply: %d\n%s", code, out)
	}
	// After the backfill, the finishing step drops what only the plaintext
	// needed; check says it is pending without failing.
	if out, errs, code := e.run(t, "backfill"); code != 0 {
		t.Fatalf("backfill: %d\n%s\n%s", code, out, errs)
	}
	out, errs, code = e.run(t, "check")
	if code != 0 || !strings.Contains(out, "schema OK") || !strings.Contains(out, "to finish the migration run pgveil schema --apply") {
		t.Fatalf("check before finishing: %d\n%s\n%s", code, out, errs)
	}
	out, errs, code = e.run(t, "schema", "--apply")
	if code != 0 || !strings.Contains(out, `DROP CONSTRAINT "users_email_key"`) || !strings.Contains(out, `DROP INDEX CONCURRENTLY IF EXISTS "public"."users_tenant_email"`) {
		t.Fatalf("schema --apply, finishing: %d\n%s\n%s", code, out, errs)
	}
	out, _, code = e.run(t, "schema")
	if code != 0 || !strings.Contains(out, "already has everything") {
		t.Fatalf("schema after finishing: %d\n%s", code, out)
	}
	// Uniqueness now holds on the blind index.
	kr := e.keyring(t)
	tok, _ := kr.Seal(nil, []byte("a@example.com"))
	_, err := su.Exec(context.Background(), "INSERT INTO users (id, tenant, email, email_hash) VALUES (3, 2, $1, $2)",
		string(tok), string(kr.BlindIndex(nil, "public.users.email", []byte("a@example.com"))))
	if sqlState(err) != "23505" {
		t.Fatalf("duplicate email through its blind index: %v, want a unique violation", err)
	}
}

// TestBackfillWriterThroughProxy is the scenario: the application
// already writes through pgveil while the backfill encrypts the rows that
// were there before. No update made through the proxy is lost.
func TestBackfillWriterThroughProxy(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	const n = 8000
	su := p.Direct(t)
	pgtest.Exec(t, su, fmt.Sprintf(`INSERT INTO users (id, email, full_name, age) SELECT g, 'user' || g || '@example.com', 'Name ' || g, g %% 90
		FROM generate_series(1, %d) g`, n))
	e := &bfEnv{c: p.Cluster, db: p.DB, dsn: p.DirectDSN(pgtest.ScramUser), su: su, keys: p.Keys.env()}
	e.writeConfig(t, appTables)

	cmd, out, errb := e.command(t, "backfill", "--batch-size", "100", "--workers", "2", "--max-rate", "8000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	app := p.Conn(t)
	ctx := context.Background()
	latest := map[int64][2]string{}
	for seq, running := 0, true; running; seq++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("backfill: %v\n%s\n%s", err, out, errb)
			}
			running = false
			continue
		default:
		}
		id := int64(1 + rand.IntN(n))
		email, name := fmt.Sprintf("proxy%d-%d@example.com", id, seq), fmt.Sprintf("Proxy %d", seq)
		tag, err := app.Exec(ctx, "UPDATE users SET email = $1, full_name = $2 WHERE id = $3", email, name, id)
		if err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("update through pgveil: %v (%s)", err, tag)
		}
		latest[id] = [2]string{email, name}
	}
	if len(latest) < 50 {
		t.Fatalf("only %d rows updated during the backfill", len(latest))
	}
	if _, code := e.verifyJSON(t); code != 0 {
		t.Fatalf("verify after backfill with a writer through pgveil: exit %d", code)
	}
	// What the application reads back through pgveil is its last write,
	// found by its blind index.
	for id, w := range latest {
		var gotID int64
		var name string
		if err := app.QueryRow(ctx, "SELECT id, full_name FROM users WHERE email = $1", w[0]).Scan(&gotID, &name); err != nil {
			t.Fatalf("row %d: lookup by its last email through pgveil: %v", id, err)
		}
		if gotID != id || name != w[1] {
			t.Fatalf("row %d: an update through pgveil was lost", id)
		}
	}
	var email string
	if err := app.QueryRow(ctx, "SELECT email FROM users WHERE id = $1", int64(n)).Scan(&email); err != nil {
		t.Fatal(err)
	}
	if w, ok := latest[int64(n)]; (ok && email != w[0]) || (!ok && email != fmt.Sprintf("user%d@example.com", n)) {
		t.Fatal("a backfilled row does not read back as its original through pgveil")
	}
	t.Logf("%d rows updated through pgveil during the backfill", len(latest))
}

// TestCheckViewsAndPartitions: check fails on a view or partition that
// reaches a configured table under another name; once configured alike it
// passes, and the data commands skip the view.
func TestCheckViewsAndPartitions(t *testing.T) {
	e := bfSetup(t, 5)
	e.dsn = e.c.DSN(pgtest.SuperUser, e.db)
	if out, errs, code := e.run(t, "schema", "--apply"); code != 0 {
		t.Fatalf("schema --apply: %d\n%s\n%s", code, out, errs)
	}
	pgtest.Exec(t, e.su, `CREATE VIEW user_emails AS SELECT id, email, email_hash FROM users;
		CREATE TABLE ev (id bigint, at date, secret text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
		CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')`)
	e.writeConfig(t, bfTables+"  - table: ev\n    columns: [{column: secret}]\n")
	out, errs, code := e.run(t, "check")
	if code != 1 || !strings.Contains(errs, "view public.user_emails reads encrypted column public.users.email") ||
		!strings.Contains(errs, "table public.ev_2024 is a partition of configured table public.ev") ||
		!strings.Contains(errs, "hash_domain: public.ev.secret") {
		t.Fatalf("check: %d\n%s\n%s", code, out, errs)
	}
	e.writeConfig(t, bfTables+`  - table: ev
    columns: [{column: secret}]
  - table: ev_2024
    columns: [{column: secret, hash_domain: public.ev.secret}]
  - table: user_emails
    columns: [{column: email, blind_index: email_hash, hash_domain: public.users.email}]
`)
	out, errs, code = e.run(t, "check")
	if code != 0 || !strings.Contains(out, "schema OK") || !strings.Contains(out, "note: public.user_emails is a view") || strings.Contains(errs, "does not exist") {
		t.Fatalf("check, configured alike: %d\n%s\n%s", code, out, errs)
	}
	out, errs, code = e.run(t, "backfill")
	if code != 0 || !strings.Contains(out, "user_emails: skipped: table public.user_emails is a view") {
		t.Fatalf("backfill: %d\n%s\n%s", code, out, errs)
	}
	if out, errs, code := e.run(t, "verify"); code != 0 {
		t.Fatalf("verify: %d\n%s\n%s", code, out, errs)
	}
	out, errs, code = e.run(t, "backfill", "--table", "user_emails")
	if code != 2 || !strings.Contains(errs, "is a view") || !strings.Contains(errs, "public.users") {
		t.Fatalf("backfill of the view alone: %d\n%s\n%s", code, out, errs)
	}
}

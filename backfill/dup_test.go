package backfill

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
)

// TestBackfillDuplicates: rows 15 and 41 hold plaintext emails that rows
// written through pgveil since (101: a token and its blind index) hold too,
// and rows 20 and 21 (the plaintext column was not unique) hold the same
// email. The unique index on the blind index refuses the second of each;
// the run names both rows, counts the failures, leaves those emails as
// they were and encrypts everything else.
func TestBackfillDuplicates(t *testing.T) {
	pool := testDB(t, 100, `;DROP INDEX users_email_hash_idx; CREATE UNIQUE INDEX users_email_hash_key ON users (email_hash);
		UPDATE users SET email = 'twin@example.com' WHERE id IN (20, 21)`)
	kr := testKeyring(t)
	for id, email := range map[int]string{101: "user15@example.com", 102: "user41@example.com"} {
		tok, _ := kr.Seal(nil, []byte(email))
		if _, err := pool.Exec(ctxT(t), "INSERT INTO users (id, email, email_hash, full_name) VALUES ($1, $2, $3, NULL)",
			id, string(tok), string(kr.BlindIndex(nil, "public.users.email", []byte(email)))); err != nil {
			t.Fatal(err)
		}
	}

	// verify sees the two rows whose blind index is taken before anything
	// is written.
	rep, err := (&Job{Tables: []config.Table{usersTable}, Keys: kr, Workers: 2, BatchSize: 30}).Verify(ctxT(t), pool)
	if err != nil {
		t.Fatal(err)
	}
	email := rep.Columns[0]
	if email.Duplicate != 2 || len(email.DuplicateRows) != 2 {
		t.Fatalf("verify before: %d duplicates %v", email.Duplicate, email.DuplicateRows)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "15 (same as 101)") || !strings.Contains(text.String(), "keep one row of each group") {
		t.Fatalf("verify text:\n%s", text.String())
	}

	var out bytes.Buffer
	j := &Job{Op: OpEncrypt, Tables: []config.Table{usersTable}, Keys: kr, Sanitize: true, MaxSize: 1 << 20,
		BatchSize: 30, Workers: 2, Out: &out, MaxFailures: 0.1}
	sum, err := j.Run(ctxT(t), pool)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	ts := sum.Tables[0]
	if ts.Failed != 3 || ts.Failures[reasonDuplicate] != 3 || ts.Columns[0].Failed != 3 {
		t.Fatalf("failed %d, reasons %v, email failed %d", ts.Failed, ts.Failures, ts.Columns[0].Failed)
	}
	got := map[string][]string{}
	for _, d := range ts.Duplicates {
		if d.Column != "email" || d.Index != "users_email_hash_key" {
			t.Fatalf("duplicate %+v", d)
		}
		got[d.Row] = d.Others
	}
	if !slices.Equal(got["15"], []string{"101"}) || !slices.Equal(got["41"], []string{"102"}) ||
		!(slices.Equal(got["21"], []string{"20"}) || slices.Equal(got["20"], []string{"21"})) {
		t.Fatalf("duplicates: %v", got)
	}
	out.Reset()
	sum.Write(&out)
	t.Logf("summary:\n%s\nverify:\n%s", out.String(), text.String())
	for _, want := range []string{"3 duplicate", "duplicate: row 15 of users holds the same email as row 101 (unique index users_email_hash_key)", "keep one row of each group"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "@example.com") {
		t.Fatalf("a value in the summary:\n%s", out.String())
	}

	// Rows 15 and 41: email as it was, no blind index, but the other
	// columns encrypted. Every other row done.
	snap := snapshot(t, pool)
	for id, v := range snap {
		dup := id == 15 || id == 41 || (id == 20 || id == 21) && !keyring.IsToken([]byte(*v[0]))
		if dup {
			if keyring.IsToken([]byte(*v[0])) || v[1] != nil {
				t.Fatalf("row %d: a duplicate email was written", id)
			}
		} else if !keyring.IsToken([]byte(*v[0])) || v[1] == nil {
			t.Fatalf("row %d not encrypted", id)
		}
		if v[2] != nil && !keyring.IsToken([]byte(*v[2])) {
			t.Fatalf("row %d: full_name not encrypted", id)
		}
	}

	// Above --max-failures the run stops with the reasons and their fix.
	if _, err := pool.Exec(ctxT(t), "UPDATE users SET email = 'user15@example.com', email_hash = NULL WHERE id = 15"); err != nil {
		t.Fatal(err)
	}
	j.MaxFailures = 0.01
	_, err = j.Run(ctxT(t), pool)
	var fe *FailureError
	if !errors.As(err, &fe) || fe.Reasons[reasonDuplicate] == 0 || !strings.Contains(fe.Hint(), "keep one row of each group") ||
		strings.Contains(fe.Hint(), "max_size") {
		t.Fatalf("over --max-failures: %v", err)
	}

	// Resolved (the copies written through pgveil deleted): the rerun
	// finishes the job.
	if _, err := pool.Exec(ctxT(t), "DELETE FROM users WHERE id IN (101, 102)"); err != nil {
		t.Fatal(err)
	}
	j.MaxFailures = 0.1
	if sum, err = j.Run(ctxT(t), pool); err != nil || sum.Tables[0].Written != 2 || sum.Tables[0].Failed != 1 {
		t.Fatalf("after resolving: %v %+v", err, sum.Tables[0])
	}
}

// TestRehashDuplicate is the hash-key rotation's window: a row written
// under the new hash key holds the email of a row still hashed under the
// old one. rehash names both and goes on.
func TestRehashDuplicate(t *testing.T) {
	pool := testDB(t, 40, `;DROP INDEX users_email_hash_idx; CREATE UNIQUE INDEX users_email_hash_key ON users (email_hash)`)
	enc := newKey(t)
	old := keyring.New(enc, nil, 1, []byte("0123456789abcdef0123456789abcdef"), nil)
	if _, err := (&Job{Op: OpEncrypt, Tables: []config.Table{usersTable}, Keys: old, BatchSize: 10}).Run(ctxT(t), pool); err != nil {
		t.Fatal(err)
	}
	cur := keyring.New(enc, nil, 1, []byte("abcdef0123456789abcdef0123456789"), [][]byte{[]byte("0123456789abcdef0123456789abcdef")})
	tok, _ := cur.Seal(nil, []byte("user15@example.com"))
	if _, err := pool.Exec(ctxT(t), "INSERT INTO users (id, email, email_hash) VALUES (500, $1, $2)",
		string(tok), string(cur.BlindIndex(nil, "public.users.email", []byte("user15@example.com")))); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sum, err := (&Job{Op: OpRehash, Tables: []config.Table{usersTable}, Keys: cur, BatchSize: 10, Out: &out, MaxFailures: 0.05}).Run(ctxT(t), pool)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	ts := sum.Tables[0]
	if ts.Failed != 1 || len(ts.Duplicates) != 1 || ts.Duplicates[0].Row != "15" || !slices.Equal(ts.Duplicates[0].Others, []string{"500"}) || ts.Written != 39 {
		t.Fatalf("rehash: %+v %+v", ts, ts.Duplicates)
	}
}

// TestResumeSkipsFinishedTables leaves the progress a run killed in its
// second table leaves (the first marked done, the second part way): the
// rerun skips the first and continues the second; once a run has got
// through all its tables, the next one starts afresh.
func TestResumeSkipsFinishedTables(t *testing.T) {
	pool := testDB(t, 60, `;CREATE TABLE notes (id int PRIMARY KEY, body text);
		INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 50) g`)
	notes := config.Table{Table: "notes", Schema: "public", Name: "notes", Columns: []config.Column{{Column: "body"}}}
	kr := testKeyring(t)
	var out bytes.Buffer
	j := &Job{Op: OpEncrypt, Tables: []config.Table{usersTable, notes}, Keys: kr, BatchSize: 10, Out: &out}
	store := newProgressStore(ctxT(t), pool, &out)
	if !store.enabled {
		t.Fatalf("no progress table: %s", out.String())
	}
	users, err := loadTable(ctxT(t), pool, usersTable)
	if err != nil {
		t.Fatal(err)
	}
	nt, err := loadTable(ctxT(t), pool, notes)
	if err != nil {
		t.Fatal(err)
	}
	// users: done (left in plaintext here, so that skipping it shows);
	// notes: every row up to 20 done.
	store.markDone(ctxT(t), users.full, OpEncrypt, Shard{}, j.signature(users), 60)
	store.save(ctxT(t), nt.full, OpEncrypt, Shard{}, j.signature(nt), []string{"20"}, 20, 0)

	sum, err := j.Run(ctxT(t), pool)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !sum.Tables[0].Skipped || sum.Tables[1].Rows != 30 || !sum.Tables[1].Resumed {
		t.Fatalf("resumed run: %+v %+v\n%s", sum.Tables[0], sum.Tables[1], out.String())
	}
	if !strings.Contains(out.String(), "users: encrypt finished by an earlier run at ") || !strings.Contains(out.String(), "notes: resuming encrypt after key 20") {
		t.Fatalf("output:\n%s", out.String())
	}
	var plain int
	if err := pool.QueryRow(ctxT(t), "SELECT count(*) FROM users WHERE email NOT LIKE 'gAAAAA%'").Scan(&plain); err != nil || plain != 60 {
		t.Fatalf("the finished table was done again (%d plaintext left, %v)", plain, err)
	}
	var left int
	if err := pool.QueryRow(ctxT(t), "SELECT count(*) FROM "+ProgressTable).Scan(&left); err != nil || left != 0 {
		t.Fatalf("a run that got through all its tables left %d progress rows (%v)", left, err)
	}

	// A new run looks at everything again (rows 1 to 20 of notes were
	// left in plaintext by the made-up progress above).
	out.Reset()
	sum, err = j.Run(ctxT(t), pool)
	if err != nil || sum.Tables[0].Skipped || sum.Tables[0].Written != 60 || sum.Tables[1].Written != 20 || sum.Tables[1].Rows != 50 {
		t.Fatalf("fresh run: %v %+v %+v", err, sum.Tables[0], sum.Tables[1])
	}

	// A table finished without failed rows is marked done (for a rerun
	// of its run); one finished with failed rows is not, so that a rerun
	// goes over it again and retries them.
	if _, err := pool.Exec(ctxT(t), "UPDATE notes SET body = repeat('x', 100) WHERE id = 7"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		maxSize  int
		wantDone bool
	}{{50, false}, {1000, true}} {
		j2 := &Job{Op: OpEncrypt, Tables: []config.Table{notes}, Keys: kr, BatchSize: 10, Out: &out, MaxSize: tc.maxSize, MaxFailures: 0.5}
		j2.defaults()
		if _, err := j2.runTable(ctxT(t), pool, nt, store, newLimiter(0)); err != nil {
			t.Fatal(err)
		}
		p, ok := store.load(ctxT(t), nt.full, OpEncrypt, Shard{}, j2.signature(nt))
		if ok != tc.wantDone || p.done != tc.wantDone {
			t.Fatalf("max_size %d: saved %+v %v, want done %v", tc.maxSize, p, ok, tc.wantDone)
		}
	}
}

// TestVerifyNamesValuesBackfillCannotEncrypt: values over max_size,
// refused by sanitize_input, or shaped like a token no key opens are named
// with their own fix, not as plaintext for pgveil backfill; backfill's
// hint says the same.
func TestVerifyNamesValuesBackfillCannotEncrypt(t *testing.T) {
	pool := testDB(t, 30, `;UPDATE users SET bio = repeat('long ', 40) WHERE id IN (7, 8);
		UPDATE users SET full_name = 'gAAAAA' || repeat('B', 94) WHERE id = 9`)
	kr := testKeyring(t)
	j := &Job{Op: OpEncrypt, Tables: []config.Table{usersTable}, Keys: kr, Sanitize: true, MaxSize: 100, BatchSize: 10, MaxFailures: 0.01}
	rep, err := j.Verify(ctxT(t), pool)
	if err != nil {
		t.Fatal(err)
	}
	bio := rep.Columns[2]
	if bio.OverMaxSize != 2 || !slices.Equal(bio.Samples["over_max_size"], []string{"7", "8"}) || slices.Contains(bio.Samples["plaintext"], "7") {
		t.Fatalf("bio: %+v", bio)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	for _, want := range []string{
		"problem: 2 plaintext values over encryption.max_size (100 bytes), which pgveil backfill cannot encrypt (rows 7, 8)",
		"fix: raise encryption.max_size (ENCRYPTION_MAX_SIZE) above the largest of them, or shorten them",
		"problem: 1 values that are not a token pgveil can open: tokens of another key, or plaintext that looks like one (rows 9)",
		"if they are plaintext that starts like a token (gAAAAA...), write them again through pgveil",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("verify text lacks %q:\n%s", want, text.String())
		}
	}
	var out bytes.Buffer
	j.Out = &out
	_, err = j.Run(ctxT(t), pool)
	var fe *FailureError
	if !errors.As(err, &fe) || !strings.Contains(fe.Hint(), "raise encryption.max_size") || strings.Contains(fe.Hint(), "duplicates") {
		t.Fatalf("backfill: %v", err)
	}
}

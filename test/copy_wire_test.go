package test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/test/pgtest"
)

// The tests of this file are named TestProtocol*, so make test runs them on
// both I/O engines (ENGINE_TESTS); TestProtocolServerMessageOverLimit also
// loops over both itself.

// pgErr returns err as a *pgconn.PgError, failing the test otherwise.
func pgErr(t testing.TB, what string, err error) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("%s: want an ErrorResponse, got %v", what, err)
	}
	return pe
}

func countRows(t testing.TB, c *pgx.Conn, sql string) int {
	t.Helper()
	var n int
	if err := c.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestProtocolCopyFromRefusals: a value pgveil refuses in COPY FROM STDIN
// reaches the client with SPEC §6's SQLSTATE (not the 57014 PostgreSQL
// answers pgveil's CopyFail with), a malformed row with what PostgreSQL
// itself says, nothing is stored, and the connection stays usable, in the
// simple and the extended protocol.
func TestProtocolCopyFromRefusals(t *testing.T) {
	p := startProxy(t, proxyOpts{mutate: func(c *config.Config) { c.Encryption.MaxSize = 100 }})
	c := p.Conn(t)
	d := p.Direct(t)
	ctx := context.Background()
	const copySQL = "COPY users (email, full_name) FROM STDIN"

	for _, tc := range []struct {
		name, data, code, msg string
	}{
		{"invalid UTF-8", "ok1@x.io\tAnn\nbad\xff@x.io\tBob\n", "22021", "pgveil: value is not valid UTF-8"},
		{"NUL escape", "ok1@x.io\tAnn\nnul@x.io\tnul\\000here\n", "22021", "pgveil: "},
		{"over max_size", "ok1@x.io\tAnn\nbig@x.io\t" + strings.Repeat("y", 101) + "\n", "54000", "pgveil: "},
		{"CSV over max_size", "ok1@x.io,Ann\n\"big@x.io\",\"" + strings.Repeat("y", 101) + "\"\n", "54000", "pgveil: "},
	} {
		sql := copySQL
		if strings.HasPrefix(tc.name, "CSV") {
			sql += " (FORMAT csv)"
		}
		_, err := c.PgConn().CopyFrom(ctx, &chunkReader{s: tc.data, n: 7}, sql)
		pe := pgErr(t, tc.name, err)
		if pe.Code != tc.code || !strings.HasPrefix(pe.Message, tc.msg) || strings.Contains(pe.Message, "COPY from stdin failed") {
			t.Errorf("%s: got %s %q, want %s %q...", tc.name, pe.Code, pe.Message, tc.code, tc.msg)
		}
		if strings.Contains(pe.Message+pe.Detail+pe.Where, "here") || strings.Contains(pe.Message+pe.Where, "yyyy") {
			t.Errorf("%s: the error carries the value: %+v", tc.name, pe)
		}
		if pe.Where != "COPY users, line 2" {
			t.Errorf("%s: context %q, want PostgreSQL's %q", tc.name, pe.Where, "COPY users, line 2")
		}
		if n := countRows(t, d, "SELECT count(*) FROM users"); n != 0 {
			t.Fatalf("%s: %d rows stored by a refused COPY", tc.name, n)
		}
		if n := countRows(t, c, "SELECT 41 + 1"); n != 42 {
			t.Fatalf("%s: connection unusable after the refusal", tc.name)
		}
	}

	// A row with too few or too many fields: what PostgreSQL says without
	// pgveil, with no plaintext in its context line.
	for _, tc := range []struct{ name, data string }{
		{"missing field", "ok1@x.io\tAnn\nshort@x.io\n"},
		{"extra field", "ok1@x.io\tAnn\nlong@x.io\tLen\textra\n"},
		{"missing field csv", "ok1@x.io,Ann\nshort@x.io\n"},
	} {
		sql := copySQL
		if strings.HasSuffix(tc.name, "csv") {
			sql += " (FORMAT csv)"
		}
		_, direct := d.PgConn().CopyFrom(ctx, strings.NewReader(tc.data), sql)
		want := pgErr(t, tc.name+" direct", direct)
		_, err := c.PgConn().CopyFrom(ctx, &chunkReader{s: tc.data, n: 5}, sql)
		pe := pgErr(t, tc.name, err)
		if pe.Code != want.Code || pe.Message != want.Message || pe.Code != "22P04" {
			t.Errorf("%s: through pgveil %s %q, direct %s %q", tc.name, pe.Code, pe.Message, want.Code, want.Message)
		}
		if !strings.HasPrefix(pe.Where, "COPY users, line 2") || strings.Contains(pe.Where, "@x.io") {
			t.Errorf("%s: context %q: want line 2, without plaintext", tc.name, pe.Where)
		}
		if n := countRows(t, d, "SELECT count(*) FROM users"); n != 0 {
			t.Fatalf("%s: %d rows stored", tc.name, n)
		}
	}

	// The same COPY, well formed, goes through afterwards.
	tag, err := c.PgConn().CopyFrom(ctx, strings.NewReader("ok1@x.io\tAnn\nok2@x.io\t\\N\n"), copySQL)
	if err != nil || tag.RowsAffected() != 2 {
		t.Fatalf("COPY after refusals: %v %v", err, tag)
	}
	if n := countRows(t, c, "SELECT count(*) FROM users WHERE email = 'ok2@x.io' AND full_name IS NULL"); n != 1 {
		t.Fatalf("row of the COPY after refusals: %d", n)
	}

	// Extended protocol, as libpq sends it: Sync behind Execute, a second
	// Sync behind CopyDone. The client sees the refusal, one
	// ReadyForQuery, and the session stays in step.
	rc := dialRaw(t, p.Addr, pgtest.TrustUser, p.DB)
	rc.send(&pgproto3.Parse{Query: copySQL}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	got := strings.Join(rc.until("CopyInResponse"), " ")
	if got != "ParseComplete BindComplete CopyInResponse" {
		t.Fatalf("extended COPY start: %s", got)
	}
	rc.send(&pgproto3.CopyData{Data: []byte("x1@x.io\tXa\nx2@x.io\tbad\xfe\n")}, &pgproto3.CopyData{Data: []byte("x3@x.io\tX\n")},
		&pgproto3.CopyDone{}, &pgproto3.Sync{})
	got = strings.Join(rc.until("ReadyForQuery"), " ")
	if got != "ErrorResponse(22021) ReadyForQuery" {
		t.Fatalf("extended COPY refused: %s", got)
	}
	rc.send(&pgproto3.Query{String: "SELECT full_name FROM users WHERE email = 'ok1@x.io'"})
	if got := strings.Join(rc.until("ReadyForQuery"), " "); got != "RowDescription DataRow(Ann) CommandComplete(SELECT 1) ReadyForQuery" {
		t.Fatalf("after the extended COPY: %s", got)
	}
	// Simple protocol, the client going on sending after the refusal.
	rc.send(&pgproto3.Query{String: copySQL})
	rc.until("CopyInResponse")
	rc.send(&pgproto3.CopyData{Data: []byte("y1@x.io\t" + strings.Repeat("z", 200) + "\n")},
		&pgproto3.CopyData{Data: []byte("y2@x.io\tY\n")}, &pgproto3.CopyDone{})
	if got := strings.Join(rc.until("ReadyForQuery"), " "); got != "ErrorResponse(54000) ReadyForQuery" {
		t.Fatalf("simple COPY refused: %s", got)
	}
	rc.send(&pgproto3.Query{String: "SELECT count(*) FROM users"})
	if got := strings.Join(rc.until("ReadyForQuery"), " "); got != "RowDescription DataRow(2) CommandComplete(SELECT 1) ReadyForQuery" {
		t.Fatalf("after the simple COPY: %s", got)
	}
	assertNoPlaintext(t, p, "ok1@x.io", "Ann", "short@x.io", "long@x.io", "x1@x.io")
}

// TestProtocolCopyInResponseColumns: the client's CopyInResponse lists the
// columns of its own COPY, not the blind-index column pgveil adds.
func TestProtocolCopyInResponseColumns(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	rc := dialRaw(t, p.Addr, pgtest.TrustUser, p.DB)
	for _, sql := range []string{
		"COPY users (email, full_name) FROM STDIN",
		"COPY users (email) FROM STDIN (FORMAT csv)",
		"COPY users (age, email, full_name) FROM STDIN",
	} {
		want := strings.Count(sql, ",") + 1
		if strings.Contains(sql, "csv") {
			want = 1
		}
		rc.send(&pgproto3.Query{String: sql})
		var in *pgproto3.CopyInResponse
		for in == nil {
			switch m := rc.recv().(type) {
			case *pgproto3.CopyInResponse:
				in = m
			case *pgproto3.ErrorResponse:
				t.Fatalf("%s: %s", sql, m.Message)
			}
		}
		if len(in.ColumnFormatCodes) != want {
			t.Errorf("%s: CopyInResponse announces %d columns, want %d", sql, len(in.ColumnFormatCodes), want)
		}
		rc.send(&pgproto3.CopyDone{})
		if got := strings.Join(rc.until("ReadyForQuery"), " "); got != "CommandComplete(COPY 0) ReadyForQuery" {
			t.Fatalf("%s: %s", sql, got)
		}
	}
	// Extended protocol.
	rc.send(&pgproto3.Parse{Query: "COPY users (email, full_name) FROM STDIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{})
	rc.until("BindComplete")
	in, ok := rc.recv().(*pgproto3.CopyInResponse)
	if !ok || len(in.ColumnFormatCodes) != 2 {
		t.Fatalf("extended: CopyInResponse %+v, want 2 columns", in)
	}
	rc.send(&pgproto3.CopyData{Data: []byte("e@x.io\tE\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
	if got := strings.Join(rc.until("ReadyForQuery"), " "); got != "CommandComplete(COPY 1) ReadyForQuery" {
		t.Fatalf("extended COPY: %s", got)
	}
}

// TestProtocolCopyForceOptions: FORCE_NOT_NULL and FORCE_NULL mean for an
// encrypted column what they mean in PostgreSQL (an unquoted null string is
// a value, encrypted; a quoted one is NULL), and COPY TO with FORCE_QUOTE
// writes exactly what PostgreSQL writes for the plaintext.
func TestProtocolCopyForceOptions(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	c := p.Conn(t)
	d := p.Direct(t)
	kr := p.Keyring(t)
	ctx := context.Background()
	stored := func(email string) (name, hash *string) {
		t.Helper()
		var id int64
		if err := c.QueryRow(ctx, "SELECT id FROM users WHERE email = $1", email).Scan(&id); err != nil {
			t.Fatalf("%s: %v", email, err)
		}
		if err := d.QueryRow(ctx, "SELECT full_name, email_hash FROM users WHERE id = $1", id).Scan(&name, &hash); err != nil {
			t.Fatal(err)
		}
		return name, hash
	}
	isEncryptedEmpty := func(what string, v *string) {
		t.Helper()
		if v == nil {
			t.Fatalf("%s: stored NULL, want a token of ''", what)
		}
		if !strings.HasPrefix(*v, "gAAAAA") {
			t.Fatalf("%s: stored %q, want a token of ''", what, *v)
		}
		if plain, _, err := kr.Open(nil, []byte(*v)); err != nil || len(plain) != 0 {
			t.Fatalf("%s: token opens to %q (%v), want ''", what, plain, err)
		}
	}

	// FORCE_NOT_NULL: the unquoted empty field is '' (encrypted), not NULL.
	_, err := c.PgConn().CopyFrom(ctx, strings.NewReader("fnn@x.io,\nfnn2@x.io,\"\"\n"),
		"COPY users (email, full_name) FROM STDIN (FORMAT csv, FORCE_NOT_NULL (full_name))")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"fnn@x.io", "fnn2@x.io"} {
		name, _ := stored(e)
		isEncryptedEmpty(e+" full_name", name)
	}
	// ... also on the searchable column: its blind index is that of ''.
	_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("NIL,Nil Email\n"),
		"COPY users (email, full_name) FROM STDIN (FORMAT csv, NULL 'NIL', FORCE_NOT_NULL (email))")
	if err != nil {
		t.Fatal(err)
	}
	var se, sh *string
	if err := d.QueryRow(ctx, "SELECT email, email_hash FROM users WHERE id = (SELECT max(id) FROM users)").Scan(&se, &sh); err != nil {
		t.Fatal(err)
	}
	if se == nil || sh == nil || *sh != string(kr.BlindIndex(nil, "public.users.email", []byte("NIL"))) {
		t.Fatalf("FORCE_NOT_NULL (email): email %v hash %v, want the token and blind index of 'NIL'", se, sh)
	}
	if plain, _, err := kr.Open(nil, []byte(*se)); err != nil || string(plain) != "NIL" {
		t.Fatalf("FORCE_NOT_NULL (email): token opens to %q (%v)", plain, err)
	}

	// FORCE_NULL: the quoted empty field is NULL, as the unquoted one.
	_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("fn@x.io,\"\"\nfn2@x.io,\n"),
		"COPY users (email, full_name) FROM STDIN (FORMAT csv, FORCE_NULL (full_name))")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"fn@x.io", "fn2@x.io"} {
		if name, _ := stored(e); name != nil {
			t.Fatalf("FORCE_NULL: %s full_name stored %q, want NULL", e, *name)
		}
	}
	// FORCE_NULL on the searchable column: email and its blind index NULL.
	_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("\"\",Nobody\n"),
		"COPY users (email, full_name) FROM STDIN (FORMAT csv, FORCE_NULL (email))")
	if err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, d, "SELECT count(*) FROM users WHERE email IS NULL AND email_hash IS NULL"); n != 1 {
		t.Fatalf("FORCE_NULL (email): %d rows with NULL email and blind index, want 1", n)
	}
	// Without the options, CSV's own rules.
	_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("plain@x.io,\"\"\nplain2@x.io,\n"),
		"COPY users (email, full_name) FROM STDIN (FORMAT csv)")
	if err != nil {
		t.Fatal(err)
	}
	name, _ := stored("plain@x.io")
	isEncryptedEmpty("quoted empty", name)
	if name, _ := stored("plain2@x.io"); name != nil {
		t.Fatalf("unquoted empty: stored %q, want NULL", *name)
	}
	// The * forms are PostgreSQL 17's: whatever this server says of them,
	// it says the same through pgveil, and where it takes them they mean
	// the same.
	mustExec(t, d, "CREATE TABLE plain_star (email text, full_name text)")
	for i, opt := range []string{"FORCE_NOT_NULL *", "FORCE_NULL *"} {
		data := fmt.Sprintf("star%d@x.io,\nstar%d@x.io,\"\"\n", i, i+10)
		_, errD := d.PgConn().CopyFrom(ctx, strings.NewReader(data), "COPY plain_star (email, full_name) FROM STDIN (FORMAT csv, "+opt+")")
		_, errP := c.PgConn().CopyFrom(ctx, strings.NewReader(data), "COPY users (email, full_name) FROM STDIN (FORMAT csv, "+opt+")")
		if errD != nil {
			want, got := pgErr(t, opt+" direct", errD), pgErr(t, opt, errP)
			if got.Code != want.Code || got.Message != want.Message {
				t.Errorf("%s: through pgveil %s %q, direct %s %q", opt, got.Code, got.Message, want.Code, want.Message)
			}
			continue
		}
		if errP != nil {
			t.Fatalf("%s: %v (PostgreSQL takes it)", opt, errP)
		}
		for _, e := range []string{fmt.Sprintf("star%d@x.io", i), fmt.Sprintf("star%d@x.io", i+10)} {
			var wantNull bool
			if err := d.QueryRow(ctx, "SELECT full_name IS NULL FROM plain_star WHERE email = $1", e).Scan(&wantNull); err != nil {
				t.Fatal(err)
			}
			name, _ := stored(e)
			if wantNull != (name == nil) {
				t.Errorf("%s %s: NULL %v through pgveil, %v in PostgreSQL", opt, e, name == nil, wantNull)
			} else if name != nil {
				isEncryptedEmpty(opt+" "+e, name)
			}
		}
	}
	assertNoPlaintext(t, p, "fnn@x.io", "Nil Email", "Nobody")
}

// TestProtocolCopyToAsPostgres: COPY TO STDOUT writes the decrypted values
// exactly as PostgreSQL writes the plaintext, FORCE_QUOTE and text-format
// escapes included. The same plaintexts in a table pgveil does not encrypt
// give PostgreSQL's own output to compare with.
func TestProtocolCopyToAsPostgres(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	c := p.Conn(t)
	d := p.Direct(t)
	ctx := context.Background()
	mustExec(t, d, "CREATE TABLE plain_users (LIKE users INCLUDING DEFAULTS)")
	str := func(s string) *string { return &s }
	for _, v := range [][2]*string{
		{str("q1@x.io"), str("Plain")},
		{str("q2@x.io"), str("")},
		{str("q3@x.io"), nil},
		{str("q4@x.io"), str(`with "quote", comma`)},
		{str("q5@x.io"), str("back\\slash\ttab\bbs\fff\vvt\nnl")},
		{str("q6@x.io"), str(`\.`)},
		{str("q7@x.io"), str("NIL")},
	} {
		mustExec(t, c, "INSERT INTO users (email, full_name) VALUES ($1, $2)", v[0], v[1])
	}
	rows, err := c.Query(ctx, "SELECT id, email, email_hash, full_name, age, created_at FROM users ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	plainRows, err := pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range plainRows {
		mustExec(t, d, "INSERT INTO plain_users (id, email, email_hash, full_name, age, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
			r["id"], r["email"], r["email_hash"], r["full_name"], r["age"], r["created_at"])
	}
	for _, form := range []string{
		"COPY (SELECT email, full_name FROM %s ORDER BY id) TO STDOUT (FORMAT csv, FORCE_QUOTE (full_name))",
		"COPY (SELECT full_name FROM %s ORDER BY id) TO STDOUT (FORMAT csv)",
		"COPY (SELECT full_name FROM %s ORDER BY id) TO STDOUT (FORMAT csv, FORCE_QUOTE *)",
		"COPY (SELECT email AS e, full_name FROM %s ORDER BY id) TO STDOUT (FORMAT csv, FORCE_QUOTE (e), NULL 'NIL')",
		"COPY (SELECT email, full_name FROM %s ORDER BY id) TO STDOUT (FORMAT csv, QUOTE '''', ESCAPE '\\', FORCE_QUOTE *)",
		"COPY %s (email, full_name) TO STDOUT (FORMAT csv, HEADER, FORCE_QUOTE (email))",
		"COPY %s TO STDOUT (FORMAT csv, FORCE_QUOTE (full_name, email_hash))",
		"COPY %s (email, full_name) TO STDOUT",
		"COPY %s (email, full_name) TO STDOUT (DELIMITER '|', NULL 'NIL')",
	} {
		var want, got strings.Builder
		if _, err := d.PgConn().CopyTo(ctx, &want, fmt.Sprintf(form, "plain_users")); err != nil {
			t.Fatalf("%s direct: %v", form, err)
		}
		if _, err := c.PgConn().CopyTo(ctx, &got, fmt.Sprintf(form, "users")); err != nil {
			t.Fatalf("%s: %v", form, err)
		}
		if got.String() != want.String() {
			t.Errorf("%s\n through pgveil: %q\n PostgreSQL:     %q", form, got.String(), want.String())
		}
	}
}

// TestProtocolCopyEncodingRefused: COPY with an ENCODING other than UTF-8
// on a configured table is refused up front (pgveil would encrypt, or
// return, text in another encoding as if it were UTF-8); UTF-8 itself is
// accepted.
func TestProtocolCopyEncodingRefused(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	c := p.Conn(t)
	ctx := context.Background()
	for _, sql := range []string{
		"COPY users (email, full_name) FROM STDIN (ENCODING 'LATIN1')",
		"COPY users (email, full_name) TO STDOUT (ENCODING 'latin1')",
		"COPY (SELECT full_name FROM users) TO STDOUT (FORMAT csv, ENCODING 'WIN1252')",
	} {
		var err error
		if strings.Contains(sql, "FROM STDIN") {
			_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("lat@x.io\tRen\xe9\n"), sql)
		} else {
			_, err = c.PgConn().CopyTo(ctx, &strings.Builder{}, sql)
		}
		pe := pgErr(t, sql, err)
		if pe.Code != "0A000" || !strings.HasPrefix(pe.Message, "pgveil: COPY with ENCODING") || !strings.Contains(pe.Message, "users") {
			t.Errorf("%s: got %s %q, want 0A000 naming the ENCODING option", sql, pe.Code, pe.Message)
		}
		if n := countRows(t, c, "SELECT 7"); n != 7 {
			t.Fatal("connection unusable")
		}
	}
	tag, err := c.PgConn().CopyFrom(ctx, strings.NewReader("utf@x.io\tRené\n"), "COPY users (email, full_name) FROM STDIN (ENCODING 'UTF-8')")
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("ENCODING 'UTF-8': %v %v", err, tag)
	}
	var name string
	if err := c.QueryRow(ctx, "SELECT full_name FROM users WHERE email = 'utf@x.io'").Scan(&name); err != nil || name != "René" {
		t.Fatalf("read back %q %v", name, err)
	}
	if n := countRows(t, p.Direct(t), "SELECT count(*) FROM users WHERE full_name LIKE 'gAAAAA%'"); n != 1 {
		t.Fatal("ENCODING 'UTF-8' stored no token")
	}
}

// TestProtocolServerMessageOverLimit: proxy.max_message_size bounds what
// pgveil holds, not what it passes on: a row or COPY row larger than the
// limit that pgveil need not decrypt streams through on both I/O engines;
// one it must decrypt ends the session with a clear 54000 and a warning in
// the log, never a bare EOF.
func TestProtocolServerMessageOverLimit(t *testing.T) {
	for _, engine := range []struct {
		name  string
		loops int
	}{{"goroutines", 0}, {"event loop", 1}} {
		t.Run(engine.name, func(t *testing.T) {
			p := startProxy(t, proxyOpts{mutate: func(c *config.Config) {
				c.Proxy.MaxMessageSize = 1 << 20
				c.Proxy.EventLoops = &engine.loops
			}})
			ctx := context.Background()
			c := p.Conn(t)
			var n int
			var s string
			if err := c.QueryRow(ctx, "SELECT length(x), x FROM (SELECT repeat('x', 3000000) AS x) s").Scan(&n, &s); err != nil {
				t.Fatalf("big plain row: %v", err)
			}
			if n != 3000000 || len(s) != 3000000 || strings.Trim(s, "x") != "" {
				t.Fatalf("big plain row: length %d, got %d bytes", n, len(s))
			}
			// Extended protocol, binary results.
			var b []byte
			if err := c.QueryRow(ctx, "SELECT decode(repeat('ab', $1::int), 'hex')", 1500000).Scan(&b); err != nil || len(b) != 1500000 {
				t.Fatalf("big binary row: %d bytes, %v", len(b), err)
			}
			var out strings.Builder
			if _, err := c.PgConn().CopyTo(ctx, &out, "COPY (SELECT repeat('y', 2500000)) TO STDOUT"); err != nil || out.Len() != 2500001 {
				t.Fatalf("big COPY row: %d bytes, %v", out.Len(), err)
			}
			// A big row of a configured table without an encrypted column.
			mustExec(t, c, "INSERT INTO users (email, full_name, age) VALUES ('big@x.io', 'Big', 1)")
			if err := c.QueryRow(ctx, "SELECT length(repeat(age::text, 2000000)), repeat(age::text, 2000000) FROM users WHERE email = 'big@x.io'").Scan(&n, &s); err != nil || len(s) != 2000000 {
				t.Fatalf("big row of users: %d bytes, %v", len(s), err)
			}
			if err := c.QueryRow(ctx, "SELECT 42").Scan(&n); err != nil || n != 42 {
				t.Fatalf("after big rows: %v", err)
			}

			// From the client: a CopyData over the limit of a COPY pgveil
			// does not rewrite streams through too.
			rc := dialRaw(t, p.Addr, pgtest.TrustUser, p.DB)
			rc.send(&pgproto3.Query{String: "COPY plain_notes (body) FROM STDIN"})
			rc.until("CopyInResponse")
			rc.send(&pgproto3.CopyData{Data: []byte(strings.Repeat("w", 2500000) + "\n")}, &pgproto3.CopyDone{})
			if got := strings.Join(rc.until("ReadyForQuery"), " "); got != "CommandComplete(COPY 1) ReadyForQuery" {
				t.Fatalf("big CopyData to a plain table: %s", got)
			}
			if n := countRows(t, p.Direct(t), "SELECT max(length(body)) FROM plain_notes"); n != 2500000 {
				t.Fatalf("big CopyData stored %d bytes", n)
			}
			// A CopyData over the limit of a COPY pgveil rewrites: 54000,
			// nothing stored, the session usable.
			rc.send(&pgproto3.Query{String: "COPY users (email, full_name) FROM STDIN"})
			rc.until("CopyInResponse")
			rc.send(&pgproto3.CopyData{Data: []byte("ok@x.io\tOk\n")},
				&pgproto3.CopyData{Data: []byte("w@x.io\t" + strings.Repeat("w", 2500000) + "\n")}, &pgproto3.CopyDone{})
			if got := strings.Join(rc.until("ReadyForQuery"), " "); got != "ErrorResponse(54000) ReadyForQuery" {
				t.Fatalf("big CopyData to an encrypted table: %s", got)
			}
			rc.send(&pgproto3.Query{String: "SELECT count(*) FROM users WHERE email = 'ok@x.io'"})
			if got := strings.Join(rc.until("ReadyForQuery"), " "); got != "RowDescription DataRow(0) CommandComplete(SELECT 1) ReadyForQuery" {
				t.Fatalf("after the big CopyData: %s", got)
			}
			// A client message that ends the session gets its FATAL
			// before the close on both engines (a Query without its NUL).
			if _, err := rc.nc.Write([]byte("Q\x00\x00\x00\x0cSELECT 1")); err != nil {
				t.Fatal(err)
			}
			m, err := rc.fe.Receive()
			if er, ok := m.(*pgproto3.ErrorResponse); err != nil || !ok || er.Severity != "FATAL" || er.Code != "08P01" {
				t.Fatalf("malformed Query: %#v %v, want FATAL 08P01", m, err)
			}
			if m, err := rc.fe.Receive(); err == nil {
				t.Fatalf("malformed Query: %T after the FATAL, want the connection closed", m)
			}

			// An encrypted value whose row is over the limit.
			big := strings.Repeat("z", 900000)
			mustExec(t, c, "INSERT INTO users (email, full_name) VALUES ('huge@x.io', $1)", big)
			err = c.QueryRow(ctx, "SELECT full_name FROM users WHERE email = 'huge@x.io'").Scan(&s)
			pe := pgErr(t, "encrypted row over the limit", err)
			if pe.Code != "54000" || pe.Severity != "FATAL" || !strings.Contains(pe.Message, "proxy.max_message_size") ||
				!strings.Contains(pe.Message, "closes the connection") {
				t.Fatalf("encrypted row over the limit: %s %s %q", pe.Severity, pe.Code, pe.Message)
			}
			if !strings.Contains(p.Logs.String(), `"level":"WARN","msg":"server message over proxy.max_message_size`) {
				t.Errorf("no warning logged:\n%s", p.Logs.String())
			}
			// A new connection works.
			c2 := p.Conn(t)
			if err := c2.QueryRow(ctx, "SELECT 43").Scan(&n); err != nil || n != 43 {
				t.Fatalf("new connection after the refusal: %v", err)
			}
		})
	}
}

// TestProtocolCopyCSVEscape: with an ESCAPE other than the quote character,
// rows and fields split where PostgreSQL splits them, so each encrypted
// value is the one PostgreSQL would have stored.
func TestProtocolCopyCSVEscape(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	c := p.Conn(t)
	d := p.Direct(t)
	ctx := context.Background()
	mustExec(t, d, "CREATE TABLE plain_esc (id serial, email text, full_name text)")
	data := "esc1@x.io,\"say \\\"hi\\\", ok\"\n" +
		"\"esc2@x.io\",\"back\\\\slash\\\\\"\n" +
		"esc3@x.io,\"quote \\\",\nnext line\"\n" +
		"esc4@x.io,\"a\\\",b\"\n"
	const opts = " (email, full_name) FROM STDIN (FORMAT csv, ESCAPE '\\')"
	if _, err := d.PgConn().CopyFrom(ctx, strings.NewReader(data), "COPY plain_esc"+opts); err != nil {
		t.Fatalf("direct: %v", err)
	}
	tag, err := c.PgConn().CopyFrom(ctx, &chunkReader{s: data, n: 3}, "COPY users"+opts)
	if err != nil || tag.RowsAffected() != 4 {
		t.Fatalf("through pgveil: %v %v", err, tag)
	}
	pairs := func(conn *pgx.Conn, sql string) []string {
		t.Helper()
		rows, err := conn.Query(ctx, sql)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var e, n string
			err := r.Scan(&e, &n)
			return e + "|" + n, err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	want := pairs(d, "SELECT email, full_name FROM plain_esc ORDER BY id")
	got := pairs(c, "SELECT email, full_name FROM users ORDER BY id")
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("through pgveil %q, PostgreSQL %q", got, want)
	}
	var out, direct strings.Builder
	const to = " (email, full_name) TO STDOUT (FORMAT csv, ESCAPE '\\')"
	if _, err := d.PgConn().CopyTo(ctx, &direct, "COPY plain_esc"+to); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PgConn().CopyTo(ctx, &out, "COPY users"+to); err != nil {
		t.Fatal(err)
	}
	if out.String() != direct.String() {
		t.Fatalf("COPY TO through pgveil %q, PostgreSQL %q", out.String(), direct.String())
	}
	assertNoPlaintext(t, p, "say", "back", "next line")
}

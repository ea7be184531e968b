package test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgveil/pgveil/test/pgtest"
)

// simpleExec runs sql as one simple-protocol Query (several statements
// allowed) and returns its first error.
func simpleExec(c *pgx.Conn, sql string) error {
	_, err := c.PgConn().Exec(context.Background(), sql).ReadAll()
	return err
}

// mustBeUsable fails unless c still runs statements, in both protocols.
func mustBeUsable(t testing.TB, c *pgx.Conn) {
	t.Helper()
	if err := simpleExec(c, "SELECT 1"); err != nil {
		t.Fatalf("connection not usable (simple): %v", err)
	}
	var one int
	if err := c.QueryRow(context.Background(), "SELECT $1::int", 1).Scan(&one); err != nil || one != 1 {
		t.Fatalf("connection not usable (extended): %v", err)
	}
}

// storedCount counts rows directly in PostgreSQL.
func storedCount(t testing.TB, db *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestEncryptionStandardConformingStrings: with standard_conforming_strings
// off PostgreSQL reads backslash escapes in '...', pgveil does not; a
// statement with a backslash that may touch a configured table is then
// refused with 0A000 (here a literal that pgveil would read as 'enc' hides
// a plaintext value PostgreSQL stores), and so is one that may run after a
// change of the setting PostgreSQL has not reported yet. The connection
// stays usable, other tables and texts without a backslash work, and
// nothing reaches an encrypted column in plaintext.
func TestEncryptionStandardConformingStrings(t *testing.T) {
	p := startProxy(t, proxyOpts{schema: appSchema + "ALTER TABLE chat_history ADD COLUMN note text;"})
	ctx := context.Background()
	direct := p.Direct(t)
	const secret = "SECRET-PLAINTEXT-SCS"
	smuggle := `INSERT INTO chat_history (user_id, note, message) VALUES (2, 'x\', /* ', '` + secret + `') -- */ 'enc')`
	backslash := `INSERT INTO chat_history (user_id, message) VALUES (3, 'a\\b-SCS-PLAIN')`
	const isOff, mayChange = "standard_conforming_strings is off", "standard_conforming_strings may have changed"
	refused := func(err error, msg string) bool {
		return sqlState(err) == "0A000" && strings.Contains(pgMessage(err), msg)
	}

	t.Run("off", func(t *testing.T) {
		c := p.Conn(t)
		if err := simpleExec(c, "SET standard_conforming_strings = off"); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, sql string
			extended  bool
		}{
			{"literal hiding a value from pgveil", smuggle, false},
			{"backslash escape", backslash, false},
			{"backslash escape, extended", backslash, true},
			{"lookup", `SELECT id FROM users WHERE email = 'a\\b'`, false},
			{"lookup, extended", `SELECT id FROM users WHERE email = 'a\\b'`, true},
		} {
			var err error
			if tc.extended {
				err = c.PgConn().ExecParams(ctx, tc.sql, nil, nil, nil, nil).Read().Err
			} else {
				err = simpleExec(c, tc.sql)
			}
			if !refused(err, isOff) {
				t.Errorf("%s: want 0A000 %q, got %v", tc.name, isOff, err)
			}
			mustBeUsable(t, c)
		}
		// Without a backslash a text reads the same either way: it works.
		if err := simpleExec(c, `INSERT INTO chat_history (user_id, message) VALUES (8, 'it''s off')`); err != nil {
			t.Fatalf("no backslash: %v", err)
		}
		// A table that is not configured works, read as PostgreSQL reads it.
		if err := simpleExec(c, `INSERT INTO plain_notes (body) VALUES ('scs\\off')`); err != nil {
			t.Fatalf("plain table: %v", err)
		}
		if n := storedCount(t, direct, `SELECT count(*) FROM plain_notes WHERE body = $1`, `scs\off`); n != 1 {
			t.Fatalf("plain table: %d rows hold the value PostgreSQL read", n)
		}
		// Back on, statements on configured tables work again.
		if err := simpleExec(c, "SET standard_conforming_strings = on"); err != nil {
			t.Fatal(err)
		}
		if err := simpleExec(c, `INSERT INTO chat_history (user_id, message) VALUES (4, 'on\\n')`); err != nil {
			t.Fatalf("on again: %v", err)
		}
		var msg string
		if err := c.QueryRow(ctx, "SELECT message FROM chat_history WHERE user_id = 4").Scan(&msg); err != nil || msg != `on\\n` {
			t.Fatalf("on again: read %q, %v", msg, err)
		}
		if err := c.QueryRow(ctx, "SELECT message FROM chat_history WHERE user_id = 8").Scan(&msg); err != nil || msg != "it's off" {
			t.Fatalf("no backslash: read %q, %v", msg, err)
		}
	})

	t.Run("off at login", func(t *testing.T) {
		c := p.Conn(t, "options", "-cstandard_conforming_strings=off")
		if v := c.PgConn().ParameterStatus("standard_conforming_strings"); v != "off" {
			t.Fatalf("login reports standard_conforming_strings=%q", v)
		}
		if err := simpleExec(c, backslash); !refused(err, isOff) {
			t.Errorf("want 0A000 %q, got %v", isOff, err)
		}
		mustBeUsable(t, c)
	})

	t.Run("changed in the same message", func(t *testing.T) {
		// PostgreSQL parses a simple Query's whole text before running
		// any of it: the rest of the text is read with the value in force
		// when the message arrived, as pgveil reads it.
		c := p.Conn(t)
		if err := simpleExec(c, `SET standard_conforming_strings = off; INSERT INTO plain_notes (body) VALUES ('same\\message')`); err != nil {
			t.Fatal(err)
		}
		if n := storedCount(t, direct, `SELECT count(*) FROM plain_notes WHERE body = $1`, `same\\message`); n != 1 {
			t.Fatalf("plain table: %d rows hold the text as read with standard_conforming_strings on", n)
		}
		if err := simpleExec(c, "SET standard_conforming_strings = on; "+`INSERT INTO chat_history (user_id, message) VALUES (6, 'same\\message')`); !refused(err, isOff) {
			t.Errorf("SET on; INSERT while off: want 0A000 %q, got %v", isOff, err)
		}
		if err := simpleExec(c, "SET standard_conforming_strings = on"); err != nil {
			t.Fatal(err)
		}
		if err := simpleExec(c, "SET standard_conforming_strings = off; "+`INSERT INTO chat_history (user_id, message) VALUES (6, 'same\\message')`); err != nil {
			t.Fatalf("SET off; INSERT while on: %v", err)
		}
		if err := simpleExec(c, backslash); !refused(err, isOff) {
			t.Errorf("after SET in a message: want 0A000 %q, got %v", isOff, err)
		}
		if err := simpleExec(c, "SET standard_conforming_strings = on"); err != nil {
			t.Fatal(err)
		}
		var msg string
		if err := c.QueryRow(ctx, "SELECT message FROM chat_history WHERE user_id = 6").Scan(&msg); err != nil || msg != `same\\message` {
			t.Fatalf("read back %q, %v", msg, err)
		}
		mustBeUsable(t, c)
	})

	t.Run("changed earlier in the pipeline", func(t *testing.T) {
		c := p.Conn(t)
		batch := &pgconn.Batch{}
		batch.ExecParams("SET standard_conforming_strings = off", nil, nil, nil, nil)
		batch.ExecParams(backslash, nil, nil, nil, nil)
		results, err := c.PgConn().ExecBatch(ctx, batch).ReadAll()
		if err == nil && len(results) == 2 {
			err = results[1].Err
		}
		if len(results) < 1 || results[0].Err != nil || !refused(err, mayChange) {
			t.Errorf("extended pipeline: want SET, then 0A000 %q; got %d results, %v", mayChange, len(results), err)
		}
		mustBeUsable(t, c)

		// Two simple queries sent at once: pgveil reads the second before
		// PostgreSQL has answered the first.
		rc := dialRaw(t, p.Addr, pgtest.TrustUser, p.DB)
		rc.send(&pgproto3.Query{String: "SET standard_conforming_strings = off"}, &pgproto3.Query{String: backslash})
		first, second := strings.Join(rc.until("ReadyForQuery"), " "), strings.Join(rc.until("ReadyForQuery"), " ")
		if first != "CommandComplete(SET) ParameterStatus ReadyForQuery" || second != "ErrorResponse(0A000) ReadyForQuery" {
			t.Errorf("pipelined queries: %q, then %q", first, second)
		}
	})

	t.Run("SET LOCAL undone by COMMIT", func(t *testing.T) {
		c := p.Conn(t, "options", "-cstandard_conforming_strings=off")
		for _, sql := range []string{"BEGIN", "SET LOCAL standard_conforming_strings = on"} {
			if err := simpleExec(c, sql); err != nil {
				t.Fatal(err)
			}
		}
		// On inside the transaction: both read the literal alike.
		if err := simpleExec(c, `INSERT INTO chat_history (user_id, message) VALUES (5, 'local\\on')`); err != nil {
			t.Fatalf("inside the transaction: %v", err)
		}
		if err := simpleExec(c, "COMMIT"); err != nil {
			t.Fatal(err)
		}
		if err := simpleExec(c, backslash); !refused(err, isOff) {
			t.Errorf("after the transaction: want 0A000 %q, got %v", isOff, err)
		}
		mustBeUsable(t, c)

		// The COMMIT turns it off again before a message sent right
		// behind it is read.
		rc := dialRaw(t, p.Addr, pgtest.TrustUser, p.DB)
		for _, sql := range []string{"SET standard_conforming_strings = off", "BEGIN", "SET LOCAL standard_conforming_strings = on"} {
			rc.send(&pgproto3.Query{String: sql})
			if got := strings.Join(rc.until("ReadyForQuery"), " "); strings.Contains(got, "Error") {
				t.Fatalf("%s: %s", sql, got)
			}
		}
		rc.send(&pgproto3.Query{String: "COMMIT"}, &pgproto3.Query{String: backslash})
		first, second := strings.Join(rc.until("ReadyForQuery"), " "), strings.Join(rc.until("ReadyForQuery"), " ")
		if first != "CommandComplete(COMMIT) ParameterStatus ReadyForQuery" || second != "ErrorResponse(0A000) ReadyForQuery" {
			t.Errorf("COMMIT, then INSERT: %q, then %q", first, second)
		}
	})

	if n := storedCount(t, direct, "SELECT count(*) FROM chat_history WHERE user_id IN (2, 3) OR message NOT LIKE 'gAAAAA%'"); n != 0 {
		t.Fatalf("%d rows of chat_history were written by refused statements or hold plaintext", n)
	}
	assertNoPlaintext(t, p, secret, "SCS-PLAIN")
}

// TestStartupKeptStandardConformingStrings: a session moved to a kept
// backend follows that backend's standard_conforming_strings, not what its
// own login reported: here the role's setting was off when the kept backend
// logged in and was reset since, so the new login says on while the kept
// backend still reads literals with it off. Named TestStartup... so that
// make test runs it on both I/O engines.
func TestStartupKeptStandardConformingStrings(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	ctx := context.Background()
	direct := p.Direct(t)
	roleInDB := fmt.Sprintf("ALTER ROLE %s IN DATABASE %s", pgx.Identifier{pgtest.TrustUser}.Sanitize(), pgx.Identifier{p.DB}.Sanitize())
	mustExec(t, direct, roleInDB+" SET standard_conforming_strings = off")
	t.Cleanup(func() { _, _ = p.Direct(t).Exec(context.Background(), roleInDB+" RESET standard_conforming_strings") })

	c1 := p.Conn(t)
	if v := c1.PgConn().ParameterStatus("standard_conforming_strings"); v != "off" {
		t.Fatalf("first login reports standard_conforming_strings=%q", v)
	}
	pid := backendPID(t, c1)
	if err := c1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitGauge(t, p.Reg, "pgveil_upstream_idle_connections", 1)
	mustExec(t, direct, roleInDB+" RESET standard_conforming_strings")

	c2 := p.Conn(t)
	if got := backendPID(t, c2); got != pid {
		t.Fatalf("second client on backend %d, want the kept %d", got, pid)
	}
	if v := c2.PgConn().ParameterStatus("standard_conforming_strings"); v != "on" {
		t.Fatalf("second login reports standard_conforming_strings=%q", v)
	}
	var v string
	if err := c2.QueryRow(ctx, "SHOW standard_conforming_strings").Scan(&v); err != nil || v != "off" {
		t.Fatalf("kept backend: standard_conforming_strings %q, %v", v, err)
	}
	err := simpleExec(c2, `INSERT INTO chat_history (user_id, message) VALUES (7, 'kept\\SCS-KEPT-PLAIN')`)
	if sqlState(err) != "0A000" || !strings.Contains(pgMessage(err), "standard_conforming_strings is off") {
		t.Fatalf("on the kept backend: want 0A000, got %v", err)
	}
	mustBeUsable(t, c2)
	if n := storedCount(t, direct, "SELECT count(*) FROM chat_history"); n != 0 {
		t.Fatalf("%d rows written", n)
	}
}

// TestEncryptionParamTypes: a parameter pgveil encrypts or hashes must be
// declared text, varchar, bpchar, unknown or nothing (text[] or varchar[]
// for = ANY). Any other type is refused with 0A000, in binary format (an
// int4 is four raw bytes, which PostgreSQL stores as '1094861636') and in
// text: nothing is stored, the connection stays usable, the rest of the
// extended batch is skipped up to Sync. bpchar loses its trailing spaces,
// as PostgreSQL's cast to text does.
func TestEncryptionParamTypes(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	ctx := context.Background()
	direct := p.Direct(t)
	c := p.Conn(t)
	pc := c.PgConn()
	int4 := []byte{0x41, 0x42, 0x43, 0x44}
	const (
		insChat  = "INSERT INTO chat_history (user_id, message) VALUES (11, $1)"
		insEmail = "INSERT INTO users (email) VALUES ($1)"
		lookup   = "SELECT id FROM users WHERE email = $1"
		anyOf    = "SELECT id FROM users WHERE email = ANY($1)"
	)
	for _, tc := range []struct {
		name, sql, column string
		oid               uint32
		format            int16
		value             []byte
	}{
		{"int4 binary", insChat, "chat_history.message", 23, 1, int4},
		{"int8 binary", insChat, "chat_history.message", 20, 1, []byte{0, 0, 0, 0, 0x41, 0x42, 0x43, 0x44}},
		{"uuid binary", insChat, "chat_history.message", 2950, 1, make([]byte, 16)},
		{"bool binary", insChat, "chat_history.message", 16, 1, []byte{1}},
		{"int4 text", insChat, "chat_history.message", 23, 0, []byte("0042")},
		{"int4 binary, encrypted and hashed", insEmail, "users.email", 23, 1, int4},
		{"int4 binary, lookup", lookup, "users.email", 23, 1, int4},
		{"int4[] for = ANY", anyOf, "users.email", 1007, 0, []byte("{1,2}")},
		{"binary int4[] for = ANY", anyOf, "users.email", 0, 1, pgtest.BinaryArray(23, int4)},
	} {
		var oids []uint32
		if tc.oid != 0 {
			oids = []uint32{tc.oid}
		}
		err := pc.ExecParams(ctx, tc.sql, [][]byte{tc.value}, oids, []int16{tc.format}, nil).Read().Err
		if sqlState(err) != "0A000" || !strings.Contains(pgMessage(err), tc.column) {
			t.Errorf("%s: want 0A000 naming %s, got %v", tc.name, tc.column, err)
		}
		mustBeUsable(t, c)
	}
	if n := storedCount(t, direct, "SELECT (SELECT count(*) FROM chat_history) + (SELECT count(*) FROM users)"); n != 0 {
		t.Fatalf("%d rows written by refused statements", n)
	}

	// The rest of the batch is skipped up to Sync, as after any error.
	rc := dialRaw(t, p.Addr, pgtest.TrustUser, p.DB)
	rc.send(&pgproto3.Parse{Query: insChat, ParameterOIDs: []uint32{23}},
		&pgproto3.Bind{ParameterFormatCodes: []int16{1}, Parameters: [][]byte{int4}}, &pgproto3.Execute{},
		&pgproto3.Parse{Query: "INSERT INTO plain_notes (body) VALUES ('after')"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Sync{})
	if got := strings.Join(rc.until("ReadyForQuery"), " "); got != "ErrorResponse(0A000) ReadyForQuery" {
		t.Fatalf("batch: %s", got)
	}
	rc.send(&pgproto3.Query{String: "SELECT count(*) FROM plain_notes"})
	if got := strings.Join(rc.until("ReadyForQuery"), " "); got != "RowDescription DataRow(0) CommandComplete(SELECT 1) ReadyForQuery" {
		t.Fatalf("after the batch: %s", got)
	}

	// Text types go through, in either format.
	kr := p.Keyring(t)
	for i, tc := range []struct {
		oid          uint32
		format       int16
		value, plain string
	}{
		{25, 1, "binary text SCS", "binary text SCS"},
		{1043, 1, "binary varchar", "binary varchar"},
		{0, 1, "binary unspecified", "binary unspecified"},
		{1042, 0, "bpchar text   ", "bpchar text"},
		{1042, 1, "bpchar binary  ", "bpchar binary"},
	} {
		var oids []uint32
		if tc.oid != 0 {
			oids = []uint32{tc.oid}
		}
		sql := fmt.Sprintf("INSERT INTO chat_history (user_id, message) VALUES (%d, $1)", 100+i)
		if err := pc.ExecParams(ctx, sql, [][]byte{[]byte(tc.value)}, oids, []int16{tc.format}, nil).Read().Err; err != nil {
			t.Fatalf("type %d format %d: %v", tc.oid, tc.format, err)
		}
		var stored *string
		if err := direct.QueryRow(ctx, "SELECT message FROM chat_history WHERE user_id = $1", 100+i).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if stored == nil || !strings.HasPrefix(*stored, "gAAAAA") {
			t.Fatalf("type %d format %d: stored %v", tc.oid, tc.format, stored)
		}
		if plain, _, err := kr.Open(nil, []byte(*stored)); err != nil || string(plain) != tc.plain {
			t.Fatalf("type %d format %d: stored token opens to %q, %v; want %q", tc.oid, tc.format, plain, err, tc.plain)
		}
	}

	// bpchar through a blind index: the padded value finds the row.
	if err := pc.ExecParams(ctx, insEmail, [][]byte{[]byte("pad@x.io   ")}, []uint32{1042}, nil, nil).Read().Err; err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		oid    uint32
		format int16
		value  string
	}{{0, 0, "pad@x.io"}, {1042, 0, "pad@x.io "}, {1042, 1, "pad@x.io  "}, {25, 1, "pad@x.io"}} {
		var oids []uint32
		if tc.oid != 0 {
			oids = []uint32{tc.oid}
		}
		res := pc.ExecParams(ctx, lookup, [][]byte{[]byte(tc.value)}, oids, []int16{tc.format}, nil).Read()
		if res.Err != nil || len(res.Rows) != 1 {
			t.Fatalf("lookup %q as type %d format %d: %d rows, %v", tc.value, tc.oid, tc.format, len(res.Rows), res.Err)
		}
	}
	// = ANY with a binary text[] (pgx's own encoding) and a text-format one.
	var n int
	if err := c.QueryRow(ctx, anyOf, []string{"pad@x.io", "none@x.io"}).Scan(new(int64)); err != nil {
		t.Fatalf("= ANY, pgx: %v", err)
	}
	res := pc.ExecParams(ctx, anyOf, [][]byte{pgtest.BinaryArray(25, []byte("pad@x.io"))}, nil, []int16{1}, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 {
		t.Fatalf("= ANY, binary text[]: %d rows, %v", len(res.Rows), res.Err)
	}
	res = pc.ExecParams(ctx, anyOf, [][]byte{[]byte(`{"pad@x.io",x}`)}, []uint32{1009}, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 {
		t.Fatalf("= ANY, text[]: %d rows, %v", len(res.Rows), res.Err)
	}
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM users WHERE email LIKE 'gAAAAA%' AND email_hash ~ '^[0-9a-f]{64}$'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("users: %d encrypted rows, %v", n, err)
	}
	assertNoPlaintext(t, p, "binary text SCS", "binary varchar", "binary unspecified", "bpchar text", "bpchar binary", "pad@x.io")
}

// TestEncryptionNumberComparedWithColumn: PostgreSQL has no operator text =
// integer, so `email = 42` is an error (42883), not a lookup of the text
// "42"; through pgveil it is the same error (pgveil raises it, its message
// says so), whichever form of the
// statement pgveil planned first (its plan cache keys statements by their
// text with the constants cut out), and the connection stays usable.
func TestEncryptionNumberComparedWithColumn(t *testing.T) {
	p := startProxy(t, proxyOpts{schema: appSchema})
	ctx := context.Background()
	direct := p.Direct(t)
	if _, err := direct.Exec(ctx, "CREATE TABLE plain_users (id int, email text)"); err != nil {
		t.Fatal(err)
	}
	c := p.Conn(t)
	if err := simpleExec(c, "INSERT INTO users (email) VALUES (42)"); err != nil {
		t.Fatalf("a number assigned to an encrypted column is stored as its text in PostgreSQL: %v", err)
	}
	var stored string
	if err := direct.QueryRow(ctx, "SELECT email FROM users WHERE email_hash IS NOT NULL ORDER BY id DESC LIMIT 1").Scan(&stored); err != nil || !strings.HasPrefix(stored, "gAAAAA") {
		t.Fatalf("stored %q (%v), want a token", stored, err)
	}
	for _, tc := range []struct{ where, code string }{
		{"email = '42'", ""},
		{"email = 42", "42883"},
		{"42 <> email", "42883"},
		{"email IN ('42', 4.5)", "42883"},
		{"email = 42::text", ""},
		{"email = '42'", ""},
	} {
		want := simpleExec(direct, "SELECT id FROM plain_users WHERE "+tc.where)
		if sqlState(want) != tc.code {
			t.Fatalf("direct %s: %v, want %q", tc.where, want, tc.code)
		}
		var n int
		err := c.QueryRow(ctx, "SELECT count(*) FROM users WHERE "+tc.where, pgx.QueryExecModeSimpleProtocol).Scan(&n)
		if sqlState(err) != tc.code {
			t.Fatalf("through pgveil %s: %v, want %q", tc.where, err, tc.code)
		}
		if tc.code == "" && n != 1 {
			t.Fatalf("through pgveil %s: %d rows, want 1", tc.where, n)
		}
		if tc.code != "" && pgMessage(err) != "pgveil: "+strings.TrimPrefix(pgMessage(want), "ERROR: ") {
			t.Fatalf("through pgveil %s: %q, PostgreSQL says %q", tc.where, pgMessage(err), pgMessage(want))
		}
	}
	mustBeUsable(t, c)
}

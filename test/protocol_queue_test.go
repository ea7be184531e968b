package test

// Orderings that once put pgveil's record of the replies it awaits (the
// expect queue) out of step with PostgreSQL. Once out of step, the results
// of later statements are matched with the wrong entry and come back to
// the client undecrypted, so every test ends by reading an encrypted
// column. Where PostgreSQL alone answers the same messages, the client must
// see exactly what it would see connected directly.

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/test/pgtest"
)

// trace reads messages up to and including the first whose transcript
// starts with stop, and returns their transcript: message types with
// DataRow values, error codes, command tags and ReadyForQuery's transaction
// status.
func (rc *rawConn) trace(stop string) string {
	rc.t.Helper()
	var out []string
	for {
		m := rc.recv()
		s := msgText(m)
		switch m := m.(type) {
		case *pgproto3.ReadyForQuery:
			s += "(" + string(m.TxStatus) + ")"
		case *pgproto3.NoticeResponse:
			continue
		}
		out = append(out, s)
		if strings.HasPrefix(s, stop) {
			return strings.Join(out, " ")
		}
	}
}

// queueRig is a proxy with one user row written through it, and a second
// database with the same schema and the same row in plaintext, for
// running a script straight against PostgreSQL.
type queueRig struct {
	p        *testProxy
	directDB string
}

func newQueueRig(t *testing.T, mutate func(*config.Config)) *queueRig {
	t.Helper()
	p := startProxy(t, proxyOpts{mutate: mutate})
	mustExec(t, p.Conn(t), "INSERT INTO users (email, full_name) VALUES ($1, $2)", "a@x.io", "Alice")
	db := createAppDB(t, p.Cluster, "")
	su := p.Cluster.Superuser(t, db)
	mustExec(t, su, "INSERT INTO users (email, full_name) VALUES ('a@x.io', 'Alice')")
	return &queueRig{p: p, directDB: db}
}

func (r *queueRig) proxied(t *testing.T) *rawConn {
	return dialRaw(t, r.p.Addr, pgtest.TrustUser, r.p.DB)
}

func (r *queueRig) direct(t *testing.T) *rawConn {
	return dialRaw(t, r.p.Cluster.Addr(), pgtest.TrustUser, r.directDB)
}

// same runs script straight against PostgreSQL and through pgveil, each on a
// new connection, in a subtest, which fails unless both transcripts equal
// want.
func (r *queueRig) same(t *testing.T, name, want string, script func(rc *rawConn) string) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		if got := script(r.direct(t)); got != want {
			t.Fatalf("straight to PostgreSQL:\n got %s\nwant %s", got, want)
		}
		if got := script(r.proxied(t)); got != want {
			t.Fatalf("through pgveil:\n got %s\nwant %s", got, want)
		}
	})
}

// readUsers reads the encrypted columns on rc; it must be plaintext.
func readUsers(t *testing.T, rc *rawConn, want string) {
	t.Helper()
	rc.send(&pgproto3.Query{String: "SELECT email, full_name FROM users ORDER BY id"})
	if got := rc.trace("ReadyForQuery"); got != want {
		t.Fatalf("reading users afterwards:\n got %s\nwant %s", got, want)
	}
	// And once more through the extended protocol.
	rc.send(&pgproto3.Parse{Query: "SELECT email, full_name FROM users ORDER BY id"}, &pgproto3.Bind{},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	want = strings.Replace(want, "RowDescription", "ParseComplete BindComplete", 1)
	if got := rc.trace("ReadyForQuery"); got != want {
		t.Fatalf("reading users afterwards (extended):\n got %s\nwant %s", got, want)
	}
}

const aliceOnly = "RowDescription DataRow(a@x.io,Alice) CommandComplete(SELECT 1) ReadyForQuery(I)"

// readAlice reads the first user's encrypted columns, with a simple query
// and then through the extended protocol, and returns the transcript
// (aliceRead when they come back decrypted).
func readAlice(rc *rawConn) string {
	sql := "SELECT email, full_name FROM users WHERE id = 1"
	rc.send(&pgproto3.Query{String: sql})
	simple := rc.trace("ReadyForQuery")
	rc.send(&pgproto3.Parse{Query: sql}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	return simple + " | " + rc.trace("ReadyForQuery")
}

const aliceRead = aliceOnly + " | ParseComplete BindComplete DataRow(a@x.io,Alice) CommandComplete(SELECT 1) ReadyForQuery(I)"

// TestProtocolErrorBeforeRestOfBatch: PostgreSQL's error arrives before the
// client has sent the rest of its batch. PostgreSQL skips everything up to
// the client's Sync, so pgveil must not wait for replies to it.
func TestProtocolErrorBeforeRestOfBatch(t *testing.T) {
	r := newQueueRig(t, func(c *config.Config) { c.Proxy.MaxMessageSize = 1 << 20 })

	r.same(t, "error_read_early",
		"ParseComplete BindComplete ErrorResponse(22012) | ReadyForQuery(I) | "+aliceOnly,
		func(rc *rawConn) string {
			rc.send(&pgproto3.Parse{Query: "SELECT 1/n FROM generate_series(0, 0) n"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{})
			a := rc.trace("ErrorResponse")
			// The client goes on with its batch before noticing, then syncs.
			rc.send(&pgproto3.Parse{Query: "SELECT 2"}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'},
				&pgproto3.Execute{}, &pgproto3.Close{ObjectType: 'S'}, &pgproto3.Query{String: "SELECT 3"}, &pgproto3.Flush{}, &pgproto3.Sync{})
			b := rc.trace("ReadyForQuery")
			rc.send(&pgproto3.Query{String: "SELECT email, full_name FROM users ORDER BY id"})
			return a + " | " + b + " | " + rc.trace("ReadyForQuery")
		})

	r.same(t, "in_transaction",
		"CommandComplete(BEGIN) ReadyForQuery(T) | ParseComplete BindComplete ErrorResponse(22012) | ReadyForQuery(E) | CommandComplete(ROLLBACK) ReadyForQuery(I) | "+aliceRead,
		func(rc *rawConn) string {
			rc.send(&pgproto3.Query{String: "BEGIN"})
			a := rc.trace("ReadyForQuery")
			rc.send(&pgproto3.Parse{Name: "s", Query: "SELECT 1/n FROM generate_series(0, 0) n"}, &pgproto3.Bind{PreparedStatement: "s"}, &pgproto3.Execute{}, &pgproto3.Flush{})
			b := rc.trace("ErrorResponse")
			rc.send(&pgproto3.Bind{PreparedStatement: "s"}, &pgproto3.Execute{}, &pgproto3.Sync{})
			c := rc.trace("ReadyForQuery")
			rc.send(&pgproto3.Query{String: "ROLLBACK"})
			return a + " | " + b + " | " + c + " | " + rc.trace("ReadyForQuery") + " | " + readAlice(rc)
		})

	// The same with pgveil's own error: a statement it refuses is answered
	// by a raise block whose error comes back before the client syncs.
	t.Run("refused", func(t *testing.T) {
		rc := r.proxied(t)
		rc.send(&pgproto3.Parse{Query: "SELECT id FROM users WHERE email LIKE $1"}, &pgproto3.Bind{Parameters: [][]byte{[]byte("a%")}},
			&pgproto3.Execute{}, &pgproto3.Flush{})
		if got := rc.trace("ErrorResponse"); got != "ErrorResponse(0A000)" {
			t.Fatalf("refused statement: %s", got)
		}
		rc.send(&pgproto3.Parse{Query: "SELECT 2"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		if got := rc.trace("ReadyForQuery"); got != "ReadyForQuery(I)" {
			t.Fatalf("after the refused statement: %s", got)
		}
		readUsers(t, rc, aliceOnly)
	})

	// An oversized Bind in a pipeline: pgveil answers it with a raise block
	// whose error comes back before the client's Execute and Sync.
	t.Run("oversized_bind", func(t *testing.T) {
		rc := r.proxied(t)
		big := strings.Repeat("y", 2<<20)
		rc.send(&pgproto3.Parse{Query: "SELECT length($1::text)"}, &pgproto3.Bind{Parameters: [][]byte{[]byte(big)}}, &pgproto3.Flush{})
		if got := rc.trace("ErrorResponse"); got != "ParseComplete ErrorResponse(54000)" {
			t.Fatalf("oversized Bind: %s", got)
		}
		rc.send(&pgproto3.Execute{}, &pgproto3.Sync{})
		if got := rc.trace("ReadyForQuery"); got != "ReadyForQuery(I)" {
			t.Fatalf("after the oversized Bind: %s", got)
		}
		readUsers(t, rc, aliceOnly)
	})

	// pgx pipelines a batch: its second statement fails while the rest is
	// still being written.
	t.Run("pgx_batch", func(t *testing.T) { pgxFailingBatch(t, r.p) })
}

// pgxFailingBatch sends a batch through pgx whose second statement fails
// while pgx is still writing the thousands after it, then reads an
// encrypted column.
func pgxFailingBatch(t *testing.T, p *testProxy) {
	c := p.Conn(t)
	ctx := ctxT(t)
	b := &pgx.Batch{}
	b.Queue("INSERT INTO plain_notes (id, body) VALUES (1, 'one')")
	b.Queue("INSERT INTO plain_notes (id, body) VALUES (1, 'dup')")
	pad := strings.Repeat("p", 300)
	for i := 0; i < 3000; i++ {
		b.Queue("INSERT INTO plain_notes (id, body) VALUES ($1, $2)", 100+i, pad)
	}
	if err := c.SendBatch(ctx, b).Close(); sqlState(err) != "23505" {
		t.Fatalf("batch: want 23505, got %v", err)
	}
	for i := 0; i < 3; i++ {
		var email, name string
		if err := c.QueryRow(ctx, "SELECT email, full_name FROM users WHERE id = 1").Scan(&email, &name); err != nil || email != "a@x.io" || name != "Alice" {
			t.Fatalf("after the failed batch: %q %q %v", email, name, err)
		}
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM plain_notes").Scan(&n); err != nil || n != 0 {
		t.Fatalf("after the failed batch: %d rows, %v", n, err)
	}
}

// TestProtocolExtendedCopyIn: COPY FROM STDIN through the extended protocol,
// as libpq's PQexecParams sends it: a Sync right after Execute, which
// PostgreSQL ignores in copy-in, and a second one after CopyDone.
func TestProtocolExtendedCopyIn(t *testing.T) {
	r := newQueueRig(t, nil)
	copyUsers := "COPY users (email, full_name) FROM STDIN"

	r.same(t, "libpq_order",
		"ParseComplete BindComplete NoData CopyInResponse | CommandComplete(COPY 1) ReadyForQuery(I) | "+
			"RowDescription DataRow(a@x.io,Alice) DataRow(b@x.io,Bob) CommandComplete(SELECT 2) ReadyForQuery(I) | "+
			"RowDescription DataRow(42) CommandComplete(SELECT 1) ReadyForQuery(I)",
		func(rc *rawConn) string {
			rc.send(&pgproto3.Parse{Query: copyUsers}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'},
				&pgproto3.Execute{}, &pgproto3.Sync{})
			a := rc.trace("CopyInResponse")
			rc.send(&pgproto3.CopyData{Data: []byte("b@x.io\tBob\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
			b := rc.trace("ReadyForQuery")
			rc.send(&pgproto3.Query{String: "SELECT email, full_name FROM users ORDER BY id"})
			c := rc.trace("ReadyForQuery")
			rc.send(&pgproto3.Query{String: "SELECT 42"})
			return a + " | " + b + " | " + c + " | " + rc.trace("ReadyForQuery")
		})

	// Everything at once, with Syncs and Flushes inside the COPY, then more
	// statements in the same write.
	r.same(t, "one_write",
		"ParseComplete BindComplete CopyInResponse CommandComplete(COPY 2) ReadyForQuery(I) "+
			"ParseComplete BindComplete DataRow(c@x.io,Carol) CommandComplete(SELECT 1) ReadyForQuery(I)",
		func(rc *rawConn) string {
			rc.send(&pgproto3.Parse{Query: copyUsers}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}, &pgproto3.Flush{},
				&pgproto3.CopyData{Data: []byte("c@x.io\tCarol\n")}, &pgproto3.Sync{}, &pgproto3.Flush{},
				&pgproto3.CopyData{Data: []byte("d@x.io\tDan\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{},
				&pgproto3.Parse{Query: "SELECT email, full_name FROM users WHERE email = 'c@x.io'"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
			a := rc.trace("ReadyForQuery")
			return a + " " + rc.trace("ReadyForQuery")
		})

	// CopyFail, and bad data: PostgreSQL skips to the client's Sync.
	r.same(t, "copyfail",
		"CommandComplete(BEGIN) ReadyForQuery(T) | ParseComplete BindComplete CopyInResponse | ErrorResponse(57014) ReadyForQuery(E) | CommandComplete(ROLLBACK) ReadyForQuery(I) | "+aliceRead,
		func(rc *rawConn) string {
			rc.send(&pgproto3.Query{String: "BEGIN"})
			a := rc.trace("ReadyForQuery")
			rc.send(&pgproto3.Parse{Query: copyUsers}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
			b := rc.trace("CopyInResponse")
			rc.send(&pgproto3.CopyData{Data: []byte("e@x.io\tEve\n")}, &pgproto3.CopyFail{Message: "client gave up"}, &pgproto3.Sync{})
			c := rc.trace("ReadyForQuery")
			rc.send(&pgproto3.Query{String: "ROLLBACK"})
			return a + " | " + b + " | " + c + " | " + rc.trace("ReadyForQuery") + " | " + readAlice(rc)
		})
	r.same(t, "bad_data",
		"ParseComplete BindComplete CopyInResponse | ErrorResponse(22P02) | ReadyForQuery(I) ReadyForQuery(I) | "+
			"ParseComplete BindComplete CopyInResponse CommandComplete(COPY 2) ReadyForQuery(I) | "+aliceRead,
		func(rc *rawConn) string {
			rc.send(&pgproto3.Parse{Query: "COPY users (id, email, full_name) FROM STDIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
			a := rc.trace("CopyInResponse")
			rc.send(&pgproto3.CopyData{Data: []byte("zz\tf@x.io\tFay\n")}, &pgproto3.Flush{})
			b := rc.trace("ErrorResponse")
			// The client goes on with the COPY: PostgreSQL, no longer in
			// copy-in, skips to the first Sync, then ignores CopyDone.
			rc.send(&pgproto3.CopyData{Data: []byte("77\tg@x.io\tGus\n")}, &pgproto3.Sync{}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
			c := rc.trace("ReadyForQuery") + " " + rc.trace("ReadyForQuery")
			// A table pgveil has no columns of, where CopyData is passed on as it is.
			rc.send(&pgproto3.Parse{Query: "COPY plain_notes (body) FROM STDIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
				&pgproto3.CopyData{Data: []byte("one\ntwo\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
			return a + " | " + b + " | " + c + " | " + rc.trace("ReadyForQuery") + " | " + readAlice(rc)
		})
	t.Run("afterwards", func(t *testing.T) {
		readUsers(t, r.proxied(t), "RowDescription DataRow(a@x.io,Alice) DataRow(b@x.io,Bob) DataRow(c@x.io,Carol) DataRow(d@x.io,Dan) CommandComplete(SELECT 4) ReadyForQuery(I)")
	})
}

// TestProtocolParseTooManyParams: a Parse that pgveil's blind-index
// parameters would take over the protocol's 65535 parameters is refused
// with 54000, not dropped.
func TestProtocolParseTooManyParams(t *testing.T) {
	r := newQueueRig(t, nil)
	// 2 × 32767 parameters; pgveil adds one per email.
	var sql strings.Builder
	sql.WriteString("INSERT INTO users (email, full_name) VALUES ")
	for i := 0; i < 32767; i++ {
		if i > 0 {
			sql.WriteString(",")
		}
		fmt.Fprintf(&sql, "($%d,$%d)", 2*i+1, 2*i+2)
	}
	rc := r.proxied(t)
	rc.send(&pgproto3.Parse{Name: "many", Query: sql.String()}, &pgproto3.Sync{})
	m := rc.recv()
	e, ok := m.(*pgproto3.ErrorResponse)
	if !ok || e.Code != "54000" || !strings.HasPrefix(e.Message, "pgveil: ") || !strings.Contains(e.Message, "too many parameters") {
		t.Fatalf("Parse with too many parameters: got %#v", m)
	}
	if got := rc.trace("ReadyForQuery"); got != "ReadyForQuery(I)" {
		t.Fatalf("after the refused Parse: %s", got)
	}
	// In a batch: the rest is skipped up to Sync.
	rc.send(&pgproto3.Parse{Query: sql.String()}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
		&pgproto3.Parse{Query: "SELECT 2"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if got := rc.trace("ReadyForQuery"); got != "ErrorResponse(54000) ReadyForQuery(I)" {
		t.Fatalf("refused Parse in a batch: %s", got)
	}
	readUsers(t, rc, aliceOnly)
}

// TestProtocolUndecryptableInTransaction: a value pgveil cannot decrypt
// (XX001, strict mode) fails the statement for the client; PostgreSQL saw
// no error, but the transaction block must fail there too, so a COMMIT does
// not commit what the client saw fail.
func TestProtocolUndecryptableInTransaction(t *testing.T) {
	r := newQueueRig(t, nil)
	direct := r.p.Direct(t)
	mustExec(t, direct, "INSERT INTO users (email, full_name) VALUES ('stored-in-plaintext', 'x')")
	rc := r.proxied(t)
	step := func(want string, msgs ...pgproto3.FrontendMessage) {
		t.Helper()
		rc.send(msgs...)
		if got := rc.trace("ReadyForQuery"); got != want {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	}
	count := func(body string) int {
		t.Helper()
		var n int
		if err := direct.QueryRow(context.Background(), "SELECT count(*) FROM plain_notes WHERE body = $1", body).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Simple protocol, the failing SELECT followed by an INSERT in the same
	// Query: the client sees the Query fail, so COMMIT rolls back.
	step("CommandComplete(BEGIN) ReadyForQuery(T)", &pgproto3.Query{String: "BEGIN"})
	step("RowDescription DataRow(a@x.io) ErrorResponse(XX001) ReadyForQuery(E)",
		&pgproto3.Query{String: "SELECT email FROM users ORDER BY id; INSERT INTO plain_notes (body) VALUES ('simple')"})
	step("CommandComplete(ROLLBACK) ReadyForQuery(I)", &pgproto3.Query{String: "COMMIT"})
	if n := count("simple"); n != 0 {
		t.Fatalf("COMMIT after XX001 committed the INSERT")
	}

	// Extended protocol: later statements fail as after any error.
	step("CommandComplete(BEGIN) ReadyForQuery(T)", &pgproto3.Query{String: "BEGIN"})
	step("ParseComplete BindComplete DataRow(a@x.io) ErrorResponse(XX001) ReadyForQuery(E)",
		&pgproto3.Parse{Query: "SELECT email FROM users ORDER BY id"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Parse{Query: "INSERT INTO plain_notes (body) VALUES ('extended')"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Sync{})
	step("ErrorResponse(25P02) ReadyForQuery(E)", &pgproto3.Query{String: "SELECT 1"})
	step("ParseComplete BindComplete CommandComplete(ROLLBACK) ReadyForQuery(I)",
		&pgproto3.Parse{Query: "COMMIT"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if n := count("extended"); n != 0 {
		t.Fatalf("COMMIT after XX001 committed the INSERT")
	}

	// A savepoint the client rolls back to recovers, as after any error.
	step("CommandComplete(BEGIN) ReadyForQuery(T)", &pgproto3.Query{String: "BEGIN"})
	step("CommandComplete(INSERT 0 1) ReadyForQuery(T)", &pgproto3.Query{String: "INSERT INTO plain_notes (body) VALUES ('kept')"})
	step("CommandComplete(SAVEPOINT) ReadyForQuery(T)", &pgproto3.Query{String: "SAVEPOINT s"})
	step("RowDescription DataRow(a@x.io) ErrorResponse(XX001) ReadyForQuery(E)", &pgproto3.Query{String: "SELECT email FROM users ORDER BY id"})
	step("CommandComplete(ROLLBACK) ReadyForQuery(T)", &pgproto3.Query{String: "ROLLBACK TO SAVEPOINT s"})
	step("CommandComplete(COMMIT) ReadyForQuery(I)", &pgproto3.Query{String: "COMMIT"})
	if n := count("kept"); n != 1 {
		t.Fatalf("rows committed after ROLLBACK TO SAVEPOINT: %d, want 1", n)
	}

	// Outside a transaction block nothing changes.
	step("RowDescription DataRow(a@x.io) ErrorResponse(XX001) ReadyForQuery(I)", &pgproto3.Query{String: "SELECT email FROM users ORDER BY id"})
	step("RowDescription DataRow(a@x.io,Alice) CommandComplete(SELECT 1) ReadyForQuery(I)",
		&pgproto3.Query{String: "SELECT email, full_name FROM users WHERE id = 1"})
}

// TestProtocolSkippedStatementChanges: PostgreSQL skips a Close or a Parse
// that follows an error in the same batch, so the statement it named is
// still there, as it was; pgveil keeps its own list of statements the same,
// and a later Bind of that statement is still encrypted.
func TestProtocolSkippedStatementChanges(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	const insert = "INSERT INTO users (email, full_name) VALUES ($1, $2)"
	for _, c := range []struct {
		name  string
		batch []pgproto3.FrontendMessage
	}{
		{"close", []pgproto3.FrontendMessage{&pgproto3.Close{ObjectType: 'S', Name: "ins"}}},
		{"parse unnamed", []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Close{ObjectType: 'S', Name: "ins"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, p.Addr, pgtest.TrustUser, p.DB)
			rc.send(&pgproto3.Parse{Name: "ins", Query: insert}, &pgproto3.Parse{Query: insert}, &pgproto3.Sync{})
			if got := rc.trace("ReadyForQuery"); got != "ParseComplete ParseComplete ReadyForQuery(I)" {
				t.Fatalf("prepare: %s", got)
			}
			// An error first: PostgreSQL skips the rest up to Sync.
			msgs := append([]pgproto3.FrontendMessage{&pgproto3.Parse{Name: "bad", Query: "SELEC 1"}}, c.batch...)
			rc.send(append(msgs, &pgproto3.Sync{})...)
			if got := rc.trace("ReadyForQuery"); got != "ErrorResponse(42601) ReadyForQuery(I)" {
				t.Fatalf("skipped batch: %s", got)
			}
			for _, stmt := range []string{"ins", ""} {
				email := "skip-" + strings.ReplaceAll(c.name, " ", "-") + "-" + stmt + "@x.io"
				rc.send(&pgproto3.Bind{PreparedStatement: stmt, Parameters: [][]byte{[]byte(email), []byte("Skipped")}}, &pgproto3.Execute{}, &pgproto3.Sync{})
				if got := rc.trace("ReadyForQuery"); got != "BindComplete CommandComplete(INSERT 0 1) ReadyForQuery(I)" {
					t.Fatalf("bind %q: %s", stmt, got)
				}
				assertNoPlaintext(t, p, email)
			}
		})
	}
}

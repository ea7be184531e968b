package test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/test/pgtest"
)

func TestEncryptLookups(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			c := connMode(t, p.DSN(pgtest.TrustUser), mode)
			mustExec(t, c, "DELETE FROM tasks")
			mustExec(t, c, "DELETE FROM users")
			for i := 1; i <= 5; i++ {
				mustExec(t, c, "INSERT INTO users (email, full_name) VALUES ($1, $2)", fmt.Sprintf("l%d@x.io", i), fmt.Sprintf("L %d", i))
			}
			count := func(sql string, args ...any) int {
				t.Helper()
				var n int
				if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
				return n
			}
			if n := count("SELECT count(*) FROM users WHERE email IN ($1, $2, $3)", "l1@x.io", "l3@x.io", "nope@x.io"); n != 2 {
				t.Errorf("IN: %d", n)
			}
			if n := count("SELECT count(*) FROM users WHERE email = ANY($1)", []string{"l2@x.io", "l4@x.io", "l5@x.io"}); n != 3 {
				t.Errorf("= ANY: %d", n)
			}
			if n := count("SELECT count(*) FROM users WHERE email <> $1", "l1@x.io"); n != 4 {
				t.Errorf("<>: %d", n)
			}
			if n := count("SELECT count(*) FROM users WHERE email IS NOT NULL AND full_name IS NOT NULL"); n != 5 {
				t.Errorf("IS NOT NULL: %d", n)
			}
			if n := count("SELECT count(*) FROM users WHERE id IN (SELECT id FROM users WHERE email = $1)", "l2@x.io"); n != 1 {
				t.Errorf("subquery: %d", n)
			}
			if n := count("WITH u AS (SELECT id, email FROM users WHERE email = $1) SELECT count(*) FROM u", "l3@x.io"); n != 1 {
				t.Errorf("CTE: %d", n)
			}
			// Join + decrypt through a CTE and aliases.
			var uid int64
			if err := c.QueryRow(ctx, "SELECT id FROM users WHERE email = $1", "l1@x.io").Scan(&uid); err != nil {
				t.Fatal(err)
			}
			mustExec(t, c, "INSERT INTO tasks (user_id, title, description) VALUES ($1, $2, $3)", uid, "Buy milk", "2 litres")
			var email, title string
			if err := c.QueryRow(ctx, "WITH t AS (SELECT * FROM tasks) SELECT u.email AS who, t.title FROM users u JOIN t ON t.user_id = u.id WHERE u.email = $1", "l1@x.io").Scan(&email, &title); err != nil {
				t.Fatal(err)
			}
			if email != "l1@x.io" || title != "Buy milk" {
				t.Fatalf("join: %q %q", email, title)
			}
			// ON CONFLICT on the searchable column (its unique blind index).
			var name string
			if err := c.QueryRow(ctx, "INSERT INTO users (email, full_name) VALUES ($1, $2) ON CONFLICT (email) DO UPDATE SET full_name = EXCLUDED.full_name RETURNING full_name", "l2@x.io", "Upserted").Scan(&name); err != nil {
				t.Fatal(err)
			}
			if name != "Upserted" || count("SELECT count(*) FROM users WHERE email = $1", "l2@x.io") != 1 {
				t.Fatalf("upsert: %q", name)
			}
			// UNION: the origin is lost in RowDescription, the plan knows.
			rows, err := c.Query(ctx, "SELECT email FROM users WHERE email = $1 UNION ALL SELECT email FROM users WHERE email = $2", "l4@x.io", "l5@x.io")
			if err != nil {
				t.Fatal(err)
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil || strings.Join(got, ",") != "l4@x.io,l5@x.io" {
				t.Fatalf("UNION: %v %v", got, err)
			}
			// DELETE by email and RETURNING.
			var gone string
			if err := c.QueryRow(ctx, "DELETE FROM users WHERE email = $1 RETURNING full_name", "l5@x.io").Scan(&gone); err != nil || gone != "L 5" {
				t.Fatalf("DELETE RETURNING: %v %q", err, gone)
			}
		})
	}
	assertNoPlaintext(t, p, "Buy milk", "2 litres", "Upserted", "l1@x.io", "l2@x.io")
}

func TestEncryptCopy(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	c := p.Conn(t)
	ctx := context.Background()
	// pgx CopyFrom uses the binary format: refused (0A000) on an encrypted
	// table, connection usable.
	_, err := c.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"email", "full_name"}, pgx.CopyFromRows([][]any{{"bin@x.io", "B"}}))
	if sqlState(err) != "0A000" {
		t.Fatalf("binary COPY: want 0A000, got %v", err)
	}
	// Text format, split across CopyData messages at odd places.
	var in strings.Builder
	want := map[string]string{}
	for i := 0; i < 2000; i++ {
		email := fmt.Sprintf("copy%d@x.io", i)
		name := fmt.Sprintf("Cöpy\\t %d\ttab", i)
		want[email] = fmt.Sprintf("Cöpy\\t %d", i)
		if i%100 == 0 {
			fmt.Fprintf(&in, "%s\t\\N\n", email)
			want[email] = "<NULL>"
			continue
		}
		_ = name
		fmt.Fprintf(&in, "%s\tCöpy\\\\t %d\n", email, i)
	}
	tag, err := c.PgConn().CopyFrom(ctx, &chunkReader{s: in.String(), n: 37}, "COPY users (email, full_name) FROM STDIN")
	if err != nil || tag.RowsAffected() != 2000 {
		t.Fatalf("COPY FROM: %v %v", err, tag)
	}
	// CSV with quotes and a newline inside a value.
	csv := "email,full_name\n\"csv1@x.io\",\"Line one\nline \"\"two\"\"\"\ncsv2@x.io,\n"
	tag, err = c.PgConn().CopyFrom(ctx, &chunkReader{s: csv, n: 5}, "COPY users (email, full_name) FROM STDIN WITH (FORMAT csv, HEADER true)")
	if err != nil || tag.RowsAffected() != 2 {
		t.Fatalf("COPY CSV: %v %v", err, tag)
	}
	want["csv1@x.io"] = "Line one\nline \"two\""
	want["csv2@x.io"] = "<NULL>"
	for email, name := range want {
		var got *string
		if err := c.QueryRow(ctx, "SELECT full_name FROM users WHERE email = $1", email).Scan(&got); err != nil {
			t.Fatalf("lookup %s after COPY: %v", email, err)
		}
		g := "<NULL>"
		if got != nil {
			g = *got
		}
		if g != name {
			t.Fatalf("%s: got %q want %q", email, g, name)
		}
	}
	// COPY TO STDOUT decrypts, with and without a column list.
	var out strings.Builder
	if _, err := c.PgConn().CopyTo(ctx, &out, "COPY (SELECT email, full_name FROM users WHERE email = 'csv1@x.io') TO STDOUT WITH (FORMAT csv)"); err != nil {
		t.Fatal(err)
	}
	if out.String() != "csv1@x.io,\"Line one\nline \"\"two\"\"\"\n" {
		t.Fatalf("COPY (query) TO: %q", out.String())
	}
	out.Reset()
	if _, err := c.PgConn().CopyTo(ctx, &out, "COPY users TO STDOUT"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "\tcopy1@x.io\t") || strings.Contains(out.String(), "gAAAAA") {
		t.Fatalf("COPY users TO STDOUT did not decrypt: %.300q", out.String())
	}
	assertNoPlaintext(t, p, "copy1@x.io", "Line one", "Cöpy")
}

// chunkReader returns s in pieces of n bytes, so CopyData boundaries fall
// inside rows.
type chunkReader struct {
	s string
	n int
}

func (r *chunkReader) Read(b []byte) (int, error) {
	if len(r.s) == 0 {
		return 0, io.EOF
	}
	n := r.n
	if n > len(b) {
		n = len(b)
	}
	if n > len(r.s) {
		n = len(r.s)
	}
	copy(b, r.s[:n])
	r.s = r.s[n:]
	return n, nil
}

func TestEncryptMigratingMode(t *testing.T) {
	p := startProxy(t, proxyOpts{mutate: func(c *config.Config) { c.Encryption.Mode = config.ModeMigrating }})
	ctx := context.Background()
	// Rows written before pgveil: plaintext, no blind index.
	mustExec(t, p.Direct(t), "INSERT INTO users (email, full_name) VALUES ('old@x.io', 'Old Timer')")
	c := p.Conn(t)
	mustExec(t, c, "INSERT INTO users (email, full_name) VALUES ($1, $2)", "new@x.io", "New Comer")
	for _, email := range []string{"old@x.io", "new@x.io"} {
		var name string
		if err := c.QueryRow(ctx, "SELECT full_name FROM users WHERE email = $1", email).Scan(&name); err != nil {
			t.Fatalf("migrating lookup %s: %v", email, err)
		}
	}
	// Strict: the same plaintext row is an error (XX001), never returned.
	s := startProxy(t, proxyOpts{})
	mustExec(t, s.Direct(t), "INSERT INTO users (email, full_name) VALUES ('old@x.io', 'Old Timer')")
	_, err := s.Conn(t).Exec(ctx, "SELECT full_name FROM users")
	if sqlState(err) != "XX001" {
		t.Fatalf("strict with plaintext stored: want XX001, got %v", err)
	}
	// A token under an unknown key is XX001 in both modes.
	other := startProxy(t, proxyOpts{})
	mustExec(t, other.Conn(t), "INSERT INTO chat_history (message) VALUES ('secret under another key')")
	var tok string
	other.Direct(t).QueryRow(ctx, "SELECT message FROM chat_history").Scan(&tok)
	mustExec(t, p.Direct(t), "INSERT INTO chat_history (message) VALUES ($1)", tok)
	_, err = c.Exec(ctx, "SELECT message FROM chat_history")
	if sqlState(err) != "XX001" {
		t.Fatalf("foreign token: want XX001, got %v", err)
	}
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("after XX001: %v", err)
	}
}

// TestEncryptSQLAlchemy2SortedBulkInsert: SQLAlchemy 2's ORM flushes new
// objects with an INSERT ... SELECT over a VALUES list, so that RETURNING
// comes back in the objects' order (insertmanyvalues with
// sort_by_parameter_order). psycopg2 sends it with the values inlined,
// psycopg 3 and asyncpg with parameters (and casts). Through pgveil the
// values are stored as tokens with their blind index, the ids come back in
// order, and the rows are found by email.
func TestEncryptSQLAlchemy2SortedBulkInsert(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	ctx := context.Background()
	db := p.Direct(t)
	const inlined = `INSERT INTO users (email, full_name, age) SELECT p0::VARCHAR, p1::VARCHAR, p2::INTEGER FROM (VALUES ('sa0@x.io', 'SA Zero', 30, 0), ('sa1@x.io', 'SA O''One', 31, 1), ('sa2@x.io', NULL, 32, 2)) AS imp_sen(p0, p1, p2, sen_counter) ORDER BY sen_counter RETURNING users.id, users.id AS id__1`
	const params = `INSERT INTO users (email, full_name, age) SELECT p0::VARCHAR, p1::VARCHAR, p2::INTEGER FROM (VALUES ($1::VARCHAR, $2::VARCHAR, $3::INTEGER, 0), ($4::VARCHAR, $5::VARCHAR, $6::INTEGER, 1)) AS imp_sen(p0, p1, p2, sen_counter) ORDER BY sen_counter RETURNING users.id, users.id AS id__1`
	for _, tc := range []struct {
		name   string
		mode   pgx.QueryExecMode
		sql    string
		args   []any
		emails []string
		names  []any
	}{
		{"psycopg2 (inlined)", pgx.QueryExecModeSimpleProtocol, inlined, nil,
			[]string{"sa0@x.io", "sa1@x.io", "sa2@x.io"}, []any{"SA Zero", "SA O'One", nil}},
		{"psycopg 3 (parameters)", pgx.QueryExecModeCacheStatement, params,
			[]any{"sa3@x.io", "SA Three", 33, "sa4@x.io", "SA Four", 34},
			[]string{"sa3@x.io", "sa4@x.io"}, []any{"SA Three", "SA Four"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := connMode(t, p.DSN(pgtest.TrustUser), tc.mode)
			rows, err := c.Query(ctx, tc.sql, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			ids, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (int64, error) {
				var id, id1 int64
				err := r.Scan(&id, &id1)
				return id, err
			})
			if err != nil || len(ids) != len(tc.emails) {
				t.Fatalf("RETURNING: %v %v", ids, err)
			}
			for i, email := range tc.emails {
				if i > 0 && ids[i] <= ids[i-1] {
					t.Errorf("ids out of order: %v", ids)
				}
				var id int64
				var name *string
				if err := c.QueryRow(ctx, "SELECT id, full_name FROM users WHERE email = $1", email).Scan(&id, &name); err != nil {
					t.Fatalf("lookup %s: %v", email, err)
				}
				if id != ids[i] || (tc.names[i] == nil) != (name == nil) || name != nil && *name != tc.names[i] {
					t.Errorf("%s: id %d name %v, want id %d name %v", email, id, name, ids[i], tc.names[i])
				}
				var stored, hash string
				if err := db.QueryRow(ctx, "SELECT email, email_hash FROM users WHERE id = $1", ids[i]).Scan(&stored, &hash); err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(stored, "gAAAAA") || len(hash) != 64 {
					t.Errorf("stored %q / %q, want a token and a blind index", stored, hash)
				}
			}
		})
	}
	assertNoPlaintext(t, p, "sa0@x.io", "sa1@x.io", "sa2@x.io", "sa3@x.io", "sa4@x.io", "SA Zero", "SA O'One", "SA Three", "SA Four")
}

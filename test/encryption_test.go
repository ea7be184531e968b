package test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/test/pgtest"
)

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// checkStoredUser asserts that what Postgres holds for a user is a token
// that decrypts to want, with the right blind index.
func checkStoredUser(t testing.TB, p *testProxy, id int64, email, name string) {
	t.Helper()
	d := p.Direct(t)
	kr := p.Keyring(t)
	var se, sh, sn *string
	if err := d.QueryRow(context.Background(), "SELECT email, email_hash, full_name FROM users WHERE id = $1", id).Scan(&se, &sh, &sn); err != nil {
		t.Fatal(err)
	}
	check := func(col string, stored *string, want string) {
		if stored == nil {
			t.Fatalf("users.%s id %d: stored NULL, want a token", col, id)
		}
		if !strings.HasPrefix(*stored, "gAAAAA") {
			t.Fatalf("users.%s id %d: stored value is not a token", col, id)
		}
		plain, _, err := kr.Open(nil, []byte(*stored))
		if err != nil || string(plain) != want {
			t.Fatalf("users.%s id %d: stored token does not decrypt to the value written (%v)", col, id, err)
		}
		// The token's timestamp is the time it was made.
		raw, err := base64.URLEncoding.DecodeString(*stored)
		if err != nil || len(raw) < 9 {
			t.Fatalf("users.%s id %d: token does not decode: %v", col, id, err)
		}
		if ts, now := int64(binary.BigEndian.Uint64(raw[1:9])), time.Now().Unix(); ts < now-120 || ts > now+2 {
			t.Fatalf("users.%s id %d: token timestamp %d, now %d", col, id, ts, now)
		}
	}
	check("email", se, email)
	check("full_name", sn, name)
	if sh == nil || !hex64.MatchString(*sh) {
		t.Fatalf("users.email_hash id %d: %v is not 64 hex", id, sh)
	}
	want := string(kr.BlindIndex(nil, "public.users.email", []byte(email)))
	if *sh != want {
		t.Fatalf("users.email_hash id %d: blind index differs from HMAC of the email", id)
	}
}

func TestEncryptExecModes(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	ctx := context.Background()
	var planted []string
	for i, mode := range execModes {
		t.Run(mode.String(), func(t *testing.T) {
			c := connMode(t, p.DSN(pgtest.TrustUser), mode)
			email := fmt.Sprintf("user%d+%s@example.com", i, strings.ToLower(mode.String()))
			name := fmt.Sprintf("Zoë O'Brien \\ %d", i)
			planted = append(planted, email, name)
			var id int64
			if err := c.QueryRow(ctx, "INSERT INTO users (email, full_name, age) VALUES ($1, $2, $3) RETURNING id", email, name, 30+i).Scan(&id); err != nil {
				t.Fatalf("insert: %v", err)
			}
			checkStoredUser(t, p, id, email, name)

			// Read back by id: decrypted.
			var gotEmail, gotName string
			if err := c.QueryRow(ctx, "SELECT email, full_name FROM users WHERE id = $1", id).Scan(&gotEmail, &gotName); err != nil {
				t.Fatal(err)
			}
			if gotEmail != email || gotName != name {
				t.Fatalf("read back %q %q", gotEmail, gotName)
			}
			// Lookup by email through the blind index.
			var gotID int64
			if err := c.QueryRow(ctx, "SELECT id FROM users WHERE email = $1", email).Scan(&gotID); err != nil || gotID != id {
				t.Fatalf("lookup by email: %v id=%d want %d", err, gotID, id)
			}
			// SELECT * with alias.
			var n int
			rows, err := c.Query(ctx, "SELECT u.* FROM users u WHERE u.email = $1", email)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				m, err := pgx.RowToMap(rows)
				if err != nil {
					t.Fatal(err)
				}
				if m["email"] != email || m["full_name"] != name {
					t.Fatalf("SELECT *: %v", m)
				}
				n++
			}
			if rows.Err() != nil || n != 1 {
				t.Fatalf("SELECT *: %v rows=%d", rows.Err(), n)
			}
			// UPDATE, then read.
			newName := name + " (updated)"
			planted = append(planted, newName)
			mustExec(t, c, "UPDATE users SET full_name = $1 WHERE email = $2", newName, email)
			checkStoredUser(t, p, id, email, newName)
			// Unsupported: LIKE is refused with 0A000 and the connection stays usable.
			_, err = c.Exec(ctx, "SELECT id FROM users WHERE email LIKE $1", "%example%")
			if sqlState(err) != "0A000" || !strings.Contains(err.Error(), "users.email") {
				t.Fatalf("LIKE: want 0A000 naming users.email, got %v", err)
			}
			if err := c.QueryRow(ctx, "SELECT count(*) FROM users WHERE email = $1", email).Scan(&n); err != nil || n != 1 {
				t.Fatalf("after refusal: %v %d", err, n)
			}
		})
	}
	assertNoPlaintext(t, p, planted...)
}

func TestEncryptLiteralsSimpleProtocol(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	c := connMode(t, p.DSN(pgtest.TrustUser), pgx.QueryExecModeSimpleProtocol)
	ctx := context.Background()
	// Inline literals as psql or psycopg2 send them, several rows, quotes,
	// backslashes, multi-byte UTF-8, the empty string and NULL.
	_, err := c.Exec(ctx, `INSERT INTO users (email, full_name) VALUES ('a@x.io', 'It''s Ann'), ('b@x.io', E'B\\ob \u00e9'), ('c@x.io', ''), ('d@x.io', NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	got := queryAll(t, c, "SELECT email, full_name FROM users ORDER BY id")
	want := "email|full_name|\na@x.io It's Ann\nb@x.io B\\ob é\nc@x.io \nd@x.io <nil>\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	for _, q := range []string{
		"SELECT full_name FROM users WHERE email = 'b@x.io'",
		"SELECT full_name FROM users WHERE email IN ('zz@x.io', 'b@x.io')",
	} {
		var name string
		if err := c.QueryRow(ctx, q).Scan(&name); err != nil || name != "B\\ob é" {
			t.Fatalf("%s: %v %q", q, err, name)
		}
	}
	var nulls int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM users WHERE full_name IS NULL").Scan(&nulls); err != nil || nulls != 1 {
		t.Fatalf("IS NULL: %v %d", err, nulls)
	}
	// Stored: NULL stays NULL, the empty string is a token.
	d := p.Direct(t)
	var empty, null *string
	d.QueryRow(ctx, "SELECT full_name FROM users WHERE id = 3").Scan(&empty)
	d.QueryRow(ctx, "SELECT full_name FROM users WHERE id = 4").Scan(&null)
	if empty == nil || !strings.HasPrefix(*empty, "gAAAAA") || null != nil {
		t.Fatalf("stored empty=%v null=%v", empty, null)
	}
	assertNoPlaintext(t, p, "a@x.io", "It's Ann", "B\\ob", "d@x.io")
}

func TestEncryptRefusals(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		c := connMode(t, p.DSN(pgtest.TrustUser), mode)
		mustExec(t, c, "INSERT INTO users (email, full_name) VALUES ($1, $2)", "r"+mode.String()+"@x.io", "R")
		for _, q := range []string{
			"SELECT * FROM users WHERE email LIKE 'a%'",
			"SELECT * FROM users ORDER BY email",
			"SELECT * FROM users WHERE full_name = 'x'",
			"SELECT upper(email) FROM users",
			"SELECT * FROM users WHERE email > 'm'",
			"SELECT full_name, count(*) FROM users GROUP BY full_name",
			"SELECT DISTINCT email FROM users",
		} {
			_, err := c.Exec(ctx, q)
			if sqlState(err) != "0A000" || !strings.HasPrefix(pgMessage(err), "pgveil: ") {
				t.Errorf("%v %q: want 0A000 from pgveil, got %v", mode, q, err)
			}
		}
		// Inside a transaction the refusal fails the transaction on the
		// server too: a later COMMIT does not commit the earlier insert.
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO plain_notes (body) VALUES ('in tx')"); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT * FROM users WHERE email LIKE 'a%'"); sqlState(err) != "0A000" {
			t.Fatalf("refusal in tx: %v", err)
		}
		_ = tx.Commit(ctx)
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM plain_notes").Scan(&n); err != nil || n != 0 {
			t.Fatalf("the transaction with a refused statement committed: %v %d", err, n)
		}
	}
}

func pgMessage(err error) string {
	var m interface{ Error() string }
	if err == nil {
		return ""
	}
	m = err
	s := m.Error()
	if i := strings.Index(s, "pgveil: "); i >= 0 {
		return s[i:]
	}
	return s
}

func TestEncryptLimits(t *testing.T) {
	p := startProxy(t, proxyOpts{mutate: func(c *config.Config) { c.Encryption.MaxSize = 1000 }})
	ctx := context.Background()
	c := p.Conn(t)
	// At the limit: fine.
	mustExec(t, c, "INSERT INTO chat_history (message) VALUES ($1)", strings.Repeat("x", 1000))
	// Over: 54000, nothing written, connection usable.
	_, err := c.Exec(ctx, "INSERT INTO chat_history (message) VALUES ($1)", strings.Repeat("y", 1001))
	if sqlState(err) != "54000" {
		t.Fatalf("over max_size: want 54000, got %v", err)
	}
	// Invalid UTF-8 and NUL are refused with 22021 (binary parameter so
	// the bytes arrive as sent).
	_, err = c.Exec(ctx, "INSERT INTO chat_history (message) VALUES ($1::text)", "bad \xff\xfe utf8")
	if sqlState(err) != "22021" {
		t.Fatalf("invalid UTF-8: want 22021, got %v", err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM chat_history").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after refusals: %v %d", err, n)
	}
	_ = hex.EncodeToString
}

// TestEncryptNonStringConstants: a number or bit string written inline into
// an encrypted column is stored as what PostgreSQL would store in a text
// column (00042 is 42, 4.2e1 is 42, X'1F' is 00011111), so that a later
// lookup by that text finds it; constants pgveil cannot reproduce exactly
// are refused and nothing is stored.
func TestEncryptNonStringConstants(t *testing.T) {
	p := startProxy(t, proxyOpts{})
	ctx := context.Background()
	d := p.Direct(t)
	kr := p.Keyring(t)
	// What PostgreSQL stores for the constant in a text column.
	pgStores := func(t *testing.T, lit string) string {
		t.Helper()
		var v string
		if err := d.QueryRow(ctx, "INSERT INTO plain_notes (body) VALUES ("+lit+") RETURNING body").Scan(&v); err != nil {
			t.Fatalf("direct insert of %s: %v", lit, err)
		}
		mustExec(t, d, "DELETE FROM plain_notes")
		return v
	}
	countUsers := func(t *testing.T) int {
		t.Helper()
		var n int
		if err := d.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		t.Run(mode.String(), func(t *testing.T) {
			c := connMode(t, p.DSN(pgtest.TrustUser), mode)
			for _, tt := range []struct {
				lit       string
				mayRefuse bool // the analyzer may refuse bit strings as expressions
			}{
				{lit: "00042"},
				{lit: "42"},
				{lit: "4.2e1"},
				{lit: "1.50"},
				{lit: "1.20e1"},
				{lit: "1.5e-3"},
				{lit: ".5"},
				{lit: "5."},
				{lit: "0.00e1"},
				{lit: "9223372036854775808"},
				{lit: "000123456789012345678901234567890"},
				{lit: "1e400"},
				{lit: "N'42  '"},
				{lit: "X'1F'", mayRefuse: true},
				{lit: "B'101'", mayRefuse: true},
			} {
				want := pgStores(t, tt.lit)
				before := countUsers(t)
				var id int64
				err := c.QueryRow(ctx, "INSERT INTO users (email, full_name) VALUES ("+tt.lit+", 'n') RETURNING id").Scan(&id)
				if err != nil {
					if tt.mayRefuse && sqlState(err) == "0A000" && countUsers(t) == before {
						continue
					}
					t.Fatalf("insert %s: %v", tt.lit, err)
				}
				// Stored: a token of PostgreSQL's text, and its blind index.
				checkStoredUser(t, p, id, want, "n")
				sh := storedValue(t, d, "users", "email_hash", id)
				if sh == nil || *sh != string(kr.BlindIndex(nil, "public.users.email", []byte(want))) {
					t.Fatalf("%s: blind index is not that of %q", tt.lit, want)
				}
				// Found by the text PostgreSQL would have stored, quoted or as a parameter.
				var got int64
				if err := c.QueryRow(ctx, "SELECT id FROM users WHERE email = "+quoteSQL(want)).Scan(&got); err != nil || got != id {
					t.Fatalf("%s: lookup by %q: %v (id %d, want %d)", tt.lit, want, err, got, id)
				}
				if err := c.QueryRow(ctx, "SELECT id FROM users WHERE email = $1", want).Scan(&got); err != nil || got != id {
					t.Fatalf("%s: lookup by $1 = %q: %v (id %d, want %d)", tt.lit, want, err, got, id)
				}
				var back string
				if err := c.QueryRow(ctx, "SELECT email FROM users WHERE id = $1", id).Scan(&back); err != nil || back != want {
					t.Fatalf("%s: read back %q (%v), want %q", tt.lit, back, err, want)
				}
				mustExec(t, c, "DELETE FROM users WHERE id = $1", id)
			}
			// The requested example: 00042 inserted, then found as '42'.
			mustExec(t, c, "INSERT INTO users (email, full_name) VALUES (00042, 'n')")
			var n int
			if err := c.QueryRow(ctx, "SELECT count(*) FROM users WHERE email = '42'").Scan(&n); err != nil || n != 1 {
				t.Fatalf("INSERT 00042 then WHERE email = '42': %v, %d rows", err, n)
			}
			mustExec(t, c, "DELETE FROM users")
			// Refused, nothing stored, the connection stays usable.
			for _, tt := range []struct {
				lit   string
				codes string // acceptable SQLSTATEs
			}{
				{"0x1F", "0A000"},               // PostgreSQL 16 syntax; 15 says 42601
				{"1_000", "0A000"},              // likewise
				{"-5", "0A000"},                 // an expression: unary minus
				{"+5", "0A000"},                 // an expression: unary plus
				{"1e1000000000", "22003 0A000"}, // PostgreSQL: value overflows numeric format
				{"X'1G'", "22P02 0A000"},        // PostgreSQL: not a valid hexadecimal digit
			} {
				_, err := c.Exec(ctx, "INSERT INTO users (email, full_name) VALUES ("+tt.lit+", 'n')")
				if code := sqlState(err); code == "" || !strings.Contains(tt.codes, code) || !strings.HasPrefix(pgMessage(err), "pgveil: ") {
					t.Errorf("%s: want SQLSTATE %s from pgveil, got %v", tt.lit, tt.codes, err)
				}
				if n := countUsers(t); n != 0 {
					t.Fatalf("%s: %d rows stored after a refusal", tt.lit, n)
				}
			}
			if err := c.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil || n != 0 {
				t.Fatalf("after refusals: %v %d", err, n)
			}
		})
	}
}

// quoteSQL quotes s as a standard SQL string constant.
func quoteSQL(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

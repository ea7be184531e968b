package test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// searchPathTables adds app.accounts to the app's tables: a configured
// table outside public, reached without its schema through search_path.
const searchPathTables = appTables + `  - table: app.accounts
    columns: [{column: secret}]
`

const searchPathSchema = appSchema + `
CREATE SCHEMA app;
CREATE TABLE app.accounts (id serial PRIMARY KEY, secret text);
GRANT USAGE ON SCHEMA app TO veil_app;
GRANT ALL ON ALL TABLES IN SCHEMA app TO veil_app;
GRANT ALL ON ALL SEQUENCES IN SCHEMA app TO veil_app;
ALTER TABLE app.accounts OWNER TO veil_app;
`

// storedSecrets returns what the database holds in schema.accounts.
func storedSecrets(t *testing.T, p *testProxy, schema string) []string {
	t.Helper()
	rows, err := p.Direct(t).Query(context.Background(), "SELECT secret FROM "+schema+".accounts ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func assertTokens(t *testing.T, what string, vals []string, n int) {
	t.Helper()
	if len(vals) != n {
		t.Fatalf("%s: %d rows, want %d: %q", what, len(vals), n, vals)
	}
	for _, v := range vals {
		if !strings.HasPrefix(v, "gAAAAA") {
			t.Fatalf("%s: plaintext stored: %q", what, v)
		}
	}
}

// TestCatalogSearchPath: a configured table named without its schema is
// the one the session's search_path finds, as PostgreSQL resolves it: set
// at connection (options), with SET, SET LOCAL, undone by ROLLBACK, or
// hidden by an unconfigured table of the same name earlier in the path.
// Values aimed at app.accounts are encrypted whichever way it is reached,
// and values for another table of that name are not.
func TestCatalogSearchPath(t *testing.T) {
	ctx := context.Background()
	t.Run("static", func(t *testing.T) {
		// The only relation named accounts is app.accounts.
		p := startProxy(t, proxyOpts{yaml: searchPathTables, schema: searchPathSchema})
		c := p.Conn(t, "search_path", "app,public")
		mustExec(t, c, "INSERT INTO accounts (secret) VALUES ($1)", "s-param")
		mustExec(t, c, "INSERT INTO accounts (secret) VALUES ('s-literal')", pgx.QueryExecModeSimpleProtocol)
		var got string
		if err := c.QueryRow(ctx, "SELECT secret FROM accounts WHERE id = 1").Scan(&got); err != nil || got != "s-param" {
			t.Fatalf("read back: %v %q", err, got)
		}
		// Off the path the name finds nothing: PostgreSQL refuses, and the
		// value it would log is a token.
		d := p.Conn(t)
		_, err := d.Exec(ctx, "INSERT INTO accounts (secret) VALUES ('s-nowhere')", pgx.QueryExecModeSimpleProtocol)
		if sqlState(err) != "42P01" {
			t.Fatalf("off the path: %v", err)
		}
		mustExec(t, d, "SET search_path = app")
		mustExec(t, d, "INSERT INTO accounts (secret) VALUES ($1)", "s-after-set")
		assertTokens(t, "app.accounts", storedSecrets(t, p, "app"), 3)
		// DDL and a statement on the table in one Query: the statement was
		// planned before the DDL ran (here: the table it finds is new).
		_, err = d.Exec(ctx, "CREATE TABLE public.accounts (id serial, secret text); INSERT INTO accounts (secret) VALUES ('s-same-query')", pgx.QueryExecModeSimpleProtocol)
		if sqlState(err) != "0A000" {
			t.Fatalf("DDL and INSERT in one Query: %v", err)
		}
		// A COPY after DDL in a transaction (a migration script): the
		// catalog reload waits for the end of the COPY.
		mustExec(t, d, "BEGIN")
		mustExec(t, d, "ALTER TABLE app.accounts ADD COLUMN note text")
		if _, err := d.PgConn().CopyFrom(ctx, strings.NewReader("copied\n"), "COPY public.plain_notes (body) FROM STDIN"); err != nil {
			t.Fatalf("COPY after DDL in a transaction: %v", err)
		}
		mustExec(t, d, "INSERT INTO accounts (secret) VALUES ($1)", "s-in-migration")
		mustExec(t, d, "COMMIT")
		assertTokens(t, "app.accounts", storedSecrets(t, p, "app"), 4)
		assertNoPlaintext(t, p, "s-param", "s-literal", "s-nowhere", "s-after-set", "s-same-query", "s-in-migration")
	})

	t.Run("dynamic", func(t *testing.T) {
		// public.accounts, not configured, shares the name.
		p := startProxy(t, proxyOpts{yaml: searchPathTables, schema: searchPathSchema +
			"CREATE TABLE public.accounts (id serial PRIMARY KEY, secret text); GRANT ALL ON public.accounts, public.accounts_id_seq TO veil_app;"})
		c := p.Conn(t)
		// default path: public.accounts, stored as sent
		mustExec(t, c, "INSERT INTO accounts (secret) VALUES ($1)", "public-1")
		// SET in its own statement, in both protocols
		mustExec(t, c, "SET search_path = app, public")
		mustExec(t, c, "INSERT INTO accounts (secret) VALUES ($1)", "app-1")
		mustExec(t, c, "INSERT INTO accounts (secret) VALUES ('app-2')", pgx.QueryExecModeSimpleProtocol)
		var got string
		if err := c.QueryRow(ctx, "SELECT secret FROM accounts WHERE id = 1").Scan(&got); err != nil || got != "app-1" {
			t.Fatalf("read app.accounts: %v %q", err, got)
		}
		mustExec(t, c, "RESET search_path")
		mustExec(t, c, "INSERT INTO accounts (secret) VALUES ($1)", "public-2")
		// SET LOCAL lasts until COMMIT; SET inside a transaction rolled back is undone
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, tx.Conn(), "SET LOCAL search_path = app")
		mustExec(t, tx.Conn(), "INSERT INTO accounts (secret) VALUES ($1)", "app-3")
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		mustExec(t, c, "INSERT INTO accounts (secret) VALUES ($1)", "public-3")
		tx, _ = c.Begin(ctx)
		mustExec(t, tx.Conn(), "SELECT pg_catalog.set_config('search_path', 'app', false)")
		mustExec(t, tx.Conn(), "INSERT INTO accounts (secret) VALUES ($1)", "app-4")
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		mustExec(t, c, "INSERT INTO accounts (secret) VALUES ($1)", "public-4")
		// In one simple Query the change has not happened when pgveil
		// plans the statement after it: refused, nothing stored.
		_, err = c.Exec(ctx, "SET search_path = app; INSERT INTO accounts (secret) VALUES ('app-refused')", pgx.QueryExecModeSimpleProtocol)
		if sqlState(err) != "0A000" {
			t.Fatalf("SET and INSERT in one Query: %v", err)
		}
		mustExec(t, c, "SELECT 1")
		// set at connection
		o := p.Conn(t, "search_path", "app")
		mustExec(t, o, "INSERT INTO accounts (secret) VALUES ($1)", "app-5")
		// set_config with its setting name as a parameter
		mustExec(t, o, "SELECT set_config($1, $2, false)", "search_path", "public")
		mustExec(t, o, "INSERT INTO accounts (secret) VALUES ($1)", "public-5")
		mustExec(t, o, "SELECT set_config($1, $2, false)", "search_path", "app")
		mustExec(t, o, "INSERT INTO accounts (secret) VALUES ($1)", "app-6")
		// A schema dropped stops hiding the configured table, without
		// naming it.
		su := p.Direct(t)
		mustExec(t, su, "CREATE SCHEMA staging; CREATE TABLE staging.accounts (id serial, secret text); GRANT USAGE ON SCHEMA staging TO veil_app; GRANT ALL ON ALL TABLES IN SCHEMA staging TO veil_app; GRANT ALL ON ALL SEQUENCES IN SCHEMA staging TO veil_app")
		mustExec(t, o, "SET search_path = staging, app")
		mustExec(t, o, "INSERT INTO accounts (secret) VALUES ($1)", "staging-1")
		mustExec(t, su, "ALTER SCHEMA staging OWNER TO veil_app; ALTER TABLE staging.accounts OWNER TO veil_app")
		mustExec(t, o, "DROP SCHEMA staging CASCADE")
		mustExec(t, o, "INSERT INTO accounts (secret) VALUES ($1)", "app-7")

		// A statement prepared by name, re-planned after a change of path
		// PostgreSQL then refuses (a failed transaction), still works once
		// the transaction is over, as it does straight on PostgreSQL.
		n := p.Conn(t)
		if _, err := n.Prepare(ctx, "ins", "INSERT INTO accounts (secret) VALUES ($1)"); err != nil {
			t.Fatal(err)
		}
		mustExec(t, n, "SET search_path = app, public")
		mustExec(t, n, "BEGIN")
		if _, err := n.Exec(ctx, "SELECT 1/0"); sqlState(err) != "22012" {
			t.Fatal(err)
		}
		if _, err := n.Exec(ctx, "ins", "app-refused-in-failed-tx"); sqlState(err) != "25P02" {
			t.Fatalf("in a failed transaction: %v", err)
		}
		mustExec(t, n, "ROLLBACK")
		mustExec(t, n, "ins", "app-8")
		mustExec(t, n, "SET search_path = public")
		mustExec(t, n, "ins", "public-6")

		assertTokens(t, "app.accounts", storedSecrets(t, p, "app"), 7)
		pub := storedSecrets(t, p, "public")
		if strings.Join(pub, ",") != "public-1,public-2,public-3,public-4,public-5,public-6" {
			t.Fatalf("public.accounts holds %q", pub)
		}
		assertNoPlaintext(t, p, "app-1", "app-2", "app-3", "app-5", "app-6", "app-7", "app-8", "app-refused", "app-refused-in-failed-tx")
	})

	t.Run("temporary table", func(t *testing.T) {
		// A temporary table hides the configured one for its session.
		p := startProxy(t, proxyOpts{})
		c := p.Conn(t)
		mustExec(t, c, "CREATE TEMP TABLE users (id int, email text, email_hash text, full_name text)")
		mustExec(t, c, "INSERT INTO users (id, email, full_name) VALUES (1, $1, $2)", "temp@example.com", "Temp")
		var email string
		if err := c.QueryRow(ctx, "SELECT email FROM pg_temp.users").Scan(&email); err != nil || email != "temp@example.com" {
			t.Fatalf("temporary users: %v %q", err, email)
		}
		mustExec(t, c, "DISCARD TEMP")
		mustExec(t, c, "INSERT INTO users (email, full_name) VALUES ($1, $2)", "real@example.com", "Real")
		var n int
		if err := p.Direct(t).QueryRow(ctx, "SELECT count(*) FROM users WHERE email LIKE 'gAAAAA%'").Scan(&n); err != nil || n != 1 {
			t.Fatalf("public.users: %v %d tokens", err, n)
		}
		assertNoPlaintext(t, p, "real@example.com")
	})
}

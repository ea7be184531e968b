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
		assertNoPlaintext(t, p, "s-param", "s-literal", "s-nowhere", "s-after-set")
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

		assertTokens(t, "app.accounts", storedSecrets(t, p, "app"), 4)
		pub := storedSecrets(t, p, "public")
		if strings.Join(pub, ",") != "public-1,public-2,public-3,public-4" {
			t.Fatalf("public.accounts holds %q", pub)
		}
		assertNoPlaintext(t, p, "app-1", "app-2", "app-3", "app-5", "app-refused")
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

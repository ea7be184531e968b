package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgveil/pgveil/keyring"
)

// testEnv returns an env with keys and a config file, without a database.
func adminTestEnv(t *testing.T) (*env, *bytes.Buffer, *bytes.Buffer, string) {
	t.Helper()
	k1, _ := keyring.GenerateKey()
	k2, _ := keyring.GenerateKey()
	vars := map[string]string{"ENCRYPTION_KEY": k1, "ENCRYPTION_HASH_KEY": k2}
	cfg := filepath.Join(t.TempDir(), "pgveil.yaml")
	yml := "upstream: 127.0.0.1:5432\ntables:\n  - table: users\n    columns:\n      - column: email\n        blind_index: email_hash\n      - column: full_name\n  - table: app.notes\n    columns: [{column: body}]\n"
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, readFile: os.ReadFile,
		lookupEnv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }}
	return e, &out, &errb, cfg
}

func TestAdminUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"backfill", "--batch-size", "-1"}, exitUsage, "--batch-size must be at least 1"},
		{[]string{"backfill", "--workers", "0"}, exitUsage, "--workers must be between 1 and 64"},
		{[]string{"backfill", "--max-rate", "-5"}, exitUsage, "--max-rate"},
		{[]string{"backfill", "--max-failures", "1.5"}, exitUsage, "--max-failures must be a fraction"},
		{[]string{"reencrypt", "--shard", "2/2"}, exitUsage, "--shard must be I/N"},
		{[]string{"rehash", "--shard", "x"}, exitUsage, "--shard must be I/N"},
		{[]string{"backfill", "--table", "tasks"}, exitUsage, "use one of: public.users, app.notes"},
		{[]string{"backfill"}, exitUsage, "pass --dsn URL or set DATABASE_URL"},
		{[]string{"decrypt"}, exitUsage, "needs --yes"},
		{[]string{"verify"}, exitUsage, "pass --dsn URL or set DATABASE_URL"},
		{[]string{"schema", "--apply"}, exitUsage, "schema --apply needs a database"},
		{[]string{"backfill", "--dsn", "postgres://h:notaport/x"}, exitUsage, "invalid --dsn"},
		{[]string{"check", "--bogus"}, exitUsage, "flag provided but not defined: -bogus"},
		{[]string{"backfill", "-h"}, exitOK, "usage: pgveil backfill"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			e, _, errb, cfg := adminTestEnv(t)
			args := append([]string{tc.args[0], "--config", cfg}, tc.args[1:]...)
			code := run(context.Background(), e, args)
			if code != tc.code || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit %d and %q", code, errb, tc.code, tc.want)
			}
			if tc.code == exitUsage && !strings.Contains(errb.String(), "fix:") && !strings.Contains(errb.String(), "usage:") {
				t.Fatalf("no fix printed:\n%s", errb)
			}
		})
	}
}

func TestAdminCheckWithoutDSN(t *testing.T) {
	e, out, errb, cfg := adminTestEnv(t)
	if code := run(context.Background(), e, []string{"check", "--config", cfg}); code != exitOK {
		t.Fatalf("exit %d\n%s", code, errb)
	}
	if !strings.Contains(out.String(), "config OK: 2 table(s), 3 encrypted column(s)") || !strings.Contains(out.String(), "keys OK: primary ") {
		t.Fatalf("output:\n%s", out)
	}
	// A missing key is a configuration problem with its fix.
	e2, _, errb2, cfg2 := adminTestEnv(t)
	e2.lookupEnv = func(string) (string, bool) { return "", false }
	if code := run(context.Background(), e2, []string{"check", "--config", cfg2}); code != exitUsage || !strings.Contains(errb2.String(), "pgveil keygen") {
		t.Fatalf("missing key: exit %d\n%s", code, errb2)
	}
}

func TestAdminSchemaGeneric(t *testing.T) {
	e, out, errb, cfg := adminTestEnv(t)
	if code := run(context.Background(), e, []string{"schema", "--config", cfg}); code != exitOK {
		t.Fatalf("exit %d\n%s", code, errb)
	}
	for _, want := range []string{
		`ALTER TABLE "public"."users" ALTER COLUMN "email" TYPE text USING "email"::text;`,
		`ALTER TABLE "public"."users" ADD COLUMN IF NOT EXISTS "email_hash" text COLLATE "C";`,
		`CREATE INDEX CONCURRENTLY IF NOT EXISTS "users_email_hash_idx" ON "public"."users" ("email_hash");`,
		`ALTER TABLE "app"."notes" ALTER COLUMN "body" TYPE text USING "body"::text;`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %s in:\n%s", want, out)
		}
	}
}

// TestSameKeyRefused: the hash key must not be an encryption key. check,
// the data commands and serve all refuse it (exit 2) with the fix.
func TestSameKeyRefused(t *testing.T) {
	k1, _ := keyring.GenerateKey()
	k2, _ := keyring.GenerateKey()
	for _, tc := range []struct {
		name string
		vars map[string]string
		want string
	}{
		{"hash key = encryption key", map[string]string{"ENCRYPTION_KEY": k1, "ENCRYPTION_HASH_KEY": k1},
			"keys.hash_key holds the same key as keys.encryption_key"},
		{"hash key = fallback key", map[string]string{"ENCRYPTION_KEY": k1, "ENCRYPTION_KEY_FALLBACK": k2, "ENCRYPTION_HASH_KEY": k2},
			"keys.hash_key holds the same key as keys.fallback_keys"},
		{"fallback hash key = encryption key", map[string]string{"ENCRYPTION_KEY": k1, "ENCRYPTION_HASH_KEY": k2, "ENCRYPTION_HASH_KEY_FALLBACK": k1},
			"keys.fallback_hash_keys holds the same key as keys.encryption_key"},
		{"one file for both", map[string]string{"ENCRYPTION_KEY_FILE": "/run/secrets/k", "ENCRYPTION_HASH_KEY_FILE": "/run/secrets/k"},
			"keys.hash_key: names the same source as keys.encryption_key (file:/run/secrets/k)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range []string{"check", "backfill", "serve"} {
				e, _, errb, cfg := adminTestEnv(t)
				e.lookupEnv = func(k string) (string, bool) { v, ok := tc.vars[k]; return v, ok }
				e.readFile = func(string) ([]byte, error) { return []byte(k1), nil }
				code := run(context.Background(), e, []string{cmd, "--config", cfg, "--dsn", "postgres://127.0.0.1:1/x"})
				if cmd == "serve" {
					code = run(context.Background(), e, []string{cmd, "--config", cfg, "--listen", "127.0.0.1:0", "--admin-listen", "off"})
				}
				if code != exitUsage || !strings.Contains(errb.String(), tc.want) || !(strings.Contains(errb.String(), "fix:") || strings.Contains(errb.String(), "pgveil keygen")) {
					t.Fatalf("%s: exit %d, stderr:\n%s\nwant exit 2 and %q", cmd, code, errb, tc.want)
				}
				if strings.Contains(errb.String(), k1) || strings.Contains(errb.String(), k2) {
					t.Fatalf("%s printed a key:\n%s", cmd, errb)
				}
			}
		})
	}
	// Two different keys pass.
	e, out, errb, cfg := adminTestEnv(t)
	if code := run(context.Background(), e, []string{"check", "--config", cfg}); code != exitOK || !strings.Contains(out.String(), "keys OK") {
		t.Fatalf("different keys: exit %d\n%s", code, errb)
	}
}

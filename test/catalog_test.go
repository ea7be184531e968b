package test

import (
	"context"
	"strings"
	"testing"
)

// TestCatalogRefresh: a configured table created after the session
// started, by another connection or by the session itself, is decrypted on
// read (pgveil reloads its catalog of table OIDs), and a recreated table too
// when the DDL goes through the session.
func TestCatalogRefresh(t *testing.T) {
	p := startProxy(t, proxyOpts{schema: "CREATE TABLE plain_notes (id serial PRIMARY KEY, body text);"})
	ctx := context.Background()
	c := p.Conn(t)
	mustExec(t, c, "SELECT 1")

	// Created by another connection, directly on Postgres.
	mustExec(t, p.Direct(t), "CREATE TABLE chat_history (id bigserial PRIMARY KEY, user_id bigint, message text); GRANT ALL ON chat_history, chat_history_id_seq TO veil_app")
	mustExec(t, c, "INSERT INTO chat_history (message) VALUES ($1)", "made after start")
	var got string
	if err := c.QueryRow(ctx, "SELECT message FROM chat_history").Scan(&got); err != nil || got != "made after start" {
		t.Fatalf("table created after the session started: %v %q", err, got)
	}

	// Created through the session itself, then dropped and recreated (new OID).
	for round := 0; round < 2; round++ {
		mustExec(t, c, "DROP TABLE IF EXISTS tasks")
		mustExec(t, c, "CREATE TABLE tasks (id bigserial PRIMARY KEY, user_id bigint, title text, description text)")
		mustExec(t, c, "INSERT INTO tasks (title, description) VALUES ($1, $2)", "t round", "d round")
		var title, desc string
		if err := c.QueryRow(ctx, "SELECT title, description FROM tasks").Scan(&title, &desc); err != nil {
			t.Fatal(err)
		}
		if title != "t round" || desc != "d round" {
			t.Fatalf("round %d: read %q %q (not decrypted after DDL)", round, title, desc)
		}
		var stored string
		p.Direct(t).QueryRow(ctx, "SELECT title FROM tasks").Scan(&stored)
		if !strings.HasPrefix(stored, "gAAAAA") {
			t.Fatalf("round %d: stored title is not a token", round)
		}
	}
}

package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/test/pgtest"
)

// These tests run a session's handlers without sockets, as the session
// benchmarks do, against fakePG: every client message of a round trip is
// handled before any reply arrives (a pipeline), which is when pgveil's
// knowledge of standard_conforming_strings lags behind PostgreSQL's.

// fakePG answers what a session sent upstream as PostgreSQL 14 and later
// would, without running anything: pgveil's stand-ins (raiseSQL) raise
// their error, the extended protocol skips to Sync after an error, a change
// of standard_conforming_strings (SET, SET LOCAL, set_config with
// constants) is reported right before ReadyForQuery, and a transaction end
// undoes SET LOCAL.
type fakePG struct {
	scs     string
	saved   string // the value before SET LOCAL; "" for none
	tx      byte
	report  bool
	failed  bool
	stmts   map[string]string
	portals map[string]string
	binds   [][][]byte // every Bind's parameters, copied
}

var (
	raiseRE  = regexp.MustCompile(`ERRCODE = '(\w{5})', MESSAGE = '((?:[^']|'')*)'`)
	scsSetRE = regexp.MustCompile(`(?i)(set(?: local)? standard_conforming_strings\s*(?:=|to)\s*'?(on|off)|set_config\('standard_conforming_strings',\s*'(on|off)')`)
	tokenRE  = regexp.MustCompile(`gAAAAA[A-Za-z0-9_=-]+`)
	hashRE   = regexp.MustCompile(`\b[0-9a-f]{64}\b`)
)

// run "executes" sql: the error it raises, if any.
func (f *fakePG) run(sql string) (code, msg string) {
	if m := raiseRE.FindStringSubmatch(sql); m != nil {
		return m[1], strings.ReplaceAll(m[2], "''", "'")
	}
	for _, stmt := range strings.Split(sql, ";") {
		l := strings.ToLower(strings.TrimSpace(stmt))
		switch {
		case l == "begin":
			f.tx = 'T'
		case l == "commit" || l == "rollback":
			if f.saved != "" {
				f.setSCS(f.saved)
				f.saved = ""
			}
			f.tx = 'I'
		default:
			if m := scsSetRE.FindStringSubmatch(stmt); m != nil {
				v := m[2] + m[3]
				if strings.HasPrefix(l, "set local") && f.saved == "" {
					f.saved = f.scs
				}
				f.setSCS(v)
			}
		}
	}
	return "", ""
}

func (f *fakePG) setSCS(v string) {
	if v != f.scs {
		f.scs, f.report = v, true
	}
}

// serve reads what the session sent upstream and returns a summary of
// each message and PostgreSQL's replies.
func (f *fakePG) serve(t testing.TB, up []byte) (sent []string, replies []byte) {
	t.Helper()
	add := func(m pgproto3.BackendMessage) {
		var err error
		if replies, err = m.Encode(replies); err != nil {
			t.Fatal(err)
		}
	}
	rfq := func() {
		if f.report {
			add(&pgproto3.ParameterStatus{Name: "standard_conforming_strings", Value: f.scs})
			f.report = false
		}
		add(&pgproto3.ReadyForQuery{TxStatus: f.tx})
	}
	fail := func(code, msg string) {
		add(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code, Message: msg})
	}
	for _, fr := range frames(t, up) {
		m, err := pgproto3.NewBackend(bytes.NewReader(fr), io.Discard).Receive()
		if err != nil {
			t.Fatalf("fakePG: %v", err)
		}
		switch m := m.(type) {
		case *pgproto3.Query:
			sent = append(sent, "Q "+summarizeSQL(m.String))
			if code, msg := f.run(m.String); code != "" {
				fail(code, msg)
			} else {
				add(&pgproto3.CommandComplete{CommandTag: []byte("OK")})
			}
			rfq()
		case *pgproto3.Parse:
			sent = append(sent, fmt.Sprintf("P %s %v", summarizeSQL(m.Query), m.ParameterOIDs))
			if !f.failed {
				f.stmts[m.Name] = m.Query
				add(&pgproto3.ParseComplete{})
			}
		case *pgproto3.Bind:
			var params [][]byte
			for _, p := range m.Parameters {
				params = append(params, bytes.Clone(p))
			}
			sent = append(sent, fmt.Sprintf("B %d", len(params)))
			if !f.failed {
				f.binds = append(f.binds, params)
				f.portals[m.DestinationPortal] = f.stmts[m.PreparedStatement]
				add(&pgproto3.BindComplete{})
			}
		case *pgproto3.Describe:
			sent = append(sent, "D")
			if !f.failed {
				if m.ObjectType == 'S' {
					add(&pgproto3.ParameterDescription{})
				}
				add(&pgproto3.NoData{})
			}
		case *pgproto3.Execute:
			sent = append(sent, "E")
			if !f.failed {
				if code, msg := f.run(f.portals[m.Portal]); code != "" {
					fail(code, msg)
					f.failed = true
				} else {
					add(&pgproto3.CommandComplete{CommandTag: []byte("OK")})
				}
			}
		case *pgproto3.Sync:
			sent = append(sent, "S")
			f.failed = false
			rfq()
		case *pgproto3.FunctionCall:
			sent = append(sent, "F")
			add(&pgproto3.FunctionCallResponse{})
			rfq()
		case *pgproto3.Close:
			sent = append(sent, "C")
			if !f.failed {
				add(&pgproto3.CloseComplete{})
			}
		default:
			t.Fatalf("fakePG: unexpected %T", m)
		}
	}
	return sent, replies
}

// frames splits a stream of protocol messages into whole frames.
func frames(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 5 {
			t.Fatalf("a partial frame: %q", b)
		}
		n := 1 + int(binary.BigEndian.Uint32(b[1:]))
		if n < 5 || n > len(b) {
			t.Fatalf("a partial frame: %q", b)
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// summarizeSQL shortens what pgveil sent: its stand-ins to RAISE and the
// SQLSTATE, tokens and blind indexes to placeholders.
func summarizeSQL(sql string) string {
	if m := raiseRE.FindStringSubmatch(sql); m != nil {
		return "RAISE " + m[1]
	}
	return hashRE.ReplaceAllString(tokenRE.ReplaceAllString(sql, "<token>"), "<hash>")
}

// handlerHarness is a session past startup (benchSession: users has email
// with its blind index, full_name and phone encrypted) in front of fakePG.
type handlerHarness struct {
	s        *Session
	kr       *keyring.Keyring
	pg       *fakePG
	up, down bytes.Buffer
}

func newHandlerHarness(t testing.TB) *handlerHarness {
	t.Helper()
	s, kr := benchSession(t)
	h := &handlerHarness{s: s, kr: kr, pg: &fakePG{scs: "on", tx: 'I', stmts: map[string]string{}, portals: map[string]string{}}}
	s.uw = bufio.NewWriterSize(&h.up, 4096)
	s.cw = bufio.NewWriterSize(&h.down, 4096)
	return h
}

// loginReports hands the session the ParameterStatus of a login.
func (h *handlerHarness) loginReports(scs string) {
	h.pg.scs = scs
	body := append(append(append([]byte("standard_conforming_strings"), 0), scs...), 0)
	h.s.noteParameterStatus(body)
}

// roundTrip hands the session msgs, then PostgreSQL's replies to what it
// sent upstream; it returns the summaries of what went upstream and of
// what the client got.
func (h *handlerHarness) roundTrip(t testing.TB, msgs ...pgproto3.FrontendMessage) (sent, got []string) {
	t.Helper()
	var client []byte
	for _, m := range msgs {
		var err error
		if client, err = m.Encode(client); err != nil {
			t.Fatal(err)
		}
	}
	h.s.feedClient(t, client)
	sent, replies := h.pg.serve(t, h.up.Bytes())
	h.up.Reset()
	h.s.feedServer(t, replies)
	for _, f := range frames(t, h.down.Bytes()) {
		m, err := pgproto3.NewFrontend(bytes.NewReader(f), io.Discard).Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			got = append(got, "E "+m.Code+" "+m.Message)
		case *pgproto3.CommandComplete:
			got = append(got, "C "+string(m.CommandTag))
		case *pgproto3.ReadyForQuery:
			got = append(got, "Z"+string(m.TxStatus))
		case *pgproto3.ParameterStatus:
			got = append(got, "S "+m.Name+"="+m.Value)
		default:
			got = append(got, strings.TrimPrefix(fmt.Sprintf("%T", m), "*pgproto3."))
		}
	}
	h.down.Reset()
	if !h.s.q.empty() {
		t.Fatal("replies left owed")
	}
	return sent, got
}

// usable checks that a simple query goes through after what came before.
func (h *handlerHarness) usable(t testing.TB) {
	t.Helper()
	sent, got := h.roundTrip(t, &pgproto3.Query{String: "SELECT 1"})
	if strings.Join(sent, "|") != "Q SELECT 1" || strings.Join(got, "|") != "C OK|ZI" {
		t.Fatalf("connection not usable: sent %q, got %q", sent, got)
	}
}

func ext(sql string) []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: sql}, &pgproto3.Bind{}, &pgproto3.Execute{}}
}

func msgs(parts ...any) []pgproto3.FrontendMessage {
	var out []pgproto3.FrontendMessage
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			out = append(out, &pgproto3.Query{String: p})
		case []pgproto3.FrontendMessage:
			out = append(out, p...)
		case pgproto3.FrontendMessage:
			out = append(out, p)
		}
	}
	return out
}

func joined(ss []string) string { return strings.Join(ss, "|") }

// refusedWith reports whether got holds pgveil's refusal with code whose
// message contains msg.
func refusedWith(got []string, code, msg string) bool {
	for _, g := range got {
		if strings.HasPrefix(g, "E "+code+" ") && strings.Contains(g, msg) {
			return true
		}
	}
	return false
}

// TestSessionStandardConformingStrings: while standard_conforming_strings
// is off, or may have changed in a message or pipeline PostgreSQL has not
// answered yet, a statement text that may touch a configured table is
// refused with 0A000 in place of being sent (PostgreSQL and pgveil would
// read its literals differently); other statements pass.
func TestSessionStandardConformingStrings(t *testing.T) {
	const (
		insert      = `INSERT INTO users (email) VALUES ('a\\b')`
		smuggle     = `INSERT INTO users (full_name, email) VALUES ('x\', /* ', 'SECRET-PLAIN') -- */ 'enc')`
		other       = `INSERT INTO notes (body) VALUES ('a\\b')`
		off, change = "standard_conforming_strings is off", "may have changed before this statement runs"
	)
	cases := []struct {
		name   string
		login  string // standard_conforming_strings at login; "" for on
		before [][]pgproto3.FrontendMessage
		msgs   []pgproto3.FrontendMessage
		// refused: the message in the error; "" means the statement under
		// test went upstream and forwarded is in what went.
		refused   string
		forwarded string
	}{
		{name: "off at login, simple", login: "off", msgs: msgs(insert), refused: off},
		{name: "off at login, literal hidden from an on reading", login: "off", msgs: msgs(smuggle), refused: off},
		{name: "off at login, lookup", login: "off", msgs: msgs(`SELECT full_name FROM users WHERE email = 'x\y'`), refused: off},
		{name: "off at login, backslash in a comment", login: "off", msgs: msgs(`INSERT INTO users (email) VALUES ('x') -- \`), refused: off},
		// Without a backslash, a text reads the same either way.
		{name: "off at login, no backslash", login: "off", msgs: msgs(`INSERT INTO users (email) VALUES ('it''s')`), forwarded: "<token>"},
		{name: "off at login, no backslash, extended", login: "off", msgs: msgs(ext(`SELECT full_name FROM users WHERE email = 'x'`), &pgproto3.Sync{}), forwarded: "<hash>"},
		{name: "off at login, extended", login: "off", msgs: msgs(ext(insert), &pgproto3.Sync{}), refused: off},
		{name: "off at login, other table passes", login: "off", msgs: msgs(other), forwarded: "Q " + other},
		{name: "off at login, other table passes, extended", login: "off", msgs: msgs(ext(other), &pgproto3.Sync{}), forwarded: "P " + other},
		{name: "on", msgs: msgs(insert), forwarded: "<token>"},
		{name: "turned off", before: [][]pgproto3.FrontendMessage{msgs("SET standard_conforming_strings = off")}, msgs: msgs(insert), refused: off},
		{name: "turned off, then on", before: [][]pgproto3.FrontendMessage{msgs("SET standard_conforming_strings = off"), msgs("SET standard_conforming_strings TO on")},
			msgs: msgs(insert), forwarded: "<token>"},
		// PostgreSQL parses a simple Query's whole text before running any
		// of it: a SET in it changes how the next message is read.
		{name: "SET in the same message", msgs: msgs("SET standard_conforming_strings = off; " + insert), forwarded: "<token>"},
		{name: "set_config in the same message", msgs: msgs("SELECT set_config('standard_conforming_strings', 'off', false); " + insert), forwarded: "<token>"},
		{name: "SET in the same message, then", before: [][]pgproto3.FrontendMessage{msgs("SET standard_conforming_strings = off; " + other)}, msgs: msgs(insert), refused: off},
		{name: "simple queries pipelined", msgs: msgs("SET standard_conforming_strings = off", insert), refused: change},
		{name: "simple queries pipelined, no backslash", msgs: msgs("SET standard_conforming_strings = off", `INSERT INTO users (email) VALUES ('x')`), forwarded: "<token>"},
		{name: "set_config pipelined", msgs: msgs("SELECT set_config('standard_conforming_strings', 'off', false)", insert), refused: change},
		{name: "RESET ALL pipelined", msgs: msgs("RESET ALL", insert), refused: change},
		{name: "DISCARD ALL pipelined", msgs: msgs("DISCARD ALL", insert), refused: change},
		{name: "DO block pipelined", msgs: msgs(`DO $$BEGIN EXECUTE 'SET standard_' || 'conforming_strings = off'; END$$`, insert), refused: change},
		{name: "ON CONFLICT DO NOTHING pipelined is no DO block", msgs: msgs(`INSERT INTO users (full_name) VALUES ('x') ON CONFLICT DO NOTHING`, insert), forwarded: "<token>"},
		{name: "pipelined, other table passes", msgs: msgs("SET standard_conforming_strings = off", other), forwarded: "Q " + other},
		{name: "answered, then on", before: [][]pgproto3.FrontendMessage{msgs("SELECT set_config('standard_conforming_strings', 'on', false)")}, msgs: msgs(insert), forwarded: "<token>"},
		{name: "extended pipeline", msgs: msgs(ext("SET standard_conforming_strings = off"), ext(insert), &pgproto3.Sync{}), refused: change},
		{name: "prepared set_config executed in the pipeline",
			before: [][]pgproto3.FrontendMessage{msgs(&pgproto3.Parse{Name: "sc", Query: "SELECT set_config($1, $2, false)"}, &pgproto3.Sync{})},
			msgs: msgs(&pgproto3.Bind{PreparedStatement: "sc", Parameters: [][]byte{[]byte("standard_conforming_strings"), []byte("off")}},
				&pgproto3.Execute{}, ext(insert), &pgproto3.Sync{}),
			refused: change},
		{name: "FunctionCall in the pipeline", msgs: msgs(&pgproto3.FunctionCall{Function: 2078}, ext(insert), &pgproto3.Sync{}), refused: change},
		{name: "prepared while on, executed while off",
			before: [][]pgproto3.FrontendMessage{
				msgs(&pgproto3.Parse{Name: "ins", Query: "INSERT INTO users (email) VALUES ($1)"}, &pgproto3.Sync{}),
				msgs("SET standard_conforming_strings = off")},
			msgs:      msgs(&pgproto3.Bind{PreparedStatement: "ins", Parameters: [][]byte{[]byte(`a\b`)}}, &pgproto3.Execute{}, &pgproto3.Sync{}),
			forwarded: "B 2"},
		{name: "SET LOCAL on inside a transaction", login: "off",
			before: [][]pgproto3.FrontendMessage{msgs("BEGIN"), msgs("SET LOCAL standard_conforming_strings = on")},
			msgs:   msgs(insert), forwarded: "<token>"},
		{name: "COMMIT undoing SET LOCAL, same message", login: "off",
			before: [][]pgproto3.FrontendMessage{msgs("BEGIN"), msgs("SET LOCAL standard_conforming_strings = on")},
			msgs:   msgs("COMMIT; " + insert), forwarded: "<token>"},
		{name: "ROLLBACK TO undoing SET, pipelined", login: "off",
			before: [][]pgproto3.FrontendMessage{msgs("BEGIN"), msgs("SAVEPOINT a"), msgs("SET standard_conforming_strings = on")},
			msgs:   msgs("ROLLBACK TO SAVEPOINT a", insert), refused: change},
		{name: "COMMIT undoing SET LOCAL, pipelined", login: "off",
			before: [][]pgproto3.FrontendMessage{msgs("BEGIN"), msgs("SET LOCAL standard_conforming_strings = on")},
			msgs:   msgs("COMMIT", insert), refused: change},
		{name: "COMMIT undoing SET LOCAL, then", login: "off",
			before: [][]pgproto3.FrontendMessage{msgs("BEGIN"), msgs("SET LOCAL standard_conforming_strings = on"), msgs("COMMIT")},
			msgs:   msgs(insert), refused: off},
		{name: "COMMIT with nothing to undo", before: [][]pgproto3.FrontendMessage{msgs("BEGIN")}, msgs: msgs("COMMIT", insert), forwarded: "<token>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandlerHarness(t)
			if tc.login != "" {
				h.loginReports(tc.login)
			}
			for _, b := range tc.before {
				if sent, got := h.roundTrip(t, b...); strings.Contains(joined(got), "E ") {
					t.Fatalf("before: sent %q, got %q", sent, got)
				}
			}
			sent, got := h.roundTrip(t, tc.msgs...)
			if tc.refused != "" {
				if !refusedWith(got, codeFeatureNotSupported, tc.refused) || !strings.Contains(joined(sent), "RAISE 0A000") {
					t.Fatalf("want refused with %q: sent %q, got %q", tc.refused, sent, got)
				}
				for _, s := range sent {
					if strings.Contains(s, "INSERT INTO users") || strings.Contains(s, "SECRET") {
						t.Fatalf("the refused statement went upstream: %q", sent)
					}
				}
			} else if strings.Contains(joined(got), "E ") || !strings.Contains(joined(sent), tc.forwarded) {
				t.Fatalf("want forwarded (%q): sent %q, got %q", tc.forwarded, sent, got)
			}
			if !strings.HasPrefix(got[len(got)-1], "Z") {
				t.Fatalf("no ReadyForQuery at the end: %q", got)
			}
			if h.pg.tx == 'T' {
				h.roundTrip(t, msgs("ROLLBACK")...)
			}
			h.usable(t)
		})
	}
}

// TestSessionStandardConformingStringsKept: a kept connection's own value
// wins over what the login told the client.
func TestSessionStandardConformingStringsKept(t *testing.T) {
	for _, kept := range []bool{false, true} {
		h := newHandlerHarness(t)
		h.loginReports("on")
		h.s.moveToKept(&idleUpstream{conn: pipeConn(t), scsOff: kept}, time.Now().Add(time.Second))
		h.s.ur = &memFrames{limit: 1 << 20}
		h.s.uw = bufio.NewWriterSize(&h.up, 4096)
		if h.s.scs.off.Load() != kept {
			t.Fatalf("kept off=%v: session says off=%v", kept, h.s.scs.off.Load())
		}
	}
}

// TestResetUpstreamReportsSCS: DISCARD ALL's ParameterStatus tells what a
// kept connection's standard_conforming_strings is after the reset.
func TestResetUpstreamReportsSCS(t *testing.T) {
	for _, tc := range []struct {
		before bool
		report string // "" for none
		want   bool
	}{
		{before: true, report: "", want: true},
		{before: true, report: "on", want: false},
		{before: false, report: "off", want: true},
		{before: false, report: "", want: false},
	} {
		a, b := net.Pipe()
		go func() {
			defer b.Close()
			be := pgproto3.NewBackend(b, b)
			if _, err := be.Receive(); err != nil { // DISCARD ALL
				return
			}
			if tc.report != "" {
				be.Send(&pgproto3.ParameterStatus{Name: "standard_conforming_strings", Value: tc.report})
			}
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("DISCARD ALL")})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			_ = be.Flush()
			_, _ = be.Receive()
		}()
		got, err := resetUpstream(a, tc.before)
		a.Close()
		if err != nil || got != tc.want {
			t.Errorf("before off=%v, report %q: off=%v, %v; want off=%v", tc.before, tc.report, got, err, tc.want)
		}
	}
}

func TestSCSEffect(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want uint8
	}{
		{"SELECT 1", 0},
		{"INSERT INTO users (email) VALUES ('x') ON CONFLICT (email) DO UPDATE SET full_name = 'y'", 0},
		{"INSERT INTO users (email) VALUES ('x') ON CONFLICT DO NOTHING", 0},
		{"SELECT reset_at, discarded, commit_ts, app_config, standard_x FROM t WHERE a && b", 0},
		{"SELECT CASE WHEN true THEN 1 END", 0},
		{"SET search_path = public", 0},
		{"SET standard_conforming_strings = off", scsSets},
		{"show Standard_Conforming_Strings", scsSets},
		{`SET "STANDARD_CONFORMING_STRINGS" TO off`, scsSets},
		{`SET U&"\0073tandard_conforming_strings" = off`, scsSets},
		{`SET u&"d\0061ta" = 1`, scsSets},
		{"select pg_catalog.SET_CONFIG($1, $2, false)", scsSets},
		{"SELECT 'set_config'", scsSets},
		{"RESET ALL", scsSets},
		{"  /* a /* nested */ comment */ -- and a line\n discard all", scsSets},
		{"SELECT 1; (reset all)", scsSets},
		{"DO $$BEGIN NULL; END$$", scsSets},
		{"do language plpgsql 'begin null'", scsSets},
		{"COMMIT", scsTxEnd},
		{"SELECT 1;end", scsTxEnd},
		{"ROLLBACK TO SAVEPOINT a", scsTxEnd},
		{"abort", scsTxEnd},
		{"PREPARE TRANSACTION 'x'", scsTxEnd},
		{"SET search_path = public; COMMIT", scsTxEnd},
		{"éreset; reset_x", 0},
	} {
		if got := scsEffect(tc.sql); got != tc.want {
			t.Errorf("scsEffect(%q) = %b, want %b", tc.sql, got, tc.want)
		}
	}
}

// TestSessionParamTypes: a parameter pgveil encrypts or hashes must be
// declared a type whose text and binary forms are the text PostgreSQL
// stores; any other is refused with 0A000 at Parse (a binary int4 is four
// raw bytes, a text '0042' PostgreSQL stores as 42). bpchar loses its
// trailing spaces first, as PostgreSQL's cast to text does. Binary arrays
// must hold text.
func TestSessionParamTypes(t *testing.T) {
	const (
		insEmail = "INSERT INTO users (email) VALUES ($1)"
		insName  = "INSERT INTO users (full_name) VALUES ($1)"
		lookup   = "SELECT full_name FROM users WHERE email = $1"
		anyOf    = "SELECT full_name FROM users WHERE email = ANY($1)"
	)
	int4 := []byte{0x41, 0x42, 0x43, 0x44}
	cases := []struct {
		name   string
		sql    string
		oids   []uint32
		format int16
		value  []byte
		// refused: the message in the error ("" for accepted); plain: what
		// the tokens open to and the hashes hash.
		refused string
		plain   []string
	}{
		{name: "int4 binary", sql: insName, oids: []uint32{23}, format: 1, value: int4, refused: "parameter 1 for encrypted column users.full_name is declared int4"},
		{name: "int4 binary, encrypted and hashed", sql: insEmail, oids: []uint32{23}, format: 1, value: int4, refused: "users.email is declared int4"},
		{name: "int4 binary, lookup", sql: lookup, oids: []uint32{23}, format: 1, value: int4, refused: "users.email is declared int4"},
		{name: "int4 text", sql: insName, oids: []uint32{23}, value: []byte("0042"), refused: "declared int4"},
		{name: "int8 binary", sql: insName, oids: []uint32{20}, format: 1, value: make([]byte, 8), refused: "declared int8"},
		{name: "uuid binary", sql: insName, oids: []uint32{2950}, format: 1, value: make([]byte, 16), refused: "declared uuid"},
		{name: "bool binary", sql: insEmail, oids: []uint32{16}, format: 1, value: []byte{1}, refused: "declared bool"},
		{name: "name", sql: insName, oids: []uint32{19}, value: []byte("x"), refused: "declared name"},
		{name: "int4[] for = ANY", sql: anyOf, oids: []uint32{1007}, value: []byte("{1,2}"), refused: "declared type OID 1007"},
		{name: "text[] for a scalar", sql: insName, oids: []uint32{1009}, value: []byte("{a}"), refused: "declared type OID 1009"},
		{name: "binary int4[] elements", sql: anyOf, format: 1, value: pgtest.BinaryArray(23, int4), refused: "array parameter for encrypted column users.email has elements of type int4"},
		{name: "text binary", sql: insEmail, oids: []uint32{25}, format: 1, value: []byte("ABCD"), plain: []string{"ABCD", "ABCD"}},
		{name: "varchar binary", sql: insEmail, oids: []uint32{1043}, format: 1, value: []byte("v@x.io"), plain: []string{"v@x.io", "v@x.io"}},
		{name: "unknown binary", sql: insName, oids: []uint32{705}, format: 1, value: []byte("u"), plain: []string{"u"}},
		// PostgreSQL infers text for it, and reads the four bytes as text.
		{name: "unspecified binary", sql: insName, format: 1, value: int4, plain: []string{"ABCD"}},
		{name: "unspecified text", sql: lookup, value: []byte("l@x.io"), plain: []string{"l@x.io"}},
		{name: "bpchar text", sql: insEmail, oids: []uint32{1042}, value: []byte("pad@x.io  "), plain: []string{"pad@x.io", "pad@x.io"}},
		{name: "bpchar binary", sql: insEmail, oids: []uint32{1042}, format: 1, value: []byte("pad@x.io "), plain: []string{"pad@x.io", "pad@x.io"}},
		{name: "bpchar lookup", sql: lookup, oids: []uint32{1042}, value: []byte("pad@x.io   "), plain: []string{"pad@x.io"}},
		{name: "bpchar inner spaces stay", sql: insName, oids: []uint32{1042}, value: []byte(" a b  "), plain: []string{" a b"}},
		{name: "text[] for = ANY", sql: anyOf, oids: []uint32{1009}, value: []byte("{a@x.io,b@x.io}"), plain: []string{"{a@x.io,b@x.io}"}},
		{name: "varchar[] for = ANY", sql: anyOf, oids: []uint32{1015}, value: []byte("{a@x.io}"), plain: []string{"{a@x.io}"}},
		{name: "binary text[] for = ANY", sql: anyOf, format: 1, value: pgtest.BinaryArray(25, []byte("a@x.io"), []byte("b@x.io")), plain: []string{"{a@x.io,b@x.io}"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandlerHarness(t)
			sent, got := h.roundTrip(t, &pgproto3.Parse{Query: tc.sql, ParameterOIDs: tc.oids},
				&pgproto3.Bind{ParameterFormatCodes: []int16{tc.format}, Parameters: [][]byte{tc.value}},
				&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
			if tc.refused != "" {
				if !refusedWith(got, codeFeatureNotSupported, tc.refused) || got[len(got)-1] != "ZI" {
					t.Fatalf("want refused with %q: sent %q, got %q", tc.refused, sent, got)
				}
				for _, b := range h.pg.binds {
					for _, p := range b {
						if bytes.Equal(p, tc.value) || tokenRE.Match(p) {
							t.Fatalf("a value went upstream: %q", sent)
						}
					}
				}
				h.usable(t)
				return
			}
			if strings.Contains(joined(got), "E ") || len(h.pg.binds) != 1 {
				t.Fatalf("want accepted: sent %q, got %q", sent, got)
			}
			params := h.pg.binds[0]
			if len(params) != len(tc.plain) {
				t.Fatalf("Bind went with %d parameters, want %d", len(params), len(tc.plain))
			}
			for i, p := range params {
				if want := h.expect(t, tc.sql, i, tc.plain[i]); string(p) != want {
					t.Errorf("parameter %d: %q, want %q (of %q)", i+1, p, want, tc.plain[i])
				}
			}
			h.usable(t)
		})
	}
}

// expect is what parameter i of sql should carry for plain: a token (which
// opens to plain; the token itself is returned), a blind index, or a text
// array of blind indexes.
func (h *handlerHarness) expect(t testing.TB, sql string, i int, plain string) string {
	t.Helper()
	hash := func(v string) string {
		return string(h.kr.BlindIndex(nil, "public.users.email", []byte(v)))
	}
	last := h.pg.binds[len(h.pg.binds)-1][i]
	switch {
	case strings.Contains(sql, "ANY"):
		elems := strings.Split(strings.Trim(plain, "{}"), ",")
		for j, e := range elems {
			elems[j] = hash(e)
		}
		return "{" + strings.Join(elems, ",") + "}"
	case strings.HasPrefix(sql, "SELECT"):
		return hash(plain)
	case i == 1:
		return hash(plain)
	}
	opened, _, err := h.kr.Open(nil, last)
	if err != nil || string(opened) != plain {
		t.Errorf("parameter %d opens to %q (%v), want %q", i+1, opened, err, plain)
	}
	return string(last)
}

// TestSessionParameterStatusOverLimit: a ParameterStatus over
// proxy.max_message_size streams through to the client as before; the
// standard_conforming_strings report after it is still seen.
func TestSessionParameterStatusOverLimit(t *testing.T) {
	h := newHandlerHarness(t)
	big, _ := (&pgproto3.ParameterStatus{Name: "application_name", Value: strings.Repeat("a", 2<<20)}).Encode(nil)
	scs, _ := (&pgproto3.ParameterStatus{Name: "standard_conforming_strings", Value: "off"}).Encode(nil)
	h.s.feedServer(t, append(append([]byte(nil), big...), scs...))
	if !bytes.Equal(h.down.Bytes(), append(big, scs...)) {
		t.Fatalf("the client got %d bytes, want both reports (%d bytes)", h.down.Len(), len(big)+len(scs))
	}
	if !h.s.scs.off.Load() {
		t.Fatal("the report of standard_conforming_strings was not seen")
	}
}

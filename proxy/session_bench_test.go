package proxy

import (
	"bufio"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgveil/pgveil/keyring"
)

// The session benchmarks run one statement's messages through the handlers
// the way the event loop does (whole frames in memory, output to buffered
// writers), without sockets: what pgveil spends per statement in user
// space, steadier than a pgbench run on a small machine. The statements are
// make bench's: pgbench -S in each protocol, and the encrypted OLTP scripts.

const (
	benchUsersOID    = 16400
	benchAccountsOID = 16500
)

// benchSession is a session past startup whose catalog knows users (email
// with its blind index, full_name, phone encrypted).
func benchSession(b testing.TB) (*Session, *keyring.Keyring) {
	b.Helper()
	snap, kr := testSnapshotColumns(b, "127.0.0.1:1",
		"      - {column: email, blind_index: email_hash}\n      - {column: full_name}\n      - {column: phone}\n")
	reg := prometheus.NewRegistry()
	srv := NewServer(snap, nil, NewMetrics(reg), keyring.NewMetrics(reg))
	s := newSession(srv, nil, 1)
	s.snap = snap
	s.evented = true
	var rows [][][]byte
	for i, col := range []string{"id", "email", "email_hash", "full_name", "phone"} {
		rows = append(rows, [][]byte{[]byte("16400"), []byte{byte('1' + i)}, []byte("public"), []byte("users"), []byte(col)})
	}
	s.cat.Store(buildCatalog(snap.Config.Tables, rows, snap.Generation))
	s.cr = &memFrames{limit: 1 << 20}
	s.ur = &memFrames{limit: 1 << 20}
	s.uw = bufio.NewWriterSize(io.Discard, eventWriteBufferSize)
	s.cw = bufio.NewWriterSize(io.Discard, eventWriteBufferSize)
	return s, kr
}

func encodeAll(b testing.TB, msgs ...interface{ Encode([]byte) ([]byte, error) }) []byte {
	b.Helper()
	var out []byte
	for _, m := range msgs {
		var err error
		if out, err = m.Encode(out); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// feedClient hands the session client's bytes as one readiness event of
// the event loop would, and flushes what it sends upstream.
func (s *Session) feedClient(tb testing.TB, client []byte) {
	tb.Helper()
	cin := s.cr.(*memFrames)
	cin.buf, cin.r = append(cin.buf[:0], client...), 0
	for {
		typ, _, err := cin.next()
		if err == errWouldBlock {
			break
		}
		if err := s.onClientMessage(typ, err, benchSent); err != nil {
			tb.Fatal(err)
		}
	}
	if err := s.uw.Flush(); err != nil {
		tb.Fatal(err)
	}
}

// feedServer hands the session PostgreSQL's replies the same way (a frame
// over max_message_size included: onServerMessage streams or refuses it),
// and flushes what it sends the client.
func (s *Session) feedServer(tb testing.TB, replies []byte) {
	tb.Helper()
	uin := s.ur.(*memFrames)
	uin.buf, uin.r = append(uin.buf[:0], replies...), 0
	for {
		typ, _, err := uin.next()
		if err == errWouldBlock {
			break
		}
		if err != nil && !isTooLarge(err) {
			tb.Fatal(err)
		}
		if err := s.onServerMessage(&s.srvState, typ); err != nil {
			tb.Fatal(err)
		}
	}
	if err := s.cw.Flush(); err != nil {
		tb.Fatal(err)
	}
}

// runBench runs client and server through the session b.N times; cold
// evicts the caches before each round trip (see thrash).
func (s *Session) runBench(b *testing.B, client, server []byte, cold bool) {
	b.ReportAllocs()
	for b.Loop() {
		if cold {
			b.StopTimer()
			thrash()
			b.StartTimer()
		}
		s.benchRoundTrip(b, client, server)
	}
}

// roundTrip hands the session one client batch and the server's replies,
// as two readiness events would.
func (s *Session) benchRoundTrip(b *testing.B, client, server []byte) {
	s.feedClient(b, client)
	s.srvState.arrived = benchSent + 50*time.Microsecond
	s.feedServer(b, server)
	if !s.q.empty() {
		b.Fatal("replies left owed")
	}
}

// benchSent stands for the time a client message arrived.
var benchSent = time.Millisecond

func field(name string, table uint32, attr uint16, typ uint32) pgproto3.FieldDescription {
	return pgproto3.FieldDescription{Name: []byte(name), TableOID: table, TableAttributeNumber: attr, DataTypeOID: typ, DataTypeSize: -1, TypeModifier: -1}
}

var (
	benchAccountsRow = &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("abalance", benchAccountsOID, 3, 23)}}
	benchUsersRow    = &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
		field("email", benchUsersOID, 2, 25), field("full_name", benchUsersOID, 4, 25), field("phone", benchUsersOID, 5, 25)}}
)

const benchSelect = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"

// pgbenchSimple is one pgbench -S -M simple transaction.
func pgbenchSimple(b *testing.B) (client, server []byte) {
	client = encodeAll(b, &pgproto3.Query{String: "SELECT abalance FROM pgbench_accounts WHERE aid = 81237;"})
	server = encodeAll(b, benchAccountsRow, &pgproto3.DataRow{Values: [][]byte{[]byte("0")}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	return client, server
}

func BenchmarkSessionPgbenchSimple(b *testing.B) {
	s, _ := benchSession(b)
	client, server := pgbenchSimple(b)
	s.runBench(b, client, server, false)
}

// pgbenchExtended is one pgbench -S -M extended transaction.
func pgbenchExtended(b *testing.B) (client, server []byte) {
	client = encodeAll(b, &pgproto3.Parse{Query: benchSelect},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("81237")}}, &pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	server = encodeAll(b, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, benchAccountsRow,
		&pgproto3.DataRow{Values: [][]byte{[]byte("0")}}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return client, server
}

func BenchmarkSessionPgbenchExtended(b *testing.B) {
	s, _ := benchSession(b)
	client, server := pgbenchExtended(b)
	s.runBench(b, client, server, false)
}

// prepare runs a Parse + Describe statement + Sync for name.
func (s *Session) benchPrepare(b *testing.B, name, sql string, params []uint32, rows pgproto3.BackendMessage) {
	client := encodeAll(b, &pgproto3.Parse{Name: name, Query: sql}, &pgproto3.Describe{ObjectType: 'S', Name: name}, &pgproto3.Sync{})
	var desc []byte
	desc, _ = (&pgproto3.ParameterDescription{ParameterOIDs: params}).Encode(desc)
	server := encodeAll(b, &pgproto3.ParseComplete{})
	server = append(server, desc...)
	server = append(server, encodeAll(b, rows.(interface{ Encode([]byte) ([]byte, error) }), &pgproto3.ReadyForQuery{TxStatus: 'I'})...)
	s.benchRoundTrip(b, client, server)
}

func BenchmarkSessionPgbenchPrepared(b *testing.B) {
	s, _ := benchSession(b)
	s.benchPrepare(b, "P0_1", benchSelect, []uint32{23}, benchAccountsRow)
	client := encodeAll(b, &pgproto3.Bind{PreparedStatement: "P0_1", Parameters: [][]byte{[]byte("81237")}},
		&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
	server := encodeAll(b, &pgproto3.BindComplete{}, benchAccountsRow,
		&pgproto3.DataRow{Values: [][]byte{[]byte("0")}}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	s.runBench(b, client, server, false)
}

func benchUserRow(b *testing.B, kr *keyring.Keyring) *pgproto3.DataRow {
	var vals [][]byte
	for _, v := range []string{"u4242@example.com", "User Number 4242", "+1-555-0004242"} {
		tok, err := kr.Seal(nil, []byte(v))
		if err != nil {
			b.Fatal(err)
		}
		vals = append(vals, tok)
	}
	return &pgproto3.DataRow{Values: vals}
}

// lookupSimple is the encrypted lookup of make bench, literal inlined.
func lookupSimple(b *testing.B, kr *keyring.Keyring) (client, server []byte) {
	client = encodeAll(b, &pgproto3.Query{String: "SELECT email, full_name, phone FROM users WHERE email = 'u4242@example.com';"})
	server = encodeAll(b, benchUsersRow, benchUserRow(b, kr),
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	return client, server
}

func BenchmarkSessionEncryptedLookupSimple(b *testing.B) {
	s, kr := benchSession(b)
	client, server := lookupSimple(b, kr)
	s.runBench(b, client, server, false)
}

// lookupPrepared is the encrypted lookup of make bench, prepared.
func (s *Session) lookupPrepared(b *testing.B, kr *keyring.Keyring) (client, server []byte) {
	s.benchPrepare(b, "P0_2", "SELECT email, full_name, phone FROM users WHERE email = $1;", []uint32{25}, benchUsersRow)
	client = encodeAll(b, &pgproto3.Bind{PreparedStatement: "P0_2", Parameters: [][]byte{[]byte("u4242@example.com")}},
		&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
	server = encodeAll(b, &pgproto3.BindComplete{}, benchUsersRow, benchUserRow(b, kr),
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	return client, server
}

func BenchmarkSessionEncryptedLookupPrepared(b *testing.B) {
	s, kr := benchSession(b)
	client, server := s.lookupPrepared(b, kr)
	s.runBench(b, client, server, false)
}

func BenchmarkSessionEncryptedInsertPrepared(b *testing.B) {
	s, _ := benchSession(b)
	s.benchPrepare(b, "P0_2", "INSERT INTO users (email, full_name, phone) VALUES ($1, $2, $3);", []uint32{25, 25, 25}, &pgproto3.NoData{})
	client := encodeAll(b, &pgproto3.Bind{PreparedStatement: "P0_2", Parameters: [][]byte{
		[]byte("b123456789@example.com"), []byte("Bench User 123456789"), []byte("+1-555-123456789")}},
		&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
	server := encodeAll(b, &pgproto3.BindComplete{}, &pgproto3.NoData{},
		&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	s.runBench(b, client, server, false)
}

// insertSimple is the encrypted insert of make bench, values inlined.
func insertSimple(b *testing.B) (client, server []byte) {
	client = encodeAll(b, &pgproto3.Query{String: "INSERT INTO users (email, full_name, phone) VALUES ('b123456789@example.com', 'Bench User 123456789', '+1-555-123456789');"})
	server = encodeAll(b, &pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	return client, server
}

func BenchmarkSessionEncryptedInsertSimple(b *testing.B) {
	s, _ := benchSession(b)
	client, server := insertSimple(b)
	s.runBench(b, client, server, false)
}

// thrash evicts the caches the way the processes sharing a small machine's
// cores do between two events of a session.
var thrashBuf = make([]byte, 4<<20)

func thrash() {
	for i := 0; i < len(thrashBuf); i += 64 {
		thrashBuf[i]++
	}
}

// BenchmarkSessionCold runs scenarios of the benchmarks above with the
// data caches evicted before each statement.
func BenchmarkSessionCold(b *testing.B) {
	for _, c := range []struct {
		name     string
		scenario func(*testing.B, *Session, *keyring.Keyring) (client, server []byte)
	}{
		{"PgbenchSimple", func(b *testing.B, _ *Session, _ *keyring.Keyring) ([]byte, []byte) { return pgbenchSimple(b) }},
		{"PgbenchExtended", func(b *testing.B, _ *Session, _ *keyring.Keyring) ([]byte, []byte) { return pgbenchExtended(b) }},
		{"LookupSimple", func(b *testing.B, _ *Session, kr *keyring.Keyring) ([]byte, []byte) { return lookupSimple(b, kr) }},
		{"LookupPrepared", func(b *testing.B, s *Session, kr *keyring.Keyring) ([]byte, []byte) { return s.lookupPrepared(b, kr) }},
		{"InsertSimple", func(b *testing.B, _ *Session, _ *keyring.Keyring) ([]byte, []byte) { return insertSimple(b) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			s, kr := benchSession(b)
			client, server := c.scenario(b, s, kr)
			s.runBench(b, client, server, true)
		})
	}
}

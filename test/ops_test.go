package test

// Operations tests against the real binary (SPEC §7, issue 5): hot key
// rotation by SIGHUP under traffic, SIGTERM drain, maintenance mode and the
// metrics an operator scrapes. Each test runs `pgveil serve` as a process
// in front of the harness cluster, with its stderr kept for the suite-wide
// log scan of zz_logscan_test.go.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/test/pgtest"
)

// ---------------------------------------------------------------------------
// Planted secrets: every plaintext value and key a test hands to pgveil can
// be registered here; TestZZZLogsHaveNoSecrets fails if any of them shows
// up in a log line written during the suite.

var plantedSecrets struct {
	mu     sync.Mutex
	values map[string]bool
}

// plant registers plaintext values and keys that must never appear in a
// log. A key (url-safe base64 of 32 bytes) is also registered as the hex
// and standard base64 of its bytes. Values shorter than 6 characters are
// ignored: they would match by accident.
func plant(values ...string) {
	plantedSecrets.mu.Lock()
	defer plantedSecrets.mu.Unlock()
	if plantedSecrets.values == nil {
		plantedSecrets.values = map[string]bool{}
	}
	for _, v := range values {
		if len(v) < 6 {
			continue
		}
		plantedSecrets.values[v] = true
		if raw, err := base64.URLEncoding.DecodeString(v); err == nil && len(raw) == 32 {
			plantedSecrets.values[hex.EncodeToString(raw)] = true
			plantedSecrets.values[base64.StdEncoding.EncodeToString(raw)] = true
			plantedSecrets.values[base64.RawURLEncoding.EncodeToString(raw)] = true
		}
	}
}

func plantedList() []string {
	plantedSecrets.mu.Lock()
	defer plantedSecrets.mu.Unlock()
	out := make([]string, 0, len(plantedSecrets.values))
	for v := range plantedSecrets.values {
		out = append(out, v)
	}
	return out
}

// genKey makes a new key and plants it.
func genKey(t testing.TB) string {
	t.Helper()
	k, err := keyring.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	plant(k)
	return k
}

func fingerprint(t testing.TB, key string) string {
	t.Helper()
	k, err := keyring.ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return k.Fingerprint()
}

// keyringOf builds a keyring holding only the given encryption keys (the
// first is the primary), to tell which key produced a stored token.
func keyringOf(t testing.TB, hashKey string, keys ...string) *keyring.Keyring {
	t.Helper()
	env := map[string]string{"K": keys[0], "H": hashKey, "F": strings.Join(keys[1:], ",")}
	kr, err := keyring.Load(config.Keys{EncryptionKey: "env:K", FallbackKeys: "env:F", HashKey: "env:H", KeyVersion: 1},
		func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// ---------------------------------------------------------------------------
// pgveil as a process.

// liveBinaries counts pgveil processes of this file still running; the log
// scan checks it is zero, i.e. every stderr was recorded.
var liveBinaries atomic.Int64

type binOpts struct {
	// yaml is the config file's content after the upstream lines; default
	// appTables with keys from env.
	yaml string
	env  map[string]string
	// dir holds the config file; default t.TempDir().
	dir string
}

type pgveilProc struct {
	t       testing.TB
	cmd     *exec.Cmd
	Addr    string // client listener
	Admin   string // admin_listen
	Config  string // config file path
	Stderr  *logBuffer
	Cluster *pgtest.Cluster
	DB      string

	done     chan struct{}
	waitErr  error
	exitedAt time.Time
}

// newAppDB creates a database with the app schema.
func newAppDB(t testing.TB) (*pgtest.Cluster, string) {
	t.Helper()
	c := pgtest.Get(t)
	return c, createAppDB(t, c, "")
}

// upstreamYAML is the head of a config file pointing at the cluster.
func upstreamYAML(c *pgtest.Cluster) string {
	return fmt.Sprintf("upstream: %s\nupstream_tls: {mode: disable}\n", c.Addr())
}

// startPgveil writes the config and runs `pgveil serve`, waiting until it
// listens. When the test ends the process gets SIGTERM (if still running)
// and must exit 0; its stderr goes to the suite-wide log scan.
func startPgveil(t testing.TB, c *pgtest.Cluster, db string, o binOpts) *pgveilProc {
	t.Helper()
	bin := pgtest.Pgveil(t)
	dir := o.dir
	if dir == "" {
		dir = t.TempDir()
	}
	cfgPath := filepath.Join(dir, "pgveil.yaml")
	if err := os.WriteFile(cfgPath, []byte(o.yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &pgveilProc{t: t, Config: cfgPath, Stderr: &logBuffer{}, Cluster: c, DB: db, done: make(chan struct{})}
	for attempt := 0; ; attempt++ {
		p.Addr, p.Admin = pgtest.FreeAddr(t), pgtest.FreeAddr(t)
		cmd := exec.Command(bin, "serve", "--config", cfgPath, "--listen", p.Addr, "--admin-listen", p.Admin)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
		for k, v := range o.env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out := &logBuffer{}
		cmd.Stdout = out
		cmd.Stderr = p.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p.cmd = cmd
		p.done = make(chan struct{})
		liveBinaries.Add(1)
		go func(done chan struct{}) {
			p.waitErr = cmd.Wait()
			p.exitedAt = time.Now()
			liveBinaries.Add(-1)
			close(done)
		}(p.done)
		if p.waitListening(30 * time.Second) {
			break
		}
		<-p.done
		recordLogs(t, p.Stderr)
		if attempt < 2 && strings.Contains(p.Stderr.String(), "address already in use") {
			p.Stderr = &logBuffer{}
			continue // a free port was taken in between: try others
		}
		t.Fatalf("pgveil serve did not start: %v\nstderr:\n%s\nstdout:\n%s", p.waitErr, p.Stderr.String(), out.String())
	}
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
				t.Errorf("pgveil did not exit within 20s of SIGTERM")
			}
			if p.waitErr != nil {
				t.Errorf("pgveil exited with %v after SIGTERM; stderr:\n%s", p.waitErr, p.Stderr.String())
			}
		}
		recordLogs(t, p.Stderr)
		if strings.Contains(p.Stderr.String(), "DATA RACE") {
			t.Errorf("pgveil reported a data race:\n%s", p.Stderr.String())
		}
	})
	return p
}

// waitListening waits for "pgveil listening"; false if the process exited.
func (p *pgveilProc) waitListening(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if p.countLogs("pgveil listening") > 0 {
			return true
		}
		select {
		case <-p.done:
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

// signal sends sig to the process.
func (p *pgveilProc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// logLines parses the JSON log lines of stderr (other lines are skipped).
func (p *pgveilProc) logLines() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.Stderr.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func (p *pgveilProc) linesWithMsg(msg string) []map[string]any {
	var out []map[string]any
	for _, m := range p.logLines() {
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func (p *pgveilProc) countLogs(msg string) int { return len(p.linesWithMsg(msg)) }

// waitLogs waits until at least n lines carry msg and returns them.
func (p *pgveilProc) waitLogs(msg string, n int, d time.Duration) []map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		if l := p.linesWithMsg(msg); len(l) >= n {
			return l
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no %d log line(s) %q within %v; stderr:\n%s", n, msg, d, p.Stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reload rewrites nothing; it sends SIGHUP and waits for the n-th line msg
// ("configuration reloaded" or "configuration reload failed; ...").
func (p *pgveilProc) reload(msg string) map[string]any {
	p.t.Helper()
	before := p.countLogs(msg)
	p.signal(syscall.SIGHUP)
	l := p.waitLogs(msg, before+1, 10*time.Second)
	return l[before]
}

// dsn through pgveil.
func (p *pgveilProc) dsn(role string, params ...string) string {
	direct := p.Cluster.DSN(role, p.DB, params...)
	return strings.Replace(direct, p.Cluster.Addr(), p.Addr, 1)
}

func (p *pgveilProc) conn(t testing.TB) *pgx.Conn {
	t.Helper()
	return pgtest.ConnectDSN(t, p.dsn(pgtest.TrustUser))
}

// exited waits up to d for the process to end.
func (p *pgveilProc) exited(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// ---------------------------------------------------------------------------
// Admin endpoints.

var adminClient = &http.Client{Timeout: 5 * time.Second}

func (p *pgveilProc) get(path string) (int, string) {
	p.t.Helper()
	resp, err := adminClient.Get("http://" + p.Admin + path)
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitStatus polls path until it answers code.
func (p *pgveilProc) waitStatus(path string, code int, d time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		got, body := p.get(path)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("GET %s: %d %q, want %d within %v", path, got, body, code, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metrics is one scrape, parsed by Prometheus' text format parser.
type metrics map[string]*dto.MetricFamily

func (p *pgveilProc) scrape() metrics {
	p.t.Helper()
	code, body := p.get("/metrics")
	if code != http.StatusOK {
		p.t.Fatalf("GET /metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		p.t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// value returns the sample of name whose labels include want: the value of
// a counter, gauge or untyped metric, the sample count of a histogram or
// summary. ok is false when no such series exists.
func (m metrics) value(name string, want ...string) (v float64, ok bool) {
	fam := m[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, s := range fam.GetMetric() {
		labels := map[string]string{}
		for _, l := range s.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case s.Counter != nil:
			return s.Counter.GetValue(), true
		case s.Gauge != nil:
			return s.Gauge.GetValue(), true
		case s.Untyped != nil:
			return s.Untyped.GetValue(), true
		case s.Histogram != nil:
			return float64(s.Histogram.GetSampleCount()), true
		case s.Summary != nil:
			return float64(s.Summary.GetSampleCount()), true
		}
	}
	return 0, false
}

// must is value that fails the test when the series is missing.
func (m metrics) must(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := m.value(name, labels...)
	if !ok {
		t.Fatalf("metric %s%v not exported", name, labels)
	}
	return v
}

// waitMetric polls /metrics until cond holds for the series.
func (p *pgveilProc) waitMetric(name string, labels []string, cond func(float64) bool, what string) float64 {
	p.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v := p.scrape().must(p.t, name, labels...)
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("metric %s%v = %v, want %s", name, labels, v, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// A raw protocol client, to see exactly what pgveil sends an idle session.

type rawClient struct {
	conn net.Conn
	fe   *pgproto3.Frontend
}

// rawConnect runs the startup as the trust user and reads up to the first
// ReadyForQuery; an ErrorResponse during startup is returned as err.
func rawConnect(t testing.TB, addr, db string) (*rawClient, *pgproto3.ErrorResponse, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	rc := &rawClient{conn: c, fe: pgproto3.NewFrontend(c, c)}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	rc.fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": pgtest.TrustUser, "database": db}})
	if err := rc.fe.Flush(); err != nil {
		return nil, nil, err
	}
	for {
		msg, err := rc.fe.Receive()
		if err != nil {
			return nil, nil, err
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			cp := *m
			return nil, &cp, nil
		case *pgproto3.ReadyForQuery:
			_ = c.SetDeadline(time.Time{})
			return rc, nil, nil
		}
	}
}

// query runs sql with the simple protocol and reads up to ReadyForQuery.
func (rc *rawClient) query(sql string) error {
	_ = rc.conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer rc.conn.SetDeadline(time.Time{})
	rc.fe.Send(&pgproto3.Query{String: sql})
	if err := rc.fe.Flush(); err != nil {
		return err
	}
	var failed error
	for {
		msg, err := rc.fe.Receive()
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			failed = fmt.Errorf("%s %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return failed
		}
	}
}

// expectDrainFatal reads what pgveil sends an idle session after SIGTERM:
// FATAL 57P03 "pgveil: shutting down", then the end of the connection.
func (rc *rawClient) expectDrainFatal(t testing.TB, what string) {
	t.Helper()
	_ = rc.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	msg, err := rc.fe.Receive()
	if er, ok := msg.(*pgproto3.ErrorResponse); err != nil || !ok || er.Severity != "FATAL" || er.Code != "57P03" || er.Message != "pgveil: shutting down" {
		t.Errorf("%s during drain got %#v (%v), want FATAL 57P03 \"pgveil: shutting down\" within 5s", what, msg, err)
		return
	}
	if _, err := rc.fe.Receive(); err == nil {
		t.Errorf("%s not closed after its FATAL", what)
	}
}

// ---------------------------------------------------------------------------
// The tests. One top-level test with parallel subtests: the parent returns
// only when they are done, so their logs are recorded before the log scan.

func TestOps(t *testing.T) {
	pgtest.Get(t)
	pgtest.Pgveil(t) // build once, before the parallel subtests time anything
	t.Run("KeyRotationUnderTraffic", func(t *testing.T) { t.Parallel(); testKeyRotation(t) })
	t.Run("DrainOpenTransaction", func(t *testing.T) { t.Parallel(); testDrainOpenTransaction(t) })
	t.Run("DrainIdle", func(t *testing.T) { t.Parallel(); testDrainIdle(t) })
	t.Run("MaintenanceEnv", func(t *testing.T) { t.Parallel(); testMaintenanceEnv(t) })
	t.Run("MaintenanceReload", func(t *testing.T) { t.Parallel(); testMaintenanceReload(t) })
	t.Run("Metrics", func(t *testing.T) { t.Parallel(); testMetrics(t) })
}

// writeFileAtomic replaces path's content in one rename, so a reload never
// reads half a key.
func writeFileAtomic(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// rotRow is one row written by the traffic of the rotation test.
type rotRow struct {
	userID, chatID    int64
	email, name, msg  string
	started, finished time.Time
}

func testKeyRotation(t *testing.T) {
	c, db := newAppDB(t)
	dir := t.TempDir()
	oldKey, newKey, hashKey := genKey(t), genKey(t), genKey(t)
	encFile, fbFile, hashFile := filepath.Join(dir, "enc.key"), filepath.Join(dir, "fallback.key"), filepath.Join(dir, "hash.key")
	writeFileAtomic(t, encFile, oldKey+"\n")
	writeFileAtomic(t, fbFile, "") // empty file: no fallback yet
	writeFileAtomic(t, hashFile, hashKey)
	cfg := func(version int) string {
		return upstreamYAML(c) + fmt.Sprintf("shutdown_timeout: 10s\nkeys:\n  encryption_key: file:%s\n  fallback_keys: file:%s\n  key_version: %d\n  hash_key: file:%s\n",
			encFile, fbFile, version, hashFile) + appTables
	}
	p := startPgveil(t, c, db, binOpts{yaml: cfg(1), dir: dir})
	oldFP, newFP := fingerprint(t, oldKey), fingerprint(t, newKey)

	// Start-up: audit line with version and fingerprints, gauge at 1.
	initLine := p.waitLogs("Encryption service initialized", 1, 5*time.Second)[0]
	if initLine["logger"] != "audit.encryption" || initLine["key_version"] != float64(1) || fmt.Sprint(initLine["key_fingerprints"]) != fmt.Sprint([]any{oldFP}) {
		t.Fatalf("start-up audit line %v, want logger audit.encryption, key_version 1, key_fingerprints [%s]", initLine, oldFP)
	}
	if v := p.scrape().must(t, "active_encryption_key_version"); v != 1 {
		t.Fatalf("active_encryption_key_version = %v at start, want 1", v)
	}

	// Traffic: writers inserting into users and chat_history and reading
	// back by email, each on its own connection.
	const workers = 4
	var (
		mu      sync.Mutex
		rows    []rotRow
		errs    []error
		stop    atomic.Bool
		wg      sync.WaitGroup
		ops     atomic.Int64
		runID   = fmt.Sprintf("%08x", rand.Uint32())
		ctx     = context.Background()
		clients = make([]*pgx.Conn, workers)
	)
	for w := range clients {
		clients[w] = p.conn(t)
	}
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cn := clients[w]
			var mine []rotRow
			for i := 0; !stop.Load(); i++ {
				r := rotRow{
					email:   fmt.Sprintf("rot-%s-%d-%d@rotation.example", runID, w, i),
					name:    fmt.Sprintf("Rotation Person %s %d/%d", runID, w, i),
					msg:     fmt.Sprintf("secret chat message %s %d/%d", runID, w, i),
					started: time.Now(),
				}
				plant(r.email, r.name, r.msg)
				if err := cn.QueryRow(ctx, "INSERT INTO users (email, full_name) VALUES ($1, $2) RETURNING id", r.email, r.name).Scan(&r.userID); err != nil {
					fail(fmt.Errorf("worker %d insert user: %w", w, err))
					continue
				}
				if err := cn.QueryRow(ctx, "INSERT INTO chat_history (user_id, message) VALUES ($1, $2) RETURNING id", r.userID, r.msg).Scan(&r.chatID); err != nil {
					fail(fmt.Errorf("worker %d insert chat: %w", w, err))
					continue
				}
				r.finished = time.Now()
				var id int64
				var name string
				if err := cn.QueryRow(ctx, "SELECT id, full_name FROM users WHERE email = $1", r.email).Scan(&id, &name); err != nil {
					fail(fmt.Errorf("worker %d read back own row: %w", w, err))
					continue
				}
				if id != r.userID || name != r.name {
					fail(fmt.Errorf("worker %d read back id %d: got another row or name", w, r.userID))
				}
				mine = append(mine, r)
				// Read an earlier row by email (often one written before the
				// rotation), and its chat message.
				old := mine[rand.IntN(len(mine))]
				var msg string
				if err := cn.QueryRow(ctx, "SELECT u.full_name, c.message FROM users u JOIN chat_history c ON c.user_id = u.id WHERE u.email = $1", old.email).Scan(&name, &msg); err != nil {
					fail(fmt.Errorf("worker %d read earlier row: %w", w, err))
					continue
				}
				if name != old.name || msg != old.msg {
					fail(fmt.Errorf("worker %d earlier row user %d read back wrong", w, old.userID))
				}
				ops.Add(1)
			}
			mu.Lock()
			rows = append(rows, mine...)
			mu.Unlock()
		}(w)
	}
	defer func() { stop.Store(true); wg.Wait() }()

	probe := p.conn(t)
	mustExec(t, probe, "INSERT INTO chat_history (user_id, message) VALUES ($1, $2) RETURNING id", 0, "probe before "+runID)
	time.Sleep(900 * time.Millisecond)

	// Rotate: the new key becomes primary, the old one fallback, version 2.
	writeFileAtomic(t, fbFile, oldKey+"\n")
	writeFileAtomic(t, encFile, newKey+"\n")
	writeFileAtomic(t, p.Config, cfg(2))
	reloadSent := time.Now()
	line := p.reload("configuration reloaded")
	reloadDone := time.Now()
	if line["logger"] != "audit.encryption" || line["key_version"] != float64(2) || fmt.Sprint(line["key_fingerprints"]) != fmt.Sprint([]any{newFP, oldFP}) {
		t.Errorf("reload audit line %v, want logger audit.encryption, key_version 2, key_fingerprints [%s %s]", line, newFP, oldFP)
	}
	m := p.scrape()
	if v := m.must(t, "active_encryption_key_version"); v != 2 {
		t.Errorf("active_encryption_key_version = %v after the reload, want 2", v)
	}
	oldUsesAtReload := m.must(t, "pgveil_decryptions_total", "key", oldFP)
	if _, ok := m.value("pgveil_decryptions_total", "key", newFP); !ok {
		t.Errorf("pgveil_decryptions_total{key=%q} not exported after the reload", newFP)
	}
	opsAtReload := ops.Load()

	// Probes right after the reload, to tell which paths use the new key:
	// a statement an existing session prepared before the reload (pgx's
	// default: Bind/Execute only), a simple-protocol statement on that
	// session, and a session opened after the reload.
	probeInsert := func(cn *pgx.Conn, mode pgx.QueryExecMode, what string) {
		t.Helper()
		secret := fmt.Sprintf("probe message %s: %s", runID, what)
		plant(secret)
		var id int64
		if err := cn.QueryRow(ctx, "INSERT INTO chat_history (user_id, message) VALUES ($1, $2) RETURNING id", mode, 0, secret).Scan(&id); err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		stored := storedValue(t, c.Superuser(t, db), "chat_history", "message", id)
		if stored == nil {
			t.Errorf("%s: stored NULL", what)
			return
		}
		if plain, idx, err := keyringOf(t, hashKey, newKey).Open(nil, []byte(*stored)); err != nil || idx != 0 || string(plain) != secret {
			_, _, oldErr := keyringOf(t, hashKey, oldKey).Open(nil, []byte(*stored))
			t.Errorf("%s after the reload: stored token is not under the new primary key (opens with the old key: %v)", what, oldErr == nil)
		}
	}
	probeInsert(probe, pgx.QueryExecModeCacheStatement, "statement prepared before the reload on an existing session")
	probeInsert(probe, pgx.QueryExecModeSimpleProtocol, "simple-protocol statement on an existing session")
	probeInsert(p.conn(t), pgx.QueryExecModeCacheStatement, "statement on a session opened after the reload")

	time.Sleep(900 * time.Millisecond)

	// A failed reload: a malformed primary key. The old configuration stays.
	malformed := "not-a-fernet-key-" + runID + "-0123456789abcdef"
	plant(malformed)
	writeFileAtomic(t, encFile, malformed+"\n")
	bad := p.reload("configuration reload failed; keeping the previous configuration")
	if bad["logger"] != "audit.encryption" || bad["level"] != "ERROR" {
		t.Errorf("failed reload line %v, want an ERROR from audit.encryption", bad)
	}
	if e, _ := bad["error"].(string); !strings.Contains(e, encFile) || !strings.HasPrefix(e, "pgveil: ") {
		t.Errorf("failed reload error %q should start with \"pgveil: \" and name the key file %s", e, encFile)
	}
	failDone := time.Now()
	opsAtFail := ops.Load()
	time.Sleep(600 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	writeFileAtomic(t, encFile, newKey+"\n")

	mu.Lock()
	defer mu.Unlock()
	for i, err := range errs {
		if i >= 10 {
			t.Errorf("... %d client errors in all", len(errs))
			break
		}
		t.Errorf("client error during rotation: %v", err)
	}
	if opsAtReload == 0 || ops.Load()-opsAtFail == 0 || opsAtFail-opsAtReload == 0 {
		t.Fatalf("traffic did not run in every phase (ops before reload %d, before failed reload %d, total %d)", opsAtReload, opsAtFail, ops.Load())
	}
	m = p.scrape()
	if v := m.must(t, "active_encryption_key_version"); v != 2 {
		t.Errorf("active_encryption_key_version = %v after the failed reload, want 2 (kept)", v)
	}
	if v := m.must(t, "pgveil_config_reloads_total", "result", "success"); v != 1 {
		t.Errorf("pgveil_config_reloads_total{result=success} = %v, want 1", v)
	}
	if v := m.must(t, "pgveil_config_reloads_total", "result", "error"); v != 1 {
		t.Errorf("pgveil_config_reloads_total{result=error} = %v, want 1", v)
	}

	// What is stored: before the reload tokens under the old key, after it
	// (also after the failed reload) tokens under the new key only.
	onlyOld := keyringOf(t, hashKey, oldKey)
	onlyNew := keyringOf(t, hashKey, newKey)
	direct := c.Superuser(t, db)
	var before, after int
	wrong, examples := map[string]int{}, map[string]string{}
	for _, r := range rows {
		var email, name, msg string
		if err := direct.QueryRow(ctx, "SELECT u.email, u.full_name, c.message FROM users u JOIN chat_history c ON c.user_id = u.id WHERE c.id = $1", r.chatID).Scan(&email, &name, &msg); err != nil {
			t.Fatal(err)
		}
		var kr *keyring.Keyring
		var phase string
		switch {
		case r.finished.Before(reloadSent):
			kr, phase = onlyOld, "before the reload"
			before++
		case r.started.After(failDone):
			kr, phase = onlyNew, "after the failed reload"
			after++
		case r.started.After(reloadDone):
			kr, phase = onlyNew, "after the reload"
			after++
		default:
			continue // written while the reload ran: either key is right
		}
		for _, v := range []struct{ col, stored, want string }{{"users.email", email, r.email}, {"users.full_name", name, r.name}, {"chat_history.message", msg, r.msg}} {
			plain, idx, err := kr.Open(nil, []byte(v.stored))
			if err != nil || idx != 0 || string(plain) != v.want {
				k := v.col + " written " + phase
				if wrong[k] == 0 {
					examples[k] = fmt.Sprintf("user %d: %v", r.userID, err)
				}
				wrong[k]++
			}
		}
	}
	for k, n := range wrong {
		t.Errorf("%s: %d stored token(s) do not open with that phase's primary key alone (first: %s)", k, n, examples[k])
	}
	if before < 3 || after < 3 {
		t.Fatalf("too few rows to judge: %d before the reload, %d after", before, after)
	}
	t.Logf("rotation: %d rows (%d before the reload, %d after), %d client errors", len(rows), before, after, len(errs))

	// Every row reads back through pgveil: the old ones by the fallback key.
	reader := p.conn(t)
	got := map[int64][3]string{}
	res, err := reader.Query(ctx, "SELECT c.id, u.email, u.full_name, c.message FROM users u JOIN chat_history c ON c.user_id = u.id")
	if err != nil {
		t.Fatal(err)
	}
	for res.Next() {
		var id int64
		var e, n, msg string
		if err := res.Scan(&id, &e, &n, &msg); err != nil {
			t.Fatal(err)
		}
		got[id] = [3]string{e, n, msg}
	}
	if err := res.Err(); err != nil {
		t.Fatalf("reading every row through pgveil: %v", err)
	}
	for _, r := range rows {
		if got[r.chatID] != [3]string{r.email, r.name, r.msg} {
			t.Errorf("row of chat %d does not read back through pgveil", r.chatID)
		}
	}
	m = p.scrape()
	oldUses := m.must(t, "pgveil_decryptions_total", "key", oldFP)
	newUses := m.must(t, "pgveil_decryptions_total", "key", newFP)
	if oldUses-oldUsesAtReload < float64(3*before) {
		t.Errorf("pgveil_decryptions_total{key=%s} grew by %v after the reload, want at least %d (the pre-rotation rows read through the fallback)", oldFP, oldUses-oldUsesAtReload, 3*before)
	}
	if newUses < float64(3*after) {
		t.Errorf("pgveil_decryptions_total{key=%s} = %v, want at least %d", newFP, newUses, 3*after)
	}
}

func testDrainOpenTransaction(t *testing.T) {
	c, db := newAppDB(t)
	hk, ek := genKey(t), genKey(t)
	p := startPgveil(t, c, db, binOpts{
		yaml: upstreamYAML(c) + "shutdown_timeout: 15s\n" + appTables,
		env:  map[string]string{"ENCRYPTION_KEY": ek, "ENCRYPTION_HASH_KEY": hk},
	})
	ctx := context.Background()
	p.waitStatus("/readyz", http.StatusOK, 5*time.Second)

	tx := p.conn(t)
	idle, refused, err := rawConnect(t, p.Addr, db)
	if err != nil || refused != nil {
		t.Fatalf("idle connection: %v %v", err, refused)
	}
	if err := idle.query("SELECT 1"); err != nil {
		t.Fatal(err)
	}
	email1, email2 := "drain-one@drain.example", "drain-two@drain.example"
	plant(email1, email2, "Drain Person One", "Drain Person Two")
	mustExec(t, tx, "BEGIN")
	var id1 int64
	if err := tx.QueryRow(ctx, "INSERT INTO users (email, full_name) VALUES ($1, $2) RETURNING id", email1, "Drain Person One").Scan(&id1); err != nil {
		t.Fatal(err)
	}

	sigterm := time.Now()
	p.signal(syscall.SIGTERM)
	p.waitLogs("draining", 1, 5*time.Second)
	body := p.waitStatus("/readyz", http.StatusServiceUnavailable, 5*time.Second)
	if !strings.HasPrefix(body, "pgveil: ") {
		t.Errorf("/readyz while draining: %q, want a pgveil: message", body)
	}
	if v := p.scrape().must(t, "pgveil_draining"); v != 1 {
		t.Errorf("pgveil_draining = %v while draining, want 1", v)
	}
	if code, _ := p.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while draining: %d, want 200", code)
	}

	// The idle session is told and closed.
	idle.expectDrainFatal(t, "an idle session")

	// A new connection is refused: 57P03, or the listener is already closed.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	nc, err := pgx.Connect(cctx, p.dsn(pgtest.TrustUser))
	cancel()
	if err == nil {
		nc.Close(ctx)
		t.Errorf("a new connection was accepted while draining")
	} else if st := sqlState(err); st != "57P03" && !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("new connection while draining: %v, want SQLSTATE 57P03 or connection refused", err)
	} else {
		t.Logf("new connection while draining: refused (%v)", err)
	}

	// The open transaction carries on and commits.
	var id2 int64
	if err := tx.QueryRow(ctx, "INSERT INTO users (email, full_name) VALUES ($1, $2) RETURNING id", email2, "Drain Person Two").Scan(&id2); err != nil {
		t.Fatalf("statement in the open transaction during drain: %v", err)
	}
	var n int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM users WHERE email = $1", email1).Scan(&n); err != nil || n != 1 {
		t.Fatalf("lookup in the open transaction during drain: %d, %v", n, err)
	}
	if p.exited(200 * time.Millisecond) {
		t.Fatalf("pgveil exited with a transaction open: %v", p.waitErr)
	}
	if _, err := tx.Exec(ctx, "COMMIT"); err != nil {
		t.Fatalf("COMMIT during drain: %v", err)
	}

	if !p.exited(15 * time.Second) {
		t.Fatalf("pgveil still running 15s (shutdown_timeout) after SIGTERM")
	}
	if p.waitErr != nil {
		t.Fatalf("pgveil exit after drain: %v, want status 0", p.waitErr)
	}
	if d := p.exitedAt.Sub(sigterm); d > 10*time.Second {
		t.Errorf("pgveil took %v to exit after the transaction ended", d)
	}
	p.waitLogs("pgveil stopped", 1, time.Second)
	if p.countLogs("shutdown timeout reached; remaining sessions closed") != 0 {
		t.Errorf("the drain hit shutdown_timeout")
	}

	// Both rows are stored, encrypted.
	direct := c.Superuser(t, db)
	kr := keyringOf(t, hk, ek)
	for id, want := range map[int64]string{id1: email1, id2: email2} {
		var stored string
		if err := direct.QueryRow(ctx, "SELECT email FROM users WHERE id = $1", id).Scan(&stored); err != nil {
			t.Fatalf("row %d written in the drained transaction: %v", id, err)
		}
		if plain, _, err := kr.Open(nil, []byte(stored)); err != nil || string(plain) != want {
			t.Errorf("row %d: stored email is not a token of the value written (%v)", id, err)
		}
	}
}

func testDrainIdle(t *testing.T) {
	c, db := newAppDB(t)
	p := startPgveil(t, c, db, binOpts{
		yaml: upstreamYAML(c) + "shutdown_timeout: 8s\n" + appTables,
		env:  map[string]string{"ENCRYPTION_KEY": genKey(t), "ENCRYPTION_HASH_KEY": genKey(t)},
	})
	// Idle sessions in the two states an application pool leaves them: one
	// that has run statements, one that connected and never ran any.
	used, refused, err := rawConnect(t, p.Addr, db)
	if err != nil || refused != nil {
		t.Fatalf("connection: %v %v", err, refused)
	}
	if err := used.query("INSERT INTO plain_notes (body) VALUES ('x'); SELECT count(*) FROM users"); err != nil {
		t.Fatal(err)
	}
	fresh, refused, err := rawConnect(t, p.Addr, db)
	if err != nil || refused != nil {
		t.Fatalf("connection: %v %v", err, refused)
	}
	// And a pgx connection, idle at SIGTERM.
	pc := p.conn(t)
	mustExec(t, pc, "SELECT 1")

	sigterm := time.Now()
	p.signal(syscall.SIGTERM)
	used.expectDrainFatal(t, "an idle session that has run statements")
	fresh.expectDrainFatal(t, "an idle session that never ran a statement (startup only)")
	if !p.exited(5 * time.Second) {
		t.Fatalf("pgveil with only idle sessions did not exit within 5s of SIGTERM (shutdown_timeout 8s)")
	}
	if p.waitErr != nil {
		t.Fatalf("pgveil exit: %v, want status 0", p.waitErr)
	}
	t.Logf("idle drain took %v", p.exitedAt.Sub(sigterm))
	if p.countLogs("shutdown timeout reached; remaining sessions closed") != 0 {
		t.Errorf("the drain of idle sessions waited for shutdown_timeout")
	}
	// The pgx connection was closed too: its next statement fails.
	if _, err := pc.Exec(context.Background(), "SELECT 1"); err == nil {
		t.Errorf("a statement succeeded on a drained connection after pgveil exited")
	}
}

// connectErr connects through pgveil and returns the error (closing a
// connection that succeeded).
func connectErr(p *pgveilProc) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.dsn(pgtest.TrustUser))
	if err == nil {
		c.Close(ctx)
	}
	return err
}

func assertMaintenanceRefusal(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("a new connection was accepted in maintenance mode")
	}
	if sqlState(err) != "57P03" || !strings.Contains(err.Error(), "pgveil: ") {
		t.Fatalf("connection in maintenance mode: %v, want SQLSTATE 57P03 with a pgveil: message", err)
	}
}

func testMaintenanceEnv(t *testing.T) {
	c, db := newAppDB(t)
	p := startPgveil(t, c, db, binOpts{
		yaml: upstreamYAML(c) + appTables,
		env: map[string]string{"ENCRYPTION_KEY": genKey(t), "ENCRYPTION_HASH_KEY": genKey(t),
			"MAINTENANCE_MODE": "true", "ENCRYPTION_KEY_VERSION": "7"},
	})
	assertMaintenanceRefusal(t, connectErr(p))
	if code, body := p.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "maintenance") {
		t.Errorf("/readyz in maintenance mode: %d %q, want 503 naming maintenance", code, body)
	}
	if code, _ := p.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz in maintenance mode: %d, want 200", code)
	}
	m := p.scrape()
	if v := m.must(t, "pgveil_maintenance_mode"); v != 1 {
		t.Errorf("pgveil_maintenance_mode = %v, want 1", v)
	}
	if v := m.must(t, "pgveil_connections_total", "result", "refused_maintenance"); v < 1 {
		t.Errorf("pgveil_connections_total{result=refused_maintenance} = %v, want at least 1", v)
	}
	if v := m.must(t, "active_encryption_key_version"); v != 7 {
		t.Errorf("active_encryption_key_version = %v with ENCRYPTION_KEY_VERSION=7, want 7", v)
	}
}

func testMaintenanceReload(t *testing.T) {
	c, db := newAppDB(t)
	ek, hk := genKey(t), genKey(t)
	base := upstreamYAML(c) + appTables
	p := startPgveil(t, c, db, binOpts{
		yaml: base + "maintenance: true\n",
		env:  map[string]string{"ENCRYPTION_KEY": ek, "ENCRYPTION_HASH_KEY": hk},
	})
	ctx := context.Background()
	assertMaintenanceRefusal(t, connectErr(p))
	p.waitStatus("/readyz", http.StatusServiceUnavailable, time.Second)

	// maintenance: false + SIGHUP: connections work, ready.
	writeFileAtomic(t, p.Config, base+"maintenance: false\n")
	if l := p.reload("configuration reloaded"); l["maintenance"] != false {
		t.Errorf("reload line %v, want maintenance false", l)
	}
	if err := connectErr(p); err != nil {
		t.Fatalf("connection after maintenance ended: %v", err)
	}
	p.waitStatus("/readyz", http.StatusOK, 5*time.Second)

	// Existing connections survive maintenance turned on by SIGHUP, also
	// one in a transaction.
	live, inTx := p.conn(t), p.conn(t)
	email := "maint-live@maintenance.example"
	plant(email, "Maintenance Survivor")
	mustExec(t, inTx, "BEGIN")
	mustExec(t, inTx, "INSERT INTO users (email, full_name) VALUES ($1, $2)", email, "Maintenance Survivor")
	writeFileAtomic(t, p.Config, base+"maintenance: true\n")
	if l := p.reload("configuration reloaded"); l["maintenance"] != true {
		t.Errorf("reload line %v, want maintenance true", l)
	}
	assertMaintenanceRefusal(t, connectErr(p))
	p.waitStatus("/readyz", http.StatusServiceUnavailable, time.Second)
	mustExec(t, inTx, "COMMIT")
	var name string
	if err := live.QueryRow(ctx, "SELECT full_name FROM users WHERE email = $1", email).Scan(&name); err != nil || name != "Maintenance Survivor" {
		t.Fatalf("existing connection in maintenance mode: %q, %v", name, err)
	}
	if v := p.scrape().must(t, "pgveil_connections"); v != 2 {
		t.Errorf("pgveil_connections = %v with two live sessions in maintenance mode, want 2", v)
	}
}

func testMetrics(t *testing.T) {
	c, db := newAppDB(t)
	ek, hk := genKey(t), genKey(t)
	p := startPgveil(t, c, db, binOpts{
		yaml: upstreamYAML(c) + appTables,
		env:  map[string]string{"ENCRYPTION_KEY": ek, "ENCRYPTION_HASH_KEY": hk},
	})
	ctx := context.Background()
	fp := fingerprint(t, ek)
	m0 := p.scrape()
	for _, name := range []string{"encryption_operations_total", "encryption_errors_total", "encryption_duration_seconds",
		"active_encryption_key_version", "pgveil_connections", "pgveil_queries_total", "pgveil_rejections_total",
		"pgveil_upstream_errors_total", "pgveil_plan_cache_lookups_total", "pgveil_proxy_overhead_seconds", "pgveil_decryptions_total"} {
		if m0[name] == nil {
			t.Errorf("metric family %s not exported", name)
		}
	}
	if v := m0.must(t, "pgveil_connections"); v != 0 {
		t.Errorf("pgveil_connections = %v before any client, want 0", v)
	}
	enc0 := m0.must(t, "encryption_operations_total", "operation", "encrypt", "status", "success")
	dec0 := m0.must(t, "encryption_operations_total", "operation", "decrypt", "status", "success")

	a := p.conn(t)
	p.waitMetric("pgveil_connections", nil, func(v float64) bool { return v == 1 }, "1 with one client")
	b := pgtest.ConnectDSN(t, p.dsn(pgtest.TrustUser))
	p.waitMetric("pgveil_connections", nil, func(v float64) bool { return v == 2 }, "2 with two clients")

	const n = 5
	for i := 0; i < n; i++ {
		e, name := fmt.Sprintf("metrics-%d@metrics.example", i), fmt.Sprintf("Metrics Person %d", i)
		plant(e, name)
		mustExec(t, a, "INSERT INTO users (email, full_name) VALUES ($1, $2)", e, name)
	}
	m1 := p.scrape()
	if d := m1.must(t, "encryption_operations_total", "operation", "encrypt", "status", "success") - enc0; d < 2*n {
		t.Errorf("encryption_operations_total{encrypt,success} grew by %v after %d inserts of two encrypted columns, want at least %d", d, n, 2*n)
	}
	if d := m1.must(t, "encryption_duration_seconds", "operation", "encrypt") - m0.must(t, "encryption_duration_seconds", "operation", "encrypt"); d < 1 {
		t.Errorf("encryption_duration_seconds{encrypt} observed nothing after inserts")
	}
	rows, err := b.Query(ctx, "SELECT email, full_name FROM users ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for rows.Next() {
		got++
	}
	if rows.Err() != nil || got != n {
		t.Fatalf("select through pgveil: %d rows, %v", got, rows.Err())
	}
	m2 := p.scrape()
	if d := m2.must(t, "encryption_operations_total", "operation", "decrypt", "status", "success") - dec0; d < 2*n {
		t.Errorf("encryption_operations_total{decrypt,success} grew by %v after reading %d rows of two encrypted columns, want at least %d", d, n, 2*n)
	}
	if d := m2.must(t, "pgveil_decryptions_total", "key", fp) - m1.must(t, "pgveil_decryptions_total", "key", fp); d < 2*n {
		t.Errorf("pgveil_decryptions_total{key=%s} grew by %v, want at least %d", fp, d, 2*n)
	}
	if d := m1.must(t, "pgveil_queries_total", "outcome", "rewritten") - m0.must(t, "pgveil_queries_total", "outcome", "rewritten"); d < n {
		t.Errorf("pgveil_queries_total{outcome=rewritten} grew by %v after %d executions of one INSERT pgx prepared once, want %d (one per statement executed, not per Parse)", d, n, n)
	}
	if d := m2.must(t, "pgveil_queries_total", "outcome", "rewritten") - m1.must(t, "pgveil_queries_total", "outcome", "rewritten"); d < 1 {
		t.Errorf("pgveil_queries_total{outcome=rewritten} grew by %v after a SELECT whose results pgveil decrypted, want 1", d)
	}
	if d := m2.must(t, "pgveil_proxy_overhead_seconds") - m0.must(t, "pgveil_proxy_overhead_seconds"); d < n+1 {
		t.Errorf("pgveil_proxy_overhead_seconds observed %v statements, want at least %d", d, n+1)
	}

	// A statement that touches no configured table passes through.
	mustExec(t, b, "INSERT INTO plain_notes (body) VALUES ('plain')")
	m3 := p.scrape()
	if d := m3.must(t, "pgveil_queries_total", "outcome", "passthrough") - m2.must(t, "pgveil_queries_total", "outcome", "passthrough"); d < 1 {
		t.Errorf("pgveil_queries_total{outcome=passthrough} did not grow after a statement on plain_notes")
	}

	// LIKE on an encrypted column is refused and counted.
	_, err = a.Exec(ctx, "SELECT id FROM users WHERE email LIKE $1", "metrics-%")
	if sqlState(err) != "0A000" {
		t.Fatalf("LIKE on users.email: %v, want SQLSTATE 0A000", err)
	}
	m4 := p.scrape()
	if d := m4.must(t, "pgveil_queries_total", "outcome", "refused") - m3.must(t, "pgveil_queries_total", "outcome", "refused"); d != 1 {
		t.Errorf("pgveil_queries_total{outcome=refused} grew by %v after one LIKE, want 1", d)
	}
	if d := m4.must(t, "pgveil_rejections_total", "reason", "like") - m3.must(t, "pgveil_rejections_total", "reason", "like"); d != 1 {
		t.Errorf("pgveil_rejections_total{reason=like} grew by %v after one LIKE, want 1", d)
	}

	// The same statement again and again: plan cache hits. The simple
	// protocol sends the SQL every time.
	const reps = 6
	for i := 0; i < reps; i++ {
		var name string
		if err := a.QueryRow(ctx, "SELECT full_name FROM users WHERE email = $1", pgx.QueryExecModeSimpleProtocol, "metrics-1@metrics.example").Scan(&name); err != nil || name != "Metrics Person 1" {
			t.Fatalf("lookup by email: %q, %v", name, err)
		}
	}
	m5 := p.scrape()
	hits := m5.must(t, "pgveil_plan_cache_lookups_total", "result", "hit") - m4.must(t, "pgveil_plan_cache_lookups_total", "result", "hit")
	if hits < reps-1 {
		t.Errorf("pgveil_plan_cache_lookups_total{result=hit} grew by %v over %d identical statements, want at least %d", hits, reps, reps-1)
	}
	if m5.must(t, "pgveil_plan_cache_lookups_total", "result", "miss") < 1 {
		t.Errorf("pgveil_plan_cache_lookups_total{result=miss} is 0 after statements were planned")
	}

	// Closing a client lowers pgveil_connections.
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	p.waitMetric("pgveil_connections", nil, func(v float64) bool { return v == 1 }, "1 after a client left")
	if v := m5.must(t, "pgveil_connections_total", "result", "accepted"); v < 2 {
		t.Errorf("pgveil_connections_total{result=accepted} = %v, want at least 2", v)
	}
}

package test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/test/pgtest"
)

// buildPlainPgveil builds cmd/pgveil without the race detector, for
// measurements of the process itself.
func buildPlainPgveil(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pgveil")
	cmd := exec.Command("go", "build", "-pgo=off", "-o", bin, "github.com/pgveil/pgveil/cmd/pgveil")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runPgveil starts the binary with a config for the harness database and
// waits until it accepts connections. It returns the listen address and
// the process.
func runPgveil(t testing.TB, bin string, c *pgtest.Cluster, extraYAML string, env []string) (string, *exec.Cmd) {
	t.Helper()
	addr := pgtest.FreeAddr(t)
	admin := pgtest.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "pgveil.yaml")
	yml := fmt.Sprintf("listen: %s\nadmin_listen: %s\nupstream: %s\nupstream_tls: {mode: disable}\n%s%s", addr, admin, c.Addr(), extraYAML, appTables)
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfg)
	cmd.Env = append(os.Environ(), env...)
	stderr := &logBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		recordLogs(t, stderr)
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		nc, err := net.Dial("tcp", addr)
		if err == nil {
			nc.Close()
			return addr, cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgveil did not start: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procStatusKB reads a field (VmHWM, VmRSS) of /proc/PID/status in kB.
func procStatusKB(t testing.TB, pid int, field string) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), field+":") {
			n, _ := strconv.Atoi(strings.Fields(sc.Text())[1])
			return n
		}
	}
	t.Fatalf("%s not in /proc/%d/status", field, pid)
	return 0
}

// TestStreamingMemory reads 100 MB of plain rows and 40 MB of encrypted
// rows through pgveil; the proxy's peak memory must not grow with them.
func TestStreamingMemory(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDB(t)
	su := c.Superuser(t, db)
	mustExec(t, su, appSchema)
	bin := buildPlainPgveil(t)
	encKey, _ := keyring.GenerateKey()
	hashKey, _ := keyring.GenerateKey()
	addr, cmd := runPgveil(t, bin, c, "", []string{"ENCRYPTION_KEY=" + encKey, "ENCRYPTION_HASH_KEY=" + hashKey})
	dsn := strings.Replace(c.DSN(pgtest.SuperUser, db), c.Addr(), addr, 1)
	conn := pgtest.ConnectDSN(t, dsn)
	ctx := context.Background()

	// Encrypted rows written through pgveil: 10,000 x 4 KB.
	chunk := strings.Repeat("é", 2000)
	for i := 0; i < 10; i++ {
		b := &pgx.Batch{}
		for j := 0; j < 1000; j++ {
			b.Queue("INSERT INTO chat_history (message) VALUES ($1)", chunk+strconv.Itoa(j))
		}
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Stored as tokens, not plaintext.
	var tokens int
	su.QueryRow(ctx, "SELECT count(*) FROM chat_history WHERE message LIKE 'gAAAAA%'").Scan(&tokens)
	if tokens != 10000 {
		t.Fatalf("stored tokens: %d, want 10000", tokens)
	}
	base := procStatusKB(t, cmd.Process.Pid, "VmRSS")

	var total int64
	rows, err := conn.Query(ctx, "SELECT repeat('x', 1000) FROM generate_series(1, 100000)")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		total += int64(len(rows.RawValues()[0]))
	}
	if rows.Err() != nil || total != 100_000_000 {
		t.Fatalf("plain stream: %v %d bytes", rows.Err(), total)
	}
	var decrypted int64
	rows, err = conn.Query(ctx, "SELECT message FROM chat_history")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		v := rows.RawValues()[0]
		if !strings.HasPrefix(string(v), chunk) {
			t.Fatal("encrypted stream: value not decrypted")
		}
		decrypted += int64(len(v))
	}
	if rows.Err() != nil || decrypted < 40_000_000 {
		t.Fatalf("encrypted stream: %v %d bytes", rows.Err(), decrypted)
	}
	// A client that stops reading in the middle of a 40 MB result: pgveil
	// must stop reading from Postgres too (the kernel's socket buffers fill
	// up), not buffer what the client does not take.
	rows, err = conn.Query(ctx, "SELECT repeat('y', 1000) FROM generate_series(1, 40000)")
	if err != nil {
		t.Fatal(err)
	}
	var slow, pausedGrowth int
	for rows.Next() {
		slow += len(rows.RawValues()[0])
		if slow == 1000*1000 {
			before := procStatusKB(t, cmd.Process.Pid, "VmRSS")
			time.Sleep(700 * time.Millisecond)
			pausedGrowth = procStatusKB(t, cmd.Process.Pid, "VmRSS") - before
		}
	}
	if rows.Err() != nil || slow != 40_000_000 {
		t.Fatalf("slow reader: %v %d bytes", rows.Err(), slow)
	}
	t.Logf("pgveil RSS grew %d kB while the client paused", pausedGrowth)
	if pausedGrowth > 16*1024 {
		t.Fatalf("pgveil RSS grew %d kB while the client did not read: it buffers what the client does not take", pausedGrowth)
	}
	peak := procStatusKB(t, cmd.Process.Pid, "VmHWM")
	t.Logf("pgveil RSS before %d kB, peak %d kB, after streaming %d MB plain and %d MB decrypted", base, peak, total>>20, decrypted>>20)
	if peak > 64*1024 {
		t.Fatalf("pgveil peak RSS %d kB: memory grows with the result size", peak)
	}
}

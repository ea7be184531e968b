package pgtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Role names and their passwords. SuperUser in DSN and Superuser means the
// cluster's superuser, whatever its name is on a PGVEIL_TEST_DSN server.
const (
	SuperUser     = "postgres"
	SuperPassword = "veil-super-secret"

	TrustUser     = "veil_trust" // hba: trust
	TrustPassword = "veil-trust-secret"

	MD5User     = "veil_md5" // hba: md5, password stored as md5
	MD5Password = "veil-md5-secret"

	ScramUser     = "veil_scram" // hba: scram-sha-256
	ScramPassword = "veil-scram-secret"

	PasswordUser     = "veil_password" // hba: password (cleartext)
	PasswordPassword = "veil-password-secret"

	// AppRole is the NOLOGIN group role the login roles belong to; it owns
	// the databases NewDB creates.
	AppRole = "veil_app"
)

// EnvDSN names the environment variable that points the harness at an
// existing server (a superuser DSN) instead of starting one.
const EnvDSN = "PGVEIL_TEST_DSN"

// EnvPGBin names the environment variable that chooses the PostgreSQL
// binaries directory instead of pg_config --bindir.
const EnvPGBin = "PGVEIL_TEST_PGBIN"

// Users lists the login roles with the authentication method pg_hba.conf
// gives each over TCP.
var Users = []struct{ Name, Password, Method string }{
	{TrustUser, TrustPassword, "trust"},
	{MD5User, MD5Password, "md5"},
	{ScramUser, ScramPassword, "scram-sha-256"},
	{PasswordUser, PasswordPassword, "password"},
}

// dirPrefix names the temporary directories of harness clusters, so a run
// can find and remove the ones a killed run left behind.
const dirPrefix = "pgveil-pgtest-"

// Cluster is one running PostgreSQL server.
type Cluster struct {
	Host string // 127.0.0.1 (or the PGVEIL_TEST_DSN host)
	Port int

	// Dir is the cluster's temporary directory (data directory, unix
	// socket, certificates, server log); "" for a PGVEIL_TEST_DSN server.
	Dir       string
	DataDir   string
	SocketDir string
	LogFile   string
	// BinDir holds the PostgreSQL binaries (initdb, postgres, psql,
	// pgbench, ...); "" if none were found (PGVEIL_TEST_DSN only).
	BinDir string

	// CAFile is the PEM certificate of the harness CA. ServerCert and
	// ServerKey are the server's certificate (127.0.0.1, ::1, localhost)
	// and key, signed by that CA. The CA exists in every mode (MintCert
	// uses it for pgveil's listener); the server presents ServerCert only
	// when Local.
	CAFile     string
	ServerCert string
	ServerKey  string

	// Local is true when the harness started this server (not
	// PGVEIL_TEST_DSN): pg_hba.conf and TLS are as documented.
	Local bool

	superName string
	superPass string
	caCert    *x509.Certificate
	caKey     *ecdsa.PrivateKey

	cmd     *exec.Cmd // the postmaster, local only
	exited  chan struct{}
	waitErr error
	release chan struct{} // ends the goroutine that owns the postmaster's thread

	stopOnce sync.Once
	stopErr  error
	dbSeq    atomicCounter
}

// Addr is host:port of the server.
func (c *Cluster) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// Password returns the password of one of the harness roles ("" if the
// role is unknown to the harness).
func (c *Cluster) Password(role string) string {
	if role == SuperUser || role == c.superName {
		return c.superPass
	}
	for _, u := range Users {
		if u.Name == role {
			return u.Password
		}
	}
	return ""
}

// SuperUserName is the superuser's role name: "postgres", or the user of
// PGVEIL_TEST_DSN.
func (c *Cluster) SuperUserName() string { return c.superName }

// DSN returns a postgres:// URL for role on database db over TCP with
// sslmode=disable. role SuperUser means the cluster's superuser; the
// password is included for every role but veil_trust on the harness's own
// cluster. db "" means
// "postgres". Extra query parameters ("key", "value" pairs) are added or
// replace the defaults, e.g. DSN(u, db, "sslmode", "require").
func (c *Cluster) DSN(role, db string, params ...string) string {
	if role == SuperUser {
		role = c.superName
	}
	if db == "" {
		db = "postgres"
	}
	u := &url.URL{Scheme: "postgres", Host: c.Addr(), Path: "/" + db}
	// veil_trust needs no password on the harness cluster; a
	// PGVEIL_TEST_DSN server's pg_hba.conf may ask for it.
	if pw := c.Password(role); pw != "" && (role != TrustUser || !c.Local) {
		u.User = url.UserPassword(role, pw)
	} else {
		u.User = url.User(role)
	}
	q := url.Values{}
	q.Set("sslmode", "disable")
	for i := 0; i+1 < len(params); i += 2 {
		q.Set(params[i], params[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// TLSDSN is DSN with sslmode=verify-full against the harness CA.
func (c *Cluster) TLSDSN(role, db string) string {
	return c.DSN(role, db, "sslmode", "verify-full", "sslrootcert", c.CAFile)
}

// RequireLocal skips the test when the server is a PGVEIL_TEST_DSN one, for
// tests that rely on the harness's pg_hba.conf or server certificate.
func (c *Cluster) RequireLocal(t testing.TB) {
	t.Helper()
	if !c.Local {
		t.Skipf("pgtest: needs the harness's own cluster (pg_hba.conf, TLS); unset %s", EnvDSN)
	}
}

var (
	sharedOnce sync.Once
	sharedMu   sync.Mutex
	shared     *Cluster
	sharedErr  error
)

// Main runs the tests and then stops the shared cluster and removes its
// directory. Call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if err := StopShared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	removeBuildDir()
	os.Exit(code)
}

// Get returns the shared cluster, starting it on first use. Under
// go test -short it skips the test; otherwise a cluster that cannot start
// fails the test.
func Get(t testing.TB) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("pgtest: integration test, skipped under -short")
	}
	c, err := Shared()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Shared returns the shared cluster, starting it on first use (or
// connecting to PGVEIL_TEST_DSN). The error of a failed start is returned
// to every caller.
func Shared() (*Cluster, error) {
	sharedOnce.Do(func() {
		var c *Cluster
		var err error
		if dsn := os.Getenv(EnvDSN); dsn != "" {
			c, err = Connect(dsn)
		} else {
			c, err = Start()
		}
		sharedMu.Lock()
		shared, sharedErr = c, err
		sharedMu.Unlock()
	})
	sharedMu.Lock()
	defer sharedMu.Unlock()
	return shared, sharedErr
}

// StopShared stops the shared cluster if it was started.
func StopShared() error {
	sharedMu.Lock()
	c := shared
	sharedMu.Unlock()
	if c == nil {
		return nil
	}
	return c.Stop()
}

// ErrNoPostgres is returned (wrapped) when no PostgreSQL server binaries
// are installed.
var ErrNoPostgres = errors.New("pgtest: PostgreSQL server binaries not found (looked at `pg_config --bindir` and /usr/lib/postgresql/*/bin): " +
	"install the Debian package postgresql (apt-get install postgresql), or set " + EnvDSN + " to a superuser DSN")

// FindBinDir returns the directory holding initdb and postgres:
// $PGVEIL_TEST_PGBIN if set, else `pg_config --bindir` if it has them, else
// the newest /usr/lib/postgresql/*/bin.
func FindBinDir() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres", "pg_ctl"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv(EnvPGBin); dir != "" {
		if has(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("%w (%s=%s has no initdb, postgres and pg_ctl)", ErrNoPostgres, EnvPGBin, dir)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" && has(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(dir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

// osUser is who initdb and postgres run as.
type osUser struct {
	cred *syscall.Credential // nil: the current user
	uid  int
	gid  int
}

func serverUser() (osUser, error) {
	if os.Geteuid() != 0 {
		return osUser{uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return osUser{}, fmt.Errorf("pgtest: running as root, PostgreSQL must run as the postgres OS user, which does not exist (the Debian package postgresql creates it): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	var groups []uint32
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.Atoi(g); err == nil {
				groups = append(groups, uint32(n))
			}
		}
	}
	return osUser{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, uid: uid, gid: gid}, nil
}

func (u osUser) chown(paths ...string) error {
	if u.cred == nil {
		return nil
	}
	for _, p := range paths {
		if err := os.Chown(p, u.uid, u.gid); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	return nil
}

// command builds a command that runs as u, in dir, with a plain
// environment.
func (u osUser) command(dir, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + dir, "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred}
	return cmd
}

// ServiceCommand builds a command that runs as the OS user PostgreSQL runs
// as (postgres when the tests run as root), in dir, with a plain
// environment, and hands dir and the given files in it to that user: for
// servers a test starts next to PostgreSQL, such as PgBouncer, which refuses
// to run as root.
func ServiceCommand(dir string, files []string, name string, args ...string) (*exec.Cmd, error) {
	u, err := serverUser()
	if err != nil {
		return nil, err
	}
	if err := u.chown(append([]string{dir}, files...)...); err != nil {
		return nil, err
	}
	return u.command(dir, name, args...), nil
}

// Start initializes and starts a new cluster, independent of the shared
// one. The caller must Stop it.
func Start() (*Cluster, error) {
	sweepStale()
	bin, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	u, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	// The directory must be the postgres user's: initdb creates the data
	// directory in it and the server its unix socket.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if err := u.chown(dir); err != nil {
		return nil, err
	}
	c := &Cluster{
		Host:      "127.0.0.1",
		Dir:       dir,
		DataDir:   filepath.Join(dir, "data"),
		SocketDir: dir,
		LogFile:   filepath.Join(dir, "postgres.log"),
		BinDir:    bin,
		Local:     true,
		superName: SuperUser,
		superPass: SuperPassword,
	}
	if err := c.makeCerts(filepath.Join(dir, "tls")); err != nil {
		return nil, err
	}
	if err := u.chown(filepath.Join(dir, "tls"), c.ServerCert, c.ServerKey); err != nil {
		return nil, err
	}

	initdb := u.command(dir, filepath.Join(bin, "initdb"),
		"-D", c.DataDir, "-U", SuperUser, "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgtest: initdb failed: %w\n%s", err, out)
	}
	if err := c.writeHBA(); err != nil {
		return nil, err
	}

	// A port taken between FreePort and the server's bind is retried.
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		c.Port = port
		if err := c.writeConf(); err != nil {
			return nil, err
		}
		err = c.startServer(u)
		if err == nil {
			break
		}
		if attempt == 2 || !strings.Contains(c.logTail(), "could not bind") {
			return nil, err
		}
	}
	if err := c.bootstrap(); err != nil {
		c.Stop()
		return nil, err
	}
	ok = true
	return c, nil
}

func (c *Cluster) writeHBA() error {
	var b strings.Builder
	b.WriteString("# pgveil test harness: one line per role so each method is exercised over TCP\n")
	b.WriteString("local all all trust\n")
	fmt.Fprintf(&b, "host all %s 127.0.0.1/32 scram-sha-256\n", SuperUser)
	for _, u := range Users {
		fmt.Fprintf(&b, "host all %s 127.0.0.1/32 %s\n", u.Name, u.Method)
	}
	b.WriteString("host all all 127.0.0.1/32 scram-sha-256\n")
	return os.WriteFile(filepath.Join(c.DataDir, "pg_hba.conf"), []byte(b.String()), 0o600)
}

func (c *Cluster) writeConf() error {
	conf := fmt.Sprintf(`
# pgveil test harness
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
ssl = on
ssl_cert_file = '%s'
ssl_key_file = '%s'
ssl_ca_file = '%s'
password_encryption = 'scram-sha-256'
log_min_messages = warning
log_connections = off
timezone = 'UTC'
`, c.Port, c.SocketDir, c.ServerCert, c.ServerKey, c.CAFile)
	// postgresql.auto.conf wins over postgresql.conf and is rewritten
	// whole on a port retry.
	return os.WriteFile(filepath.Join(c.DataDir, "postgresql.auto.conf"), []byte(conf), 0o600)
}

// startServer runs postgres in the foreground as a child process. Its
// parent-death signal is SIGQUIT (immediate shutdown), so a test binary
// that dies takes its server with it. That signal follows the thread that
// forked, so the child is started from a goroutine locked to its thread
// which lives until Stop.
func (c *Cluster) startServer(u osUser) error {
	logf, err := os.OpenFile(c.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	cmd := u.command(c.Dir, filepath.Join(c.BinDir, "postgres"), "-D", c.DataDir)
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	cmd.SysProcAttr.Setpgid = true
	cmd.Stdout = logf
	cmd.Stderr = logf

	started := make(chan error, 1)
	c.exited = make(chan struct{})
	c.release = make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			logf.Close()
			started <- err
			return
		}
		started <- nil
		go func() {
			c.waitErr = cmd.Wait()
			logf.Close()
			close(c.exited)
		}()
		select {
		case <-c.exited:
		case <-c.release:
		}
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("pgtest: starting postgres: %w", err)
	}
	c.cmd = cmd

	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := c.socketConn(ctx, "postgres")
		if err == nil {
			conn.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		select {
		case <-c.exited:
			return fmt.Errorf("pgtest: postgres exited during start-up (%v); log %s:\n%s", c.waitErr, c.LogFile, c.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.kill()
			return fmt.Errorf("pgtest: postgres did not accept connections within 60s: %v; log:\n%s", err, c.logTail())
		}
	}
}

// socketConn connects as the superuser over the unix socket (trust).
func (c *Cluster) socketConn(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.SocketDir, c.Port, SuperUser, db))
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// adminConn connects as the superuser to db: over the unix socket for a
// local cluster, else with the PGVEIL_TEST_DSN credentials.
func (c *Cluster) adminConn(ctx context.Context, db string) (*pgx.Conn, error) {
	if c.Local {
		return c.socketConn(ctx, db)
	}
	return pgx.Connect(ctx, c.DSN(SuperUser, db, "sslmode", "prefer"))
}

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(c.LogFile)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// bootstrap creates the roles. It is idempotent, so it also serves a
// PGVEIL_TEST_DSN server that already has them.
func (c *Cluster) bootstrap() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := c.adminConn(ctx, "postgres")
	if err != nil {
		return fmt.Errorf("pgtest: connecting as superuser: %w", err)
	}
	defer conn.Close(ctx)
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	exec := func(sql string) error {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("pgtest: bootstrap: %s: %w", strings.SplitN(sql, " PASSWORD", 2)[0], err)
		}
		return nil
	}
	exists := func(role string) (bool, error) {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", role).Scan(&n)
		return n > 0, err
	}
	if c.Local {
		if err := exec("ALTER ROLE " + SuperUser + " PASSWORD " + quote(SuperPassword)); err != nil {
			return err
		}
	}
	if ok, err := exists(AppRole); err != nil {
		return fmt.Errorf("pgtest: bootstrap: %w", err)
	} else if !ok {
		if err := exec("CREATE ROLE " + AppRole + " NOLOGIN"); err != nil {
			return err
		}
	}
	for _, u := range Users {
		enc := "scram-sha-256"
		if u.Method == "md5" {
			enc = "md5"
		}
		if err := exec("SET password_encryption = " + quote(enc)); err != nil {
			return err
		}
		ok, err := exists(u.Name)
		if err != nil {
			return fmt.Errorf("pgtest: bootstrap: %w", err)
		}
		verb := "CREATE"
		if ok {
			verb = "ALTER"
		}
		if err := exec(verb + " ROLE " + u.Name + " LOGIN NOSUPERUSER INHERIT PASSWORD " + quote(u.Password)); err != nil {
			return err
		}
		if err := exec("GRANT " + AppRole + " TO " + u.Name); err != nil {
			return err
		}
	}
	return exec("RESET password_encryption")
}

// Connect uses an existing server through a superuser DSN
// (PGVEIL_TEST_DSN) instead of starting one. The login roles are created
// there if missing, with the harness passwords.
func Connect(dsn string) (*Cluster, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %s: %w", EnvDSN, err)
	}
	c := &Cluster{
		Host:      cfg.Host,
		Port:      int(cfg.Port),
		superName: cfg.User,
		superPass: cfg.Password,
	}
	c.BinDir, _ = FindBinDir()
	dir, err := os.MkdirTemp("", dirPrefix+"ca-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c.Dir = dir
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if err := c.makeCerts(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.bootstrap(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

// Stop shuts the server down (fast shutdown) and removes its directory.
// Stopping twice is harmless.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		if c.cmd != nil && c.cmd.Process != nil {
			c.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
			select {
			case <-c.exited:
			case <-time.After(30 * time.Second):
				c.kill()
				<-c.exited
			}
			close(c.release)
		}
		if c.Dir != "" {
			if err := os.RemoveAll(c.Dir); err != nil {
				c.stopErr = fmt.Errorf("pgtest: removing %s: %w", c.Dir, err)
			}
		}
	})
	return c.stopErr
}

func (c *Cluster) kill() {
	if c.cmd != nil && c.cmd.Process != nil {
		// The process group: the postmaster and its backends.
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// sweepStale removes the directories of harness clusters whose test binary
// is gone (killed by a -timeout panic, say), killing any server still
// running there.
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		if pm, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			line, _, _ := bytes.Cut(pm, []byte("\n"))
			// Only if that pid is still this directory's postmaster.
			if ppid, err := strconv.Atoi(string(line)); err == nil && ppid > 0 {
				if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ppid)); err == nil &&
					bytes.Contains(cmdline, []byte(filepath.Join(d, "data"))) {
					syscall.Kill(ppid, syscall.SIGQUIT)
				}
			}
		}
		os.RemoveAll(d)
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FreeAddr returns "127.0.0.1:PORT" for a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

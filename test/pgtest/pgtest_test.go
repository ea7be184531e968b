package pgtest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A directory whose test binary is gone is removed; one whose owner is
// alive, or that has no owner file, is kept.
func TestSweepStale(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	mk := func(owner string) string {
		d, err := os.MkdirTemp("", dirPrefix+"sweeptest-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		if owner != "" {
			if err := os.WriteFile(filepath.Join(d, "owner.pid"), []byte(owner), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	gone := mk(strconv.Itoa(dead.Process.Pid))
	alive := mk(strconv.Itoa(os.Getpid()))
	unowned := mk("")

	sweepStale()

	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Errorf("directory of a dead test binary kept: %v", err)
	}
	for _, d := range []string{alive, unowned} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed: %v", d, err)
		}
	}
}

func TestFindBinDir(t *testing.T) {
	dir, err := FindBinDir()
	if err != nil {
		if testing.Short() {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	for _, b := range []string{"initdb", "postgres", "pg_ctl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
	if !strings.Contains(ErrNoPostgres.Error(), "postgresql") {
		t.Errorf("the missing-binaries error does not name the Debian package: %v", ErrNoPostgres)
	}
}

func TestFreePortAndDSN(t *testing.T) {
	p := FreePort(t)
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("FreePort %d cannot be listened on: %v", p, err)
	}
	ln.Close()

	c := &Cluster{Host: "127.0.0.1", Port: 5432, superName: "admin", superPass: "p@ss/word", Local: true}
	for _, tc := range []struct{ role, db, want string }{
		{SuperUser, "", "postgres://admin:p%40ss%2Fword@127.0.0.1:5432/postgres?sslmode=disable"},
		{TrustUser, "d", "postgres://veil_trust@127.0.0.1:5432/d?sslmode=disable"},
		{ScramUser, "d", "postgres://veil_scram:" + ScramPassword + "@127.0.0.1:5432/d?sslmode=disable"},
	} {
		if got := c.DSN(tc.role, tc.db); got != tc.want {
			t.Errorf("DSN(%q, %q) = %s, want %s", tc.role, tc.db, got, tc.want)
		}
	}
	if got := c.DSN(MD5User, "d", "sslmode", "require", "application_name", "x"); got != "postgres://veil_md5:"+MD5Password+"@127.0.0.1:5432/d?application_name=x&sslmode=require" {
		t.Errorf("DSN with params = %s", got)
	}
	c.Local = false // PGVEIL_TEST_DSN: its pg_hba.conf may ask veil_trust for a password
	if got := c.DSN(TrustUser, "d"); got != "postgres://veil_trust:"+TrustPassword+"@127.0.0.1:5432/d?sslmode=disable" {
		t.Errorf("DSN(veil_trust) on an external server = %s", got)
	}
}

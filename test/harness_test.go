// Package test holds pgveil's integration tests: real PostgreSQL started by
// test/pgtest, real pgveil, real clients. go test -short skips them.
package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgveil/pgveil/test/pgtest"
)

// TestMain stops the shared cluster when the tests end. It is the one
// TestMain of package test.
func TestMain(m *testing.M) { pgtest.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestHarnessAuthMethods connects as every login role over TCP and checks
// both that it gets in with its password and that the method pg_hba.conf
// names is the one in force.
func TestHarnessAuthMethods(t *testing.T) {
	c := pgtest.Get(t)
	c.RequireLocal(t)
	db := c.NewDB(t)

	// The group returns when its parallel subtests are done.
	t.Run("login", func(t *testing.T) {
		for _, u := range pgtest.Users {
			t.Run(u.Method, func(t *testing.T) {
				t.Parallel()
				conn := c.Conn(t, u.Name, db)
				var who, ssl string
				if err := conn.QueryRow(ctxT(t), "SELECT current_user, (SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid())").Scan(&who, &ssl); err != nil {
					t.Fatal(err)
				}
				if who != u.Name || ssl != "false" {
					t.Fatalf("current_user=%q ssl=%s, want %q over plain TCP", who, ssl, u.Name)
				}
				// The role can create and use objects in a NewDB database.
				pgtest.Exec(t, conn, "CREATE TABLE t_"+u.Method[:3]+" (id int PRIMARY KEY, v text)")
				pgtest.Exec(t, conn, "INSERT INTO t_"+u.Method[:3]+" VALUES (1, 'x')")

				wrong := c.DSN(u.Name, db)
				wrong = strings.Replace(wrong, ":"+u.Password+"@", ":wrong-password@", 1)
				if u.Name == pgtest.TrustUser {
					wrong = strings.Replace(wrong, u.Name+"@", u.Name+":wrong-password@", 1)
				}
				conn2, err := pgx.Connect(ctxT(t), wrong)
				if u.Method == "trust" {
					// trust ignores the password.
					if err != nil {
						t.Fatalf("trust refused a connection: %v", err)
					}
					conn2.Close(ctxT(t))
					return
				}
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
					if conn2 != nil {
						conn2.Close(ctxT(t))
					}
					t.Fatalf("wrong password: got %v, want SQLSTATE 28P01", err)
				}
			})
		}
	})

	// Which method pg_hba.conf applies, as the server sees it.
	su := c.Superuser(t, db)
	rows, err := su.Query(ctxT(t), "SELECT user_name[1], auth_method FROM pg_hba_file_rules WHERE type = 'host' AND error IS NULL")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for rows.Next() {
		var user, method string
		if err := rows.Scan(&user, &method); err != nil {
			t.Fatal(err)
		}
		got[user] = method
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, u := range pgtest.Users {
		if got[u.Name] != u.Method {
			t.Errorf("pg_hba.conf: %s uses %q, want %q", u.Name, got[u.Name], u.Method)
		}
	}
	var stored string
	if err := su.QueryRow(ctxT(t), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", pgtest.MD5User).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "md5") {
		t.Errorf("veil_md5's password is not stored as md5, so md5 auth would not be exercised")
	}
	// Tables one role made are usable by another (default privileges).
	other := c.Conn(t, pgtest.ScramUser, db)
	var n int
	if err := other.QueryRow(ctxT(t), "SELECT count(*) FROM t_md5").Scan(&n); err != nil || n != 1 {
		t.Fatalf("veil_scram reading veil_md5's table: n=%d err=%v", n, err)
	}
}

// TestHarnessTLS connects with sslmode=verify-full against the harness CA,
// and checks that a certificate minted for pgveil's listener chains to the
// same CA.
func TestHarnessTLS(t *testing.T) {
	c := pgtest.Get(t)
	c.RequireLocal(t)
	db := c.NewDB(t)

	for _, role := range []string{pgtest.ScramUser, pgtest.MD5User} {
		conn := pgtest.ConnectDSN(t, c.TLSDSN(role, db))
		var ssl bool
		var version string
		if err := conn.QueryRow(ctxT(t), "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &version); err != nil {
			t.Fatal(err)
		}
		if !ssl || !strings.HasPrefix(version, "TLS") {
			t.Fatalf("%s: ssl=%v version=%q, want a TLS session", role, ssl, version)
		}
	}

	// verify-full against a CA that did not sign the server must fail.
	foreignCA := filepath.Join(t.TempDir(), "foreign-ca.crt")
	writeSelfSignedCA(t, foreignCA)
	dsn := c.DSN(pgtest.ScramUser, db, "sslmode", "verify-full", "sslrootcert", foreignCA)
	if conn, err := pgx.Connect(ctxT(t), dsn); err == nil {
		conn.Close(ctxT(t))
		t.Fatal("verify-full accepted a server certificate from a foreign CA")
	}

	// A minted certificate serves TLS that a client trusting the harness
	// CA accepts for 127.0.0.1.
	certFile, keyFile := c.MintCert(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				conn.Write([]byte("ok"))
			}()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), c.ClientTLS("127.0.0.1"))
	if err != nil {
		t.Fatalf("dialing a listener with a minted certificate: %v", err)
	}
	buf := make([]byte, 2)
	if _, err := conn.Read(buf); err != nil || string(buf) != "ok" {
		t.Fatalf("read %q, %v", buf, err)
	}
	conn.Close()
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	if _, err := tls.DialWithDialer(dialer, "tcp", ln.Addr().String(), c.ClientTLS("db.example.com")); err == nil {
		t.Fatal("a minted certificate verified for a host it was not issued for")
	}
}

// TestHarnessDatabases checks NewDB isolation and clean-up, FreePort, and
// the cluster's settings.
func TestHarnessDatabases(t *testing.T) {
	c := pgtest.Get(t)
	var first string
	t.Run("create", func(t *testing.T) {
		first = c.NewDB(t)
		second := c.NewDB(t)
		if first == second {
			t.Fatalf("NewDB returned %q twice", first)
		}
		conn := c.Conn(t, pgtest.PasswordUser, first)
		pgtest.Exec(t, conn, "CREATE TABLE only_here (id int)")
		conn2 := c.Conn(t, pgtest.PasswordUser, second)
		if _, err := conn2.Exec(ctxT(t), "SELECT * FROM only_here"); err == nil {
			t.Fatal("a table of one NewDB database is visible in another")
		}
		// A lingering session does not stop the drop at clean-up.
		c.Conn(t, pgtest.TrustUser, first)
	})
	su := c.Superuser(t, "")
	var n int
	if err := su.QueryRow(ctxT(t), "SELECT count(*) FROM pg_database WHERE datname = $1", first).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %s still exists after its test ended", first)
	}
	var isSuper bool
	if err := su.QueryRow(ctxT(t), "SELECT rolsuper FROM pg_roles WHERE rolname = $1", pgtest.ScramUser).Scan(&isSuper); err != nil || isSuper {
		t.Fatalf("veil_scram superuser=%v err=%v, want a plain login role", isSuper, err)
	}

	if c.Local {
		for setting, want := range map[string]string{"fsync": "off", "ssl": "on", "max_connections": "300", "listen_addresses": "127.0.0.1"} {
			var got string
			if err := su.QueryRow(ctxT(t), "SELECT current_setting($1)", setting).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s = %q, want %q", setting, got, want)
			}
		}
		if _, err := os.Stat(filepath.Join(c.SocketDir, ".s.PGSQL."+strconv.Itoa(c.Port))); err != nil {
			t.Errorf("unix socket: %v", err)
		}
	}

	p := pgtest.FreePort(t)
	ln, err := net.Listen("tcp", pgtest.FreeAddr(t))
	if err != nil {
		t.Fatalf("FreeAddr gave an address that cannot be listened on: %v", err)
	}
	ln.Close()
	if p <= 0 || p == c.Port {
		t.Fatalf("FreePort = %d (cluster on %d)", p, c.Port)
	}
}

// writeSelfSignedCA writes a CA certificate unrelated to the harness CA.
func writeSelfSignedCA(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "foreign CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

package pgtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// makeCerts creates the harness CA and the server's certificate in dir.
func (c *Cluster) makeCerts(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pgtest: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "pgveil test CA", Organization: []string{"pgveil tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("pgtest: CA certificate: %w", err)
	}
	c.caCert, err = x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("pgtest: CA certificate: %w", err)
	}
	c.caKey = key
	c.CAFile = filepath.Join(dir, "ca.crt")
	if err := writePEM(c.CAFile, "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	c.ServerCert, c.ServerKey, err = c.mint(dir, "server", "localhost", "127.0.0.1", "::1")
	return err
}

// MintCert issues a certificate signed by the harness CA for hosts (DNS
// names or IP addresses; default 127.0.0.1, ::1 and localhost), good for
// server and client authentication, e.g. for pgveil's client-side TLS
// listener. The PEM files are written to a t.TempDir().
func (c *Cluster) MintCert(t testing.TB, hosts ...string) (certFile, keyFile string) {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	certFile, keyFile, err := c.mint(t.TempDir(), "cert", hosts...)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// CertPool returns a pool holding the harness CA.
func (c *Cluster) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.caCert)
	return p
}

// ClientTLS returns a client TLS configuration that trusts only the harness
// CA and verifies serverName (a DNS name or IP address).
func (c *Cluster) ClientTLS(serverName string) *tls.Config {
	return &tls.Config{RootCAs: c.CertPool(), ServerName: serverName, MinVersion: tls.VersionTLS12}
}

func (c *Cluster) mint(dir, name string, hosts ...string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("pgtest: key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"pgveil tests"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.caCert, &key.PublicKey, c.caKey)
	if err != nil {
		return "", "", fmt.Errorf("pgtest: certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("pgtest: key: %w", err)
	}
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	if err := writePEM(keyFile, "PRIVATE KEY", pkcs8, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic("pgveil: BUG: crypto/rand failed: " + err.Error())
	}
	return n
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return nil
}

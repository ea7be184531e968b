package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/rewrite"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("pgveil: server closed")

// Snapshot is one generation of everything a reload can change: config,
// keys, compiled rewrite rules. It is immutable; SIGHUP builds a new one and
// swaps it in with one atomic store. Sessions load it at statement
// boundaries.
type Snapshot struct {
	Config     *config.Config
	Keyring    *keyring.Keyring
	Rewriter   *rewrite.Rewriter
	Generation uint64

	clientTLS   *tls.Config // nil: answer SSLRequest with N
	upstreamTLS *tls.Config // nil when mode is disable
	catalogSQL  string
}

var generations atomic.Uint64

// NewSnapshot compiles cfg and kr into a Snapshot.
func NewSnapshot(cfg *config.Config, kr *keyring.Keyring) (*Snapshot, error) {
	rules, err := rewrite.Compile(cfg.Tables, rewrite.Options{
		Mode:          cfg.Encryption.Mode,
		OnUnsupported: cfg.Encryption.OnUnsupported,
		HashFallbacks: kr.HashFallbacks(),
	})
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{
		Config:     cfg,
		Keyring:    kr,
		Rewriter:   rewrite.New(rules, cfg.Proxy.PlanCacheSize),
		Generation: generations.Add(1),
		catalogSQL: catalogQuery(cfg.Tables),
	}
	if cfg.TLS != nil {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("pgveil: tls: loading cert_file/key_file: %w", err)
		}
		snap.clientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if snap.upstreamTLS, err = upstreamTLSConfig(cfg); err != nil {
		return nil, err
	}
	return snap, nil
}

func upstreamTLSConfig(cfg *config.Config) (*tls.Config, error) {
	mode := cfg.UpstreamTLS.Mode
	if mode == config.TLSDisable {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(cfg.Upstream)
	if err != nil {
		host = cfg.Upstream
	}
	if cfg.UpstreamTLS.ServerName != "" {
		host = cfg.UpstreamTLS.ServerName
	}
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if cfg.UpstreamTLS.CAFile != "" {
		pem, err := os.ReadFile(cfg.UpstreamTLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("pgveil: upstream_tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("pgveil: upstream_tls.ca_file %s holds no PEM certificate", cfg.UpstreamTLS.CAFile)
		}
		tc.RootCAs = pool
	}
	switch mode {
	case config.TLSVerifyFull:
	case config.TLSRequire:
		// As libpq: require verifies the chain only when a CA is given,
		// and never the host name.
		if tc.RootCAs == nil {
			tc.InsecureSkipVerify = true
		} else {
			tc.InsecureSkipVerify = true
			roots := tc.RootCAs
			tc.VerifyPeerCertificate = verifyChainOnly(roots)
		}
	default: // prefer: encryption without verification, as libpq
		tc.InsecureSkipVerify = true
	}
	return tc, nil
}

func verifyChainOnly(roots *x509.CertPool) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("pgveil: upstream presented no certificate")
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		inter := x509.NewCertPool()
		for _, r := range raw[1:] {
			if c, err := x509.ParseCertificate(r); err == nil {
				inter.AddCert(c)
			}
		}
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		return err
	}
}

// Server accepts client connections and runs a Session for each. Its shape
// follows net/http.Server: fields, Serve, Shutdown, Close.
type Server struct {
	Logger     *slog.Logger
	Metrics    *Metrics
	KeyMetrics *keyring.Metrics
	// Dial connects to PostgreSQL; defaults to a net.Dialer with a 10s timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	snap atomic.Pointer[Snapshot]

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*Session]struct{}
	byCancel  map[cancelKey]*Session
	idle      upstreamPool // upstream connections kept for the next client (upstreams.go)
	wg        sync.WaitGroup
	nextID    atomic.Uint64

	draining    atomic.Bool
	maintenance atomic.Bool
	closed      atomic.Bool
}

type cancelKey struct {
	pid    uint32
	secret string
}

// NewServer returns a Server serving snap.
func NewServer(snap *Snapshot, logger *slog.Logger, m *Metrics, km *keyring.Metrics) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	srv := &Server{Logger: logger, Metrics: m, KeyMetrics: km,
		listeners: map[net.Listener]struct{}{}, sessions: map[*Session]struct{}{}, byCancel: map[cancelKey]*Session{}}
	srv.Swap(snap)
	go startFastClock()
	return srv
}

// Swap installs a new snapshot (SIGHUP). Live sessions pick it up at their
// next statement boundary; nothing is dropped.
func (srv *Server) Swap(snap *Snapshot) {
	srv.snap.Store(snap)
	srv.idle.trim(snap.Config.Proxy.IdleUpstreams(), srv.Metrics)
	srv.maintenance.Store(snap.Config.Maintenance)
	srv.Metrics.SetMaintenance(snap.Config.Maintenance)
	km := srv.KeyMetrics
	km.SetKeyVersion(snap.Keyring.Version())
	srv.Metrics.InitKeys(snap.Keyring.KeyFingerprints())
}

// Snapshot returns the snapshot in force.
func (srv *Server) Snapshot() *Snapshot { return srv.snap.Load() }

// SetMaintenance turns maintenance mode on or off (new connections get 57P03).
func (srv *Server) SetMaintenance(on bool) {
	srv.maintenance.Store(on)
	srv.Metrics.SetMaintenance(on)
}

// Ready reports whether the proxy can serve: keys loaded, not draining, not
// in maintenance, upstream accepting TCP connections.
func (srv *Server) Ready(ctx context.Context) error {
	if srv.draining.Load() {
		return errors.New("draining")
	}
	if srv.maintenance.Load() {
		return errors.New("maintenance mode")
	}
	snap := srv.snap.Load()
	if snap == nil || snap.Keyring == nil {
		return errors.New("keys not loaded")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := srv.dial(ctx, snap.Config.Upstream)
	if err != nil {
		return errors.New("upstream unreachable")
	}
	c.Close()
	return nil
}

func (srv *Server) dial(ctx context.Context, addr string) (net.Conn, error) {
	if srv.Dial != nil {
		return srv.Dial(ctx, "tcp", addr)
	}
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

// ListenAndServe listens on the configured address and serves.
func (srv *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", srv.snap.Load().Config.Listen)
	if err != nil {
		return err
	}
	return srv.Serve(ln)
}

// Serve accepts connections on ln until Shutdown or Close. It backs off on
// temporary accept errors, as net/http does.
func (srv *Server) Serve(ln net.Listener) error {
	srv.mu.Lock()
	if srv.closed.Load() || srv.draining.Load() {
		srv.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	srv.listeners[ln] = struct{}{}
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		delete(srv.listeners, ln)
		srv.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if srv.closed.Load() || srv.draining.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
				if delay == 0 {
					delay = 5 * time.Millisecond
				} else if delay *= 2; delay > time.Second {
					delay = time.Second
				}
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		s := newSession(srv, c, srv.nextID.Add(1))
		srv.mu.Lock()
		srv.sessions[s] = struct{}{}
		srv.wg.Add(1)
		srv.mu.Unlock()
		go func() {
			defer srv.wg.Done()
			s.serve()
			srv.untrack(s)
		}()
	}
}

func (srv *Server) untrack(s *Session) {
	s.timings.publish(srv)
	srv.mu.Lock()
	delete(srv.sessions, s)
	if s.cancel != (cancelKey{}) {
		if srv.byCancel[s.cancel] == s {
			delete(srv.byCancel, s.cancel)
		}
	}
	srv.mu.Unlock()
}

func (srv *Server) registerCancel(s *Session, k cancelKey) {
	srv.mu.Lock()
	s.cancel = k
	srv.byCancel[k] = s
	srv.mu.Unlock()
}

func (srv *Server) sessionForCancel(k cancelKey) *Session {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.byCancel[k]
}

func (srv *Server) closeListeners() {
	srv.mu.Lock()
	for ln := range srv.listeners {
		ln.Close()
	}
	srv.mu.Unlock()
}

// Shutdown drains: /readyz turns 503, new connections are answered FATAL
// 57P03 "pgveil: shutting down", idle sessions get the same and are
// closed, sessions in a transaction or a statement go on until they are
// idle. When no session is left the listeners close and Shutdown returns
// nil; when ctx ends first, what is left is closed and ctx.Err() returned.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.draining.Store(true)
	srv.Metrics.SetDraining(true)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		srv.mu.Lock()
		live := 0
		for s := range srv.sessions {
			s.drainIfIdle()
			if !s.closing.Load() {
				live++
			}
		}
		srv.mu.Unlock()
		if live == 0 {
			srv.closeListeners()
			srv.wg.Wait()
			srv.idle.closeAll(srv.Metrics)
			return nil
		}
		select {
		case <-ctx.Done():
			srv.Close()
			srv.wg.Wait()
			srv.idle.closeAll(srv.Metrics)
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close stops everything at once.
func (srv *Server) Close() error {
	srv.closed.Store(true)
	srv.closeListeners()
	srv.mu.Lock()
	for s := range srv.sessions {
		s.kill()
	}
	srv.mu.Unlock()
	srv.idle.closeAll(srv.Metrics)
	return nil
}

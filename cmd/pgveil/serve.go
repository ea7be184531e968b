package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/proxy"
)

// serveFlags are the flags of serve that override the config file.
type serveFlags struct {
	config, listen, upstream, adminListen string
}

func runServe(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("pgveil serve", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var f serveFlags
	fs.StringVar(&f.config, "config", "", "config file (default $PGVEIL_CONFIG)")
	fs.StringVar(&f.listen, "listen", "", "address clients connect to (overrides listen)")
	fs.StringVar(&f.upstream, "upstream", "", "PostgreSQL host:port (overrides upstream)")
	fs.StringVar(&f.adminListen, "admin-listen", "", "address of /metrics, /healthz, /readyz (overrides admin_listen)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "pgveil serve: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	path := config.ConfigPath(f.config, e.lookupEnv)
	if path == "" {
		fmt.Fprintln(e.stderr, "pgveil serve: no config file: pass --config FILE or set PGVEIL_CONFIG")
		return exitUsage
	}

	level := new(slog.LevelVar)
	logger := slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	audit := logger.With("logger", "audit.encryption")

	cfg, kr, err := loadServe(e, path, f)
	if err != nil {
		return report(e, err, exitUsage)
	}
	setLevel(level, cfg.LogLevel)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	km := keyring.NewMetrics(reg)
	pm := proxy.NewMetrics(reg)

	snap, err := proxy.NewSnapshot(cfg, kr)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return exitUsage
	}
	srv := proxy.NewServer(snap, logger, pm, km)
	audit.Info("Encryption service initialized",
		"key_version", kr.Version(), "key_fingerprints", kr.KeyFingerprints(),
		"hash_key_fingerprint", kr.HashKeyFingerprint(), "tables", len(cfg.Tables),
		"mode", cfg.Encryption.Mode)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintf(e.stderr, "pgveil serve: listen on %s: %v\n", cfg.Listen, err)
		return exitUsage
	}
	var admin *http.Server
	if cfg.AdminListen != "" && cfg.AdminListen != "off" {
		aln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			ln.Close()
			fmt.Fprintf(e.stderr, "pgveil serve: admin_listen %s: %v\n", cfg.AdminListen, err)
			return exitUsage
		}
		admin = &http.Server{
			Handler:           proxy.AdminHandler(srv.Gatherer(reg), func() error { return srv.Ready(ctx) }),
			ReadHeaderTimeout: 10 * time.Second,
		}
		go func() { _ = admin.Serve(aln) }()
	}
	logger.Info("pgveil listening", "listen", ln.Addr().String(), "upstream", cfg.Upstream, "admin_listen", cfg.AdminListen)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			reload(e, path, f, srv, level, logger, audit)
		}
	}()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		if !errors.Is(err, proxy.ErrServerClosed) {
			logger.Error("serve failed", "error", err.Error())
			return exitProblem
		}
	case <-ctx.Done():
		cur := srv.Snapshot().Config
		logger.Info("draining", "shutdown_timeout", cur.ShutdownTimeout.D().String())
		sctx, cancel := context.WithTimeout(context.Background(), cur.ShutdownTimeout.D())
		err := srv.Shutdown(sctx)
		cancel()
		if err != nil {
			logger.Warn("shutdown timeout reached; remaining sessions closed")
		}
	}
	if admin != nil {
		actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = admin.Shutdown(actx)
		cancel()
	}
	logger.Info("pgveil stopped")
	return exitOK
}

// loadServe reads config and keys and applies the flag overrides.
func loadServe(e *env, path string, f serveFlags) (*config.Config, *keyring.Keyring, error) {
	cfg, err := config.Load(path, e.lookupEnv)
	if err != nil {
		return nil, nil, err
	}
	if f.listen != "" {
		cfg.Listen = f.listen
	}
	if f.upstream != "" {
		cfg.Upstream = f.upstream
	}
	if f.adminListen != "" {
		cfg.AdminListen = f.adminListen
	}
	kr, err := loadKeys(cfg.Keys, e)
	if err != nil {
		return nil, nil, err
	}
	return cfg, kr, nil
}

// reload builds a new snapshot from the config file and key sources and
// swaps it in; on failure the old one stays and the error is logged.
func reload(e *env, path string, f serveFlags, srv *proxy.Server, level *slog.LevelVar, logger, audit *slog.Logger) {
	cfg, kr, err := loadServe(e, path, f)
	var snap *proxy.Snapshot
	if err == nil {
		snap, err = proxy.NewSnapshot(cfg, kr)
	}
	if err != nil {
		srv.Metrics.Reload(false)
		attrs := []any{"error", err.Error()}
		var h hinter
		if errors.As(err, &h) && h.Hint() != "" {
			attrs = append(attrs, "fix", h.Hint())
		}
		audit.Error("configuration reload failed; keeping the previous configuration", attrs...)
		return
	}
	old := srv.Snapshot()
	if cfg.Listen != old.Config.Listen || cfg.Upstream != old.Config.Upstream {
		logger.Warn("listen and upstream changes take effect at restart; other settings were reloaded")
	}
	srv.Swap(snap)
	setLevel(level, cfg.LogLevel)
	srv.Metrics.Reload(true)
	audit.Info("configuration reloaded",
		"key_version", kr.Version(), "key_fingerprints", kr.KeyFingerprints(),
		"hash_key_fingerprint", kr.HashKeyFingerprint(), "maintenance", cfg.Maintenance, "mode", cfg.Encryption.Mode)
}

func setLevel(level *slog.LevelVar, s string) {
	switch strings.ToLower(s) {
	case "debug":
		level.Set(slog.LevelDebug)
	case "warn", "warning":
		level.Set(slog.LevelWarn)
	case "error":
		level.Set(slog.LevelError)
	default:
		level.Set(slog.LevelInfo)
	}
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgveil/pgveil/backfill"
	"github.com/pgveil/pgveil/config"
	"github.com/pgveil/pgveil/keyring"
)

// The admin data commands of SPEC §2. They connect to Postgres directly
// (--dsn or DATABASE_URL), never through the proxy.

const envDatabaseURL = "DATABASE_URL"

// hinter is an error that knows its fix.
type hinter interface{ Hint() string }

// report prints err with its fix and returns the exit code for it.
func report(e *env, err error, code int) int {
	msg := err.Error()
	if !strings.HasPrefix(msg, "pgveil:") {
		msg = "pgveil: " + msg
	}
	fmt.Fprintln(e.stderr, msg)
	var h hinter
	if errors.As(err, &h) && h.Hint() != "" {
		fmt.Fprintf(e.stderr, "  fix: %s\n", h.Hint())
	}
	return code
}

// fixError is an error with a fix, for the problems this file finds itself.
type fixError struct {
	msg, fix string
	err      error
}

func (f *fixError) Error() string {
	if f.err != nil {
		return f.msg + ": " + f.err.Error()
	}
	return f.msg
}
func (f *fixError) Hint() string  { return f.fix }
func (f *fixError) Unwrap() error { return f.err }

// adminFlags are the flags the admin commands share.
type adminFlags struct {
	fs     *flag.FlagSet
	usage  func()
	config string
	dsn    string
	// data commands
	table       string
	dryRun      bool
	batchSize   int
	workers     int
	maxRate     float64
	maxFailures float64
	verbose     bool
	shard       string
	yes         bool
	// others
	apply  bool
	json   bool
	noBar  bool
	resume bool
}

func newAdminFlags(name string, e *env) *adminFlags {
	f := &adminFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	// Parse errors are printed once, by parse, with their fix.
	f.fs.SetOutput(io.Discard)
	f.fs.Usage = func() {}
	f.usage = func() {
		fmt.Fprintf(e.stderr, "usage: pgveil %s [flags]\n", name)
		f.fs.SetOutput(e.stderr)
		f.fs.PrintDefaults()
		f.fs.SetOutput(io.Discard)
	}
	f.fs.StringVar(&f.config, "config", "", "configuration file (default $"+config.EnvConfig+")")
	f.fs.StringVar(&f.dsn, "dsn", "", "PostgreSQL URL to connect to directly, not through the proxy (default $"+envDatabaseURL+")")
	return f
}

func (f *adminFlags) dataFlags(verify bool) {
	f.fs.StringVar(&f.table, "table", "", "only this configured table (comma-separated for several)")
	f.fs.IntVar(&f.batchSize, "batch-size", backfill.DefaultBatchSize, "rows per batch; each batch is one transaction")
	f.fs.IntVar(&f.workers, "workers", 2, "batches processed in parallel (one encrypts while another writes)")
	f.fs.StringVar(&f.shard, "shard", "", "I/N: only the rows of shard I of N (by a hash of the primary key), e.g. $(JOB_COMPLETION_INDEX)/N in a Kubernetes Indexed Job")
	if verify {
		f.fs.BoolVar(&f.json, "json", false, "print the report as JSON")
		return
	}
	f.fs.BoolVar(&f.dryRun, "dry-run", false, "count what would change and show sample primary keys; change nothing")
	f.fs.Float64Var(&f.maxRate, "max-rate", 0, "at most this many rows per second over all workers (0: no limit)")
	f.fs.Float64Var(&f.maxFailures, "max-failures", backfill.DefaultMaxFailures, "stop when more than this fraction of rows fail (undecryptable, over max_size, invalid input, duplicate)")
	f.fs.BoolVar(&f.verbose, "verbose", false, "a line per batch with what it did")
	f.fs.BoolVar(&f.noBar, "no-progress-bar", false, "print progress lines even on a terminal")
	f.fs.BoolVar(&f.resume, "resume", true, "continue an interrupted run from its saved progress: skip the tables it finished, continue the one it was in (--resume=false starts over)")
}

// parse parses args; problems are usage errors (exit 2).
func (f *adminFlags) parse(args []string) error {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.usage()
			return err
		}
		return &fixError{msg: "pgveil: " + f.fs.Name() + ": " + err.Error(), fix: "run 'pgveil " + f.fs.Name() + " -h' for its flags"}
	}
	if f.fs.NArg() > 0 {
		return &fixError{msg: fmt.Sprintf("pgveil: %s: unexpected argument %q", f.fs.Name(), f.fs.Arg(0)), fix: "flags start with --; run 'pgveil " + f.fs.Name() + " -h' for them"}
	}
	return nil
}

// load reads the config and the keys.
func (f *adminFlags) load(e *env) (*config.Config, *keyring.Keyring, error) {
	cfg, err := config.Load(config.ConfigPath(f.config, e.lookupEnv), e.lookupEnv)
	if err != nil {
		return nil, nil, err
	}
	keys, err := loadKeys(cfg.Keys, e)
	if err != nil {
		return nil, nil, err
	}
	return cfg, keys, nil
}

// dsnOf is --dsn, else $DATABASE_URL.
func (f *adminFlags) dsnOf(e *env) string {
	if f.dsn != "" {
		return f.dsn
	}
	if v, ok := e.lookupEnv(envDatabaseURL); ok {
		return strings.TrimSpace(v)
	}
	return ""
}

// connect opens a pool of up to conns connections and checks that the
// database answers. Every failure is a usage error (exit 2).
func connect(ctx context.Context, dsn string, conns int) (*pgxpool.Pool, error) {
	pc, err := pxConfig(dsn)
	if err != nil {
		return nil, err
	}
	pc.MaxConns = int32(max(conns, 2))
	pool, err := pxNew(ctx, pc)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, &fixError{msg: "pgveil: cannot connect to the database", err: err,
			fix: "check --dsn (or " + envDatabaseURL + "): host, port, user, password and database, and that PostgreSQL is running and accepts connections from here"}
	}
	return pool, nil
}

func pxConfig(dsn string) (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, &fixError{msg: "pgveil: invalid --dsn", err: err,
			fix: "use a PostgreSQL URL such as postgres://user:password@host:5432/dbname?sslmode=require, or key=value pairs"}
	}
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "pgveil-admin"
	}
	return pc, nil
}

func pxNew(ctx context.Context, pc *pgxpool.Config) (*pgxpool.Pool, error) {
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, &fixError{msg: "pgveil: cannot connect to the database", err: err, fix: "check --dsn (or " + envDatabaseURL + ")"}
	}
	return pool, nil
}

// selectTables applies --table.
func selectTables(cfg *config.Config, want string) ([]config.Table, error) {
	if want == "" {
		return cfg.Tables, nil
	}
	var out []config.Table
	var names []string
	for _, t := range cfg.Tables {
		names = append(names, t.Table)
	}
	for _, w := range strings.Split(want, ",") {
		w = strings.TrimSpace(w)
		found := false
		for _, t := range cfg.Tables {
			if w == t.Table || w == t.Schema+"."+t.Name || (w == t.Name && t.Schema == config.DefaultSchema) {
				out = append(out, t)
				found = true
				break
			}
		}
		if !found {
			return nil, &fixError{msg: fmt.Sprintf("pgveil: --table %q is not a configured table", w),
				fix: "use one of: " + strings.Join(names, ", ")}
		}
	}
	return out, nil
}

// dataCommand runs backfill, reencrypt, rehash or decrypt.
func dataCommand(op backfill.Op) func(ctx context.Context, e *env, args []string) int {
	return func(ctx context.Context, e *env, args []string) int {
		name := map[backfill.Op]string{backfill.OpEncrypt: "backfill", backfill.OpReencrypt: "reencrypt",
			backfill.OpRehash: "rehash", backfill.OpDecrypt: "decrypt"}[op]
		f := newAdminFlags(name, e)
		f.dataFlags(false)
		if op == backfill.OpDecrypt {
			f.fs.BoolVar(&f.yes, "yes", false, "confirm: write plaintext back into the database")
		}
		if err := f.parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return report(e, err, exitUsage)
		}
		job, err := f.job(e, op)
		if err != nil {
			return report(e, err, exitUsage)
		}
		if op == backfill.OpDecrypt && !f.yes && !f.dryRun {
			return report(e, &fixError{msg: "pgveil: decrypt writes plaintext back into the database and needs --yes",
				fix: "run 'pgveil decrypt --dry-run' to see what it would do, then 'pgveil decrypt --yes'"}, exitUsage)
		}
		dsn := f.dsnOf(e)
		if dsn == "" {
			return report(e, &fixError{msg: "pgveil: " + name + " needs a database", fix: "pass --dsn URL or set " + envDatabaseURL}, exitUsage)
		}
		pool, err := connect(ctx, dsn, job.Workers+2)
		if err != nil {
			return report(e, err, exitUsage)
		}
		defer pool.Close()

		sum, err := job.Run(ctx, pool)
		if sum != nil {
			sum.Write(e.stdout)
		}
		var se *backfill.SchemaError
		switch {
		case err == nil:
			return exitOK
		case errors.As(err, &se):
			return report(e, err, exitUsage)
		case ctx.Err() != nil:
			return report(e, &fixError{msg: "pgveil: " + name + " interrupted", fix: "rerun the same command: it continues where it stopped"}, exitProblem)
		default:
			var fe *backfill.FailureError
			if !errors.As(err, &fe) {
				err = &fixError{msg: err.Error(),
					fix: "check the database and rerun: the command is idempotent and continues where it stopped"}
			}
			return report(e, err, exitProblem)
		}
	}
}

// job builds a backfill.Job from the flags, config and keys.
func (f *adminFlags) job(e *env, op backfill.Op) (*backfill.Job, error) {
	if f.batchSize < 1 {
		return nil, &fixError{msg: "pgveil: --batch-size must be at least 1", fix: "e.g. --batch-size 1000"}
	}
	if f.workers < 1 || f.workers > 64 {
		return nil, &fixError{msg: "pgveil: --workers must be between 1 and 64", fix: "e.g. --workers 2 (about one per CPU of the database)"}
	}
	if f.maxRate < 0 {
		return nil, &fixError{msg: "pgveil: --max-rate must not be negative", fix: "rows per second, 0 for no limit"}
	}
	if f.maxFailures < 0 || f.maxFailures > 1 {
		return nil, &fixError{msg: "pgveil: --max-failures must be a fraction between 0 and 1", fix: "e.g. --max-failures 0.01 for 1%"}
	}
	var shard backfill.Shard
	if f.shard != "" {
		s, err := backfill.ParseShard(f.shard)
		if err != nil {
			return nil, &fixError{msg: err.Error(), fix: "e.g. --shard 0/4 … --shard 3/4 for four pods"}
		}
		shard = s
	}
	cfg, keys, err := f.load(e)
	if err != nil {
		return nil, err
	}
	tables, err := selectTables(cfg, f.table)
	if err != nil {
		return nil, err
	}
	j := &backfill.Job{
		Op: op, Tables: tables, Keys: keys,
		MaxSize: cfg.Encryption.MaxSize, Sanitize: cfg.Encryption.Sanitize(),
		BatchSize: f.batchSize, Workers: f.workers, Shard: shard,
		MaxRate: f.maxRate, MaxFailures: f.maxFailures,
		DryRun: f.dryRun, Verbose: f.verbose, Out: e.stdout,
		NoResume: !f.resume,
	}
	if f.noBar {
		no := false
		j.Terminal = &no
	}
	return j, nil
}

func runVerify(ctx context.Context, e *env, args []string) int {
	f := newAdminFlags("verify", e)
	f.dataFlags(true)
	if err := f.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return report(e, err, exitUsage)
	}
	job, err := f.job(e, backfill.OpEncrypt)
	if err != nil {
		return report(e, err, exitUsage)
	}
	// The report goes to stdout; progress to stderr.
	job.Out = e.stderr
	dsn := f.dsnOf(e)
	if dsn == "" {
		return report(e, &fixError{msg: "pgveil: verify needs a database", fix: "pass --dsn URL or set " + envDatabaseURL}, exitUsage)
	}
	pool, err := connect(ctx, dsn, job.Workers+2)
	if err != nil {
		return report(e, err, exitUsage)
	}
	defer pool.Close()
	rep, err := job.Verify(ctx, pool)
	if err != nil {
		var se *backfill.SchemaError
		if errors.As(err, &se) {
			return report(e, err, exitUsage)
		}
		return report(e, err, exitProblem)
	}
	if f.json {
		if err := rep.WriteJSON(e.stdout); err != nil {
			return report(e, err, exitProblem)
		}
	} else {
		rep.WriteText(e.stdout)
	}
	if !rep.OK {
		return exitProblem
	}
	return exitOK
}

func runSchema(ctx context.Context, e *env, args []string) int {
	f := newAdminFlags("schema", e)
	f.fs.BoolVar(&f.apply, "apply", false, "run the DDL (needs --dsn); CREATE INDEX CONCURRENTLY runs outside a transaction")
	if err := f.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return report(e, err, exitUsage)
	}
	cfg, err := config.Load(config.ConfigPath(f.config, e.lookupEnv), e.lookupEnv)
	if err != nil {
		return report(e, err, exitUsage)
	}
	dsn := f.dsnOf(e)
	if dsn == "" {
		if f.apply {
			return report(e, &fixError{msg: "pgveil: schema --apply needs a database", fix: "pass --dsn URL or set " + envDatabaseURL}, exitUsage)
		}
		fmt.Fprintln(e.stdout, "-- pgveil schema: DDL for the configured tables (generic: pass --dsn to print only what this database needs).")
		fmt.Fprintln(e.stdout, "-- A UNIQUE constraint on a searchable column gets a twin on its blind index and is dropped by a later run, once every row has its blind index; --dsn finds them.")
		backfill.WriteStatements(e.stdout, backfill.GenericSchema(cfg.Tables))
		return exitOK
	}
	pool, err := connect(ctx, dsn, 2)
	if err != nil {
		return report(e, err, exitUsage)
	}
	defer pool.Close()
	plan, err := backfill.PlanSchema(ctx, pool, cfg.Tables)
	if err != nil {
		return report(e, err, exitProblem)
	}
	code := exitOK
	for _, p := range plan.Problems {
		fmt.Fprintln(e.stderr, p.String())
		code = exitProblem
	}
	notes := func() {
		for _, n := range plan.Notes {
			fmt.Fprintf(e.stdout, "-- later: %s\n", n)
		}
		for _, n := range plan.Info {
			fmt.Fprintf(e.stdout, "-- note: %s\n", n)
		}
	}
	stmts := plan.Statements
	if len(stmts) == 0 {
		if len(plan.Notes) == 0 {
			for _, n := range plan.Info {
				fmt.Fprintf(e.stdout, "-- note: %s\n", n)
			}
			fmt.Fprintln(e.stdout, "-- pgveil schema: the database already has everything the config needs")
		} else {
			fmt.Fprintln(e.stdout, "-- pgveil schema: nothing to apply now")
			notes()
		}
		return code
	}
	if !f.apply {
		backfill.WriteStatements(e.stdout, stmts)
		notes()
		return code
	}
	if err := backfill.ApplySchema(ctx, pool, stmts, e.stdout); err != nil {
		return report(e, &fixError{msg: err.Error(), fix: "fix the cause and rerun pgveil schema --apply: it applies only what is still missing"}, exitProblem)
	}
	fmt.Fprintf(e.stdout, "-- applied %d statement(s)\n", len(stmts))
	notes()
	return code
}

func runCheck(ctx context.Context, e *env, args []string) int {
	f := newAdminFlags("check", e)
	if err := f.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return report(e, err, exitUsage)
	}
	cfg, keys, err := f.load(e)
	if err != nil {
		return report(e, err, exitUsage)
	}
	cols := 0
	for _, t := range cfg.Tables {
		cols += len(t.Columns)
	}
	fps := keys.KeyFingerprints()
	fmt.Fprintf(e.stdout, "config OK: %d table(s), %d encrypted column(s)\n", len(cfg.Tables), cols)
	fmt.Fprintf(e.stdout, "keys OK: primary %s (version %d)", fps[0], keys.Version())
	if len(fps) > 1 {
		fmt.Fprintf(e.stdout, ", fallbacks %s", strings.Join(fps[1:], ", "))
	}
	fmt.Fprintf(e.stdout, ", hash key %s", keys.HashKeyFingerprint())
	if fb := keys.HashFallbackFingerprints(); len(fb) > 0 {
		fmt.Fprintf(e.stdout, ", fallback hash keys %s", strings.Join(fb, ", "))
	}
	fmt.Fprintln(e.stdout)
	dsn := f.dsnOf(e)
	if dsn == "" {
		return exitOK
	}
	pool, err := connect(ctx, dsn, 2)
	if err != nil {
		return report(e, err, exitUsage)
	}
	defer pool.Close()
	probs, notes, err := backfill.CheckSchema(ctx, pool, cfg.Tables)
	if err != nil {
		return report(e, err, exitProblem)
	}
	for _, p := range probs {
		fmt.Fprintln(e.stderr, p.String())
	}
	for _, n := range notes {
		fmt.Fprintf(e.stdout, "note: %s\n", n)
	}
	if len(probs) > 0 {
		fmt.Fprintf(e.stdout, "schema: %d problem(s)\n", len(probs))
		return exitProblem
	}
	fmt.Fprintln(e.stdout, "schema OK")
	return exitOK
}

// Command pgveil is the one binary: the proxy (serve) and the admin commands.
// It owns flags, signals, exit codes, the metrics registry and the root
// logger; the packages it wires never read flags or the environment.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/pgveil/pgveil/backfill"
)

// Exit codes of SPEC §2.
const (
	exitOK      = 0 // success
	exitProblem = 1 // the work found a problem (verify failed, failure threshold crossed)
	exitUsage   = 2 // bad usage or configuration
)

// env is what a command may read from its surroundings; tests replace it.
type env struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	readFile       func(string) ([]byte, error)
}

// command is one subcommand. run returns the exit code.
type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) int
}

// commands is the table of subcommands; each lives in its own file.
var commands = map[string]command{
	"serve":     {"run the proxy", runServe},
	"keygen":    {"print one new key", runKeygen},
	"version":   {"print version, commit and Go version", runVersion},
	"schema":    {"print or apply the DDL the config needs", runSchema},
	"check":     {"validate config, keys and (with --dsn) the schema", runCheck},
	"backfill":  {"encrypt existing rows and fill blind indexes", dataCommand(backfill.OpEncrypt)},
	"reencrypt": {"re-encrypt tokens of fallback keys under the primary key", dataCommand(backfill.OpReencrypt)},
	"rehash":    {"recompute blind indexes with the current hash key", dataCommand(backfill.OpRehash)},
	"decrypt":   {"rollback: turn tokens back into plaintext (--yes)", dataCommand(backfill.OpDecrypt)},
	"verify":    {"report per column what is stored; exit 0 when all is encrypted", runVerify},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	e := &env{stdout: os.Stdout, stderr: os.Stderr, lookupEnv: os.LookupEnv, readFile: os.ReadFile}
	os.Exit(run(ctx, e, os.Args[1:]))
}

func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "pgveil: unknown command %q\n\n", args[0])
		usage(e.stderr)
		return exitUsage
	}
	return c.run(ctx, e, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: pgveil <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'pgveil <command> -h' for the flags of a command.")
}

// usageError marks errors that exit with code 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var u usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	return exitProblem
}

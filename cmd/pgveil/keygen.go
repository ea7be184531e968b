package main

import (
	"context"
	"fmt"

	"github.com/pgveil/pgveil/keyring"
)

func runKeygen(_ context.Context, e *env, args []string) int {
	if len(args) > 0 {
		fmt.Fprintln(e.stderr, "pgveil keygen: takes no arguments; it prints one new key (url-safe base64 of 32 random bytes)")
		return exitUsage
	}
	k, err := keyring.GenerateKey()
	if err != nil {
		fmt.Fprintln(e.stderr, "pgveil keygen:", err)
		return exitProblem
	}
	fmt.Fprintln(e.stdout, k)
	return exitOK
}

//go:build pgoprofile

package main

// Built only with -tags pgoprofile, by scripts/pgo.sh: a pgveil that writes
// a CPU profile of its whole run to $PGVEIL_CPUPROFILE, the input of
// profile-guided optimization (cmd/pgveil/default.pgo). Release builds
// have no profiling code and read no such variable.

import (
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func init() {
	path := os.Getenv("PGVEIL_CPUPROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		panic(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		panic(err)
	}
	// SIGUSR2 ends the profile; the proxy keeps serving.
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR2)
	go func() {
		<-ch
		pprof.StopCPUProfile()
		f.Close()
	}()
}

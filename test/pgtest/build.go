package pgtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	buildMu   sync.Mutex
	buildDir  string
	buildBin  string
	buildErr  error
)

// Pgveil builds cmd/pgveil once per test binary (with -race when the test
// binary has it) and returns the executable's path, for tests that run
// pgveil as a process. It is removed by Main at the end.
func Pgveil(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pgveil-pgtest-bin-")
		if err != nil {
			buildErr = fmt.Errorf("pgtest: %w", err)
			return
		}
		// owner.pid lets a later run remove the directory if this test
		// binary dies before Main cleans up.
		os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
		bin := filepath.Join(dir, "pgveil")
		// -pgo=off: tests need no profile-guided optimization, and the
		// race build would otherwise compile everything a second time.
		args := []string{"build", "-pgo=off", "-o", bin}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/pgveil/pgveil/cmd/pgveil")
		cmd := exec.Command(goTool(), args...)
		out, err := cmd.CombinedOutput()
		buildMu.Lock()
		defer buildMu.Unlock()
		buildDir = dir
		if err != nil {
			buildErr = fmt.Errorf("pgtest: go build ./cmd/pgveil: %w\n%s", err, out)
			return
		}
		buildBin = bin
	})
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

func removeBuildDir() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

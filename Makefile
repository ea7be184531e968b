# pgveil: build, test and demo.
#
#   make build   bin/pgveil, with version and commit from git
#   make test    go vet, then every test with the race detector (integration
#                tests start their own PostgreSQL; no environment needed)
#   make demo    a throwaway PostgreSQL with pgveil in front (scripts/demo.sh;
#                DEMO_ARGS=--once to stop after the walkthrough)
#   make bench   benchmarks, written to docs/BENCHMARKS.md (scripts/bench.sh)
#   make pgo     the benchmark workload, profiled into cmd/pgveil/default.pgo,
#                which go build uses for profile-guided optimization
#   make fuzz    every Fuzz target for FUZZTIME (default 10s)
#   make lint    gofmt check and go vet (and staticcheck when installed)
#   make fmt     gofmt -w

GO       ?= go
BIN      ?= bin/pgveil
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME ?= 10s
# -timeout is per test binary; the whole of make test stays well under 15 minutes.
# -pgo=off: cmd/pgveil/default.pgo is for the release binary; with it the
# tests of cmd/pgveil would compile every dependency once more.
TESTFLAGS ?= -race -count=1 -timeout 14m -pgo=off

# cgo is required: pg_query compiles PostgreSQL's parser from C.
export CGO_ENABLED := 1

.PHONY: all build test test-short vet fuzz demo bench pgo lint fmt fmt-check clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/pgveil

vet:
	$(GO) vet ./...

# The integration tests run with pgveil's default I/O engine (the event
# loop, on io_uring where the kernel offers it); the protocol suites run
# again with the loops on epoll (proxy.io_uring: off), as where io_uring is
# refused, and with every session on its two goroutines
# (proxy.event_loops: 0), the engine TLS sessions use.
ENGINE_TESTS ?= ^(TestTransparent|TestProtocol|TestEncryption|TestCatalog|TestStartup)

test: vet
	$(GO) test $(TESTFLAGS) ./...
	PGVEIL_TEST_IO_URING=off $(GO) test $(TESTFLAGS) -run '$(ENGINE_TESTS)' ./test/
	PGVEIL_TEST_EVENT_LOOPS=0 $(GO) test $(TESTFLAGS) -run '$(ENGINE_TESTS)' ./test/

# Unit tests only: go test -short skips the integration tests in test/.
test-short:
	$(GO) test -short -count=1 ./...

# Each Fuzz target of each package for FUZZTIME. Findings land in the
# package's testdata/fuzz/ and make this target fail.
fuzz:
	@set -e; \
	for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r -n1 dirname | sort -u); do \
		for f in $$(grep -h '^func Fuzz' $$dir/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/' | sort -u); do \
			echo "== $$dir $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$dir; \
		done; \
	done

demo:
	./scripts/demo.sh $(DEMO_ARGS)

bench:
	./scripts/bench.sh

# A shorter run of the benchmark workload (plain and encrypted traffic,
# both protocols), profiled; commit the default.pgo it writes.
pgo:
	BENCH_PGO_OUT=cmd/pgveil/default.pgo BENCH_ROUNDS=1 BENCH_OLTP_ROUNDS=2 \
		BENCH_BACKFILL_ROWS=100000 ./scripts/bench.sh

fmt:
	gofmt -w $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*')

fmt-check:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*' -not -path './.demo/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

lint: fmt-check vet
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; \
	else echo "staticcheck not installed; ran gofmt and go vet only"; fi

clean:
	rm -rf bin .demo

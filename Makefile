# reshard — see README.md. Every target works on a fresh clone once .ci/setup has run
# (it installs PostgreSQL 15 if missing; Go comes with the machine).
GO      ?= go
BIN     := bin/reshard
PKGS    := ./...
DEVDIR  ?= .reshard-dev

.PHONY: all build test test-short vet lint demo bench bench-scale bench-mover bench-planner setup clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/reshard

vet:
	$(GO) vet $(PKGS)

# Every test, integration included: they start real PostgreSQL clusters and an embedded
# etcd. -race covers the packages that run goroutines (copy workers, apply, watchers).
test: setup
	bash scripts/test.sh

# Unit tests only (integration tests skip with -short): the quick local loop.
test-short:
	$(GO) test -short -count=1 $(PKGS)

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

setup:
	@bash .ci/setup

demo: setup build
	bash scripts/demo.sh

# The cutover window twice: at 400 tx/s over 100 cutovers (a busy fleet: the README's
# headline), then unthrottled over 24 (the load saturates a small machine).
bench: setup build
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./planner/ ./cutover/ ./mover/
	RESHARD_BENCH_RATE=400 RESHARD_BENCH_CUTOVERS=100 $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./integration/
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./integration/
	$(MAKE) bench-scale

# The catalog at fleet scale on a real etcd: 10,000 shards and 1,000,000 ranges (init, Load,
# a resolver's first sync, 1,000 flips followed, the etcd database, a plan); docs/scale.md.
# RESHARD_SCALE_SHARDS, RESHARD_SCALE_RANGES and RESHARD_SCALE_FLIPS make it smaller.
bench-scale:
	$(GO) test -run '^$$' -bench 'BenchmarkCatalogScale' -benchtime 1x -timeout 60m ./catalog/

clean:
	rm -rf bin
	-[ -d $(DEVDIR) ] && ./$(BIN) dev down --dir $(DEVDIR)

# profcap — see README.md.
GO      ?= go
BIN     := bin/profcap
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X main.version=$(VERSION)
DEMO    ?= demo-cluster

.PHONY: build test vet demo bench bench-overhead clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/profcap

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

# The whole suite: unit tests, real HTTP/gRPC servers on loopback, real perf,
# real headless Chromium. See .ci/run for what it needs installed. Packages
# run one at a time (-p 1): several tests check that a capture ends within
# its deadline and that perf's off-CPU time matches a window, and on a
# 2-core machine other packages' tests running alongside would make those
# measurements about the machine rather than about profcap.
test: vet
	$(GO) test -p 1 -count=1 -timeout 14m ./...

# Start the demo cluster, record 10 s of all of it, print the bundle and its
# report, stop the cluster.
demo: build
	@$(BIN) demo --stop --dir $(DEMO) >/dev/null 2>&1 || true
	$(BIN) demo --detach --dir $(DEMO)
	@cd $(DEMO) && ../$(BIN) record --all --overhead full --duration 10s --out capture-$$(date -u +%Y%m%dT%H%M%SZ) > ../.demo-last; \
		status=$$?; cd ..; $(BIN) demo --stop --dir $(DEMO); \
		b=$(DEMO)/$$(cat .demo-last); echo; echo "bundle: $$b"; echo "report: $$b/report.html"; \
		rm -f .demo-last; exit $$status

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# What a capture costs a saturated Go service (the tables of docs/overhead.md).
bench-overhead: build
	$(GO) run ./bench/overhead -profcap $(BIN) -rounds 5 -round 5s

clean:
	rm -rf bin $(DEMO)

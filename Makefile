# profcap — see README.md.
GO      ?= go
BIN     := bin/profcap
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X main.version=$(VERSION)
DEMO    ?= demo-cluster

.PHONY: build setup test vet demo bench bench-offline bench-overhead clean

# Where make setup installs the tools the tests drive (cargo, pip, npm), and
# the PATH that make setup and make test (and the tests) see them on;
# scripts/env.sh gives a shell the same, for go test by hand. make demo and
# make build keep the machine's own PATH: the demo needs only Go.
export PROFCAP_CACHE ?= $(HOME)/.cache/profcap
TOOLS_PATH := $(PROFCAP_CACHE)/cargo/bin:$(PROFCAP_CACHE)/venv/bin:$(PROFCAP_CACHE)/npm/node_modules/.bin
setup test: export PATH := $(TOOLS_PATH):$(PATH)

# The eBPF collector's BPF objects are built from collectors/ebpf/bpf/*.c
# by clang through bpf2go (go generate), not committed: every target that
# compiles Go builds them first. Debian's clang, llvm and libbpf-dev are
# installed here if missing (scripts/setup.sh installs them too).
BPF_OBJS := collectors/ebpf/profcap_x86_bpfel.o collectors/ebpf/alloc_x86_bpfel.o collectors/ebpf/blocked_x86_bpfel.o collectors/ebpf/switchtw_x86_bpfel.o
BPF_SRCS := $(wildcard collectors/ebpf/bpf/*.c collectors/ebpf/bpf/*.h) $(wildcard collectors/ebpf/gen*.go)
.PHONY: bpf
bpf: $(BPF_OBJS)
$(BPF_OBJS) &: $(BPF_SRCS)
	@command -v clang >/dev/null && [ -e /usr/include/bpf/bpf_helpers.h ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang llvm libbpf-dev >/dev/null; }
	cd collectors/ebpf && $(GO) generate ./...
	@touch $(BPF_OBJS)

build: bpf
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/profcap

vet: bpf
	$(GO) vet ./...
	@# profcap builds for macOS too (samply's cpu there; flame, diff and
	@# report of bundles taken elsewhere).
	GOOS=darwin GOARCH=arm64 $(GO) build ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

# Install every real part the tests drive (Debian packages, samply, rbspy,
# py-spy, uv, Bun, the Rust workspace). Cached: a rerun takes seconds and
# prints nothing. See scripts/setup.sh.
setup:
	@bash scripts/setup.sh

# The whole suite: unit tests, real HTTP/gRPC servers on loopback, real perf,
# real headless Chromium, real profilers; make setup installs them first.
# Packages run one at a time (-p 1): several tests check that a capture ends
# within its deadline and that perf's off-CPU time matches a window, and on a
# 2-core machine other packages' tests running alongside would make those
# measurements about the machine rather than about profcap. The browser
# tests are a module of their own (browsertests/), run after.
test: setup vet
	$(GO) test -p 1 -count=1 -timeout 14m ./...
	@if [ -f browsertests/go.mod ]; then echo "cd browsertests && $(GO) test -count=1 ./..."; cd browsertests && $(GO) test -count=1 ./...; fi

# Start the demo cluster, record 10 s of all of it, print the bundle and its
# report, stop the cluster.
demo: build
	@$(BIN) demo --stop --dir $(DEMO) >/dev/null 2>&1 || true
	$(BIN) demo --detach --dir $(DEMO)
	@cd $(DEMO) && ../$(BIN) record --all --overhead full --duration 10s --out capture-$$(date -u +%Y%m%dT%H%M%SZ) > ../.demo-last; \
		status=$$?; cd ..; $(BIN) demo --stop --dir $(DEMO); \
		b=$(DEMO)/$$(cat .demo-last); echo; echo "bundle: $$b"; echo "report: $$b/report.html"; \
		rm -f .demo-last; exit $$status

# Build the Rust reference services (scripts/rust-build.sh), start their
# 2+3 cluster (profiling build), record 10 s of all of it, print the bundle
# and its report, stop the cluster. Needs cargo and perf; docs/cluster.md.
# The consoles publish every 100 ms: at the 1 s default console-subscriber
# 0.5.0 drains 128 events a second, fewer than refsvc emits, and its task
# announcements fall seconds behind (profcap then keeps async partial).
DEMO_RUST ?= demo-rust-cluster
.PHONY: demo-rust
demo-rust: build
	bash scripts/rust-build.sh
	@bash scripts/rust-cluster.sh stop $(DEMO_RUST) >/dev/null 2>&1 || true
	bash scripts/rust-cluster.sh start $(DEMO_RUST) --variant profiling -- --console-publish-ms 50 --steps-per-sec 10
	@cd $(DEMO_RUST) && $(CURDIR)/$(BIN) record --all --duration 10s --out capture-$$(date -u +%Y%m%dT%H%M%SZ) > $(CURDIR)/.demo-rust-last; \
		status=$$?; cd $(CURDIR); bash scripts/rust-cluster.sh stop $(DEMO_RUST); \
		b=$(DEMO_RUST)/$$(cat .demo-rust-last); echo; echo "bundle: $$b"; echo "report: $$b/report.html"; \
		rm -f .demo-rust-last; exit $$status

bench: bpf
	$(GO) test -run '^$$' -bench . -benchmem ./...
	bash scripts/bench-offline.sh

# profcap collapse and profcap flame --format svg side by side with
# FlameGraph's stackcollapse-perf.pl and flamegraph.pl on the same inputs
# (docs/performance.md, "Offline speed"). FlameGraph is not in this repository:
# FLAMEGRAPH_DIR=DIR names a copy (without one profcap is timed alone).
# WHAT=collapse or svg times one half.
WHAT ?= all
bench-offline:
	bash scripts/bench-offline.sh $(WHAT)

# What a capture costs a saturated Go service (the tables of docs/overhead.md).
bench-overhead: build
	$(GO) run ./bench/overhead -profcap $(BIN) -rounds 5 -round 5s

clean:
	rm -rf bin $(DEMO) $(DEMO_RUST)

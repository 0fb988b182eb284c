# nodeguard's build and test entry points. `make run` and `make test` are the
# two commands a newcomer needs; both work on a fresh machine.
GO ?= go
BIN := bin/nodeguard
# go-kmsg-parser v3.0.0 is served by the module proxy but absent from the
# checksum database; go.sum pins its hash.
export GONOSUMDB := github.com/euank/go-kmsg-parser
# The journald source needs cgo and libsystemd's headers; without them the
# binary is built without it and says so when asked to read the journal.
TAGS ?= $(shell test -e /usr/include/systemd/sd-journal.h && echo journald)

SHELL := bash
.PHONY: build run test test-e2e deps lint test-binaries fuzz bench bench-replay bench-node corpus demo image clean

# What `nodeguard version` and nodeguard_build_info say.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
STAMP := -X main.version=$(VERSION) -X main.revision=$(REVISION) -X main.buildDate=$(BUILD_DATE)

build:
	$(GO) build -tags "$(TAGS)" -ldflags="$(STAMP)" -o $(BIN) ./cmd/agent

# Runs the agent on this machine without a cluster, printing findings as
# they happen. Reading /dev/kmsg needs root where kernel.dmesg_restrict=1.
run: build
	./$(BIN) --standalone --log-format=console --listen-address=127.0.0.1:9102

# Everything CI runs: format and vet, then every test with the race detector,
# integration tests included against a real kube-apiserver and etcd built from
# source (cached under ~/.cache/nodeguard; the first build takes minutes).
# The node e2e tests (internal/testnode, test/e2e) run a kubelet that
# changes host sysctls and pods on the host's kernel, so they run after the
# rest and alone: `make test-e2e` runs just them.
E2E_PKGS := ./internal/testnode ./test/e2e
test: deps lint
	NODEGUARD_TEST_BIN="$$(hack/build-test-binaries.sh)" $(GO) test -tags "$(TAGS)" -race -count=1 -timeout 30m \
		$$($(GO) list ./... | grep -v -e /internal/testnode -e /test/e2e)
	$(MAKE) --no-print-directory test-e2e

# Their full -v output goes to bin/e2e.log; the terminal gets each test's
# name, verdict and log lines, and the log's end when one fails.
test-e2e: deps
	@mkdir -p bin
	NODEGUARD_TEST_BIN="$$(hack/build-test-binaries.sh)" $(GO) test -tags "$(TAGS)" -race -count=1 -timeout 30m -p 1 -v $(E2E_PKGS) > bin/e2e.log 2>&1; \
	rc=$$?; grep -E '^(=== RUN|--- |    --- |    [a-z_]+_test.go:|ok |FAIL|PASS|panic)' bin/e2e.log; \
	if [ $$rc -ne 0 ]; then echo "--- the end of bin/e2e.log:"; tail -n 150 bin/e2e.log; fi; exit $$rc

# Debian packages the tests use (journal headers and tools), when root.
deps:
	hack/install-test-deps.sh

lint:
	@unformatted="$$(gofmt -l cmd pkg internal test hack)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet -tags "$(TAGS)" ./...

# nodeguard's container image as an OCI archive, built with no Docker engine
# (hack/image): the binary as the Dockerfile builds it, and the shared
# libraries it loads, copied from this machine's Debian packages.
IMAGE ?= bin/nodeguard-image.tar
IMAGE_REF ?= docker.io/nodeguard/nodeguard:dev
image: deps
	$(GO) build -tags journald -trimpath -ldflags="-s -w $(STAMP)" -o bin/image/nodeguard ./cmd/agent
	$(GO) run ./hack/image -binary bin/image/nodeguard -o $(IMAGE) -ref $(IMAGE_REF) -version $(VERSION) -revision $(REVISION)

test-binaries:
	hack/build-test-binaries.sh

# Runs every fuzz target for FUZZTIME each (CI runs their seed corpora as
# ordinary tests).
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in ./pkg/logrules ./pkg/logrules/kernelrules ./pkg/config ./pkg/checks/pstore; do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$target"; \
			$(GO) test -run XXX -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

# Figures, not tests: the rule engine's Go benchmarks (lines per second,
# allocations per line), then hack/bench against a real API server (replay
# cost, idle footprint, detection latency, API load, and 1,000 simulated
# nodes against one API server: SCALE_NODES=0 skips them). Root for /dev/kmsg;
# deps for the journal headers the build wants and the containerd the idle
# agent's runtime check talks to.
SCALE_NODES ?= 1000
# NPD_BIN=path/to/node-problem-detector (built by hand from NPD's source,
# never by this project; NPD_CONFIG its config/ when not beside the binary)
# adds NPD's figures on the same jobs, alternated with nodeguard's in the
# same run: the same kern.log through its filelog plugin, and the idle
# kernel-log-only job against the same API server.
bench: deps build
	$(GO) test -run XXX -bench . -benchmem -count 3 ./pkg/logrules/...
	NODEGUARD_TEST_BIN="$$(hack/build-test-binaries.sh)" $(GO) run ./hack/bench -agent $(BIN) -scale-nodes $(SCALE_NODES) \
		$(if $(NPD_BIN),-npd $(NPD_BIN) $(if $(NPD_CONFIG),-npd-config $(NPD_CONFIG)))

# The rule engine's figures alone, without an API server: the Go
# benchmarks (lines per CPU-second beside the physical limit, one search per
# line), then `nodeguard replay` on a generated 500k-line log beside the
# physical limit measured on the same file in the same run.
# BASELINE_AGENT=path/to/an/older/nodeguard alternates its runs with this
# build's and prints the ratio.
bench-replay: build
	$(GO) test -run XXX -bench . -benchmem -count 3 ./pkg/logrules/...
	$(GO) run ./hack/bench -only-replay -agent $(BIN) -runs 5 $(if $(BASELINE_AGENT),-baseline-agent $(BASELINE_AGENT))

# The shipped pod on the real node (issue #17 part 4): the one-node cluster
# of internal/testnode (a real kubelet, containerd, runc and journald),
# deploy/ applied as shipped with nodeguard's own image, and the pod's own
# cgroup read on the host: CPU and memory against its limits for NODE_IDLE
# while nothing happens, then during NODE_STORM of real memory-cgroup OOM
# kills at 75 a second (processes in small memory cgroups of the bench's,
# removed afterwards), beside what the kernel printed of them and what
# reached the Node. Not in `make bench`: it takes NODE_IDLE + NODE_STORM +
# about 1.5 minutes (13 min 22 s with the defaults), and waits for the
# machine's one node (a lock) while an e2e run holds it. Root.
NODE_IDLE ?= 10m
NODE_STORM ?= 2m
bench-node: deps
	NODEGUARD_TEST_BIN="$$(hack/build-test-binaries.sh)" $(GO) run ./hack/bench -sections node -node-idle $(NODE_IDLE) -node-storm $(NODE_STORM)

# Scores the replay command against the shared kernel-log corpus.
corpus: build
	../shared/tools/score-replay ../shared/testdata/kmsg -- ./$(BIN) replay

# A one-node cluster with a real kubelet, nodeguard deployed on it from its
# image; HELM=1 deploys the Helm chart, ARGS=-hold keeps it running.
demo:
	HELM="$(HELM)" hack/demo.sh $(ARGS)

clean:
	rm -rf bin

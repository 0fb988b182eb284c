# nodeguard's build and test entry points. `make run` and `make test` are the
# two commands a newcomer needs; both work on a fresh machine.
GO ?= go
BIN := bin/nodeguard
# go-kmsg-parser v3.0.0 is served by the module proxy but absent from the
# checksum database; go.sum pins its hash.
export GONOSUMDB := github.com/euank/go-kmsg-parser

.PHONY: build run test lint unit integration test-binaries corpus demo clean

build:
	$(GO) build -o $(BIN) ./cmd/agent

# Runs the agent on this machine without a cluster, printing findings as
# they happen. Reading /dev/kmsg needs root where kernel.dmesg_restrict=1.
run: build
	./$(BIN) --standalone --log-format=console --listen-address=127.0.0.1:9102

# Everything CI runs: format and vet, then every test with the race detector,
# integration tests included against a real kube-apiserver and etcd built from
# source (cached under ~/.cache/nodeguard; the first build takes minutes).
test: lint
	NODEGUARD_TEST_BIN="$$(hack/build-test-binaries.sh)" $(GO) test -race -count=1 -timeout 30m ./...

lint:
	@unformatted="$$(gofmt -l cmd pkg internal test)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

test-binaries:
	hack/build-test-binaries.sh

# Scores the replay command against the shared kernel-log corpus.
corpus: build
	../shared/tools/score-replay ../shared/testdata/kmsg -- ./$(BIN) replay

demo: build
	hack/demo.sh

clean:
	rm -rf bin

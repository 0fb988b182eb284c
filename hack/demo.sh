#!/usr/bin/env bash
# Starts a real API server, runs the agent against it, injects a kernel-log
# line and shows `kubectl describe node`. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
export NODEGUARD_TEST_BIN="$(hack/build-test-binaries.sh)"
go build -o bin/nodeguard ./cmd/agent
go run ./hack/demo bin/nodeguard

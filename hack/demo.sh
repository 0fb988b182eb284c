#!/usr/bin/env bash
# Starts a one-node cluster with a real kubelet on this machine, deploys
# nodeguard's image on it as a DaemonSet, injects a kernel-log record and
# shows `kubectl describe node`. Needs root. HELM=1 deploys the Helm chart.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-test-deps.sh
export NODEGUARD_TEST_BIN="$(hack/build-test-binaries.sh)"
args=()
[ -n "${HELM:-}" ] && args+=(-helm)
go run ./hack/demo "${args[@]}" "$@"

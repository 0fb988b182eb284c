#!/usr/bin/env bash
# Builds the kube-apiserver, etcd, kubectl and helm that integration tests run, from
# source through the Go module proxy, into a cache outside the clone keyed by
# version. A second run finds them and does nothing. Prints the directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
k8s_version=v1.37.2
etcd_version=$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$here/tools/etcd/go.mod")
cache=${NODEGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodeguard}
dir="$cache/k8s-$k8s_version-etcd-$etcd_version"
mkdir -p "$dir"

build() { # build NAME MODULE_DIR PACKAGE
	local name=$1 mod=$2 pkg=$3
	if [ -x "$dir/$name" ]; then
		return
	fi
	echo "hack: building $name ($pkg) into $dir; a cold build takes several minutes" >&2
	local start=$SECONDS
	(cd "$here/tools/$mod" && go build -o "$dir/$name.tmp" "$pkg")
	mv "$dir/$name.tmp" "$dir/$name"
	echo "hack: built $name in $((SECONDS - start))s" >&2
}

build kube-apiserver kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build etcd etcd .
build kubectl kube-apiserver k8s.io/kubernetes/cmd/kubectl
build helm helm helm.sh/helm/v3/cmd/helm
echo "$dir"

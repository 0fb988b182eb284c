#!/usr/bin/env bash
# Builds the Kubernetes components, etcd, kubectl and helm that integration and
# node e2e tests run, from source through the Go module proxy, into a cache
# outside the clone keyed by version. A second run finds them and does nothing.
# Prints the directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
k8s_version=v1.37.2
etcd_version=$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$here/tools/etcd/go.mod")
cache=${NODEGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodeguard}
dir="$cache/k8s-$k8s_version-etcd-$etcd_version"
mkdir -p "$dir"
# One build at a time per cache: concurrent runs (parallel test packages,
# helpers sharing the machine) would each compile the same five commands.
exec 9>"$dir/.lock"
flock 9

# The Kubernetes commands come from one module, so one `go build` compiles
# their shared packages once: on two cores that is minutes saved over five
# builds. The version ldflags are what the release build sets; without them
# kubectl reports v0.0.0-master+$Format:%H$, which `kubectl version` cannot
# parse, and the kubelet reports it on its Node.
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
missing=()
for name in "${k8s_cmds[@]}"; do
	[ -x "$dir/$name" ] || missing+=("$name")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "hack: building ${missing[*]} into $dir; a cold build takes about ten minutes on two cores" >&2
	start=$SECONDS
	minor=${k8s_version#v1.}
	minor=${minor%%.*}
	pkg=k8s.io/component-base/version
	ldflags="-s -w -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	tmp=$(mktemp -d "$dir/.build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	pkgs=()
	for name in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$name"); done
	(cd "$here/tools/kube-apiserver" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
	for name in "${missing[@]}"; do mv "$tmp/$name" "$dir/$name"; done
	echo "hack: built ${missing[*]} in $((SECONDS - start))s" >&2
fi

build() { # build NAME MODULE_DIR PACKAGE
	local name=$1 mod=$2 pkg=$3
	if [ -x "$dir/$name" ]; then
		return
	fi
	echo "hack: building $name ($pkg) into $dir; a cold build takes a minute or two" >&2
	local start=$SECONDS
	(cd "$here/tools/$mod" && go build -trimpath -ldflags "-s -w" -o "$dir/$name.tmp" "$pkg")
	mv "$dir/$name.tmp" "$dir/$name"
	echo "hack: built $name in $((SECONDS - start))s" >&2
}

build etcd etcd .
build helm helm helm.sh/helm/v3/cmd/helm
echo "$dir"

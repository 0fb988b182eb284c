#!/usr/bin/env bash
# Installs the Debian packages the tests use, when they are missing:
# libsystemd-dev (cgo headers for reading the journal with go-systemd's
# sdjournal), systemd-journal-remote (makes real journal files with no
# journald running) and containerd (a real CRI runtime for the cri check). Needs root and apt-get; elsewhere it says what is
# missing and the journal tests skip.
set -euo pipefail

missing=()
[ -e /usr/include/systemd/sd-journal.h ] || missing+=(libsystemd-dev)
[ -e /lib/systemd/systemd-journal-remote ] || [ -e /usr/lib/systemd/systemd-journal-remote ] || missing+=(systemd-journal-remote)
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
	echo "hack: missing ${missing[*]}; install them to run the journal and runtime tests" >&2
	exit 0
fi
echo "hack: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

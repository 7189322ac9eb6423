#!/usr/bin/env bash
# Installs what the MonoFS test suite needs on a Debian machine (as root, or through sudo)
# and prepares the kernel-client VM (vm/prepare.sh). Idempotent and fast when everything
# is there; tests/run-all.sh calls it first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# git (git daemon is part of Debian's git package), qemu for the VM, busybox-static and
# cpio for its initramfs, gcc/libc6-dev for the static mount helper, libnfs-utils for
# host-side NFS checks (nfs-ls, nfs-cat), python3 and curl for the test tools, fio/rpcbind/nfs-ganesha
# for the benchmark smoke test, golang-go to build against the Go proxy layout MonoFS serves,
# g++ to build libFuzzer for the fuzz targets (tests/fuzz.sh), iproute2 and haproxy for the
# multi-host tests (tests/lib/netns.sh, deploy/haproxy/haproxy.cfg).
pkgs=(git qemu-system-x86 busybox-static cpio gcc g++ libc6-dev libnfs-utils python3 curl ca-certificates fio rpcbind nfs-ganesha nfs-ganesha-vfs golang-go iproute2 haproxy)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}" \
        || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; }
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust toolchain) not found" >&2; exit 1; }

echo "setup: tools: $(git --version), $(qemu-system-x86_64 --version | head -n1), $(cargo --version)"
vm/prepare.sh

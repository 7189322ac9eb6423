#!/usr/bin/env bash
# Prepare the kernel-client VM used by the MonoFS end-to-end tests.
#
# Idempotent: installs host packages if missing, downloads Debian's stock kernel,
# busybox-static and nfs-common into vm/cache/, and builds vm/cache/base.cpio.gz (the
# part of the initramfs that does not change between tests: busybox, kernel modules,
# the static mount helper, Debian's mount.nfs with its libraries). Fast when cached.
#
# Environment: MONOFS_VM_KERNEL_PKG overrides the kernel package (default: what
# linux-image-amd64 depends on).
set -euo pipefail

VM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$VM_DIR/cache"
mkdir -p "$CACHE/debs"

log() { echo "vm/prepare: $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# ---------------------------------------------------------------- host packages
need_pkgs=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_cmd qemu-system-x86_64 || need_pkgs+=(qemu-system-x86)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx wget || need_pkgs+=(busybox-static)
have_cmd gcc || need_pkgs+=(gcc libc6-dev)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need_pkgs+=(libc6-dev)
have_cmd cpio || need_pkgs+=(cpio)
have_cmd gzip || need_pkgs+=(gzip)
have_cmd python3 || need_pkgs+=(python3)
have_cmd apt-get || { log "apt-get is required"; exit 1; }
# libraries Debian's mount.nfs links against (copied from the host into the initramfs)
for lib in libtirpc.so.3 libgssapi_krb5.so.2 libmount.so.1 libblkid.so.1 libselinux.so.1; do
    if ! ldconfig -p 2>/dev/null | grep -q "$lib"; then
        case "$lib" in
            libtirpc.so.3) need_pkgs+=(libtirpc3) ;;
            libgssapi_krb5.so.2) need_pkgs+=(libgssapi-krb5-2) ;;
            libmount.so.1) need_pkgs+=(libmount1) ;;
            libblkid.so.1) need_pkgs+=(libblkid1) ;;
            libselinux.so.1) need_pkgs+=(libselinux1) ;;
        esac
    fi
done
[ -e /etc/netconfig ] || need_pkgs+=(libtirpc-common)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2 \
        || { $SUDO apt-get update >&2 && $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2; }
fi

# ---------------------------------------------------------------- downloads
download() { # download PKG -> prints path of the .deb in $CACHE/debs
    local pkg="$1" f
    f=$(ls "$CACHE/debs/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$f" ]; then
        log "downloading $pkg"
        (cd "$CACHE/debs" && apt-get download "$pkg" 2>&1 | grep -v -e unsandboxed -e '^Get:' -e '^Fetched' >&2 || true)
        f=$(ls "$CACHE/debs/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
        [ -n "$f" ] || { log "could not download $pkg"; exit 1; }
    fi
    echo "$f"
}

KPKG="${MONOFS_VM_KERNEL_PKG:-}"
if [ -z "$KPKG" ]; then
    if [ -s "$CACHE/kernel-pkg" ] && [ "${MONOFS_VM_REFRESH:-0}" != 1 ]; then
        KPKG=$(cat "$CACHE/kernel-pkg")
    else
        KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
        [ -n "$KPKG" ] || { log "cannot resolve the kernel behind linux-image-amd64"; exit 1; }
        echo "$KPKG" > "$CACHE/kernel-pkg"
    fi
fi
KVER="${KPKG#linux-image-}"

if [ ! -s "$CACHE/vmlinuz" ] || [ ! -e "$CACHE/kernel/modules-$KVER.ok" ]; then
    deb=$(download "$KPKG")
    log "extracting $(basename "$deb")"
    rm -rf "$CACHE/kernel"
    mkdir -p "$CACHE/kernel"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$CACHE/kernel" --wildcards \
        "./boot/vmlinuz-*" \
        "./lib/modules/*/kernel/fs/*" \
        "./lib/modules/*/kernel/net/*" \
        "./lib/modules/*/kernel/lib/*" \
        "./lib/modules/*/kernel/crypto/*" \
        "./lib/modules/*/kernel/drivers/net/ethernet/intel/*" \
        "./lib/modules/*/modules.builtin" \
        "./lib/modules/*/modules.order"
    cp "$CACHE/kernel/boot/vmlinuz-$KVER" "$CACHE/vmlinuz.tmp"
    mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
    touch "$CACHE/kernel/modules-$KVER.ok"
fi

if [ ! -x "$CACHE/nfs-common/sbin/mount.nfs" ]; then
    deb=$(download nfs-common)
    rm -rf "$CACHE/nfs-common"
    dpkg-deb -x "$deb" "$CACHE/nfs-common"
fi

if [ ! -x "$CACHE/busybox" ]; then
    if [ -x /bin/busybox ] && file_is_static=$(ldd /bin/busybox 2>&1 | grep -c "not a dynamic" || true) && [ "$file_is_static" -ge 1 ]; then
        cp /bin/busybox "$CACHE/busybox"
    else
        deb=$(download busybox-static)
        rm -rf "$CACHE/busybox-static"
        dpkg-deb -x "$deb" "$CACHE/busybox-static"
        cp "$CACHE/busybox-static/bin/busybox" "$CACHE/busybox"
    fi
fi

# ---------------------------------------------------------------- mount helper
HELPER_SRC="$VM_DIR/guest/monofs-mount.c"
if [ ! -x "$CACHE/monofs-mount" ] || [ "$HELPER_SRC" -nt "$CACHE/monofs-mount" ]; then
    log "building monofs-mount"
    gcc -static -O2 -Wall -o "$CACHE/monofs-mount.tmp" "$HELPER_SRC"
    mv "$CACHE/monofs-mount.tmp" "$CACHE/monofs-mount"
fi

# ---------------------------------------------------------------- base initramfs
BASE="$CACHE/base.cpio.gz"
STAMP_INPUTS="$KVER $(stat -c %Y "$CACHE/monofs-mount" "$CACHE/busybox" "$CACHE/nfs-common/sbin/mount.nfs" "$VM_DIR/prepare.sh" | tr '\n' ' ')"
if [ -s "$BASE" ] && [ "$(cat "$CACHE/base.stamp" 2>/dev/null)" = "$STAMP_INPUTS" ]; then
    log "cached: kernel $KVER, $(du -h "$BASE" | cut -f1) base initramfs"
    exit 0
fi

log "building base initramfs for $KVER"
ROOT="$CACHE/base-root"
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,etc,proc,sys,dev,tmp,mnt,run,test,lib/modules,usr/bin,usr/sbin,lib64,root}
chmod 1777 "$ROOT/tmp"
cp "$CACHE/busybox" "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list); do
    [ -e "$ROOT/bin/$applet" ] || ln -s busybox "$ROOT/bin/$applet"
done
cp "$CACHE/monofs-mount" "$ROOT/sbin/monofs-mount"

# Debian's mount.nfs plus the shared libraries it needs (host copies: same Debian release)
cp "$CACHE/nfs-common/sbin/mount.nfs" "$ROOT/sbin/mount.nfs"
ln -sf mount.nfs "$ROOT/sbin/umount.nfs"
for bin in "$ROOT/sbin/mount.nfs"; do
    ldd "$bin" | awk '/=>/ {print $3} /^\s*\/lib/ {print $1}' | while read -r lib; do
        [ -n "$lib" ] && [ -e "$lib" ] || continue
        dest="$ROOT$lib"
        mkdir -p "$(dirname "$dest")"
        cp -L "$lib" "$dest"
    done
    if ldd "$bin" | grep -q "not found"; then
        log "missing libraries for $bin:"; ldd "$bin" | grep "not found" >&2; exit 1
    fi
done
# ld.so path as the binary requests it
if [ -e /lib64/ld-linux-x86-64.so.2 ]; then cp -L /lib64/ld-linux-x86-64.so.2 "$ROOT/lib64/"; fi
cp /etc/netconfig "$ROOT/etc/netconfig"
for f in services protocols; do [ -e "/etc/$f" ] && cp "/etc/$f" "$ROOT/etc/$f"; done
cat > "$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat > "$ROOT/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo "hosts: files" > "$ROOT/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n10.0.2.2 monofs-host\n10.0.2.15 monofs-guest\n' > "$ROOT/etc/hosts"
echo monofs-guest > "$ROOT/etc/hostname"
: > "$ROOT/etc/fstab"
: > "$ROOT/etc/mtab" # replaced by a symlink to /proc/mounts in init

# kernel modules: closure of e1000 + nfsv3 (+ nfs_acl), ordered so dependencies load first
MODROOT="$CACHE/kernel/lib/modules/$KVER"
python3 - "$MODROOT" "$ROOT/lib/modules" e1000 nfs_acl nfsv3 <<'PY'
import os, shutil, sys
modroot, dest, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
paths = {}
for d, _, files in os.walk(os.path.join(modroot, "kernel")):
    for f in files:
        for ext in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
            if f.endswith(ext):
                paths[f[: -len(ext)].replace("-", "_")] = os.path.join(d, f)
builtin = set()
try:
    for line in open(os.path.join(modroot, "modules.builtin")):
        builtin.add(os.path.basename(line.strip()).split(".ko")[0].replace("-", "_"))
except FileNotFoundError:
    pass

def raw(path):
    data = open(path, "rb").read()
    if path.endswith(".xz"):
        import lzma; data = lzma.decompress(data)
    elif path.endswith(".gz"):
        import gzip; data = gzip.decompress(data)
    elif path.endswith(".zst"):
        import subprocess; data = subprocess.run(["zstd", "-dc", path], capture_output=True, check=True).stdout
    return data

def deps(data):
    for part in data.split(b"\0"):
        if part.startswith(b"depends="):
            return [x.replace("-", "_") for x in part[8:].decode().split(",") if x]
    return []

order, seen = [], set()
def visit(name):
    if name in seen: return
    seen.add(name)
    if name not in paths:
        print(f"vm/prepare: module {name}: {'built in' if name in builtin else 'not found (assumed built in)'}", file=sys.stderr)
        return
    data = raw(paths[name])
    for d in deps(data):
        visit(d)
    open(os.path.join(dest, name + ".ko"), "wb").write(data)
    order.append(name)
for w in wanted:
    visit(w)
open(os.path.join(dest, "load-order"), "w").write("\n".join(order) + "\n")
print("vm/prepare: modules: " + " ".join(order), file=sys.stderr)
PY

(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$BASE.tmp"
mv "$BASE.tmp" "$BASE"
echo "$STAMP_INPUTS" > "$CACHE/base.stamp"
log "ready: kernel $KVER, $(du -h "$BASE" | cut -f1) base initramfs"

#!/usr/bin/env bash
# Boot the MonoFS test VM (Debian's stock kernel, QEMU TCG) and run a guest script in it.
#
# usage: vm/run.sh [--timeout SECS] [--port P] [--mem MB] [--env NAME=VALUE]...
#                  [--log FILE] [--append KERNEL_ARGS] GUEST_SCRIPT [FILES...]
#
#   GUEST_SCRIPT  POSIX sh script run by busybox sh as /test/script.sh (cwd /test).
#                 It can `. /test/lib.sh` for monofs_mount, monofs_mount_plain, ...
#   FILES         extra files or directories copied into /test/ (by basename).
#   --port P      MONOFS_PORT in the guest (default: $MONOFS_PORT, else 2049)
#   --timeout S   kill the VM after S seconds (default: $MONOFS_VM_TIMEOUT, else 900)
#   --env N=V     export N=V in the guest (repeatable)
#   --log FILE    console log (default: vm/cache/logs/<name>-<time>.log)
#   --name NAME   test name for messages and the log (default: script basename)
#
# The console streams to stdout and the log. Exit status: the guest script's status,
# taken from the MONOFS-VM-EXIT=<code> line; 124 on timeout, 125 when the VM stopped
# without a status (kernel panic, crash, guest setup failure).
set -euo pipefail

VM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$VM_DIR/cache"

timeout_s="${MONOFS_VM_TIMEOUT:-900}"
port="${MONOFS_PORT:-2049}"
mem=512
logfile=""
append=""
name=""
envs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) timeout_s="$2"; shift 2 ;;
        --timeout=*) timeout_s="${1#*=}"; shift ;;
        --port) port="$2"; shift 2 ;;
        --port=*) port="${1#*=}"; shift ;;
        --mem) mem="$2"; shift 2 ;;
        --env) envs+=("$2"); shift 2 ;;
        --log) logfile="$2"; shift 2 ;;
        --append) append="$2"; shift 2 ;;
        --name) name="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        --) shift; break ;;
        -*) echo "vm/run: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "usage: vm/run.sh [--timeout SECS] [--port P] GUEST_SCRIPT [FILES...]" >&2; exit 2; }
script="$1"; shift
[ -f "$script" ] || { echo "vm/run: no such script: $script" >&2; exit 2; }

# prepare (fast when cached)
if [ ! -s "$CACHE/base.cpio.gz" ] || [ ! -s "$CACHE/vmlinuz" ]; then
    "$VM_DIR/prepare.sh"
fi

[ -n "$name" ] || name="$(basename "$script" .sh)"
mkdir -p "$CACHE/logs"
[ -n "$logfile" ] || logfile="$CACHE/logs/$name-$(date +%Y%m%d-%H%M%S)-$$.log"
mkdir -p "$(dirname "$logfile")"

work="$(mktemp -d "${TMPDIR:-/tmp}/monofs-vm.XXXXXX")"
qpid=""
cleanup() {
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill "$qpid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# per-run overlay: /init, /test/{lib.sh,script.sh,env.sh,FILES...}
mkdir -p "$work/root/test"
cp "$VM_DIR/guest/init" "$work/root/init"
chmod 755 "$work/root/init"
cp "$VM_DIR/guest/lib.sh" "$work/root/test/lib.sh"
cp "$script" "$work/root/test/script.sh"
chmod 755 "$work/root/test/script.sh"
for f in "$@"; do
    [ -e "$f" ] || { echo "vm/run: no such file: $f" >&2; exit 2; }
    cp -a "$f" "$work/root/test/"
done
{
    q() { printf "%s='%s'\n" "$1" "$(printf %s "$2" | sed "s/'/'\\\\''/g")"; }
    q MONOFS_PORT "$port"
    q MONOFS_TEST_NAME "$name"
    for kv in "${envs[@]+"${envs[@]}"}"; do
        case "$kv" in *=*) ;; *) echo "vm/run: --env needs NAME=VALUE" >&2; exit 2 ;; esac
        q "${kv%%=*}" "${kv#*=}"
        echo "export ${kv%%=*}"
    done
    echo "export MONOFS_PORT MONOFS_TEST_NAME"
} > "$work/root/test/env.sh"
(cd "$work/root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$work/overlay.cpio.gz"
cat "$CACHE/base.cpio.gz" "$work/overlay.cpio.gz" > "$work/initrd.gz"

echo "vm/run: booting $name (port $port, timeout ${timeout_s}s, log $logfile)" >&2
start=$(date +%s.%N)
set +e
# -machine accel=tcg: KVM is not usable on the CI hosts; TCG is.
timeout -k 5 "$timeout_s" qemu-system-x86_64 \
    -machine accel=tcg -cpu max -smp 1 -m "$mem" \
    -nodefaults -display none -no-reboot -monitor none -serial stdio \
    -kernel "$CACHE/vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 oops=panic mitigations=off rdinit=/init $append" \
    -netdev user,id=n0 -device e1000,netdev=n0 \
    </dev/null 2>&1 | tr -d '\r' | tee "$logfile"
qrc=${PIPESTATUS[0]}
set -e
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')

code=$(sed -n 's/^.*MONOFS-VM-EXIT=\([0-9][0-9]*\).*$/\1/p' "$logfile" | tail -n1)
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    echo "vm/run: TIMEOUT after ${timeout_s}s ($name); log: $logfile" >&2
    exit 124
fi
if [ -z "$code" ]; then
    if grep -q "Kernel panic" "$logfile"; then
        echo "vm/run: KERNEL PANIC ($name, qemu status $qrc); log: $logfile" >&2
    else
        echo "vm/run: VM stopped without an exit marker ($name, qemu status $qrc); log: $logfile" >&2
    fi
    exit 125
fi
echo "vm/run: $name finished with status $code in ${elapsed}s" >&2
exit "$code"

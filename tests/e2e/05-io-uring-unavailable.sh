#!/usr/bin/env bash
# A node that cannot use io_uring exits at once with one line naming the cause and the
# fix, instead of failing later or hanging. Disables io_uring through the
# kernel.io_uring_disabled sysctl (root only; restored on exit).
. "$(dirname "$0")/../lib/common.sh"
knob=/proc/sys/kernel/io_uring_disabled
if [ "$(id -u)" != 0 ] || [ ! -w "$knob" ]; then
    echo "skip: needs root and a writable $knob"
    exit 0
fi
old=$(cat "$knob")
trap 'echo "$old" > "$knob"; _e2e_cleanup' EXIT
echo 2 > "$knob"
port=$(e2e_free_port)
set +e
out=$(timeout 30 "$MONOFS_BIN" node --addr "127.0.0.1:$port" --node-id n1 --db-path "$E2E_TMP/db" --shards 1 2>&1)
rc=$?
set -e
echo "$out"
echo "$old" > "$knob"
fail=0
[ "$rc" = 1 ] || { echo "FAIL: exit status $rc, want 1"; fail=1; }
echo "$out" | grep -q "io_uring_disabled" || { echo "FAIL: message does not name kernel.io_uring_disabled"; fail=1; }
echo "$out" | grep -q "sysctl -w kernel.io_uring_disabled=0" || { echo "FAIL: message does not say how to fix it"; fail=1; }
[ "$(echo "$out" | grep -c .)" -le 2 ] || { echo "FAIL: more than a line or two of output"; fail=1; }
[ "$fail" = 0 ] && echo "ok: node refuses to start without io_uring, with a clear message"
exit "$fail"

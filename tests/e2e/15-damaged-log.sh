#!/usr/bin/env bash
# A damaged node log in an RF-2 cluster (host side, no VM):
#   - `monofs up --nodes 2 --replication-factor 2`, the `real` test repository ingested
#     eagerly, every file read back (`monofs cat`, sha256 against tests/manifest.py)
#   - stop; one byte flipped in the middle of node n1's log (in the meta of the record
#     there, so its checksum catches it); start again
#   - n1 skips only that record (the log line names offset, length and key), nothing is
#     cut; every file still reads correctly (the lost record comes from n2)
#   - `monofs admin damaged --json` lists the extent on n1 and nothing on n2; the text
#     form names it; /metrics has monofs_node_damaged_records per node
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

e2e_step "test repository"
e2e_repos_locked
REAL_MF=$(e2e_manifest real)

CATALL="$MONOFS_ROOT/tests/lib/catall.py"

DATA="$E2E_TMP/data"
e2e_step "RF-2 cluster, eager ingest"
e2e_up "$DATA" --nodes 2 --replication-factor 2
e2e_ingest "$MONOFS_TEST_REPOS/real" --source-id local/real --content eager >/dev/null
e2e_check "before the damage: every file of real reads correctly" python3 "$CATALL" "$REAL_MF" /local/real
rc=0; e2e_stop "$E2E_UP_PID" 20 || rc=$?
e2e_check "stopped cleanly (status $rc)" test "$rc" = 0

e2e_step "flip a byte in the middle of n1's log"
LOG="$DATA/nodes/n1/shard-0.log"
SIZE=$(stat -c %s "$LOG")
# The record holding the middle byte (records are 4096-aligned, laid out as in
# engine/src/log.rs): flip a byte of its sequence number, which the meta checksum covers.
FLIP=$(python3 - "$LOG" <<'PY'
import sys
al = lambda n: (n + 4095) // 4096 * 4096
f = open(sys.argv[1], "r+b")
size = f.seek(0, 2)
mid, off = size // 2, 4096
while True:
    f.seek(off)
    h = f.read(32)
    assert h[:4] == b"MFSR", off
    k, v = int.from_bytes(h[8:10], "big"), int.from_bytes(h[12:16], "big")
    meta = 32 + k + 8 * ((v + 4095) // 4096)
    vo = al(meta) if v >= 65536 or al(al(meta) + v) == al(meta + v) else meta
    n = al(vo + v)
    if off + n > mid:
        break
    off += n
f.seek(off + 30)
b = f.read(1)
f.seek(off + 30)
f.write(bytes([b[0] ^ 0x20]))
print(off, n)
PY
)
read -r REC_OFF REC_LEN <<<"$FLIP"
echo "log $SIZE bytes; record at $REC_OFF ($REC_LEN bytes) damaged"

e2e_step "restart"
e2e_up "$DATA" --nodes 2 --replication-factor 2
# (It may have grown: the router stores its heartbeat in the cluster state at start.)
e2e_check "the log is not cut" test "$(stat -c %s "$LOG")" -ge "$SIZE"
e2e_check "no tail copied aside" test -z "$(ls "$DATA/nodes/n1" | grep cut- || true)"
logged() { sed 's/\x1b\[[0-9;]*m//g' "$E2E_UP_LOG" | grep -q "$1"; }
e2e_check "the node logs the damaged extent (offset $REC_OFF, length $REC_LEN)" \
    logged "damaged log extent.*offset=$REC_OFF length=$REC_LEN"
e2e_check "after the damage: every file of real reads correctly" python3 "$CATALL" "$REAL_MF" /local/real

"$MONOFS_BIN" admin damaged --json >"$E2E_TMP/damaged.json"
cat "$E2E_TMP/damaged.json"
e2e_check "admin damaged --json: n1 lists the extent, n2 nothing" python3 - "$E2E_TMP/damaged.json" "$REC_OFF" "$REC_LEN" <<'PY'
import json, sys
nodes = {n["node"]: n for n in json.load(open(sys.argv[1]))}
off, n = int(sys.argv[2]), int(sys.argv[3])
assert nodes["n1"]["total"] == 1 and nodes["n2"]["total"] == 0, nodes
d = nodes["n1"]["shards"][0]["damaged"][0]
assert (d["offset"], d["length"], d["found"]) == (off, n, "skipped"), d
assert d["key"] and not d["key_verified"], d
PY
"$MONOFS_BIN" admin damaged >"$E2E_TMP/damaged.txt"
cat "$E2E_TMP/damaged.txt"
e2e_check "admin damaged: the text form names the extent" grep -q "offset $REC_OFF length $REC_LEN skipped" "$E2E_TMP/damaged.txt"
python3 -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=10).read())' \
    "$E2E_ROUTER/metrics" >"$E2E_TMP/metrics.txt"
e2e_check "/metrics: monofs_node_damaged_records n1 1, n2 0" \
    grep -qzE 'monofs_node_damaged_records\{node="n1"\} 1.monofs_node_damaged_records\{node="n2"\} 0' "$E2E_TMP/metrics.txt"

rc=0; e2e_stop "$E2E_UP_PID" 20 || rc=$?
e2e_check "final stop (status $rc)" test "$rc" = 0
echo
echo "total $(e2e_secs)s"
e2e_done

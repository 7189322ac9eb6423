#!/usr/bin/env bash
# Runs the fio jobs of bench/fio/ against a kernel NFS mount of MonoFS inside the
# kernel-client VM (vm/run.sh) and collects fio's JSON into OUT/<job>.json plus a summary.
# The VM's CPU is emulated (TCG): this is a smoke check of the jobs and the kernel path,
# not a speed figure.
#
# usage: bench/fio/run-vm.sh [--smoke] [--runtime SECS] [--out DIR] [--repo GIT_REPO]
#   --smoke     small generated repository, 2 s per job
#   --repo      a local Git repository to serve (default: the generated content repository);
#               MONOFS_FIO_SMALLDIR / MONOFS_FIO_BIGFILE name the paths the jobs use
#               (default many and big/big.bin)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
. "$ROOT/tests/lib/common.sh"

smoke=0 runtime=10 out="" repo=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1; runtime=2 ;;
        --runtime) runtime="$2"; shift ;;
        --out) out="$2"; shift ;;
        --repo) repo="$2"; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "run-vm.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
out="${out:-$ROOT/target/bench/fio-vm}"
mkdir -p "$out"
command -v fio >/dev/null || { echo "run-vm.sh: fio not installed (apt-get install fio)" >&2; exit 1; }
[ -x "$MONOFS_BIN" ] || { echo "run-vm.sh: $MONOFS_BIN missing (cargo build --release -p monofs)" >&2; exit 1; }

if [ -z "$repo" ]; then
    if [ "$smoke" = 1 ]; then
        "$ROOT/tests/gen-repos.sh" "$ROOT/target/bench/repos-smoke" --many 2000 --big-mb 16 >&2
        repo="$ROOT/target/bench/repos-smoke/content"
    else
        "$ROOT/tests/gen-repos.sh" "$ROOT/target/bench/repos" --many 20000 --big-mb 110 >&2
        repo="$ROOT/target/bench/repos/content"
    fi
fi
name=$(basename "$repo")

# fio and every library it links against, run through the bundled loader in the guest
bundle="$E2E_TMP/fio-bundle"
mkdir -p "$bundle/lib"
cp "$(command -v fio)" "$bundle/fio"
ldd "$(command -v fio)" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
    cp -L "$lib" "$bundle/lib/"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$bundle/lib/ld-linux-x86-64.so.2"
jobs="$E2E_TMP/fio-jobs"
mkdir -p "$jobs"
cp "$ROOT"/bench/fio/*.fio "$jobs/"

e2e_up "$E2E_TMP/data" --nodes 2 --shards 1
e2e_ingest "$repo" --source-id "local/$name" >&2

log="$out/vm.log"
rc=0
e2e_vm --timeout $((300 + 4 * runtime * 10)) --mem 1024 --port "$E2E_NFS_PORT" --log "$log" \
    --env "MONOFS_FIO_REPO=$name" --env "FIO_RUNTIME=$runtime" \
    --env "MONOFS_FIO_SMALLDIR=${MONOFS_FIO_SMALLDIR:-many}" --env "MONOFS_FIO_BIGFILE=${MONOFS_FIO_BIGFILE:-big/big.bin}" \
    "$ROOT/bench/fio/guest.sh" "$bundle" "$jobs" >/dev/null || rc=$?

python3 - "$log" "$out" <<'PY'
import json, re, sys
log, out = sys.argv[1], sys.argv[2]
text = open(log, errors="replace").read().replace("\r", "")
found = 0
for m in re.finditer(r"MONOFS-FIO-JSON-BEGIN (\S+)\n(.*?)\nMONOFS-FIO-JSON-END \1", text, re.S):
    name, body = m.group(1), m.group(2)
    body = body[body.find("{"):]
    v = json.loads(body)
    open(f"{out}/{name}.json", "w").write(json.dumps(v, indent=1))
    for j in v["jobs"]:
        r = j["read"]
        p = r.get("clat_ns", {}).get("percentile", {})
        print(f"{name:22} {r['iops']:10.1f} IOPS {r['bw_bytes']/1e6:9.2f} MB/s  p50 {p.get('50.000000', 0)/1e3:9.1f} us  p99 {p.get('99.000000', 0)/1e3:9.1f} us  (emulated CPU)")
    found += 1
print(f"fio: {found} job result(s) in {out}")
sys.exit(0 if found else 1)
PY
exit "$rc"

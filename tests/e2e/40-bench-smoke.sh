#!/usr/bin/env bash
# Smoke test of the MonoFS benchmark suite (monofs-bench): every subcommand runs in its
# short mode and writes its JSON and plot. It checks that the suite works, never that
# anything is fast (no timed assertions).
#   - nfs against the built-in raw-TCP peer (seq1m, read4k)
#   - compare --smoke: MonoFS and nfs-ganesha (in a private network namespace, as root) on
#     a small generated repository, ~1 s per workload
#   - ingest --smoke (2,000 files), ingest --history 300 --smoke (500 files, 300 commits) and engine --smoke (32 MiB, QD 1/16/64, fio beside it)
#   - the fio jobs of bench/fio against a kernel mount in the VM (2 s each)
#   - tuning/tune.sh prints current vs recommended without changing anything
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

BENCH="$MONOFS_ROOT/target/release/monofs-bench"
[ -x "$BENCH" ] || { echo "FAIL: $BENCH missing (cargo build --release)"; exit 1; }
export MONOFS_BENCH_NO_BUILD=1

# own check helpers: this script depends only on the stable parts of common.sh
# (e2e_json_check among them)
BENCH_PASSED=0 BENCH_FAILED=0
bench_ok() { BENCH_PASSED=$((BENCH_PASSED + 1)); echo "ok: $*"; }
bench_fail() { BENCH_FAILED=$((BENCH_FAILED + 1)); echo "FAIL: $*"; }
bench_check() { local m="$1"; shift; if "$@"; then bench_ok "$m"; else bench_fail "$m"; fi; }
bench_done() { echo "checks: $BENCH_PASSED passed, $BENCH_FAILED failed"; [ "$BENCH_FAILED" = 0 ]; }

OUT="$E2E_TMP/bench"
mkdir -p "$OUT"

svg_check() { python3 -c 'import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); assert d.documentElement.tagName == "svg"; assert len(d.getElementsByTagName("rect")) > 1' "$1"; }

e2e_step "nfs against the raw-TCP peer"
timeout 60 "$BENCH" nfs --server raw --workloads seq1m,read4k --duration 1 --warmup 0.2 --json "$OUT/raw.json"
bench_check "nfs raw: JSON with ops and latencies for both workloads" \
    e2e_json_check "$OUT/raw.json" 'len(v) == 2 and all(r["ops"] > 0 and r["errors"] == 0 and r["latency"]["p99_us"] >= r["latency"]["p50_us"] > 0 for r in v)'

e2e_step "compare --smoke"
ganesha=0
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && [ -x /usr/bin/ganesha.nfsd ] && [ -x /usr/sbin/rpcbind ]; then
    ganesha=1
fi
rc=0
timeout 240 "$BENCH" compare --smoke --monofs-bin "$MONOFS_BIN" --out "$OUT/compare" || rc=$?
bench_check "compare --smoke exits 0 (status $rc)" test "$rc" = 0
bench_check "compare: results.json has every workload for monofs" \
    e2e_json_check "$OUT/compare/results.json" '{r["workload"] for r in v["results"] if r["target"] == "monofs" and r["ops"] > 0} == {"getattr", "lookup", "readdirplus", "read4k", "seq1m", "build"}'
bench_check "compare: raw-TCP ceiling measured" \
    e2e_json_check "$OUT/compare/results.json" 'any(r["target"] == "raw-tcp" and r["mb_per_s"] > 0 for r in v["results"])'
if [ "$ganesha" = 1 ]; then
    bench_check "compare: nfs-ganesha measured for every workload, ratios in the table" \
        e2e_json_check "$OUT/compare/results.json" 'len([r for r in v["results"] if r["target"] == "ganesha" and r["ops"] > 0]) == 6 and len(v["rows"]) >= 8 and all(r["ratio"] > 0 for r in v["rows"])'
else
    echo "note: not root or nfs-ganesha/rpcbind missing (.ci/run installs them): compared with raw TCP only"
fi
bench_check "compare: the plot is an SVG" svg_check "$OUT/compare/compare.svg"
bench_check "compare: table.md written" grep -q '| workload |' "$OUT/compare/table.md"

e2e_step "ingest --smoke"
rc=0
timeout 120 "$BENCH" ingest --smoke --monofs-bin "$MONOFS_BIN" --out "$OUT/ingest" || rc=$?
bench_check "ingest --smoke exits 0 (status $rc)" test "$rc" = 0
bench_check "ingest: listable, fetched and git clone times in results.json" \
    e2e_json_check "$OUT/ingest/results.json" 'v["monofs_listable_s"] > 0 and v["monofs_fully_fetched_s"] > 0 and v["git_clone_depth1_s"] > 0'
bench_check "ingest: the plot is an SVG" svg_check "$OUT/ingest/ingest.svg"
rc=0
timeout 120 "$BENCH" ingest --history 300 --smoke --monofs-bin "$MONOFS_BIN" --out "$OUT/ingest-history" || rc=$?
bench_check "ingest --history --smoke exits 0 (status $rc)" test "$rc" = 0
bench_check "ingest --history: lazy, eager and both clone times in results.json" \
    e2e_json_check "$OUT/ingest-history/results.json" 'v["lazy_listable_s"] > 0 and v["eager_done_s"] > 0 and v["git_clone_bare_depth1_blobless_s"] > 0 and v["git_clone_depth1_s"] > 0 and v["commits"] == 300'

e2e_step "engine --smoke"
rc=0
timeout 120 "$BENCH" engine --smoke --dir "$E2E_TMP/engine" --out "$OUT/engine" || rc=$?
bench_check "engine --smoke exits 0 (status $rc)" test "$rc" = 0
bench_check "engine: GET and PUT points at QD 1, 16, 64" \
    e2e_json_check "$OUT/engine/results.json" 'sorted((p["op"], p["qd"]) for p in v["points"] if p["system"] == "engine" and p["iops"] > 0) == [("get", 1), ("get", 16), ("get", 64), ("put", 1), ("put", 16), ("put", 64)]'
if command -v fio >/dev/null; then
    bench_check "engine: fio measured beside it" \
        e2e_json_check "$OUT/engine/results.json" 'len([p for p in v["points"] if p["system"] == "fio" and p["iops"] > 0]) == 6'
fi
bench_check "engine: the plot is an SVG" svg_check "$OUT/engine/engine.svg"

e2e_step "fio jobs in the kernel-client VM (bench/fio/run-vm.sh --smoke)"
if command -v fio >/dev/null; then
    rc=0
    timeout 600 "$MONOFS_ROOT/bench/fio/run-vm.sh" --smoke --out "$OUT/fio-vm" || rc=$?
    bench_check "fio run-vm.sh --smoke exits 0 (status $rc)" test "$rc" = 0
    for j in metadata-small-files seqread randread; do
        bench_check "fio $j: JSON collected from the VM" e2e_json_check "$OUT/fio-vm/$j.json" 'v["jobs"][0]["read"]["total_ios"] > 0'
    done
else
    bench_fail "fio not installed (.ci/run installs it)"
fi

e2e_step "tuning/tune.sh (report only)"
rc=0
"$MONOFS_ROOT/tuning/tune.sh" >"$OUT/tune.txt" 2>&1 || rc=$?
sed 's/^/    /' "$OUT/tune.txt" | head -40
bench_check "tune.sh without --apply exits 0 and prints current vs recommended" \
    sh -c "test $rc = 0 && grep -q 'recommended' '$OUT/tune.txt'"

echo
echo "total $(e2e_secs)s"
bench_done

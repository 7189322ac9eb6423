#!/usr/bin/env bash
# Scale: a generated repository of 50,000 files ingested by a cluster of separate
# processes (two nodes, a fetcher, a router: the production layout). The peak memory
# (VmHWM) of the fetcher and the router is recorded and must stay within stated
# bounds; the repository must be listable as soon as the ingest returns and every file
# readable afterwards (content arrives by prefetch or on first read).
. "$(dirname "$0")/../lib/common.sh"

FILES=${MONOFS_SCALE_FILES:-50000}
# Bounds on peak resident memory, in MiB. The fetcher holds one tree level of directory
# records and a bounded prefetch queue, the router a bounded directory cache.
FETCHER_MAX_MIB=${MONOFS_SCALE_FETCHER_MIB:-256}
ROUTER_MAX_MIB=${MONOFS_SCALE_ROUTER_MIB:-128}

repo="$E2E_TMP/big"
python3 - "$repo" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per_dir = 100
for i in range(n):
    d = os.path.join(root, f"d{i // (per_dir * 50):02d}", f"s{(i // per_dir) % 50:02d}")
    if i % per_dir == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.txt"), "w") as f:
        f.write(f"file {i}\n" * (1 + i % 7))
PY
(
    cd "$repo"
    git init -q -b main
    git add -A
    GIT_AUTHOR_DATE=2024-01-01T00:00:00Z GIT_COMMITTER_DATE=2024-01-01T00:00:00Z \
        git -c user.name=MonoFS -c user.email=t@monofs commit -qm "$FILES files"
)
echo "scale: generated $FILES files in $(e2e_secs 2>/dev/null || echo '?')s"

p=$(e2e_free_port); h=$(e2e_free_port); f=$(e2e_free_port); n1=$(e2e_free_port); n2=$(e2e_free_port)
e2e_bg "$MONOFS_BIN" node --addr "127.0.0.1:$n1" --node-id n1 --db-path "$E2E_TMP/n1" --shards 1
e2e_bg "$MONOFS_BIN" node --addr "127.0.0.1:$n2" --node-id n2 --db-path "$E2E_TMP/n2" --shards 1
e2e_bg "$MONOFS_BIN" fetcher --bind 127.0.0.1 --port "$f" --cache-dir "$E2E_TMP/cache" --allow-local-sources
fetcher_pid=$E2E_BG_PID
e2e_wait_port "$n1" 30; e2e_wait_port "$n2" 30; e2e_wait_port "$f" 30
e2e_bg "$MONOFS_BIN" router --bind 127.0.0.1 --port "$p" --http-port "$h" \
    --nodes "n1=127.0.0.1:$n1,n2=127.0.0.1:$n2" --fetchers "127.0.0.1:$f"
router_pid=$E2E_BG_PID
e2e_wait_port "$p" 30; e2e_wait_port "$h" 30

t0=$(date +%s.%N)
"$MONOFS_BIN" ingest "$repo" --source-id local/big --router "http://127.0.0.1:$h"
t1=$(date +%s.%N)
"$MONOFS_BIN" ls --server "127.0.0.1:$p" /local/big/d00/s00 | head -n 3
t2=$(date +%s.%N)
echo "scale: ingest returned after $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s, first listing after $(awk -v a="$t0" -v b="$t2" 'BEGIN{printf "%.1f", b-a}')s"

fail=0
# Every directory lists exactly its files; a sample of files reads back exactly.
count=0
for d in $(seq 0 $(( (FILES - 1) / 5000 ))); do
    dd=$(printf 'd%02d' "$d")
    for s in $("$MONOFS_BIN" ls --server "127.0.0.1:$p" "/local/big/$dd"); do
        c=$("$MONOFS_BIN" ls --server "127.0.0.1:$p" "/local/big/$dd/$s" | wc -l)
        count=$((count + c))
    done
done
if [ "$count" = "$FILES" ]; then echo "ok: $count files listed"; else echo "FAIL: listed $count files, want $FILES"; fail=1; fi
for i in 0 1 4999 12345 $((FILES - 1)); do
    path=$(printf '/local/big/d%02d/s%02d/f%d.txt' $((i / 5000)) $(((i / 100) % 50)) "$i")
    want=$(python3 -c "import sys; i=int(sys.argv[1]); sys.stdout.write(f'file {i}\n' * (1 + i % 7))" "$i" | sha256sum)
    got=$("$MONOFS_BIN" cat --server "127.0.0.1:$p" "$path" | sha256sum)
    if [ "$got" = "$want" ]; then echo "ok: $path"; else echo "FAIL: $path content differs"; fail=1; fi
done

hwm() { awk '/VmHWM/ {printf "%d", $2 / 1024}' "/proc/$1/status"; }
fm=$(hwm "$fetcher_pid"); rm_=$(hwm "$router_pid")
echo "scale: peak memory: fetcher ${fm} MiB (bound ${FETCHER_MAX_MIB}), router ${rm_} MiB (bound ${ROUTER_MAX_MIB})"
[ "$fm" -le "$FETCHER_MAX_MIB" ] || { echo "FAIL: fetcher peak memory over its bound"; fail=1; }
[ "$rm_" -le "$ROUTER_MAX_MIB" ] || { echo "FAIL: router peak memory over its bound"; fail=1; }
exit "$fail"

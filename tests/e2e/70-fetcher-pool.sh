#!/usr/bin/env bash
# Fetcher pool at scale: two fetchers with a cache bound so small that every repository
# is evicted right after use, repositories ingested lazily (content arrives by prefetch
# and on first read), reads running concurrently while eviction happens, then the
# preferred fetcher killed mid-way: every read stays correct (the other fetcher fetches
# again from the remote). Also: /api/fetchers and `monofs admin fetchers` report health,
# and a remote that accepts connections but never answers fails within the bound; a
# node started with another cluster key is refused by the router (a clear log line on
# both, an error and no data for the client).
. "$(dirname "$0")/../lib/common.sh"
http_get() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())' "$1"; }
e2e_repos_locked
REAL_MF=$(e2e_manifest real)
CONTENT_MF=$(e2e_manifest content)

ports=($(e2e_free_ports 6))
P=${ports[0]} H=${ports[1]} F1=${ports[2]} F2=${ports[3]} N1=${ports[4]} N2=${ports[5]}
e2e_bg "$MONOFS_BIN" node --addr "127.0.0.1:$N1" --node-id n1 --db-path "$E2E_TMP/n1" --shards 1
e2e_bg "$MONOFS_BIN" node --addr "127.0.0.1:$N2" --node-id n2 --db-path "$E2E_TMP/n2" --shards 1
# 0.00001 GiB = 10 KiB: nothing stays cached. No prefetch: content comes only on first
# read, so every read below goes through a fetcher. Fetches give up after 30 s.
for f in "$F1" "$F2"; do
    e2e_bg "$MONOFS_BIN" fetcher --bind 127.0.0.1 --port "$f" --cache-dir "$E2E_TMP/cache-$f" \
        --max-cache-gb 0.00001 --prefetch-workers 0 --fetch-timeout-secs 30 --allow-local-sources
    eval "FPID_$f=$E2E_BG_PID"
done
for p in "$N1" "$N2" "$F1" "$F2"; do e2e_wait_port "$p" 30; done
e2e_bg "$MONOFS_BIN" router --bind 127.0.0.1 --port "$P" --http-port "$H" \
    --nodes "n1=127.0.0.1:$N1,n2=127.0.0.1:$N2" --fetchers "127.0.0.1:$F1,127.0.0.1:$F2"
e2e_wait_port "$P" 30; e2e_wait_port "$H" 30
export MONOFS_ROUTER="http://127.0.0.1:$H" MONOFS_SERVER="127.0.0.1:$P"

# content (with its 110 MiB file) eagerly: a re-fetch of it for every evicted read would
# only make the test slow; real lazily: its content comes by prefetch and on first read,
# through caches that keep nothing.
e2e_check "eager ingest of content" "$MONOFS_BIN" ingest --content eager "file://$MONOFS_TEST_REPOS/content" --source-id local/content
e2e_check "lazy ingest of real" "$MONOFS_BIN" ingest "$MONOFS_TEST_REPOS/real" --source-id local/real

# Concurrent readers: every file of real and a sample of content (chunk boundaries,
# names, the 110 MiB file), each compared with its manifest sha256.
cat > "$E2E_TMP/readers.py" <<'PY'
import concurrent.futures, hashlib, subprocess, sys
bin_, phase = sys.argv[1], sys.argv[2]
half = phase.startswith("during")  # the first round reads every other file of real
jobs = []
for mf, ns, pick in ((sys.argv[3], "/local/real", None), (sys.argv[4], "/local/content", ("sizes/", "names/", "big/", "files/", "bin/"))):
    for line in open(mf, encoding="utf-8"):
        if line.startswith("#"):
            continue
        t, size, sha, oid, target, path = line.rstrip("\n").split("\t")
        if t not in ("file", "exec"):
            continue
        if pick and not path.startswith(pick):
            continue
        if half and not pick and (len(jobs) % 2):
            jobs.append(None)
            continue
        jobs.append((f"{ns}/{path}", sha))
jobs = [j for j in jobs if j]
def read(job):
    path, sha = job
    out = subprocess.run([bin_, "cat", path], capture_output=True, timeout=600)
    if out.returncode != 0:
        return f"{path}: exit {out.returncode}: {out.stderr.decode(errors='replace').strip()}"
    if hashlib.sha256(out.stdout).hexdigest() != sha:
        return f"{path}: content differs"
    return None
bad = [r for r in concurrent.futures.ThreadPoolExecutor(6).map(read, jobs) if r]
for b in bad[:20]:
    print("   ", b)
print(f"{phase}: {len(jobs) - len(bad)} of {len(jobs)} files read correctly")
sys.exit(1 if bad else 0)
PY
e2e_check "concurrent reads while the caches evict everything" \
    python3 "$E2E_TMP/readers.py" "$MONOFS_BIN" "during eviction" "$REAL_MF" "$CONTENT_MF"

status=$(http_get "$MONOFS_ROUTER/api/fetchers")
echo "$status" | python3 -c 'import json, sys; [print({k: f.get(k) for k in ("addr", "healthy", "cache_bytes", "hit_rate", "inflight_fetches", "prefetch_queued", "prefetch_done", "evictions")}) for f in json.load(sys.stdin)]' 
e2e_check "/api/fetchers: both healthy, with cache and hit figures" python3 -c '
import json, sys
fs = json.loads(sys.argv[1])
assert len(fs) == 2 and all(f["healthy"] for f in fs), fs
for f in fs:
    for k in ("cache_bytes", "max_cache_bytes", "hit_rate", "inflight_fetches", "prefetch_queued"):
        assert k in f, (k, f)
    assert f["cache_bytes"] <= f["max_cache_bytes"] + (200 << 20), f  # a blob in use may exceed it briefly
' "$status"
e2e_check "monofs admin fetchers exits 0 when all are healthy" "$MONOFS_BIN" admin fetchers

# Kill the fetcher that real's URL prefers and read everything again through the other:
# the files of real not read yet must be fetched by the surviving fetcher.
pref=$(http_get "$MONOFS_ROUTER/api/fetchers" | python3 -c '
import json, sys
fs = json.load(sys.stdin)
served = [f for f in fs if any(r.get("url", "").endswith("/real") for r in f.get("repos", []))]
print((served or fs)[0]["addr"].rsplit(":", 1)[1])
')
echo "fetcher on port $pref served real; killing it"
eval "kill -9 \$FPID_$pref"
sleep 1
# A fresh node set would have nothing: wipe nothing, but ask for content never read yet
# (prefetch may have brought some) and everything again: all must read correctly.
e2e_check "reads after the preferred fetcher died" \
    python3 "$E2E_TMP/readers.py" "$MONOFS_BIN" "one fetcher down" "$REAL_MF" "$CONTENT_MF"
e2e_check "the surviving fetcher served FETCH_BLOBs" python3 -c '
import json, sys
fs = [f for f in json.loads(sys.argv[1]) if f.get("healthy")]
assert len(fs) == 1 and fs[0]["fetch_blobs"] > 0, fs
print("   surviving fetcher:", fs[0]["addr"], "fetch_blobs", fs[0]["fetch_blobs"], "misses", fs[0]["misses"])
' "$(http_get "$MONOFS_ROUTER/api/fetchers")"
e2e_check "the router fetched content on first read" sh -c "
    $(declare -f http_get); http_get $MONOFS_ROUTER/metrics | awk '/^monofs_router_lazy_fetches_total/ {exit !(\$2 > 0)}'"
set +e
"$MONOFS_BIN" admin fetchers; rc=$?
set -e
e2e_check "monofs admin fetchers exits 4 with a fetcher down" test "$rc" = 4

# A remote that accepts and never answers: the ingest fails within the fetch timeout.
hang=$(e2e_free_port)
e2e_bg python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
held = []
while True:
    c, _ = s.accept(); held.append(c)
' "$hang"
e2e_wait_port "$hang" 10
t0=$(date +%s)
set +e
timeout 120 "$MONOFS_BIN" ingest "git://127.0.0.1:$hang/never.git" 2>"$E2E_TMP/hang.err"; rc=$?
set -e
dt=$(( $(date +%s) - t0 ))
cat "$E2E_TMP/hang.err"
e2e_check "a hanging remote fails the ingest (exit 1)" test "$rc" = 1
e2e_check "within the bound (30 s fetch timeout; took ${dt}s)" test "$dt" -le 45
e2e_check "the namespace keeps what it had" sh -c "\"$MONOFS_BIN\" admin repos | grep -c local/ | grep -qx 2"

e2e_step "a node with another cluster key is refused"
"$MONOFS_BIN" admin gen-key "$E2E_TMP/other.key" 2>/dev/null
ports=($(e2e_free_ports 3))
N3=${ports[0]} P3=${ports[1]} H3=${ports[2]}
n3_log="$E2E_TMP/bg-${#_e2e_pids[@]}.log"
e2e_bg env MONOFS_CLUSTER_KEY_FILE="$E2E_TMP/other.key" \
    "$MONOFS_BIN" node --addr "127.0.0.1:$N3" --node-id n3 --db-path "$E2E_TMP/n3" --shards 1
e2e_wait_port "$N3" 30
r3_log="$E2E_TMP/bg-${#_e2e_pids[@]}.log"
e2e_bg "$MONOFS_BIN" router --bind 127.0.0.1 --port "$P3" --http-port "$H3" --nodes "n3=127.0.0.1:$N3"
e2e_wait_port "$P3" 30
set +e
"$MONOFS_BIN" ls --server "127.0.0.1:$P3" / >"$E2E_TMP/wrongkey.out" 2>"$E2E_TMP/wrongkey.err"; rc=$?
set -e
cat "$E2E_TMP/wrongkey.err"
e2e_check "listing through the router fails (exit $rc)" test "$rc" != 0
e2e_check "and returns no entries" test ! -s "$E2E_TMP/wrongkey.out"
refused="authentication failed: peer does not hold this cluster's key"
e2e_check "the router logs the refusal naming the node" \
    sh -c "grep -F \"$refused\" \"$r3_log\" | grep -q \"127.0.0.1:$N3\""
e2e_check "the node logs the refusal" grep -qF "$refused" "$n3_log"
auth_metric=$(http_get "http://127.0.0.1:$H3/metrics" | awk '$1 == "monofs_router_auth_failures_total" {print $2}')
e2e_check "the router counts it (monofs_router_auth_failures_total ${auth_metric:-missing})" test "${auth_metric:-0}" -ge 1
e2e_done

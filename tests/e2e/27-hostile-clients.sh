#!/usr/bin/env bash
# Hostile NFS clients must not hurt other clients (host side, raw sockets):
#   - monofs-bench hostile against `monofs up`: a victim's GETATTR rate and p99 alone,
#     then beside 20 stuck readers (64 pipelined 1 MiB READs of a lazily ingested
#     110 MiB file, never read), 1,000 idle connections and 1,000 half-sent records
#     from one address; asserted with generous bounds only: the victim keeps >= 50 % of
#     its rate, a fresh NULL answers, router RSS grows < 256 MiB, and afterwards the
#     server serves normally (the figures are printed)
#   - the same load spread over 40 client addresses: it fills the server-wide cap, and the
#     connections quiet for longest are closed to admit the victim and a fresh NULL
#   - an idle connection is closed after --idle-timeout-secs, a record trickling past
#     --record-deadline-secs is closed, the 65th connection from one address is refused
#     while another address still connects; the counters show on /metrics
#   - content is fetched on first READ (no prefetch): READs are parked on their fetch, and
#     the 110 MiB file reads back whole
#   - with root and nfs-ganesha installed: `hostile --peer ganesha`, both side by side
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

BENCH="$MONOFS_ROOT/target/release/monofs-bench"
[ -x "$BENCH" ] || { echo "FAIL: $BENCH missing (cargo build --release -p monofs-bench)"; exit 1; }
export MONOFS_BENCH_NO_BUILD=1
IDLE=15
DEADLINE=15

e2e_repos_locked
# No prefetch: content comes on first READ, so the stuck readers' READs are parked on
# their fetch (deferred) rather than answered from the nodes.
e2e_up "$E2E_TMP/data" --nodes 2 --shards 1 --idle-timeout-secs "$IDLE" --record-deadline-secs "$DEADLINE" \
    --prefetch-workers 0
echo "NFS $E2E_SERVER, HTTP $E2E_ROUTER, pid $E2E_UP_PID"
"$MONOFS_BIN" ingest "$MONOFS_TEST_REPOS/content" --source-id local/content --router "$E2E_ROUTER" </dev/null 2>&1 | tail -n 1
e2e_check "content ingested" "$MONOFS_BIN" stat /local/content/big/big.bin >/dev/null

e2e_step "hostile clients from one address"
timeout 300 "$BENCH" hostile --server "$E2E_SERVER" --root local/content/big --pid "$E2E_UP_PID" \
    --duration 2 --victim-bind 127.0.0.2 --json "$E2E_TMP/hostile.json"
e2e_check "victim keeps >= 50 % of its unloaded GETATTR rate" e2e_json_check "$E2E_TMP/hostile.json" 'v[0]["rate_ratio"] >= 0.5'
e2e_check "a fresh NULL answers under load" e2e_json_check "$E2E_TMP/hostile.json" 'v[0]["fresh_null_ok"]'
e2e_check "router RSS grows < 256 MiB" e2e_json_check "$E2E_TMP/hostile.json" 'v[0]["rss_growth_mb"] is not None and v[0]["rss_growth_mb"] < 256'
e2e_check "afterwards the server serves normally" e2e_json_check "$E2E_TMP/hostile.json" \
    'v[0]["after_null_ok"] and v[0]["after"]["errors"] == 0 and v[0]["after"]["getattr_per_s"] >= 0.25 * v[0]["unloaded"]["getattr_per_s"]'

e2e_step "hostile clients from 40 addresses: they fill the server, the quietest make room"
timeout 300 "$BENCH" hostile --server "$E2E_SERVER" --root local/content/big --pid "$E2E_UP_PID" \
    --duration 2 --victim-bind 127.0.0.2 --hostile-spread 40 --json "$E2E_TMP/hostile-spread.json" || true
e2e_check "the router survived the spread load" kill -0 "$E2E_UP_PID"
# The server holds ~1,000 hostile connections here (not 64), so only service is asserted.
e2e_check "the victim is served without errors (spread)" \
    e2e_json_check "$E2E_TMP/hostile-spread.json" 'v[0]["loaded"]["errors"] == 0 and v[0]["loaded"]["getattr_per_s"] > 0'
e2e_check "a fresh NULL answers with the server full (spread)" \
    e2e_json_check "$E2E_TMP/hostile-spread.json" 'v[0]["fresh_null_ok"]'
e2e_check "and serves" "$MONOFS_BIN" stat /local/content/README.md

e2e_step "idle timeout, record deadline, per-address cap"
python3 - "$E2E_NFS_PORT" "$IDLE" "$DEADLINE" <<'PY' || E2E_FAILED=$((E2E_FAILED + 1))
import socket, struct, sys, threading, time

port, idle, deadline = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
bad = 0

def check(cond, msg):
    global bad
    print(("ok: " if cond else "FAIL: ") + msg, flush=True)
    bad += 0 if cond else 1

def conn(src):
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s

NULL = struct.pack(">I", 0x80000000 | 40) + struct.pack(">10I", 7, 0, 2, 100003, 3, 0, 0, 0, 0, 0)

def null_ok(s):
    try:
        s.sendall(NULL)
        hdr = s.recv(4)
        return len(hdr) == 4
    except OSError:
        return False

def closed_after(s, limit):
    """Seconds until the server closed s (EOF or reset), or None within limit."""
    s.settimeout(limit)
    t = time.time()
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return time.time() - t
    except socket.timeout:
        return None
    except OSError:
        return time.time() - t

results = {}
def idle_case():
    s = conn("127.0.0.5")
    null_ok(s)
    s.recv(65536)
    results["idle"] = closed_after(s, idle + 15)
def slow_case():
    s = conn("127.0.0.6")
    s.sendall(struct.pack(">I", 0x80000000 | (1 << 20)) + b"abcd")
    results["slow"] = closed_after(s, deadline + 15)
ts = [threading.Thread(target=idle_case), threading.Thread(target=slow_case)]
for t in ts: t.start()

held = [conn("127.0.0.3") for _ in range(64)]
check(all(null_ok(s) for s in held), "64 connections from 127.0.0.3 all answer NULL")
extra = conn("127.0.0.3")
check(not null_ok(extra) or closed_after(extra, 5) is not None, "the 65th connection from 127.0.0.3 is refused")
check(null_ok(conn("127.0.0.4")), "127.0.0.4 still connects and gets answers")
for t in ts: t.join()
i, sl = results.get("idle"), results.get("slow")
print(f"idle connection closed after {i} s (timeout {idle}); slow record closed after {sl} s (deadline {deadline})")
check(i is not None and i >= idle - 1, "an idle connection is closed after the idle timeout, not before")
check(sl is not None and sl >= deadline - 1, "a trickling record is closed at its deadline, not before")
sys.exit(1 if bad else 0)
PY

metrics=$(curl -fsS "$E2E_ROUTER/metrics")
echo "$metrics" | grep '^monofs_router_nfs_' | sed 's/^/    /'
metric() { echo "$metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
e2e_check "/metrics counts idle closes" test "$(metric 'monofs_router_nfs_conns_closed_total{reason="idle"}')" -ge 1
e2e_check "/metrics counts slow-record closes" test "$(metric 'monofs_router_nfs_conns_closed_total{reason="slow_record"}')" -ge 1
e2e_check "/metrics counts per-client refusals" test "$(metric 'monofs_router_nfs_conns_refused_total{cap="client"}')" -ge 1
e2e_check "/metrics counts paused connections" test "$(metric 'monofs_router_nfs_conns_paused_total')" -ge 1
e2e_check "/metrics counts READs parked on their fetch" test "$(metric 'monofs_router_nfs_calls_deferred_total')" -ge 1

e2e_step "a lazily fetched file reads back whole through parked READs"
want=$(git -C "$MONOFS_TEST_REPOS/content" show HEAD:big/big.bin | sha256sum)
got=$(timeout 300 "$MONOFS_BIN" cat /local/content/big/big.bin | sha256sum)
e2e_check "big/big.bin over NFS matches the repository" test "$got" = "$want"

e2e_step "beside nfs-ganesha (same tree, same run)"
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && [ -x /usr/bin/ganesha.nfsd ] && [ -x /usr/sbin/rpcbind ]; then
    rc=0
    timeout 400 "$BENCH" hostile --peer ganesha --monofs-bin "$MONOFS_BIN" --duration 2 --victim-bind 127.0.0.2 \
        --out "$E2E_TMP/hostile-peer" --json "$E2E_TMP/hostile-peer.json" || rc=$?
    e2e_check "hostile --peer ganesha exits 0 (status $rc)" test "$rc" = 0
    e2e_check "both servers measured" e2e_json_check "$E2E_TMP/hostile-peer.json" '[o["target"] for o in v] == ["monofs", "ganesha"]'
else
    echo "note: not root or nfs-ganesha/rpcbind missing: no side-by-side run"
fi

echo
echo "total $(e2e_secs)s"
e2e_done

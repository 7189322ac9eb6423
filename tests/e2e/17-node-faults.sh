#!/usr/bin/env bash
# Node failures in an RF-2 cluster of separate processes (host side, no VM): three
# `monofs node`s, a fetcher and a router probing every 500 ms, unhealthy after 2 s.
#   - `monofs admin status` exits 0 with every node ok
#   - node n3 killed (SIGKILL): every file still reads correctly at once (the other
#     replica answers); within seconds `admin status` exits 5 and shows n3 UNHEALTHY,
#     `admin stats --type nodes --format json` counts its failures
#   - an eager ingest while n3 is down succeeds (writes land on the two live nodes) and
#     reads back
#   - n3 restarted on its port: healthy again, `admin status` exits 0
#   - every node restarted in turn under the router's pooled connections: the namespace
#     and every file read, stale connections are replaced (counted) and no request fails
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

e2e_step "test repositories"
e2e_repos_locked
REAL_MF=$(e2e_manifest real)
CONTENT_MF=$(e2e_manifest content)
CATALL="$MONOFS_ROOT/tests/lib/catall.py"

ports=($(e2e_free_ports 6))
NFS=${ports[0]} HTTP=${ports[1]} FETCHER=${ports[2]}
declare -A NODE_PORT=([n1]=${ports[3]} [n2]=${ports[4]} [n3]=${ports[5]}) NODE_PID=() NODE_LOG=()
export MONOFS_ROUTER="http://127.0.0.1:$HTTP" MONOFS_SERVER="127.0.0.1:$NFS"
export MONOFS_ADMIN_TOKEN_FILE="$E2E_TMP/admin.token"
(umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$MONOFS_ADMIN_TOKEN_FILE")

# admin status's exit code, the table in $E2E_TMP/status.txt
status_rc() { local rc=0; "$MONOFS_BIN" admin status >"$E2E_TMP/status.txt" 2>&1 || rc=$?; echo "$rc"; }

# Wait up to $2 s for `admin status` to exit $1.
wait_status() {
    local want="$1" secs="$2" rc
    for ((i = 0; i < secs * 5; i++)); do
        rc=$(status_rc)
        [ "$rc" = "$want" ] && return 0
        sleep 0.2
    done
    echo "admin status exits $rc, not $want:"; cat "$E2E_TMP/status.txt"
    return 1
}


e2e_step "three nodes, a fetcher, a router (RF 2, probes every 500 ms, unhealthy after 2 s)"
for id in n1 n2 n3; do e2e_start_node "$id"; done
e2e_bg "$MONOFS_BIN" fetcher --port "$FETCHER" --cache-dir "$E2E_TMP/cache" --allow-local-sources
e2e_wait_port "$FETCHER" 30
e2e_bg "$MONOFS_BIN" router --port "$NFS" --http-port "$HTTP" --replication-factor 2 \
    --nodes "n1=127.0.0.1:${NODE_PORT[n1]},n2=127.0.0.1:${NODE_PORT[n2]},n3=127.0.0.1:${NODE_PORT[n3]}" \
    --fetchers "127.0.0.1:$FETCHER" --admin-token-file "$MONOFS_ADMIN_TOKEN_FILE" \
    --health-interval 500ms --unhealthy-threshold 2s
e2e_wait_port "$NFS" 30; e2e_wait_port "$HTTP" 30
"$MONOFS_BIN" ingest "$MONOFS_TEST_REPOS/content" --source-id local/content --content eager </dev/null >/dev/null
e2e_check "admin status exits 0 with every node healthy" wait_status 0 10
cat "$E2E_TMP/status.txt"
e2e_check "the status table lists n1, n2, n3 as ok" test "$(grep -cE '^n[123] .* ok ' "$E2E_TMP/status.txt")" = 3
e2e_check "every file of content reads correctly" python3 "$CATALL" "$CONTENT_MF" /local/content many/

e2e_step "kill n3"
kill -9 "${NODE_PID[n3]}"; wait "${NODE_PID[n3]}" 2>/dev/null || true
t0=$(date +%s.%N)
e2e_check "at once: every file of content still reads correctly" python3 "$CATALL" "$CONTENT_MF" /local/content many/
e2e_check "admin status exits 5 once n3 is unhealthy" wait_status 5 20
echo "n3 unhealthy after $(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}') s"
cat "$E2E_TMP/status.txt"
# Exit 5 may come first from n3's missing stats, before a probe marks it unhealthy.
n3_unhealthy() {
    for _ in $(seq 100); do
        status_rc >/dev/null
        grep -qE '^n3 .* UNHEALTHY' "$E2E_TMP/status.txt" && return 0
        sleep 0.2
    done
    cat "$E2E_TMP/status.txt"; return 1
}
e2e_check "the status table shows n3 UNHEALTHY" n3_unhealthy
rc=0; "$MONOFS_BIN" admin stats --type nodes --format json >"$E2E_TMP/nodes.json" || rc=$?
e2e_check "admin stats --type nodes exits 5" test "$rc" = 5
e2e_check "n3: failures in a row and its error reported" e2e_json_check "$E2E_TMP/nodes.json" \
    "[n for n in v if n['id'] == 'n3'][0]['consecutive_failures'] >= 1 and [n for n in v if n['id'] == 'n3'][0]['last_error']"
curl -sf "$MONOFS_ROUTER/metrics" >"$E2E_TMP/metrics.txt"
e2e_check "/metrics: monofs_router_node_healthy of n3 is 0" grep -qx 'monofs_router_node_healthy{node="n3"} 0' "$E2E_TMP/metrics.txt"

e2e_step "eager ingest of real with n3 down"
rc=0; "$MONOFS_BIN" ingest "$MONOFS_TEST_REPOS/real" --source-id local/real --content eager </dev/null >"$E2E_TMP/ingest.out" 2>&1 || rc=$?
e2e_check "the ingest succeeds (rc $rc: $(tail -n 1 "$E2E_TMP/ingest.out"))" test "$rc" = 0
e2e_check "every file of real reads correctly" python3 "$CATALL" "$REAL_MF" /local/real

e2e_step "restart n3"
e2e_start_node n3
e2e_check "admin status exits 0 again" wait_status 0 20

e2e_step "restart every node in turn under the router's pooled connections"
# The router caches content and directories, so it is the namespace record (re-read
# after 1 s, from the first of its owners) that goes back to a node.
sum_field() {
    curl -sf "$MONOFS_ROUTER/api/status" | python3 -c "import json,sys; print(sum(n['$1'] for n in json.load(sys.stdin)['nodes']))"
}
fail_before=$(sum_field failures_total)
for id in n1 n2 n3; do
    e2e_stop "${NODE_PID[$id]}" 20 || true
    e2e_start_node "$id"
    sleep 1 # a probe clears the backoff its failed probes left
done
sleep 1
e2e_check "the namespace lists after the restarts" "$MONOFS_BIN" ls /local
e2e_check "every file of real reads correctly after the restarts" python3 "$CATALL" "$REAL_MF" /local/real
e2e_check "every file of content reads correctly after the restarts" python3 "$CATALL" "$CONTENT_MF" /local/content many/
retries=$(sum_field retries_total); fail_after=$(sum_field failures_total)
echo "all nodes: retries_total $retries, failures_total $fail_before -> $fail_after"
e2e_check "stale connections were replaced ($retries retries)" test "$retries" -gt 0
e2e_check "and no request to a node failed ($fail_before -> $fail_after)" test "$fail_after" = "$fail_before"
e2e_check "admin status exits 0" wait_status 0 10
e2e_done

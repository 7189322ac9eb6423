#!/usr/bin/env bash
# Repair in an RF-2 cluster of separate processes (host side, no VM): three
# `monofs node`s, a fetcher and a router with 1 MiB caches (so no cache hides a lost
# node), failover after 4 s, a repair pass at least every 2 s.
#   - every key is on 2 nodes (counted with `monofs admin node-files` on each node)
#   - n3 killed (SIGKILL) during a read loop of an independent client (`monofs cat`):
#     zero failed reads; after the rebalance delay n3 is failed over and every key is
#     back on 2 nodes (on n1 and n2, the only ones left)
#   - a repository ingested while n3 is away; n3 restarted: it is caught up by
#     anti-entropy, and the bytes it received are far fewer than what it holds
#   - drain, kill n2: no failover and no repair past the delay; undrain: n2 is failed
#     over and its keys re-replicated
#   - a fourth node added (SIGHUP of `--nodes @FILE`; a second router started with the
#     old list adopts the new one from the cluster state) and `admin rebalance`: only the
#     keys whose HRW owners changed move (counted against the owners `node-files`
#     reports), every file reads during and after the move, also of a repository
#     ingested lazily before the move
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

e2e_step "test repositories"
e2e_repos_locked
REAL_MF=$(e2e_manifest real)
CONTENT_MF=$(e2e_manifest content)
CATALL="$MONOFS_ROOT/tests/lib/catall.py"

ports=($(e2e_free_ports 7))
NFS=${ports[0]} HTTP=${ports[1]} FETCHER=${ports[2]}
declare -A NODE_PORT=([n1]=${ports[3]} [n2]=${ports[4]} [n3]=${ports[5]} [n4]=${ports[6]}) NODE_PID=() NODE_LOG=()
export MONOFS_ROUTER="http://127.0.0.1:$HTTP" MONOFS_SERVER="127.0.0.1:$NFS"
export MONOFS_ADMIN_TOKEN_FILE="$E2E_TMP/admin.token"
(umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$MONOFS_ADMIN_TOKEN_FILE")

# status JSON field by a python expression over v
status_py() { curl -sf "$MONOFS_ROUTER/api/status" | python3 -c "import json,sys; v=json.load(sys.stdin); print($1)"; }

# Wait up to $2 s for the python expression $1 over the status to print True.
wait_status() {
    local expr="$1" secs="$2"
    for ((i = 0; i < secs * 2; i++)); do
        [ "$(status_py "$expr" 2>/dev/null || true)" = True ] && return 0
        sleep 0.5
    done
    echo "status never satisfied: $expr"; curl -s "$MONOFS_ROUTER/api/status" | head -c 3000; echo
    return 1
}

# Every node's keys: "<node> <kind>:<oid>:<chunk> <owned>" lines in $E2E_TMP/keys-$1.txt
list_keys() {
    local tag="$1"; shift
    : > "$E2E_TMP/keys-$tag.txt"
    for id in "$@"; do
        "$MONOFS_BIN" admin node-files --node-id "$id" --limit 0 --format json \
            | python3 -c "
import json, sys
for line in sys.stdin:
    v = json.loads(line)
    if 'summary' in v:
        assert v['summary']['complete'], v
        continue
    print('$id', f\"{v['kind']}:{v['oid']}:{v['chunk']}\", v['owned'])
" >> "$E2E_TMP/keys-$tag.txt"
    done
}

# How many keys of listing $1 are on fewer than $2 of the nodes (keys of any node).
under_replicated() {
    python3 - "$E2E_TMP/keys-$1.txt" "$2" <<'EOF'
import collections, sys
c = collections.Counter(line.split()[1] for line in open(sys.argv[1]))
print(sum(1 for n in c.values() if n < int(sys.argv[2])), "of", len(c))
EOF
}

# Wait up to $3 s until every key held by nodes $4... is on at least $2 of them.
wait_replicated() {
    local tag="$1" want="$2" secs="$3"; shift 3
    for ((i = 0; i < secs / 3; i++)); do
        list_keys "$tag" "$@"
        [ "$(under_replicated "$tag" "$want" | cut -d' ' -f1)" = 0 ] && return 0
        sleep 3
    done
    echo "still under-replicated: $(under_replicated "$tag" "$want")"
    return 1
}

# Read every file of content and real in a loop until $E2E_TMP/stop exists; failures to
# $E2E_TMP/loop.fail, rounds to $E2E_TMP/loop.rounds.
read_loop() {
    rm -f "$E2E_TMP/stop"; : > "$E2E_TMP/loop.fail"; : > "$E2E_TMP/loop.rounds"
    (
        while [ ! -e "$E2E_TMP/stop" ]; do
            python3 "$CATALL" "$CONTENT_MF" /local/content many/ >>"$E2E_TMP/loop.log" 2>&1 || echo content >>"$E2E_TMP/loop.fail"
            python3 "$CATALL" "$REAL_MF" /local/real >>"$E2E_TMP/loop.log" 2>&1 || echo real >>"$E2E_TMP/loop.fail"
            echo round >>"$E2E_TMP/loop.rounds"
        done
    ) &
    LOOP_PID=$!
}
stop_loop() { touch "$E2E_TMP/stop"; wait "$LOOP_PID" || true; }

NODES_FILE="$E2E_TMP/nodes"
printf 'n1=127.0.0.1:%s\nn2=127.0.0.1:%s\nn3=127.0.0.1:%s\n' "${NODE_PORT[n1]}" "${NODE_PORT[n2]}" "${NODE_PORT[n3]}" > "$NODES_FILE"

e2e_step "three nodes, a fetcher, a router (RF 2, 1 MiB caches, failover after 4 s)"
for id in n1 n2 n3; do e2e_start_node "$id"; done
e2e_bg "$MONOFS_BIN" fetcher --port "$FETCHER" --cache-dir "$E2E_TMP/cache" --allow-local-sources
e2e_wait_port "$FETCHER" 30
e2e_bg "$MONOFS_BIN" router --port "$NFS" --http-port "$HTTP" --replication-factor 2 \
    --nodes "@$NODES_FILE" --fetchers "127.0.0.1:$FETCHER" --admin-token-file "$MONOFS_ADMIN_TOKEN_FILE" \
    --health-interval 500ms --unhealthy-threshold 2s --rebalance-delay 4s --repair-interval 2s \
    --repair-bandwidth 256M --dir-cache 1M --block-cache 1M
ROUTER_PID=$E2E_BG_PID
e2e_wait_port "$NFS" 30; e2e_wait_port "$HTTP" 30
"$MONOFS_BIN" ingest "$MONOFS_TEST_REPOS/content" --source-id local/content --content eager </dev/null >/dev/null
e2e_check "the router leads the repair" wait_status "v['repair']['role'] == 'leader'" 20
list_keys start n1 n2 n3
echo "keys: $(cut -d' ' -f2 "$E2E_TMP/keys-start.txt" | sort -u | wc -l) distinct, $(wc -l < "$E2E_TMP/keys-start.txt") copies"
e2e_check "every key is on 2 nodes after the ingest ($(under_replicated start 2) under)" \
    test "$(under_replicated start 2 | cut -d' ' -f1)" = 0

e2e_step "kill n3 during a read loop"
"$MONOFS_BIN" ingest "$MONOFS_TEST_REPOS/real" --source-id local/real --content eager </dev/null >/dev/null
read_loop
sleep 2
kill -9 "${NODE_PID[n3]}"; wait "${NODE_PID[n3]}" 2>/dev/null || true
t0=$(date +%s)
e2e_check "n3 is failed over after the rebalance delay" wait_status "'n3' in v['cluster']['failovers']" 60
echo "n3 failed over $(( $(date +%s) - t0 )) s after the kill"
e2e_check "every key is back on 2 nodes (n1 and n2)" wait_replicated down 2 120 n1 n2
echo "n3 down: repair copied $(status_py "v['repair']['received_total']")"
sleep 2
stop_loop
echo "read loop: $(wc -l < "$E2E_TMP/loop.rounds") rounds; $(grep -c 'files verified' "$E2E_TMP/loop.log" || true) tree reads"
e2e_check "zero failed reads while n3 was killed and repaired around ($(wc -l < "$E2E_TMP/loop.fail") failed)" \
    test ! -s "$E2E_TMP/loop.fail"
grep FAIL "$E2E_TMP/loop.log" | head -5 || true

e2e_step "ingest while n3 is away, then restart n3"
mkdir -p "$E2E_TMP/away"
git -C "$E2E_TMP/away" init -q -b main
for i in $(seq 40); do head -c 20000 /dev/urandom > "$E2E_TMP/away/f$i.bin"; done
git -C "$E2E_TMP/away" add -A && git -C "$E2E_TMP/away" -c user.name=t -c user.email=t@t commit -qm away
"$MONOFS_BIN" ingest "$E2E_TMP/away" --source-id local/away --content eager </dev/null >/dev/null
before=$(status_py "v['repair']['received_total'].get('n3', {}).get('bytes', 0)")
e2e_start_node n3
e2e_check "n3 is healthy and no longer failed over" wait_status "'n3' not in v['cluster']['failovers'] and all(n['healthy'] for n in v['nodes'])" 30
e2e_check "a repair pass after n3's return finds nothing missing" \
    wait_status "v['repair']['last'] is not None and v['repair']['last']['finished_unix_ms'] is not None and v['repair']['under_replicated'] == 0 and v['repair']['received_total'].get('n3', {}).get('bytes', 0) > $before" 60
received=$(status_py "v['repair']['received_total']['n3']['bytes'] - $before")
held=$(status_py "[n for n in v['nodes'] if n['id'] == 'n3'][0]['stats']['bytes']")
echo "n3 caught up: received $received bytes by anti-entropy; it holds $held bytes (a full copy)"
e2e_check "n3 received far fewer bytes than a full copy ($received < $held / 4)" test "$received" -lt $((held / 4))
list_keys back n1 n2 n3
e2e_check "every key is on 2 nodes again" test "$(under_replicated back 2 | cut -d' ' -f1)" = 0
e2e_check "every file reads" python3 "$CATALL" "$REAL_MF" /local/real

e2e_step "drain, kill n2: no repair"
"$MONOFS_BIN" admin drain --reason "e2e maintenance" >/dev/null
e2e_check "status shows the drain" wait_status "v['cluster']['drained'] is not None and v['repair']['state'] == 'drained'" 10
passes=$(status_py "v['repair']['passes']")
kill -9 "${NODE_PID[n2]}"; wait "${NODE_PID[n2]}" 2>/dev/null || true
sleep 10
e2e_check "10 s later, past the rebalance delay: n2 not failed over" test "$(status_py "'n2' in v['cluster']['failovers']")" = False
e2e_check "and no repair pass ran ($passes -> $(status_py "v['repair']['passes']"))" test "$(status_py "v['repair']['passes']")" = "$passes"
e2e_check "files still read" python3 "$CATALL" "$REAL_MF" /local/real
"$MONOFS_BIN" admin undrain >/dev/null
e2e_check "undrain: n2 is failed over" wait_status "'n2' in v['cluster']['failovers']" 30
e2e_check "and every key is back on 2 nodes (n1 and n3)" wait_replicated undrained 2 120 n1 n3
e2e_start_node n2
e2e_check "n2 back, healthy" wait_status "'n2' not in v['cluster']['failovers'] and all(n['healthy'] for n in v['nodes'])" 30

e2e_step "add n4 and rebalance"
"$MONOFS_BIN" ingest "$MONOFS_TEST_REPOS/real" --source-id local/real-lazy --content lazy </dev/null >/dev/null
e2e_check "a quiet pass first" wait_status "v['repair']['state'] == 'idle' and v['repair']['under_replicated'] == 0" 60
list_keys before4 n1 n2 n3
e2e_start_node n4
printf 'n4=127.0.0.1:%s\n' "${NODE_PORT[n4]}" >> "$NODES_FILE"
read_loop
kill -HUP "$ROUTER_PID"
e2e_check "the router sees 4 nodes" wait_status "v['cluster']['nodes'] == 4 and all(n['healthy'] for n in v['nodes'])" 20
e2e_check "the list is in the cluster state" e2e_json_check <(curl -sf "$MONOFS_ROUTER/api/state") "len(v['members']) == 4"
# A router started with the old list learns the new one from the cluster state (its
# id sorts after the first router's, which stays the repair leader).
p2=($(e2e_free_ports 2))
e2e_bg "$MONOFS_BIN" router --port "${p2[0]}" --http-port "${p2[1]}" --replication-factor 2 \
    --nodes "n1=127.0.0.1:${NODE_PORT[n1]},n2=127.0.0.1:${NODE_PORT[n2]},n3=127.0.0.1:${NODE_PORT[n3]}" \
    --router-id "~second" --admin-token-file "$MONOFS_ADMIN_TOKEN_FILE"
SECOND_PID=$E2E_BG_PID
e2e_wait_port "${p2[1]}" 30
e2e_check "a router started with 3 nodes adopts the 4 of the cluster state" \
    env MONOFS_ROUTER="http://127.0.0.1:${p2[1]}" bash -c "$(declare -f status_py wait_status); wait_status \"v['cluster']['nodes'] == 4\" 20"
e2e_stop "$SECOND_PID" 20 || true
"$MONOFS_BIN" admin rebalance >/dev/null
e2e_check "n4 received keys" wait_status "v['repair']['received_total'].get('n4', {}).get('keys', 0) > 0 and v['repair']['state'] == 'idle'" 60
e2e_check "a pass finds nothing missing" wait_status "v['repair']['state'] == 'idle' and v['repair']['under_replicated'] == 0" 60
stop_loop
e2e_check "zero failed reads during the move ($(wc -l < "$E2E_TMP/loop.fail") failed)" test ! -s "$E2E_TMP/loop.fail"
list_keys after4 n1 n2 n3 n4
# Keys n4 should own now = keys owned by n4 per its own listing; they are what moved.
moved=$(awk '$1 == "n4"' "$E2E_TMP/keys-after4.txt" | wc -l)
owned4=$(awk '$1 == "n4" && $3 == "True"' "$E2E_TMP/keys-after4.txt" | wc -l)
total=$(cut -d' ' -f2 "$E2E_TMP/keys-before4.txt" | sort -u | wc -l)
echo "n4 holds $moved keys, owns $owned4 of $total distinct keys (HRW predicts about $((total * 2 / 4)))"
e2e_check "n4 holds only keys it owns ($moved held, $owned4 owned)" test "$moved" = "$owned4"
e2e_check "n4 owns roughly half the keys (RF 2 of 4 nodes): $owned4 of $total" \
    python3 -c "import sys; sys.exit(0 if 0.3 < $owned4 / $total < 0.7 else 1)"
unowned=$(python3 - "$E2E_TMP/keys-after4.txt" <<'EOF'
import collections, sys
owners = collections.defaultdict(set)
for line in open(sys.argv[1]):
    node, key, owned = line.split()
    if owned == "True":
        owners[key].add(node)
print(sum(1 for k, o in owners.items() if len(o) < 2))
EOF
)
e2e_check "every key is on both of its owners ($unowned short)" test "$unowned" = 0
e2e_check "every file of content reads" python3 "$CATALL" "$CONTENT_MF" /local/content many/
e2e_check "every file of real reads" python3 "$CATALL" "$REAL_MF" /local/real
e2e_check "every file of the lazily ingested real reads" python3 "$CATALL" "$REAL_MF" /local/real-lazy
"$MONOFS_BIN" admin status || true
e2e_done

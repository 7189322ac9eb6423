#!/usr/bin/env bash
# Router failover with the kernel client: every component on a host of its own
# (network namespaces, tests/lib/netns.sh): 3 nodes (replication 2), a fetcher, two
# routers, HAProxy (deploy/haproxy/haproxy.cfg) and a client whose VM mounts MonoFS
# through HAProxy. The guest reads the tree in rounds (check-tree with every hash, and
# the sha256 of files of 1-3 MiB and of the 110 MiB big/big.bin), dropping its caches before each round so every round
# reads from the server. While it reads, the router holding its connection (from
# HAProxy's stats socket) is killed with SIGKILL in the middle of a 110 MiB read; then that router is started again and
# the other one killed. Then node faults, each during a round, with both routers up
# (1 MiB block and directory caches, so no router cache hides a lost node; health probes
# every 500 ms, unhealthy after 2 s, failover after 5 s, a repair pass every 2 s):
#   - n2 partitioned (its link down): the routers route around it (GET timeout, then
#     the next replica) and mark it unhealthy; healed, both report it healthy again
#   - n1 stopped with SIGTERM and started again (same address and data) mid-read
#   - n3 killed with SIGKILL: the repair leader fails it over, a finished pass finds
#     nothing under-replicated, `admin node-files` shows every key on both n1 and n2,
#     and one more round reads the tree off the two nodes left
# Every round must pass: no ESTALE, no EIO, every hash right.
# One VM boot for the whole script; host and guest coordinate through a small HTTP file
# server in the client's namespace (the guest reaches it as 10.0.2.2): the guest reports
# each step of a round in the query of a GET (the server logs it at once; the console
# log arrives in blocks) and is told to stop by the file it gets.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/netns.sh"

fail() { echo "FAIL: $*" >&2; exit 1; }

netns_require
command -v haproxy >/dev/null || fail "haproxy not installed (tests/setup.sh installs it)"

e2e_step "test repositories"
e2e_repos_locked
man_real=$(e2e_manifest real)
man_content=$(e2e_manifest content)
mhash() { awk -F'\t' -v p="$2" '$6 == p { print $3 }' "$1"; }
sized="sizes/s01048577 sizes/s02097152 sizes/s03158073 big/big.bin"

e2e_step "hosts"
netns_host haproxy 2
for i in 1 2 3; do netns_host "n$i" "1$i"; done
netns_host fetcher 21
netns_host router1 31
netns_host router2 32
netns_host client 100
HAPROXY=$(netns_addr haproxy)
NODES="n1=$(netns_addr n1):7000,n2=$(netns_addr n2):7000,n3=$(netns_addr n3):7000"
FETCHER="$(netns_addr fetcher):9200"
KEY=(--cluster-key-file "$MONOFS_CLUSTER_KEY_FILE")
TOKEN="$E2E_TMP/admin.token"
(umask 077; python3 -c 'import secrets; print(secrets.token_hex(32))' > "$TOKEN")

e2e_step "nodes, fetcher"
# start_node ID: a node on its host's address and data directory; until it is ready. A
# node stopped a moment ago may find its port still taken (io_uring files close late).
start_node() {
    local log attempt
    for attempt in 1 2 3 4 5; do
        netns_bg "$1" "$MONOFS_BIN" node --addr "$(netns_addr "$1"):7000" --node-id "$1" \
            --db-path "$E2E_TMP/$1" --shards 1 "${KEY[@]}"
        eval "PID_$1=$NETNS_BG_PID"
        log="$E2E_TMP/bg-$((${#_e2e_pids[@]} - 1)).log"
        for _ in $(seq 300); do
            grep -q "node ready" "$log" 2>/dev/null && return 0
            kill -0 "$NETNS_BG_PID" 2>/dev/null || break
            sleep 0.1
        done
        grep -q "node ready" "$log" && return 0
        sleep 1
    done
    cat "$log" >&2
    fail "node $1 did not start"
}
for i in 1 2 3; do start_node "n$i"; done
netns_bg fetcher "$MONOFS_BIN" fetcher --bind "$(netns_addr fetcher)" --port 9200 \
    --cache-dir "$E2E_TMP/fetcher" --allow-local-sources "${KEY[@]}"
for i in 1 2 3; do netns_wait_tcp client "$(netns_addr "n$i")" 7000; done
netns_wait_tcp client "$(netns_addr fetcher)" 9200

e2e_step "routers, HAProxy"
start_router() {
    netns_bg "$1" "$MONOFS_BIN" router --bind 0.0.0.0 --port 2049 --http-port 8080 \
        --nodes "$NODES" --replication-factor 2 --fetchers "$FETCHER" \
        --admin-token-file "$TOKEN" --health-interval 500ms --unhealthy-threshold 2s \
        --rebalance-delay 5s --repair-interval 2s --repair-bandwidth 256M \
        --block-cache 1M --dir-cache 1M "${KEY[@]}"
    eval "PID_$1=$NETNS_BG_PID"
    netns_wait_tcp client "$(netns_addr "$1")" 2049
    netns_wait_tcp client "$(netns_addr "$1")" 8080
}
start_router router1
start_router router2
STATS="$E2E_TMP/haproxy.sock"
netns_bg haproxy env MONOFS_ROUTER1="$(netns_addr router1)" MONOFS_ROUTER2="$(netns_addr router2)" \
    MONOFS_HAPROXY_STATS="$STATS" haproxy -db -f "$MONOFS_ROOT/deploy/haproxy/haproxy.cfg"
HAPROXY_LOG="$E2E_TMP/bg-$((${#_e2e_pids[@]} - 1)).log"
netns_wait_tcp client "$HAPROXY" 2049

# "NAME STATUS CONNECTIONS" for each router of HAProxy's NFS backend (STATUS: UP, DOWN,
# or on the way, e.g. UP_1/2).
hap_routers() {
    python3 - "$STATS" <<'PY'
import csv, io, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
rows = csv.DictReader(io.StringIO(out.decode().lstrip("# ")))
for r in rows:
    if r["pxname"] == "monofs_nfs_routers" and r["svname"].startswith("router"):
        print(r["svname"], r["status"].replace(" ", "_"), r["scur"])
PY
}
# HAProxy's own messages (servers going DOWN and UP, and why), not its session log
hap_alerts() { grep -v '^[0-9]' "$HAPROXY_LOG" | grep -v '^\[' | tail -n 20 >&2 || true; }
# wait_hap ROUTER STATUS [SECS]: until HAProxy's check says STATUS (UP, DOWN) for it
wait_hap() {
    local i
    for ((i = 0; i < ${3:-30} * 5; i++)); do
        hap_routers | grep "^$1 $2 " > /dev/null && return 0
        sleep 0.2
    done
    hap_routers >&2
    hap_alerts
    fail "HAProxy does not report $1 $2 within ${3:-30}s"
}
wait_hap router1 UP
wait_hap router2 UP
e2e_ok "HAProxy reports both routers UP through GET /health"
health=$(netns_exec client curl -sS "http://$(netns_addr router1):8080/health")
e2e_check "GET /health on router1 from the client: $health" grep -q '"ok":true' <<<"$health"

e2e_step "ingest through HAProxy"
ingest() {
    netns_exec client "$MONOFS_BIN" ingest "$@" --router "http://$HAPROXY:8080" \
        --admin-token-file "$TOKEN" > "$E2E_TMP/ingest.log" 2>&1 \
        || { cat "$E2E_TMP/ingest.log" >&2; hap_alerts; fail "monofs ingest $*"; }
    tail -n 1 "$E2E_TMP/ingest.log" >&2
}
ingest --content eager --source-id local/real "file://$MONOFS_TEST_REPOS/real"
ingest --source-id local/content "file://$MONOFS_TEST_REPOS/content"
got=$(netns_exec client "$MONOFS_BIN" cat --server "$HAPROXY:2049" /local/content/files/hello.txt)
e2e_check "monofs cat through HAProxy: '$got'" [ "$got" = "hello, world" ]

# ------------------------------------------------------------------ the guest
mkdir -p "$E2E_TMP/ctl"
echo run > "$E2E_TMP/ctl/phase"
CTL=8099
netns_bg client python3 -m http.server "$CTL" --bind 127.0.0.1 --directory "$E2E_TMP/ctl"
CTL_LOG="$E2E_TMP/bg-$((${#_e2e_pids[@]} - 1)).log"
netns_wait_tcp client 127.0.0.1 "$CTL"

sums=""
for f in $sized; do sums="$sums $f=$(mhash "$man_content" "$f")"; done
cat > "$E2E_TMP/guest.sh" <<GUEST
. /test/lib.sh
set -u
M=/mnt/monofs
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="\$1" -v b="\$(now)" 'BEGIN {printf "%.1f", b - a}'; }
# mark EVENT: tell the host (round N reached EVENT); prints what the host wants (run, done)
mark() { wget -qO- "http://10.0.2.2:$CTL/phase?round=\$round&at=\$1" 2>/dev/null || echo unreachable; }
if ! monofs_mount \$M; then monofs_fail "mount \$MONOFS_ADDR:/ through HAProxy"; monofs_done; fi
monofs_ok "mounted \$MONOFS_ADDR:/ (HAProxy) port \$MONOFS_PORT"
round=1
while :; do
    sync; echo 3 > /proc/sys/vm/drop_caches
    [ "\$(mark start)" != done ] || break
    if [ \$(cut -d. -f1 /proc/uptime) -gt 900 ]; then monofs_fail "the host never said done"; break; fi
    t=\$(now)
    echo "ROUND \$round start"
    r=ok
    sh /test/check-tree.sh /test/$(basename "$man_real") \$M/local/real > /tmp/ct 2>&1 || r=fail
    for fs in $sums; do
        [ "\${fs%%=*}" != big/big.bin ] || mark big > /dev/null
        s=\$(sha256sum "\$M/local/content/\${fs%%=*}" 2>>/tmp/ct | cut -d' ' -f1)
        [ "\$s" = "\${fs#*=}" ] || { r=fail; echo "\${fs%%=*}: sha256 '\$s'" >> /tmp/ct; }
    done
    mark "end-\$r" > /dev/null
    echo "ROUND \$round end \$r \$(since \$t)s"
    if [ \$r = ok ]; then monofs_ok "round \$round: \$(tail -n 1 /tmp/ct), 4 sha256 right"; else monofs_fail "round \$round"; cat /tmp/ct; fi
    round=\$((round + 1))
done
echo "kernel messages:"; dmesg | grep -i -e nfs -e rpc | tail -n 20
monofs_check "umount" monofs_umount \$M
monofs_done
GUEST

VMLOG="$E2E_TMP/vm.log"
: > "$VMLOG"
e2e_step "VM: mount through HAProxy, read in rounds"
netns_bg client "$MONOFS_ROOT/vm/run.sh" --name 85-router-failover --timeout 1000 --port 2049 \
    --env "MONOFS_ADDR=$HAPROXY" --log "$VMLOG" "$E2E_TMP/guest.sh" \
    "$MONOFS_ROOT/tests/check-tree.sh" "$man_real"
VM_PID=$NETNS_BG_PID

# wait_round N start|big|end [SECS]: until the guest's round N has reached that point
wait_round() {
    local i
    for ((i = 0; i < ${3:-300} * 5; i++)); do
        grep -q "round=$1&at=$2" "$CTL_LOG" && return 0
        kill -0 "$VM_PID" 2>/dev/null || { tail -n 30 "$VMLOG" >&2; fail "the VM stopped before round $1 $2"; }
        sleep 0.2
    done
    fail "round $1 did not $2 within ${3:-300}s"
}
rounds() { grep -c "&at=end-" "$CTL_LOG" || true; }
started() { grep -c "&at=start" "$CTL_LOG" || true; }
serving() { hap_routers | awk '$3 > 0 { print $1 }'; }

# kill_serving: SIGKILL the router holding the guest's connection, while a round reads
kill_serving() {
    local k victim pid
    # the next round to start, in its 110 MiB read
    k=$(($(started) + 1))
    wait_round "$k" big
    sleep 2
    # Mid-round the client has its connection, unless it is reconnecting this instant.
    for _ in $(seq 50); do
        victim=$(serving)
        [ "$(wc -w <<<"$victim")" != 1 ] || break
        sleep 0.2
    done
    [ "$(wc -w <<<"$victim")" = 1 ] || { hap_routers >&2; tail -n 20 "$HAPROXY_LOG" >&2; fail "not one router holds the client's connection: '$victim'"; }
    pid=$(eval echo "\$PID_$victim")
    if grep -q "round=$k&at=end" "$CTL_LOG"; then where="between rounds $k and $((k + 1))"; else where="during round $k"; fi
    echo "e2e: [$(e2e_secs)s] kill -9 $victim (pid $pid) $where; HAProxy: $(hap_routers | tr '\n' ';')" >&2
    netns_kill "$victim" "$pid" KILL
    KILLED=$victim
    KILL_ROUND=$k
    KILLS="$KILLS $victim:round-$k"
}
# after_kill: the guest completes the round the kill hit and a whole one after it
after_kill() {
    wait_hap "$KILLED" DOWN 10
    wait_round $((KILL_ROUND + 1)) end
    local now
    now=$(serving)
    echo "e2e: [$(e2e_secs)s] after killing $KILLED: HAProxy: $(hap_routers | tr '\n' ';') the round it hit: $(grep -o "round=$KILL_ROUND&at=end-[a-z]*" "$CTL_LOG")" >&2
    e2e_check "the guest's connection moved to the live router ($now) after $KILLED died" \
        [ -n "$now" -a "$now" != "$KILLED" ]
}

KILLS=""
wait_round 1 end 900
first=$(serving)
echo "e2e: [$(e2e_secs)s] round 1 done; HAProxy: $(hap_routers | tr '\n' ';')" >&2

e2e_step "kill the router serving the client"
kill_serving
after_kill

e2e_step "restart $KILLED, kill the other"
start_router "$KILLED"
wait_hap "$KILLED" UP 20
e2e_ok "$KILLED restarted, HAProxy reports it UP"
kill_serving
[ "$KILLED" != "$first" ] || fail "the second kill hit $first again"
after_kill

# ------------------------------------------------------------------ node faults
log() { echo "e2e: [$(e2e_secs)s] $*" >&2; }
# status ROUTER: `monofs admin status --format json` of that router, from the client
# host (the command exits 5 while a node is unhealthy; the JSON is what counts)
status() {
    netns_exec client "$MONOFS_BIN" admin status --format json \
        --router "http://$(netns_addr "$1"):8080" 2>/dev/null || true
}
# status_py ROUTER EXPR: a python expression over its status v
status_py() { status "$1" | python3 -c "import json,sys; v=json.load(sys.stdin); print($2)" 2>/dev/null || true; }
# leader: the router that runs failover and repair (the other one only follows)
leader() {
    local r
    for r in router1 router2; do
        [ "$(status_py "$r" "v['repair']['role']")" != leader ] || { echo "$r"; return; }
    done
}
# wait_status ROUTER SECS EXPR: until EXPR over ROUTER's status prints True
wait_status() {
    local i
    for ((i = 0; i < $2 * 2; i++)); do
        [ "$(status_py "$1" "$3")" != True ] || return 0
        sleep 0.5
    done
    echo "status of $1 never satisfied: $3" >&2
    status "$1" | head -c 3000 >&2
    return 1
}
# next_round: the number of the guest's next round to start
next_round() { echo $(($(started) + 1)); }
# round_ok K: the guest's round K (waited for) ended with every hash right
round_ok() {
    wait_round "$1" end
    log "round $1: $(grep -o "round=$1&at=end-[a-z]*" "$CTL_LOG" | head -n 1)"
    grep -q "round=$1&at=end-ok" "$CTL_LOG"
}

e2e_step "restart $KILLED (both routers serve the node faults)"
start_router "$KILLED"
wait_hap "$KILLED" UP 20
e2e_check "both routers see 3 healthy nodes" wait_status router1 20 \
    "v['cluster']['nodes'] == 3 and all(n['healthy'] for n in v['nodes'])"

e2e_step "partition n2 during a round"
k=$(next_round)
wait_round "$k" start
sleep 1
netns_partition n2
log "n2 partitioned during round $k"
e2e_check "the routers mark n2 unhealthy" wait_status router1 20 \
    "[n for n in v['nodes'] if n['id'] == 'n2'][0]['healthy'] == False"
e2e_check "round $k, read while n2 was partitioned, passed" round_ok "$k"
lead=$(leader)
log "before healing: n2 failed over: $(status_py "$lead" "'n2' in v['cluster']['failovers']"); received by repair ($lead leads): $(status_py "$lead" "v['repair']['received_total']")"
netns_heal n2
log "n2 healed"
e2e_check "n2 healthy again and not failed over (router1, router2)" \
    wait_status router1 30 "'n2' not in v['cluster']['failovers'] and all(n['healthy'] for n in v['nodes'])"
e2e_check "router2 agrees" \
    wait_status router2 30 "'n2' not in v['cluster']['failovers'] and all(n['healthy'] for n in v['nodes'])"

e2e_step "restart n1 in the middle of a round"
k=$(next_round)
wait_round "$k" big
netns_kill n1 "$PID_n1" TERM
start_node n1
log "n1 stopped (SIGTERM) and started again during round $k"
e2e_check "round $k, read while n1 restarted, passed" round_ok "$k"
e2e_check "n1 healthy again" wait_status router1 30 "all(n['healthy'] for n in v['nodes'])"

e2e_step "kill -9 n3 during a round; failover and repair"
k=$(next_round)
wait_round "$k" start
sleep 1
# what the repair leader's nodes received before, to tell this repair's copies apart
recv0=$(status_py "$(leader)" "sum(t['bytes'] for t in v['repair']['received_total'].values())")
keys0=$(status_py "$(leader)" "sum(t['keys'] for t in v['repair']['received_total'].values())")
netns_kill n3 "$PID_n3" KILL
t0=$(date +%s)
log "n3 killed (SIGKILL) during round $k"
e2e_check "round $k, read while n3 died, passed" round_ok "$k"
lead=$(leader)
[ -n "$lead" ] || fail "no router reports the repair leader's role"
log "repair leader: $lead"
e2e_check "n3 is failed over" wait_status "$lead" 60 "'n3' in v['cluster']['failovers']"
t_fo=$(date +%s)
log "n3 failed over (seen $((t_fo - t0))s after the kill): $(status_py "$lead" "v['cluster']['failovers']")"
e2e_check "a finished repair pass finds nothing under-replicated" wait_status "$lead" 180 \
    "'n3' in v['cluster']['failovers'] and v['repair']['last'] is not None and v['repair']['last']['finished_unix_ms'] is not None and v['repair']['last']['started_unix_ms'] >= $t_fo * 1000 and v['repair']['under_replicated'] == 0"
log "repair done $(( $(date +%s) - t0 ))s after the kill"
# every key of n1 and n2 (NDJSON of node-files; the summary must say complete)
: > "$E2E_TMP/keys.txt"
for id in n1 n2; do
    netns_exec client "$MONOFS_BIN" admin node-files --node-id "$id" --limit 0 --format json \
        --router "http://$(netns_addr "$lead"):8080" --admin-token-file "$TOKEN" \
        | python3 -c "
import json, sys
done = False
for line in sys.stdin:
    v = json.loads(line)
    if 'summary' in v:
        assert v['summary']['complete'], v
        done = True
        continue
    print('$id', f\"{v['kind']}:{v['oid']}:{v['chunk']}\")
assert done, 'no summary line'
" >> "$E2E_TMP/keys.txt" || fail "admin node-files --node-id $id"
done
read -r keys short < <(python3 - "$E2E_TMP/keys.txt" <<'EOF'
import collections, sys
c = collections.Counter(line.split()[1] for line in open(sys.argv[1]))
print(len(c), sum(1 for n in c.values() if n < 2))
EOF
)
copied=$(status_py "$lead" "sum(t['bytes'] for t in v['repair']['received_total'].values()) - ${recv0:-0}")
copied_keys=$(status_py "$lead" "sum(t['keys'] for t in v['repair']['received_total'].values()) - ${keys0:-0}")
echo "after n3's loss: $keys distinct keys on n1 and n2, $short on one only; the repair copied $copied_keys keys, $copied bytes (received_total: $(status_py "$lead" "v['repair']['received_total']"))"
e2e_check "every key is on both n1 and n2 ($keys keys, $short short)" [ "$keys" -gt 0 -a "$short" = 0 ]
k=$(next_round)
e2e_check "round $k, after the repair, passed" round_ok "$k"

echo done > "$E2E_TMP/ctl/phase"
set +e
wait "$VM_PID"
vm_rc=$?
set -e
total=$(rounds)
failed_rounds=$(grep -c "&at=end-fail" "$CTL_LOG" || true)
e2e_step "summary"
grep "^ROUND [0-9]* end" "$VMLOG" | sed 's/^/  /'
echo "routers killed (SIGKILL) in rounds:$KILLS"
echo "e2e: HAProxy's messages:" >&2
hap_alerts
echo "e2e: HAProxy's log of the client's sessions:" >&2
grep -e "monofs_nfs " "$HAPROXY_LOG" | tail -n 6 >&2 || true
e2e_check "the guest read $total rounds, $failed_rounds failed (no ESTALE, no EIO, every sha256 right)" \
    [ "$failed_rounds" = 0 -a "$total" -ge 4 ]
e2e_check "the guest passed (vm/run.sh status $vm_rc)" [ "$vm_rc" = 0 ]
e2e_done

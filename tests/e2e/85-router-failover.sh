#!/usr/bin/env bash
# Router failover with the kernel client: every component on a host of its own
# (network namespaces, tests/lib/netns.sh): 3 nodes (replication 2), a fetcher, two
# routers, HAProxy (deploy/haproxy/haproxy.cfg) and a client whose VM mounts MonoFS
# through HAProxy. The guest reads the tree in rounds (check-tree with every hash, and
# the sha256 of files of 1-3 MiB and of the 110 MiB big/big.bin), dropping its caches before each round so every round
# reads from the server. While it reads, the router holding its connection (from
# HAProxy's stats socket) is killed with SIGKILL in the middle of a 110 MiB read; then that router is started again and
# the other one killed. Every round must pass: no ESTALE, no EIO, every hash right.
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
for i in 1 2 3; do
    netns_bg "n$i" "$MONOFS_BIN" node --addr "$(netns_addr "n$i"):7000" --node-id "n$i" \
        --db-path "$E2E_TMP/n$i" --shards 1 "${KEY[@]}"
done
netns_bg fetcher "$MONOFS_BIN" fetcher --bind "$(netns_addr fetcher)" --port 9200 \
    --cache-dir "$E2E_TMP/fetcher" --allow-local-sources "${KEY[@]}"
for i in 1 2 3; do netns_wait_tcp client "$(netns_addr "n$i")" 7000; done
netns_wait_tcp client "$(netns_addr fetcher)" 9200

e2e_step "routers, HAProxy"
start_router() {
    netns_bg "$1" "$MONOFS_BIN" router --bind 0.0.0.0 --port 2049 --http-port 8080 \
        --nodes "$NODES" --replication-factor 2 --fetchers "$FETCHER" \
        --admin-token-file "$TOKEN" "${KEY[@]}"
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

#!/usr/bin/env bash
# The multi-host harness (tests/lib/netns.sh) itself, with real MonoFS processes: a node
# and a router on hosts of their own, a client host. The client reaches the router
# (GET /health 200, monofs ls over NFS) only across the bridge; a partitioned node
# makes the router unhealthy (503 with the reason) and healing makes it healthy again;
# two harnesses at once get distinct namespaces; everything a run made is gone after
# it, also when the script fails.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/netns.sh"

netns_require

netns_host node 11
netns_host router 31
netns_host client 100
NODE=$(netns_addr node) ROUTER=$(netns_addr router)
e2e_check "netns_addr prints the host's address" [ "$NODE" = 10.77.0.11 ]
e2e_check "each host has its address on eth0" \
    sh -c "ip -n $NETNS_PREFIX-client -o addr show dev eth0 | grep -q ' 10.77.0.100/24 '"

netns_bg node "$MONOFS_BIN" node --addr "$NODE:7000" --node-id n1 --db-path "$E2E_TMP/n1" --shards 1
netns_wait_tcp router "$NODE" 7000
netns_bg router "$MONOFS_BIN" router --bind 0.0.0.0 --port 2049 --http-port 8080 --nodes "n1=$NODE:7000"
netns_wait_tcp client "$ROUTER" 8080
netns_wait_tcp client "$ROUTER" 2049
e2e_check "the machine's own namespace got no 10.77.0.x address and no bridge" \
    sh -c "! ip -o addr show | grep -q ' 10\.77\.0\.' && ! ip -o link show | grep -q 'mfs-'"

health() { netns_exec client curl -sS --max-time 10 -o "$E2E_TMP/health.json" -w '%{http_code}' "http://$ROUTER:8080/health"; }
code=$(health)
e2e_check "GET /health from the client host: $code $(cat "$E2E_TMP/health.json")" [ "$code" = 200 ]
e2e_check "monofs ls / from the client host over NFS" \
    netns_exec client "$MONOFS_BIN" ls / --server "$ROUTER:2049"

netns_partition node
# The router caches the namespace for 1 s; then it must read it again, and cannot.
sleep 2
code=$(health)
e2e_check "node partitioned: GET /health is 503 ($(cat "$E2E_TMP/health.json"))" \
    sh -c "[ '$code' = 503 ] && grep -q 'namespace record' '$E2E_TMP/health.json'"
e2e_check "the partitioned node's process lives on" sh -c "ip netns pids $NETNS_PREFIX-node | grep -q ."

netns_heal node
ok=0
for _ in $(seq 60); do
    [ "$(health)" = 200 ] && { ok=1; break; }
    sleep 0.5
done
e2e_check "node healed: GET /health is 200 again ($(cat "$E2E_TMP/health.json"))" [ "$ok" = 1 ]

# A second harness at once (a concurrent run): other names, same addresses, no clash;
# its namespaces are gone when it exits, even though it fails.
rc=0
bash -c '
    . "$1/tests/lib/common.sh"; . "$1/tests/lib/netns.sh"
    netns_require; netns_host client 100
    echo "$NETNS_PREFIX" > "$2"
    netns_exec client ip -o addr show dev eth0 | grep " 10.77.0.100/24 " >/dev/null || exit 3
    exit 7' _ "$MONOFS_ROOT" "$E2E_TMP/other" 2>/dev/null || rc=$?
other=$(cat "$E2E_TMP/other")
e2e_check "a concurrent harness uses its own prefix ($other, ours $NETNS_PREFIX) and the same address" \
    sh -c "[ '$rc' = 7 ] && [ -n '$other' ] && [ '$other' != '$NETNS_PREFIX' ]"
e2e_check "the failed run left no namespace behind" sh -c "! ip netns list | grep -q '^$other-'"
e2e_check "ours are still there" sh -c "ip netns list | grep -q '^$NETNS_PREFIX-client'"
e2e_done

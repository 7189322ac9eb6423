# Several hosts on one machine for MonoFS end-to-end scripts (bash): network
# namespaces joined by one bridge. Source it after common.sh:
#
#   . "$(dirname "$0")/../lib/common.sh"
#   . "$(dirname "$0")/../lib/netns.sh"
#   netns_require                 # root, or `sudo -n`; else prints SKIP and exits 0
#   netns_host router1 11         # namespace with address 10.77.0.11/24
#   netns_bg router1 "$MONOFS_BIN" router --bind 0.0.0.0 ...
#
# Layout: the bridge lives in a namespace of its own (NETNS_PREFIX-lan), so a run
# never touches the root namespace's links or routes and two runs at once may both
# use 10.77.0.0/24. Each host namespace (NETNS_PREFIX-NAME) has `lo` and `eth0`,
# one end of a veth pair whose other end (hNNN) is a port of the bridge.
# NETNS_PREFIX is mfs-<pid in hex>: unique among the runs alive at a time.
#
#   netns_require            exit 0 with "SKIP: ..." unless namespaces can be made
#   netns_host NAME N        create host NAME at 10.77.0.N/24 (N in 1..254)
#   netns_addr NAME          print NAME's address
#   netns_exec NAME CMD...   run CMD in NAME (foreground)
#   netns_bg NAME CMD...     run CMD in NAME in the background, log to $E2E_TMP/bg-N.log,
#                            killed at exit; sets NETNS_BG_PID (= E2E_BG_PID)
#   netns_kill NAME PID [SIG]  send SIG (default KILL) to a netns_bg process and reap it
#   netns_wait_tcp NAME HOST PORT [SECS]  wait until HOST:PORT accepts connections
#                            from NAME (default 30 s)
#   netns_partition NAME     take NAME's link down at the bridge: it reaches no other
#                            host and none reaches it, its processes live on
#   netns_heal NAME          bring the link back up
#   netns_cleanup            kill every process in the namespaces, delete them (runs
#                            at exit through e2e_at_exit, also after a failure)
# Limits: NETNS_MAX_HOSTS hosts per run (the /24 and the names).

NETNS_MAX_HOSTS=64
NETNS_SUBNET=10.77.0
NETNS_PREFIX="mfs-$(printf %x $$)"
NETNS_SUDO=""
_netns_hosts=()

netns_require() {
    local why=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            NETNS_SUDO="sudo -n"
        else
            why="not root and 'sudo -n' is not available"
        fi
    fi
    if [ -z "$why" ] && ! command -v ip >/dev/null; then why="no 'ip' (iproute2)"; fi
    if [ -z "$why" ] && ! $NETNS_SUDO ip netns add "$NETNS_PREFIX-lan" 2>"$E2E_TMP/netns.err"; then
        why="cannot create a network namespace: $(cat "$E2E_TMP/netns.err")"
    fi
    if [ -n "$why" ]; then
        echo "SKIP: network namespaces unavailable ($why); this test needs root"
        exit 0
    fi
    e2e_at_exit netns_cleanup
    $NETNS_SUDO ip -n "$NETNS_PREFIX-lan" link set lo up
    $NETNS_SUDO ip -n "$NETNS_PREFIX-lan" link add br0 type bridge
    # No STP delay: a port forwards as soon as it is up (also after netns_heal).
    $NETNS_SUDO ip -n "$NETNS_PREFIX-lan" link set br0 type bridge forward_delay 0 stp_state 0
    $NETNS_SUDO ip -n "$NETNS_PREFIX-lan" link set br0 up
    echo "netns: bridge in $NETNS_PREFIX-lan, hosts on $NETNS_SUBNET.0/24" >&2
}

_netns_ns() { echo "$NETNS_PREFIX-$1"; }

netns_host() {
    local name="$1" n="$2" ns
    ns=$(_netns_ns "$name")
    [[ "$name" =~ ^[a-z0-9]{1,16}$ ]] || { echo "netns: bad host name '$name' (a-z0-9, at most 16)" >&2; return 2; }
    [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 254 ] \
        || { echo "netns: host number $n not in 1..254" >&2; return 2; }
    [ "${#_netns_hosts[@]}" -lt "$NETNS_MAX_HOSTS" ] \
        || { echo "netns: more than $NETNS_MAX_HOSTS hosts" >&2; return 2; }
    $NETNS_SUDO ip netns add "$ns"
    _netns_hosts+=("$name")
    eval "_netns_addr_$name=$NETNS_SUBNET.$n"
    # Created in the host namespace, then the bridge end moves to the lan namespace:
    # interface names are per namespace, so hN never collides with another run's.
    $NETNS_SUDO ip -n "$ns" link add eth0 type veth peer name "h$n"
    $NETNS_SUDO ip -n "$ns" link set "h$n" netns "$NETNS_PREFIX-lan"
    $NETNS_SUDO ip -n "$NETNS_PREFIX-lan" link set "h$n" master br0 up
    $NETNS_SUDO ip -n "$ns" addr add "$NETNS_SUBNET.$n/24" dev eth0
    $NETNS_SUDO ip -n "$ns" link set lo up
    $NETNS_SUDO ip -n "$ns" link set eth0 up
    echo "netns: host $name = $ns, $NETNS_SUBNET.$n" >&2
}

netns_addr() {
    local v="_netns_addr_$1"
    [ -n "${!v:-}" ] || { echo "netns: no host $1" >&2; return 2; }
    echo "${!v}"
}

_netns_link() { # bridge-side port of NAME
    local a
    a=$(netns_addr "$1") || return
    echo "h${a##*.}"
}

netns_exec() {
    local ns
    ns=$(_netns_ns "$1"); shift
    $NETNS_SUDO ip netns exec "$ns" "$@"
}

netns_bg() {
    local ns
    ns=$(_netns_ns "$1"); shift
    # `ip netns exec` execs CMD, so the pid e2e_bg records is CMD's own.
    e2e_bg $NETNS_SUDO ip netns exec "$ns" "$@"
    NETNS_BG_PID=$E2E_BG_PID
}

netns_kill() {
    local name="$1" pid="$2" sig="${3:-KILL}" i
    $NETNS_SUDO kill "-$sig" "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # reaped: not killed again at exit (pid reuse)
    for i in "${!_e2e_pids[@]}"; do [ "${_e2e_pids[$i]}" != "$pid" ] || _e2e_pids[$i]=""; done
    echo "netns: sent SIG$sig to pid $pid in $name" >&2
}

netns_wait_tcp() {
    local name="$1" host="$2" port="$3" secs="${4:-30}" i
    for ((i = 0; i < secs * 5; i++)); do
        if netns_exec "$name" timeout 1 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "netns: $host:$port not reachable from $name after ${secs}s" >&2
    return 1
}

netns_partition() {
    $NETNS_SUDO ip -n "$NETNS_PREFIX-lan" link set "$(_netns_link "$1")" down
    echo "netns: $1 partitioned" >&2
}

netns_heal() {
    $NETNS_SUDO ip -n "$NETNS_PREFIX-lan" link set "$(_netns_link "$1")" up
    echo "netns: $1 healed" >&2
}

netns_cleanup() {
    local name ns pids
    for name in "${_netns_hosts[@]+"${_netns_hosts[@]}"}" lan; do
        ns=$(_netns_ns "$name")
        # Everything still running there was started by this run (qemu under vm/run.sh
        # included): a namespace is freed only when its last process has gone.
        pids=$($NETNS_SUDO ip netns pids "$ns" 2>/dev/null || true)
        [ -z "$pids" ] || $NETNS_SUDO kill -9 $pids 2>/dev/null || true
    done
    for name in "${_netns_hosts[@]+"${_netns_hosts[@]}"}" lan; do
        $NETNS_SUDO ip netns del "$(_netns_ns "$name")" 2>/dev/null || true
    done
    _netns_hosts=()
}

# Shared helpers for MonoFS end-to-end scripts (bash): `. "$(dirname "$0")/../lib/common.sh"`.
#
#   MONOFS_ROOT        repository root
#   MONOFS_BIN         target/release/monofs
#   MONOFS_TEST_REPOS  generated test repositories (target/test-repos, shared by all tests)
#   e2e_repos [ARGS]   generate (or reuse) the test repos: tests/gen-repos.sh $MONOFS_TEST_REPOS
#   e2e_manifest NAME [REV]  print the path of a cached manifest of $MONOFS_TEST_REPOS/NAME
#   e2e_free_port      print a free TCP port on 127.0.0.1
#   e2e_wait_port PORT [SECS]  wait until 127.0.0.1:PORT accepts connections
#   e2e_bg CMD...      start CMD in the background, log to $E2E_TMP/bg-N.log, killed (by pid)
#                      when the script exits; sets E2E_BG_PID
#   e2e_vm [vm/run.sh args...]  vm/run.sh
#   E2E_TMP            a temporary directory removed at exit
#   MONOFS_CLUSTER_KEY_FILE  a fresh cluster key in $E2E_TMP, exported, so the separate
#                      `monofs node|fetcher|router` processes a script starts share one key
set -euo pipefail
MONOFS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MONOFS_BIN="${MONOFS_BIN:-$MONOFS_ROOT/target/release/monofs}"
MONOFS_TEST_REPOS="${MONOFS_TEST_REPOS:-$MONOFS_ROOT/target/test-repos}"
export MONOFS_ROOT MONOFS_BIN MONOFS_TEST_REPOS
E2E_TMP="$(mktemp -d "${TMPDIR:-/tmp}/monofs-e2e.XXXXXX")"
_e2e_pids=()
_e2e_cleanup() {
    local p
    for p in "${_e2e_pids[@]+"${_e2e_pids[@]}"}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${_e2e_pids[@]+"${_e2e_pids[@]}"}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$p" 2>/dev/null || true
    done
    [ "${E2E_KEEP_TMP:-0}" = 1 ] || _e2e_rm_tmp
}
# A `git fetch` started by a fetcher outlives it for a moment and may still write
# into the cache under E2E_TMP: stop such stragglers and try again.
_e2e_rm_tmp() {
    local i
    for i in 1 2 3 4 5; do
        rm -rf "$E2E_TMP" 2>/dev/null && return 0
        pkill -f -- "$E2E_TMP" 2>/dev/null || true
        sleep 0.5
    done
    echo "e2e: cannot remove $E2E_TMP" >&2
}
trap _e2e_cleanup EXIT

e2e_repos() { "$MONOFS_ROOT/tests/gen-repos.sh" "$MONOFS_TEST_REPOS" "$@" >&2; }

e2e_manifest() {
    local name="$1" rev="${2:-HEAD}" repo="$MONOFS_TEST_REPOS/$1" commit out
    commit=$(git -C "$repo" rev-parse --verify "$rev^{commit}")
    out="$MONOFS_TEST_REPOS/$name-$commit.manifest"
    if [ ! -s "$out" ]; then
        "$MONOFS_ROOT/tests/manifest.py" "$repo" "$rev" > "$out.tmp"
        mv "$out.tmp" "$out"
    fi
    echo "$out"
}

e2e_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

e2e_wait_port() {
    local port="$1" secs="${2:-30}"
    python3 - "$port" "$secs" <<'PY'
import socket, sys, time
port, deadline = int(sys.argv[1]), time.time() + float(sys.argv[2])
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.1)
print(f"e2e: port {port} not ready after {sys.argv[2]}s", file=sys.stderr); sys.exit(1)
PY
}

e2e_bg() {
    local log="$E2E_TMP/bg-${#_e2e_pids[@]}.log"
    "$@" > "$log" 2>&1 &
    E2E_BG_PID=$!
    _e2e_pids+=("$E2E_BG_PID")
    echo "e2e: started $1 (pid $E2E_BG_PID, log $log)" >&2
}

e2e_vm() { "$MONOFS_ROOT/vm/run.sh" "$@"; }

# ---------------------------------------------------------------- cluster helpers
#   e2e_repos_locked [ARGS]  e2e_repos under flock $MONOFS_TEST_REPOS.lock (the lock
#                      e2e_host_repos takes too), so concurrent scripts never generate at once
#   e2e_free_ports N   print N distinct free TCP ports on 127.0.0.1 (one per line), taken
#                      from 21000-32767 (above `monofs up` defaults, below the ephemeral range)
#   e2e_up DATA_DIR [monofs up ARGS...]
#                      start `monofs up --data-dir DATA_DIR` on free ports (NFS, HTTP, nodes,
#                      fetcher; ARGS may override --port and add --nodes/--shards/...), wait
#                      until NFS and HTTP accept connections. Sets E2E_NFS_PORT,
#                      E2E_HTTP_PORT, E2E_ROUTER (http://127.0.0.1:PORT), E2E_SERVER
#                      (127.0.0.1:NFS; both also as MONOFS_ROUTER/MONOFS_SERVER for the
#                      CLI), MONOFS_ADMIN_TOKEN_FILE (DATA_DIR/admin.token, for the CLI),
#                      E2E_UP_PID, E2E_UP_LOG. A second call (a restart) reuses the ports.
#   e2e_ingest URL [monofs ingest ARGS...]   ingest into the cluster of the last e2e_up
#   e2e_start_node ID  start `monofs node` ID (NODE_PORT/NODE_PID/NODE_LOG arrays), wait until ready
#   e2e_stop PID [SECS]  SIGTERM PID (an e2e_bg child), wait up to SECS (20) for it, then
#                      SIGKILL; returns its exit status (124 if it had to be killed)
#   e2e_at_exit CMD    run CMD (eval) at exit, before the e2e_bg processes are killed
#   e2e_secs           seconds since the script started (for timing lines)
#   e2e_step MSG       a section heading with the time since the start
_e2e_t0=$(date +%s.%N)
e2e_secs() { awk -v s="$_e2e_t0" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}'; }
e2e_step() { echo; echo "== [$(e2e_secs)s] $*"; }
[ -x "$MONOFS_BIN" ] || { echo "FAIL: $MONOFS_BIN missing (cargo build --release)"; exit 1; }
MONOFS_CLUSTER_KEY_FILE="$E2E_TMP/cluster.key"
"$MONOFS_BIN" admin gen-key "$MONOFS_CLUSTER_KEY_FILE" 2>/dev/null
export MONOFS_CLUSTER_KEY_FILE

_e2e_exit_cmds=()
e2e_at_exit() { _e2e_exit_cmds+=("$*"); }
_e2e_exit() {
    local rc=$? c
    for c in "${_e2e_exit_cmds[@]+"${_e2e_exit_cmds[@]}"}"; do eval "$c" || true; done
    _e2e_cleanup
    exit "$rc"
}
trap _e2e_exit EXIT

e2e_repos_locked() {
    mkdir -p "$(dirname "$MONOFS_TEST_REPOS")"
    (
        flock -w 900 9 || { echo "e2e: cannot lock $MONOFS_TEST_REPOS.lock" >&2; exit 1; }
        e2e_repos "$@"
    ) 9>"$MONOFS_TEST_REPOS.lock"
}

e2e_free_ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
n, got = int(sys.argv[1]), []
while len(got) < n:
    p = random.randrange(21000, 32768)
    if p in got:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); got.append(p)
    except OSError:
        pass
    finally:
        s.close()
print("\n".join(map(str, got)))
PY
}

# a base port B with B+10k+s free for k < nodes, s < shards
_e2e_node_base() {
    python3 - "$1" "$2" <<'PY'
import random, socket, sys
nodes, shards = int(sys.argv[1]), int(sys.argv[2])
for _ in range(1000):
    b = random.randrange(21000, 32768 - 10 * nodes - shards)
    ok = True
    for k in range(nodes):
        for s in range(shards):
            so = socket.socket()
            try:
                so.bind(("127.0.0.1", b + 10 * k + s))
            except OSError:
                ok = False
            finally:
                so.close()
    if ok:
        print(b); sys.exit(0)
sys.exit("e2e: no free node port range")
PY
}

e2e_up() {
    local data="$1"; shift
    local nodes=2 shards=1 port="" a prev="" args=("$@")
    for a in "$@"; do
        case "$prev" in
            --nodes) nodes="$a" ;; --shards) shards="$a" ;; --port) port="$a" ;;
        esac
        case "$a" in
            --nodes=*) nodes="${a#*=}" ;; --shards=*) shards="${a#*=}" ;; --port=*) port="${a#*=}" ;;
        esac
        prev="$a"
    done
    # A restart in the same script keeps its addresses, as a restarted deployment would.
    if [ -z "${_e2e_up_ports:-}" ]; then
        local ports
        ports=($(e2e_free_ports 3))
        _e2e_up_ports="${ports[0]} ${ports[1]} ${ports[2]} $(_e2e_node_base "$nodes" "$shards")"
    fi
    local p_nfs p_http fetcher nodebase
    read -r p_nfs p_http fetcher nodebase <<<"$_e2e_up_ports"
    E2E_HTTP_PORT=$p_http
    if [ -z "$port" ]; then
        port=$p_nfs
        args+=(--port "$port")
    fi
    E2E_NFS_PORT=$port
    E2E_ROUTER="http://127.0.0.1:$E2E_HTTP_PORT"
    E2E_SERVER="127.0.0.1:$E2E_NFS_PORT"
    export MONOFS_ROUTER="$E2E_ROUTER" MONOFS_SERVER="$E2E_SERVER"
    export MONOFS_ADMIN_TOKEN_FILE="$data/admin.token"
    mkdir -p "$data"
    e2e_bg "$MONOFS_BIN" up --data-dir "$data" --http-port "$E2E_HTTP_PORT" \
        --node-port "$nodebase" --fetcher-port "$fetcher" "${args[@]}"
    E2E_UP_PID=$E2E_BG_PID
    E2E_UP_LOG="$E2E_TMP/bg-$((${#_e2e_pids[@]} - 1)).log"
    if ! e2e_wait_port "$E2E_NFS_PORT" 60 || ! e2e_wait_port "$E2E_HTTP_PORT" 10 \
        || ! kill -0 "$E2E_UP_PID" 2>/dev/null; then
        echo "e2e: monofs up did not start; its log:" >&2
        cat "$E2E_UP_LOG" >&2
        return 1
    fi
    echo "e2e: monofs up (pid $E2E_UP_PID): NFS 127.0.0.1:$E2E_NFS_PORT, HTTP $E2E_ROUTER, nodes $nodebase, fetcher $fetcher, data $data" >&2
    export E2E_NFS_PORT E2E_HTTP_PORT E2E_ROUTER E2E_SERVER
}

e2e_ingest() { "$MONOFS_BIN" ingest "$@" --router "$E2E_ROUTER"; }

e2e_stop() {
    local pid="$1" secs="${2:-20}" rc=0 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        rc=124
    else
        wait "$pid" 2>/dev/null || rc=$?
    fi
    # not killed again at exit (pid reuse); the slot stays so bg-N.log names stay unique
    local i
    for i in "${!_e2e_pids[@]}"; do [ "${_e2e_pids[$i]}" != "$pid" ] || _e2e_pids[$i]=""; done
    return "$rc"
}

# ---------------------------------------------------------------- check counting
#   e2e_ok MSG / e2e_fail MSG / e2e_check MSG CMD...
#                            print "ok: MSG" / "FAIL: MSG" and count; check runs CMD
#   e2e_done                 print "checks: N passed, M failed"; exit 1 if any failed
E2E_PASSED=0
E2E_FAILED=0
e2e_ok() { E2E_PASSED=$((E2E_PASSED + 1)); echo "ok: $*"; }
e2e_fail() { E2E_FAILED=$((E2E_FAILED + 1)); echo "FAIL: $*"; }
e2e_check() {
    local msg="$1"; shift
    if "$@"; then e2e_ok "$msg"; else e2e_fail "$msg"; fi
}
# e2e_json_check FILE PYTHON_EXPR   true if the expression holds (v = the parsed JSON);
#                                   prints the JSON when it does not
e2e_json_check() {
    python3 - "$1" "$2" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
ok = eval(sys.argv[2])
if not ok:
    print("unexpected JSON:", json.dumps(v)[:2000])
sys.exit(0 if ok else 1)
PY
}
e2e_done() {
    echo "checks: $E2E_PASSED passed, $E2E_FAILED failed"
    [ "$E2E_FAILED" = 0 ]
}

# e2e_start_node ID   start `monofs node` ID on 127.0.0.1:${NODE_PORT[ID]} with its data in
#   $E2E_TMP/ID (one shard) and wait for its "node ready" line; sets NODE_PID[ID] and
#   NODE_LOG[ID] (the caller declares the three arrays). A killed node's port can stay
#   taken for a moment (io_uring files close late): a start that fails is retried.
e2e_start_node() {
    local id="$1" log attempt
    for attempt in 1 2 3 4 5; do
        e2e_bg "$MONOFS_BIN" node --addr "127.0.0.1:${NODE_PORT[$id]}" --node-id "$id" \
            --db-path "$E2E_TMP/$id" --shards 1
        NODE_PID[$id]=$E2E_BG_PID
        log="$E2E_TMP/bg-$((${#_e2e_pids[@]} - 1)).log"
        for _ in $(seq 300); do
            grep -q "node ready" "$log" 2>/dev/null && break
            kill -0 "$E2E_BG_PID" 2>/dev/null || break
            sleep 0.1
        done
        NODE_LOG[$id]=$log
        grep -q "node ready" "$log" && return 0
        sleep 1
    done
    echo "node $id did not start:"; cat "$log"; return 1
}

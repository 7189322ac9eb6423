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
    [ "${E2E_KEEP_TMP:-0}" = 1 ] || rm -rf "$E2E_TMP"
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

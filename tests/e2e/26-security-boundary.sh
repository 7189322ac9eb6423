#!/usr/bin/env bash
# The router's security boundary, host-side, against real processes:
#   - file handles carry a MAC: a handle read from a LOOKUP by an independent NFS client
#     (raw ONC RPC from python3) answers GETATTR; the same handle with any one bit flipped,
#     truncated, or in the MAC-less layout 1 answers STALE or BADHANDLE, never OK
#   - a restarted `monofs up` (same data directory, so the same cluster key) accepts the
#     handles it gave out before, and READ through one returns the file
#   - POST /api/ingest without the admin token or with a wrong one: 401 with a JSON error;
#     with the token of `monofs up`'s data directory: 200; GET endpoints stay open
#   - separate node, fetcher and router processes: a fetcher started without
#     --allow-local-sources refuses file:// and local-path ingests with an error naming
#     the flag; a router with --admin-token-file refuses `monofs ingest` without the token
#     and refuses to start with a token file others can read; `monofs router` and
#     `monofs fetcher` listen on 127.0.0.1 only unless --bind says otherwise
#   - (as root) from another network namespace, over a veth pair: a router bound to
#     0.0.0.0 without --admin-token-file answers GET but refuses POST with 403
. "$(dirname "$0")/../lib/common.sh"

# A small repository of our own: this test needs no large content.
repo="$E2E_TMP/src/sec"
mkdir -p "$repo"
(
    cd "$repo"
    git init -q -b main
    printf 'the boundary holds\n' > README.md
    mkdir -p dir && printf '#!/bin/sh\necho hi\n' > dir/run.sh && chmod +x dir/run.sh
    git add -A
    GIT_AUTHOR_DATE=2024-01-01T00:00:00Z GIT_COMMITTER_DATE=2024-01-01T00:00:00Z \
        git -c user.name=e2e -c user.email=e2e@example.invalid commit -qm sec
)

cat >"$E2E_TMP/fh.py" <<'PY'
# Usage: fh.py PORT handles OUT   -- LOOKUP /local/sec/README.md, write its handles to OUT
#        fh.py PORT forge OUT     -- altered handles from OUT answer STALE/BADHANDLE
#        fh.py PORT reuse OUT     -- the handles in OUT still answer; READ returns the file
import random, socket, struct, sys

PORT, MODE, OUT = int(sys.argv[1]), sys.argv[2], sys.argv[3]
NFS, MOUNT = 100003, 100005
OK, STALE, BADHANDLE = 0, 70, 10001
NAMES = {OK: "OK", STALE: "STALE", BADHANDLE: "BADHANDLE"}

def u32(v): return struct.pack(">I", v & 0xFFFFFFFF)
def opaque(b): return u32(len(b)) + b + b"\0" * (-len(b) % 4)
AUTH_UNIX = u32(1) + opaque(u32(0) + opaque(b"monofs-e2e") + u32(0) + u32(0) + u32(0))

class Client:
    def __init__(self):
        self.s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
        self.xid = random.randrange(1 << 30)
    def recv(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c: raise EOFError("connection closed")
            b += c
        return b
    def call(self, prog, proc, args):
        self.xid += 1
        body = u32(self.xid) + u32(0) + u32(2) + u32(prog) + u32(3) + u32(proc) + AUTH_UNIX + u32(0) + u32(0) + args
        self.s.sendall(u32(0x80000000 | len(body)) + body)
        rec = b""
        while True:
            h = struct.unpack(">I", self.recv(4))[0]
            rec += self.recv(h & 0x7FFFFFFF)
            if h & 0x80000000: break
        xid, mtype, rstat = struct.unpack_from(">III", rec)
        assert (xid, mtype, rstat) == (self.xid, 1, 0), (xid, mtype, rstat)
        vlen = struct.unpack_from(">I", rec, 16)[0]
        i = 20 + vlen + (-vlen % 4)
        assert struct.unpack_from(">I", rec, i)[0] == 0, "RPC not accepted"
        return rec[i + 4:]
    def mount(self, path):
        r = self.call(MOUNT, 1, opaque(path))
        st, n = struct.unpack_from(">II", r)
        assert st == 0, f"MNT status {st}"
        return r[8:8 + n]
    def lookup(self, fh, name):
        r = self.call(NFS, 3, opaque(fh) + opaque(name))
        st, n = struct.unpack_from(">II", r)
        assert st == OK, f"LOOKUP {name!r}: status {st}"
        return r[8:8 + n]
    def getattr(self, fh):
        return struct.unpack_from(">I", self.call(NFS, 1, opaque(fh)))[0]
    def read(self, fh, count):
        r = self.call(NFS, 6, opaque(fh) + struct.pack(">QI", 0, count))
        st = struct.unpack_from(">I", r)[0]
        assert st == OK, f"READ status {st}"
        i = 4 + (4 + 84 if struct.unpack_from(">I", r, 4)[0] else 4)
        _count, _eof, n = struct.unpack_from(">III", r, i)
        return r[i + 12:i + 12 + n]

c = Client()
bad = 0
def check(cond, msg):
    global bad
    print(("ok: " if cond else "FAIL: ") + msg, flush=True)
    bad += 0 if cond else 1

if MODE == "handles":
    root = c.mount(b"/")
    hs = {"/": root}
    fh = root
    for path, name in (("/local", b"local"), ("/local/sec", b"sec"), ("/local/sec/README.md", b"README.md")):
        fh = c.lookup(fh, name)
        hs[path] = fh
    with open(OUT, "w") as f:
        for p, h in hs.items():
            f.write(f"{p} {h.hex()}\n")
    for p, h in hs.items():
        check(len(h) <= 64 and c.getattr(h) == OK, f"{p}: {len(h)}-byte handle answers GETATTR")
elif MODE == "forge":
    hs = dict(l.split() for l in open(OUT))
    for p, hx in hs.items():
        h = bytes.fromhex(hx)
        seen = {}
        for bit in range(len(h) * 8):
            b = bytearray(h); b[bit // 8] ^= 1 << (bit % 8)
            st = c.getattr(bytes(b))
            seen[st] = seen.get(st, 0) + 1
        summary = ", ".join(f"{NAMES.get(k, k)} x{v}" for k, v in sorted(seen.items()))
        check(set(seen) <= {STALE, BADHANDLE}, f"{p}: every one of {len(h) * 8} one-bit changes refused ({summary})")
        check(c.getattr(h[:-1]) in (STALE, BADHANDLE), f"{p}: truncated handle refused")
    root = bytes.fromhex(hs["/"])
    v1 = bytes([1]) + root[1:10]   # layout 1: [1, KIND_NS] path, no MAC
    check(c.getattr(v1) == STALE, "a handle of layout 1 (no MAC) is STALE")
elif MODE == "reuse":
    hs = dict(l.split() for l in open(OUT))
    for p, hx in hs.items():
        check(c.getattr(bytes.fromhex(hx)) == OK, f"{p}: handle from before the restart answers GETATTR")
    data = c.read(bytes.fromhex(hs["/local/sec/README.md"]), 4096)
    check(data == b"the boundary holds\n", f"READ through the old handle returns the file ({data!r})")
sys.exit(1 if bad else 0)
PY

# POST url [curl args...]: prints the status code, keeps the body in $E2E_TMP/post.body
post() {
    local url="$1"; shift
    curl -sS -o "$E2E_TMP/post.body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' "$@" "$url"
}
json_error() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["error"])' "$E2E_TMP/post.body"; }

e2e_step "monofs up; handles from an independent NFS client"
DATA="$E2E_TMP/data"
e2e_up "$DATA" --nodes 2 --shards 1
e2e_check "ingest through the CLI with the data directory's token" \
    "$MONOFS_BIN" ingest "$repo" --source-id local/sec --router "$E2E_ROUTER"
e2e_check "admin.token is mode 600" test "$(stat -c %a "$DATA/admin.token")" = 600
e2e_check "LOOKUP handles answer GETATTR" python3 "$E2E_TMP/fh.py" "$E2E_NFS_PORT" handles "$E2E_TMP/handles"
e2e_check "altered handles are refused" python3 "$E2E_TMP/fh.py" "$E2E_NFS_PORT" forge "$E2E_TMP/handles"

e2e_step "HTTP API: the admin token"
code=$(post "$E2E_ROUTER/api/ingest" -d "{\"url\": \"$repo\"}")
e2e_check "POST /api/ingest without a token: 401 ($(json_error))" test "$code" = 401
code=$(post "$E2E_ROUTER/api/ingest" -H 'Authorization: Bearer 0000000000000000000000' -d "{\"url\": \"$repo\"}")
e2e_check "POST /api/ingest with a wrong token: 401 ($(json_error))" test "$code" = 401
code=$(post "$E2E_ROUTER/api/refresh" -d '{"path": "/local/sec"}')
e2e_check "POST /api/refresh without a token: 401" test "$code" = 401
code=$(post "$E2E_ROUTER/api/ingest" -H "Authorization: Bearer $(cat "$DATA/admin.token")" \
    -d "{\"url\": \"$repo\", \"source_id\": \"local/sec2\"}")
e2e_check "POST /api/ingest with the token: 200" test "$code" = 200
e2e_check "... and the ingest succeeded" grep -q '"done":true' "$E2E_TMP/post.body"
e2e_check "GET /api/repos needs no token" curl -fsS -o /dev/null "$E2E_ROUTER/api/repos"
e2e_check "GET /metrics needs no token" curl -fsS -o /dev/null "$E2E_ROUTER/metrics"

e2e_step "restart: the old handles still answer"
e2e_check "monofs up stops" e2e_stop "$E2E_UP_PID"
e2e_up "$DATA" --nodes 2 --shards 1
e2e_check "handles from before the restart" python3 "$E2E_TMP/fh.py" "$E2E_NFS_PORT" reuse "$E2E_TMP/handles"
e2e_stop "$E2E_UP_PID" >/dev/null || true
unset MONOFS_ADMIN_TOKEN_FILE

e2e_step "separate processes: local sources, the router's token file, binds"
ports=($(e2e_free_ports 4))
P=${ports[0]} H=${ports[1]} F=${ports[2]} N=${ports[3]}
TOKEN="$E2E_TMP/router.token"
(umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$TOKEN")
e2e_bg "$MONOFS_BIN" node --addr "127.0.0.1:$N" --node-id n1 --db-path "$E2E_TMP/n1" --shards 1
e2e_bg "$MONOFS_BIN" fetcher --port "$F" --cache-dir "$E2E_TMP/cache"
e2e_wait_port "$N" 30; e2e_wait_port "$F" 30
cp "$TOKEN" "$E2E_TMP/open.token"; chmod 644 "$E2E_TMP/open.token"
rc=0
timeout 30 "$MONOFS_BIN" router --port "$P" --http-port "$H" --nodes "n1=127.0.0.1:$N" \
    --fetchers "127.0.0.1:$F" --admin-token-file "$E2E_TMP/open.token" 2>"$E2E_TMP/open.err" || rc=$?
e2e_check "a router refuses a token file others can read (rc $rc: $(tail -n 1 "$E2E_TMP/open.err"))" \
    grep -q "chmod 600" "$E2E_TMP/open.err"
e2e_bg "$MONOFS_BIN" router --port "$P" --http-port "$H" --nodes "n1=127.0.0.1:$N" \
    --fetchers "127.0.0.1:$F" --admin-token-file "$TOKEN"
e2e_wait_port "$P" 30; e2e_wait_port "$H" 30
listening() { ss -Htln "sport = :$1" | awk '{print $4}' | sort -u | tr '\n' ' '; }
for what in "router NFS:$P" "router HTTP:$H" "fetcher:$F"; do
    port=${what##*:}
    e2e_check "${what%%:*} listens on loopback only by default ($(listening "$port"))" \
        test "$(listening "$port")" = "127.0.0.1:$port "
done

# No token file given and none in the (empty) default data directory.
rc=0
MONOFS_DATA_DIR="$E2E_TMP/empty" "$MONOFS_BIN" ingest "$repo" --router "http://127.0.0.1:$H" \
    </dev/null 2>"$E2E_TMP/notoken.err" || rc=$?
e2e_check "monofs ingest without the token: exit 1, 401 ($(tail -n 1 "$E2E_TMP/notoken.err"))" \
    bash -c "[ $rc = 1 ] && grep -q 401 '$E2E_TMP/notoken.err'"
for url in "file://$repo" "$repo"; do
    rc=0
    "$MONOFS_BIN" ingest "$url" --router "http://127.0.0.1:$H" --admin-token-file "$TOKEN" \
        </dev/null 2>"$E2E_TMP/local.err" || rc=$?
    e2e_check "a fetcher without --allow-local-sources refuses $url ($(tail -n 1 "$E2E_TMP/local.err"))" \
        bash -c "[ $rc = 1 ] && grep -q -- --allow-local-sources '$E2E_TMP/local.err'"
done
e2e_check "nothing was published" test "$(curl -fsS "http://127.0.0.1:$H/api/repos")" = "[]"

e2e_step "another network namespace: a router without a token file takes changes from loopback only"
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
    NS="mfs26-$$" VH="mfs26h$$" VN="mfs26n$$"
    e2e_at_exit "ip netns del $NS 2>/dev/null; ip link del $VH 2>/dev/null"
    ip netns add "$NS"
    ip link add "$VH" type veth peer name "$VN"
    ip link set "$VN" netns "$NS"
    ip addr add 10.226.0.1/30 dev "$VH"; ip link set "$VH" up
    ip -n "$NS" addr add 10.226.0.2/30 dev "$VN"; ip -n "$NS" link set "$VN" up; ip -n "$NS" link set lo up
    ports=($(e2e_free_ports 2))
    P2=${ports[0]} H2=${ports[1]}
    e2e_bg "$MONOFS_BIN" router --bind 0.0.0.0 --port "$P2" --http-port "$H2" --nodes "n1=127.0.0.1:$N" \
        --fetchers "127.0.0.1:$F"
    e2e_wait_port "$P2" 30; e2e_wait_port "$H2" 30
    e2e_check "GET /healthz from the namespace answers" \
        ip netns exec "$NS" curl -fsS -m 10 -o /dev/null "http://10.226.0.1:$H2/healthz"
    code=$(ip netns exec "$NS" curl -sS -m 10 -o "$E2E_TMP/post.body" -w '%{http_code}' -X POST \
        -d '{"url": "https://example.invalid/a/b"}' "http://10.226.0.1:$H2/api/ingest")
    e2e_check "POST /api/ingest from the namespace: 403 ($(json_error))" test "$code" = 403
    code=$(post "http://127.0.0.1:$H2/api/ingest" -d '{}')
    e2e_check "POST from loopback passes the boundary (400 for the empty body)" test "$code" = 400
else
    echo "skipped: needs root and ip(8) for a network namespace"
fi

e2e_done

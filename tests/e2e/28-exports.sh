#!/usr/bin/env bash
# Host-side end-to-end test of the router's NFS export rules (--exports, docs/exports.md):
#   - `monofs up --exports` with a broken file exits 1 naming file:line:column, before
#     anything starts
#   - rules `/ 127.0.0.2/32(insecure)`: `monofs ls/cat` from 127.0.0.1 are refused (MNT
#     ACCES), libnfs nfs-ls from 127.0.0.1 too; `monofs ls/cat --bind 127.0.0.2` serve the
#     ingested repository; a raw RPC client shows MNT3ERR_ACCES from 127.0.0.1 and that a
#     root handle obtained from 127.0.0.2 gets AUTH_ERROR/AUTH_BADCRED from 127.0.0.1
#   - rules `/ 127.0.0.1(no_root_squash)` (secure): MNT and GETATTR from a port < 1024
#     succeed, from an unprivileged port MNT3ERR_ACCES and NFS3ERR_PERM (needs root to bind
#     a privileged port; skipped otherwise)
#   - without --exports (the default `/ *(ro,root_squash,insecure)`), `monofs ls` works
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

e2e_step "a small repository"
REPO="$E2E_TMP/src/tiny"
mkdir -p "$REPO"
git -C "$REPO" init -q -b main
printf 'exported\n' >"$REPO/readme.txt"
printf '#!/bin/sh\necho hi\n' >"$REPO/run.sh"
chmod 755 "$REPO/run.sh"
git -C "$REPO" add -A
git -C "$REPO" -c user.name=t -c user.email=t@example.com commit -q -m one
WANT_SHA=$(sha256sum "$REPO/readme.txt" | cut -d' ' -f1)

cat >"$E2E_TMP/rpc.py" <<'PY'
"""Raw ONC RPC over TCP from a chosen source: rpc.py SRC_IP SRC_PORT SERVER_PORT UID [FH_HEX]
MNT "/" (MOUNT v3) and, with the handle it returns or FH_HEX, GETATTR (NFS v3).
Prints one JSON object: mnt status and handle, getattr reply kind and status."""
import json, socket, struct, sys

src_ip, src_port, port, uid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fh_arg = bytes.fromhex(sys.argv[5]) if len(sys.argv) > 5 else None

def opaque(b):
    return struct.pack(">I", len(b)) + b + b"\0" * (-len(b) % 4)

def call(sock, xid, prog, vers, proc, args):
    cred = struct.pack(">I", 0) + opaque(b"e2e") + struct.pack(">III", uid, uid, 0)
    body = struct.pack(">IIIIII", xid, 0, 2, prog, vers, proc) + struct.pack(">I", 1) + opaque(cred)
    body += struct.pack(">II", 0, 0) + args
    sock.sendall(struct.pack(">I", 0x80000000 | len(body)) + body)
    hdr = recv(sock, 4)
    n = struct.unpack(">I", hdr)[0] & 0x7FFFFFFF
    return recv(sock, n)

def recv(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise SystemExit("connection closed")
        out += chunk
    return out

def connect():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(20)
    s.bind((src_ip, src_port))
    s.connect(("127.0.0.1", port))
    return s

def reply_kind(r):
    # xid, REPLY, then MSG_ACCEPTED (verifier, accept_stat) or MSG_DENIED (reject_stat, auth_stat)
    _, _, stat = struct.unpack(">III", r[:12])
    if stat == 1:
        reject, why = struct.unpack(">II", r[12:20])
        return {"denied": True, "reject_stat": reject, "auth_stat": why}, None
    accept = struct.unpack(">I", r[20:24])[0]
    return {"denied": False, "accept_stat": accept}, r[24:]

out = {}
with connect() as s:
    kind, rest = reply_kind(call(s, 1, 100005, 3, 1, opaque(b"/")))
    out["mnt"] = kind
    fh = fh_arg
    if rest is not None:
        out["mnt_status"] = struct.unpack(">I", rest[:4])[0]
        if out["mnt_status"] == 0:
            n = struct.unpack(">I", rest[4:8])[0]
            out["fh"] = rest[8:8 + n].hex()
            fh = fh or rest[8:8 + n]
    if fh is not None:
        kind, rest = reply_kind(call(s, 2, 100003, 3, 1, opaque(fh)))
        out["getattr"] = kind
        if rest is not None:
            out["getattr_status"] = struct.unpack(">I", rest[:4])[0]
print(json.dumps(out))
PY
rpc() { python3 "$E2E_TMP/rpc.py" "$@"; }
field() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); v=d
for k in sys.argv[2].split("."): v = v.get(k) if isinstance(v, dict) else None
print(v)' "$1" "$2"; }

e2e_step "a broken exports file is refused before anything starts"
printf '# rules\n/ 127.0.0.2/32(ro,insecure,bogus)\n' >"$E2E_TMP/bad.exports"
set +e
timeout 60 "$MONOFS_BIN" up --data-dir "$E2E_TMP/bad-data" --exports "$E2E_TMP/bad.exports" \
    --port "$(e2e_free_ports 1)" >"$E2E_TMP/bad.out" 2>&1
rc=$?
set -e
sed 's/^/    /' "$E2E_TMP/bad.out"
e2e_check "monofs up --exports BAD exits 1" test "$rc" = 1
e2e_check "the error names file:2:28 and the option" grep -q "bad.exports:2:28: .*found 'bogus'" "$E2E_TMP/bad.out"

e2e_step "rules: / 127.0.0.2/32(insecure)"
printf '# only the second loopback address\n/ 127.0.0.2/32(insecure)\n' >"$E2E_TMP/only2.exports"
DATA="$E2E_TMP/data"
e2e_up "$DATA" --nodes 1 --exports "$E2E_TMP/only2.exports"
e2e_ingest "$REPO" >/dev/null 2>"$E2E_TMP/ingest.err" || { cat "$E2E_TMP/ingest.err"; e2e_fail "ingest"; }

set +e
"$MONOFS_BIN" ls /local/tiny >"$E2E_TMP/ls1.out" 2>"$E2E_TMP/ls1.err"
rc=$?
set -e
e2e_check "monofs ls from 127.0.0.1 fails with status 1 (got $rc)" test "$rc" = 1
e2e_check "monofs ls from 127.0.0.1: MNT3ERR_ACCES ($(cat "$E2E_TMP/ls1.err"))" grep -q "MNT3ERR_ACCES" "$E2E_TMP/ls1.err"
got=$("$MONOFS_BIN" ls --bind 127.0.0.2 /local/tiny | LC_ALL=C sort | tr '\n' ' ')
e2e_check "monofs ls --bind 127.0.0.2 lists the repository ($got)" test "$got" = "readme.txt run.sh "
sha=$("$MONOFS_BIN" cat --bind 127.0.0.2 /local/tiny/readme.txt | sha256sum | cut -d' ' -f1)
e2e_check "monofs cat --bind 127.0.0.2 serves the file" test "$sha" = "$WANT_SHA"
e2e_check "MONOFS_BIND=127.0.0.2 works as --bind" \
    bash -c "MONOFS_BIND=127.0.0.2 '$MONOFS_BIN' stat /local/tiny/run.sh | grep -q 'Mode: 0755'"

if command -v nfs-ls >/dev/null; then
    Q="version=3&nfsport=$E2E_NFS_PORT&mountport=$E2E_NFS_PORT"
    e2e_check "libnfs nfs-ls from 127.0.0.1 is refused" bash -c "! timeout 60 nfs-ls 'nfs://127.0.0.1/local/tiny?$Q' >/dev/null 2>&1"
fi

r2=$(rpc 127.0.0.2 0 "$E2E_NFS_PORT" 1000)
echo "    from 127.0.0.2: $r2"
e2e_check "raw MNT from 127.0.0.2 succeeds" test "$(field "$r2" mnt_status)" = 0
e2e_check "raw GETATTR from 127.0.0.2 succeeds" test "$(field "$r2" getattr_status)" = 0
r1=$(rpc 127.0.0.1 0 "$E2E_NFS_PORT" 1000 "$(field "$r2" fh)")
echo "    from 127.0.0.1: $r1"
e2e_check "raw MNT from 127.0.0.1: MNT3ERR_ACCES (13)" test "$(field "$r1" mnt_status)" = 13
e2e_check "raw GETATTR from 127.0.0.1 with a valid handle: MSG_DENIED AUTH_ERROR AUTH_BADCRED" \
    test "$(field "$r1" getattr.denied)/$(field "$r1" getattr.reject_stat)/$(field "$r1" getattr.auth_stat)" = "True/1/1"
e2e_stop "$E2E_UP_PID"

e2e_step "rules: / 127.0.0.1(no_root_squash) (secure)"
if [ "$(id -u)" = 0 ]; then
    printf '/ 127.0.0.1(no_root_squash)\n' >"$E2E_TMP/secure.exports"
    e2e_up "$DATA" --nodes 1 --exports "$E2E_TMP/secure.exports"
    priv=""
    for p in $(seq 700 1000); do
        if r=$(rpc 127.0.0.1 "$p" "$E2E_NFS_PORT" 0 2>/dev/null); then priv=$r; break; fi
    done
    echo "    from a privileged port: $priv"
    e2e_check "MNT from a port < 1024 succeeds" test "$(field "$priv" mnt_status)" = 0
    e2e_check "GETATTR from a port < 1024 succeeds" test "$(field "$priv" getattr_status)" = 0
    unpriv=$(rpc 127.0.0.1 0 "$E2E_NFS_PORT" 0 "$(field "$priv" fh)")
    echo "    from an unprivileged port: $unpriv"
    e2e_check "MNT from an unprivileged port: MNT3ERR_ACCES" test "$(field "$unpriv" mnt_status)" = 13
    e2e_check "GETATTR from an unprivileged port: NFS3ERR_PERM (1)" test "$(field "$unpriv" getattr_status)" = 1
    e2e_stop "$E2E_UP_PID"
else
    echo "not root: privileged source ports unavailable, skipped"
fi

e2e_step "no --exports: / *(ro,root_squash,insecure)"
e2e_up "$DATA" --nodes 1
got=$("$MONOFS_BIN" ls /local/tiny | LC_ALL=C sort | tr '\n' ' ')
e2e_check "monofs ls from 127.0.0.1 lists the repository" test "$got" = "readme.txt run.sh "
r=$(rpc 127.0.0.3 0 "$E2E_NFS_PORT" 0)
e2e_check "raw MNT and GETATTR as root from 127.0.0.3, an unprivileged port" \
    test "$(field "$r" mnt_status)/$(field "$r" getattr_status)" = "0/0"
e2e_stop "$E2E_UP_PID"

e2e_done

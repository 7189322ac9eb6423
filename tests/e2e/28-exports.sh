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
"""Raw ONC RPC over TCP from a chosen source: rpc.py SRC_IP SRC_PORT|priv SERVER_PORT UID [FH_HEX]
MNT "/" (MOUNT v3) then GETATTR (NFS v3) of FH_HEX or of the handle MNT returned, with an
AUTH_SYS credential for UID. `priv` binds the first free port of 700..1023. Prints JSON:
{"mnt": mountstat3 or "denied:REJECT:AUTH", "fh": hex, "getattr": nfsstat3 or "denied:..."}."""
import json, socket, struct, sys

src_ip, src_port, port, uid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fh = bytes.fromhex(sys.argv[5]) if len(sys.argv) > 5 else None

def opaque(b):
    return struct.pack(">I", len(b)) + b + b"\0" * (-len(b) % 4)

def recv(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise SystemExit("connection closed")
        out += chunk
    return out

def call(sock, xid, prog, vers, proc, args):
    """The call's outcome: the first word of the results, or "denied:REJECT:AUTH"; and the rest."""
    cred = struct.pack(">I", 0) + opaque(b"e2e") + struct.pack(">III", uid, uid, 0)
    body = struct.pack(">IIIIII", xid, 0, 2, prog, vers, proc) + struct.pack(">I", 1) + opaque(cred)
    body += struct.pack(">II", 0, 0) + args
    sock.sendall(struct.pack(">I", 0x80000000 | len(body)) + body)
    r = recv(sock, struct.unpack(">I", recv(sock, 4))[0] & 0x7FFFFFFF)
    if struct.unpack(">I", r[8:12])[0] == 1:
        return "denied:%d:%d" % struct.unpack(">II", r[12:20]), b""
    assert struct.unpack(">I", r[20:24])[0] == 0, "accept_stat"
    return struct.unpack(">I", r[24:28])[0], r[28:]

def connect():
    for p in (range(700, 1024) if src_port == "priv" else [int(src_port)]):
        s = socket.socket()
        s.settimeout(20)
        try:
            s.bind((src_ip, p))
        except OSError:
            s.close()
            continue
        s.connect(("127.0.0.1", port))
        return s
    raise SystemExit("no source port")

out = {}
with connect() as s:
    out["mnt"], rest = call(s, 1, 100005, 3, 1, opaque(b"/"))
    if out["mnt"] == 0:
        n = struct.unpack(">I", rest[:4])[0]
        out["fh"] = rest[4:4 + n].hex()
        fh = fh or rest[4:4 + n]
    if fh is not None:
        out["getattr"] = call(s, 2, 100003, 3, 1, opaque(fh))[0]
print(json.dumps(out))
PY
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2]))' "$1" "$2"; }
# rpc_expect WHAT SRC_IP SRC_PORT|priv UID FH|"" WANT_MNT WANT_GETATTR: MNT and GETATTR from
# SRC through rpc.py, checked; the reply is left in RPC_OUT.
rpc_expect() {
    local what="$1" want_mnt="$6" want_getattr="$7"
    RPC_OUT=$(python3 "$E2E_TMP/rpc.py" "$2" "$3" "$E2E_NFS_PORT" "$4" ${5:+"$5"})
    echo "    $what: $RPC_OUT"
    e2e_check "MNT $what: $want_mnt" test "$(field "$RPC_OUT" mnt)" = "$want_mnt"
    e2e_check "GETATTR $what: $want_getattr" test "$(field "$RPC_OUT" getattr)" = "$want_getattr"
}

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
e2e_ingest "$REPO" --source-id local/tiny >/dev/null 2>"$E2E_TMP/ingest.err" || { cat "$E2E_TMP/ingest.err"; e2e_fail "ingest"; }

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

rpc_expect "from 127.0.0.2" 127.0.0.2 0 1000 "" 0 0
# A valid handle does not help an address no rule names: AUTH_ERROR / AUTH_BADCRED.
rpc_expect "from 127.0.0.1 with 127.0.0.2's handle" 127.0.0.1 0 1000 "$(field "$RPC_OUT" fh)" 13 denied:1:1
e2e_stop "$E2E_UP_PID"

e2e_step "rules: / 127.0.0.1(no_root_squash) (secure)"
if [ "$(id -u)" = 0 ]; then
    printf '/ 127.0.0.1(no_root_squash)\n' >"$E2E_TMP/secure.exports"
    e2e_up "$DATA" --nodes 1 --exports "$E2E_TMP/secure.exports"
    rpc_expect "as root from a port < 1024" 127.0.0.1 priv 0 "" 0 0
    rpc_expect "as root from an unprivileged port" 127.0.0.1 0 0 "$(field "$RPC_OUT" fh)" 13 1
    e2e_stop "$E2E_UP_PID"
else
    echo "not root: privileged source ports unavailable, skipped"
fi

e2e_step "no --exports: / *(ro,root_squash,insecure)"
e2e_up "$DATA" --nodes 1
got=$("$MONOFS_BIN" ls /local/tiny | LC_ALL=C sort | tr '\n' ' ')
e2e_check "monofs ls from 127.0.0.1 lists the repository" test "$got" = "readme.txt run.sh "
rpc_expect "as root from 127.0.0.3, an unprivileged port" 127.0.0.3 0 0 "" 0 0
e2e_stop "$E2E_UP_PID"

e2e_done

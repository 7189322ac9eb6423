#!/usr/bin/env bash
# Host-side protocol robustness test of the MonoFS router's NFS port, with raw ONC RPC
# over TCP (python3 stdlib, every socket operation bounded by a timeout):
#   - broken framing: a record whose body is a truncated RPC header, a stream that ends
#     inside a record, fragment headers announcing 2 GiB: the connection is closed, the
#     server neither answers garbage nor hangs
#   - RPC-level refusals: GARBAGE_ARGS, RPC_MISMATCH, PROG_UNAVAIL, PROC_UNAVAIL,
#     PROG_MISMATCH (NFS v4 -> 3..3), AUTH_ERROR
#   - NFS errors: random 64-byte handle -> BADHANDLE/STALE; WRITE, CREATE, MKDIR, SYMLINK,
#     REMOVE, RMDIR, RENAME, SETATTR on real handles -> ROFS; stale cookie verifier ->
#     BAD_COOKIE
#   - PORTMAP GETPORT for NFS and MOUNT v3/tcp returns the NFS port
#   - a 20,000-entry READDIRPLUS walk with a 4 KiB maxcount lists every name exactly once
#     and never exceeds maxcount
#   - 50 concurrent connections doing GETATTR loops; 64 pipelined calls on one connection
#   - afterwards: GETATTR still answers, `monofs cat` works, the process is alive
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"


e2e_repos_locked
CONTENT_MF=$(e2e_manifest content)

e2e_up "$E2E_TMP/data" --nodes 2 --shards 1
echo "NFS $E2E_SERVER, HTTP $E2E_ROUTER, pid $E2E_UP_PID"
"$MONOFS_BIN" ingest "$MONOFS_TEST_REPOS/content" --source-id local/content --router "$E2E_ROUTER" </dev/null 2>&1 | tail -n 1
e2e_check "content ingested" "$MONOFS_BIN" stat /local/content/README.md >/dev/null

# the names of many/, as the manifest has them
awk -F'\t' '$6 ~ /^many\// { sub(/^many\//, "", $6); print $6 }' "$CONTENT_MF" >"$E2E_TMP/many.names"
echo "many/: $(wc -l <"$E2E_TMP/many.names") names in the manifest"

cat >"$E2E_TMP/rpc.py" <<'PY'
import os, random, socket, struct, sys, threading, time

PORT = int(sys.argv[1])
MANY_NAMES = open(sys.argv[2], "rb").read().split(b"\n")[:-1]
TIMEOUT = 5.0
ok = bad = 0

def check(cond, msg):
    global ok, bad
    if cond:
        ok += 1
        print(f"ok: {msg}", flush=True)
    else:
        bad += 1
        print(f"FAIL: {msg}", flush=True)

# ------------------------------------------------------------------ XDR / RPC
def u32(v): return struct.pack(">I", v & 0xFFFFFFFF)
def u64(v): return struct.pack(">Q", v)
def opaque(b): return u32(len(b)) + b + b"\0" * (-len(b) % 4)

AUTH_UNIX = u32(1) + opaque(u32(0) + opaque(b"monofs-e2e") + u32(0) + u32(0) + u32(0))
AUTH_NONE = u32(0) + u32(0)

NFS, MOUNT, PMAP = 100003, 100005, 100000
NFS3_OK, ERR_ROFS, ERR_STALE, ERR_BADHANDLE, ERR_BAD_COOKIE = 0, 30, 70, 10001, 10003

def call_body(xid, prog, vers, proc, args=b"", rpcvers=2, cred=AUTH_UNIX):
    return u32(xid) + u32(0) + u32(rpcvers) + u32(prog) + u32(vers) + u32(proc) + cred + AUTH_NONE + args

def record(body):
    return u32(0x80000000 | len(body)) + body

class Dec:
    def __init__(self, b): self.b, self.i = b, 0
    def u32(self):
        v = struct.unpack_from(">I", self.b, self.i)[0]; self.i += 4; return v
    def u64(self):
        v = struct.unpack_from(">Q", self.b, self.i)[0]; self.i += 8; return v
    def opaque(self):
        n = self.u32(); v = self.b[self.i:self.i + n]
        if len(v) != n: raise ValueError("short opaque")
        self.i += n + (-n % 4); return v
    def fixed(self, n):
        v = self.b[self.i:self.i + n]; self.i += n; return v
    def skip_post_op_attr(self):
        if self.u32(): self.fixed(84)
    def post_op_attr(self):
        return self.fixed(84) if self.u32() else None
    def skip_wcc(self):
        if self.u32(): self.fixed(24)   # pre_op_attr: size, mtime, ctime
        self.skip_post_op_attr()
    def left(self): return len(self.b) - self.i

def connect():
    s = socket.create_connection(("127.0.0.1", PORT), timeout=TIMEOUT)
    s.settimeout(TIMEOUT)
    return s

def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf

def recv_record(s):
    out = b""
    while True:
        h = struct.unpack(">I", recv_exact(s, 4))[0]
        out += recv_exact(s, h & 0x7FFFFFFF)
        if h & 0x80000000:
            return out

def parse_reply(rec, xid):
    """-> (kind, detail, Dec positioned at the results)"""
    d = Dec(rec)
    if d.u32() != xid: raise ValueError("xid mismatch")
    if d.u32() != 1: raise ValueError("not a reply")
    if d.u32() == 1:  # MSG_DENIED
        rs = d.u32()
        if rs == 0:
            return ("RPC_MISMATCH", (d.u32(), d.u32()), d)
        return ("AUTH_ERROR", d.u32(), d)
    d.u32(); d.opaque()  # verifier
    st = d.u32()
    if st == 2:
        return ("PROG_MISMATCH", (d.u32(), d.u32()), d)
    return ({0: "SUCCESS", 1: "PROG_UNAVAIL", 3: "PROC_UNAVAIL", 4: "GARBAGE_ARGS", 5: "SYSTEM_ERR"}.get(st, f"accept_stat {st}"), None, d)

_xid = random.randrange(1 << 30)
def next_xid():
    global _xid
    _xid += 1
    return _xid

class Client:
    def __init__(self): self.s = connect()
    def call(self, prog, vers, proc, args=b"", **kw):
        xid = next_xid()
        self.s.sendall(record(call_body(xid, prog, vers, proc, args, **kw)))
        return parse_reply(recv_record(self.s), xid)
    def close(self): self.s.close()

def closed_without_reply(s, wait=TIMEOUT):
    """True if the server closes the connection (EOF/reset) without sending anything."""
    s.settimeout(wait)
    try:
        data = s.recv(4096)
        return data == b"", f"got {len(data)} bytes"
    except (ConnectionResetError, BrokenPipeError):
        return True, "reset"
    except socket.timeout:
        return False, f"still open after {wait}s"

def server_alive():
    try:
        c = Client(); k, _, _ = c.call(NFS, 3, 0); c.close(); return k == "SUCCESS"
    except Exception:
        return False

# ------------------------------------------------------------------ NFS helpers
def mnt(c, path):
    k, _, d = c.call(MOUNT, 3, 1, opaque(path))
    assert k == "SUCCESS", k
    st = d.u32()
    assert st == 0, f"MNT {path!r}: status {st}"
    return d.opaque()

def lookup(c, dirfh, name):
    k, _, d = c.call(NFS, 3, 3, opaque(dirfh) + opaque(name))
    assert k == "SUCCESS", k
    st = d.u32()
    if st != NFS3_OK:
        return st, None
    return st, d.opaque()

def getattr_status(c, fh):
    k, _, d = c.call(NFS, 3, 1, opaque(fh))
    return k, (d.u32() if k == "SUCCESS" else None)

SATTR_NONE = u32(0) * 4 + u32(0) + u32(0)       # mode uid gid size: not set; atime, mtime DONT_CHANGE
SATTR_MODE = u32(1) + u32(0o644) + u32(0) * 3 + u32(0) + u32(0)

def step(name):
    print(f"\n== {name}", flush=True)

t0 = time.time()

# ------------------------------------------------------------------ framing
step("broken framing")
s = connect()
s.sendall(record(b"\x00\x00\x00\x01\x00\x00"))          # 6 bytes: not even xid + msg type + rpcvers
r, why = closed_without_reply(s); s.close()
check(r, f"record holding a truncated RPC header: connection closed without a reply ({why})")

s = connect()
body = call_body(next_xid(), NFS, 3, 0)
s.sendall(u32(0x80000000 | (len(body) + 100)) + body)   # announces 100 bytes more than it sends
s.shutdown(socket.SHUT_WR)
r, why = closed_without_reply(s); s.close()
check(r, f"stream ending inside a record: connection closed without a reply ({why})")

for hdr, what in ((0xFFFFFFFF, "last fragment of 2 GiB"), (0x7FFFFFFF, "non-last fragment of 2 GiB")):
    s = connect()
    t = time.time()
    s.sendall(u32(hdr) + b"\0" * 64)
    r, why = closed_without_reply(s); s.close()
    check(r, f"{what}: connection closed, not left hanging ({why}, {time.time() - t:.2f}s)")

s = connect()
frag = call_body(next_xid(), NFS, 3, 0)
s.sendall(u32(len(frag)) + frag)                         # fragments adding up past the record limit
try:
    for _ in range(20):
        s.sendall(u32(64 * 1024) + b"\0" * (64 * 1024))
    r, why = closed_without_reply(s)
except (ConnectionResetError, BrokenPipeError):
    r, why = True, "reset while sending"
s.close()
check(r, f"fragments adding up to 1.3 MiB (> record limit): connection closed ({why})")

# a valid call split over several fragments is reassembled
s = connect(); xid = next_xid(); body = call_body(xid, NFS, 3, 0)
s.sendall(u32(5) + body[:5] + u32(0) + u32(0x80000000 | (len(body) - 5)) + body[5:])
try:
    k, _, _ = parse_reply(recv_record(s), xid)
except Exception as e:
    k = repr(e)
s.close()
check(k == "SUCCESS", f"NULL call split into 3 fragments (one empty) is answered: {k}")

check(server_alive(), "server answers NULL after the framing abuse")

# ------------------------------------------------------------------ RPC-level refusals
step("RPC-level refusals")
c = Client()
k, det, _ = c.call(NFS, 3, 1, b"\xff\xff\xff\xff")
check(k == "GARBAGE_ARGS", f"GETATTR with a 4 GiB handle length: {k} (want GARBAGE_ARGS, accept_stat 4)")
k, det, _ = c.call(NFS, 3, 1, b"")
check(k == "GARBAGE_ARGS", f"GETATTR with no arguments: {k}")
k, det, _ = c.call(NFS, 3, 1, opaque(b"x" * 65))
check(k == "GARBAGE_ARGS", f"GETATTR with a 65-byte handle: {k}")
k, det, _ = c.call(NFS, 3, 0, rpcvers=3)
check(k == "RPC_MISMATCH" and det == (2, 2), f"RPC version 3: {k} {det} (want MSG_DENIED/RPC_MISMATCH 2..2)")
k, det, _ = c.call(400000, 1, 0)
check(k == "PROG_UNAVAIL", f"unknown program 400000: {k}")
k, det, _ = c.call(NFS, 4, 0)
check(k == "PROG_MISMATCH" and det == (3, 3), f"NFS v4 NULL: {k} {det} (want PROG_MISMATCH 3..3)")
k, det, _ = c.call(NFS, 2, 0)
check(k == "PROG_MISMATCH" and det == (3, 3), f"NFS v2 NULL: {k} {det}")
k, det, _ = c.call(MOUNT, 1, 0)
check(k == "PROG_MISMATCH" and det == (3, 3), f"MOUNT v1 NULL: {k} {det}")
k, det, _ = c.call(NFS, 3, 99)
check(k == "PROC_UNAVAIL", f"NFS procedure 99: {k}")
k, det, _ = c.call(NFS, 3, 0, cred=u32(6) + opaque(b"\0" * 8))   # RPCSEC_GSS
check(k == "AUTH_ERROR", f"unsupported credential flavor 6: {k} {det}")
k, det, _ = c.call(NFS, 3, 0, cred=u32(1) + opaque(b"\0" * 3))
check(k == "AUTH_ERROR", f"malformed AUTH_UNIX body: {k} {det}")
k, _, _ = c.call(NFS, 3, 0)
check(k == "SUCCESS", "the same connection still serves NULL after the refusals")
c.close()

# ------------------------------------------------------------------ PORTMAP
step("PORTMAP")
c = Client()
for prog, name in ((NFS, "NFS"), (MOUNT, "MOUNT")):
    k, _, d = c.call(PMAP, 2, 3, u32(prog) + u32(3) + u32(6) + u32(0))
    port = d.u32() if k == "SUCCESS" else None
    check(port == PORT, f"GETPORT {name} v3 tcp: {port} (want {PORT})")
k, _, d = c.call(PMAP, 2, 3, u32(NFS) + u32(3) + u32(17) + u32(0))
port = d.u32() if k == "SUCCESS" else None
check(port == 0, f"GETPORT NFS v3 udp: {port} (want 0: TCP only)")
k, _, d = c.call(PMAP, 2, 1, u32(123456) + u32(1) + u32(6) + u32(1234))
res = d.u32() if k == "SUCCESS" else None
check(res == 0, f"PORTMAP SET is refused: {k} {res}")
c.close()

# ------------------------------------------------------------------ handles
step("handles and read-only procedures")
c = Client()
root = mnt(c, b"/")
content = mnt(c, b"/local/content")
check(len(root) <= 64 and len(content) <= 64, f"MNT handles: / {len(root)} bytes, /local/content {len(content)} bytes")
k, st = getattr_status(c, content)
check(st == NFS3_OK, f"GETATTR /local/content: {k} status {st}")
st, readme = lookup(c, content, b"README.md")
check(st == NFS3_OK, f"LOOKUP README.md: status {st}")
st, files = lookup(c, content, b"files")
st2, _ = lookup(c, content, b"no-such-name")
check(st2 == 2, f"LOOKUP of a missing name: status {st2} (want NOENT 2)")
rnd = random.Random(1)
for i in range(5):
    fh = bytes(rnd.randrange(256) for _ in range(64))
    k, st = getattr_status(c, fh)
    check(st in (ERR_BADHANDLE, ERR_STALE), f"GETATTR of random 64-byte handle #{i}: {k} status {st} (want 10001 or 70)")
k, st = getattr_status(c, b"")
check(st in (ERR_BADHANDLE, ERR_STALE), f"GETATTR of an empty handle: {k} status {st}")
# a real handle with its last byte flipped
k, st = getattr_status(c, readme[:-1] + bytes([readme[-1] ^ 0xFF]))
check(st in (ERR_BADHANDLE, ERR_STALE, NFS3_OK), f"GETATTR of a corrupted real handle: {k} status {st} (no crash)")

def nfs_status(proc, args):
    k, _, d = c.call(NFS, 3, proc, args)
    return k, (d.u32() if k == "SUCCESS" else None)

mutations = [
    ("SETATTR", 2, opaque(readme) + SATTR_MODE + u32(0)),
    ("WRITE", 7, opaque(readme) + u64(0) + u32(5) + u32(2) + opaque(b"hello")),
    ("CREATE", 8, opaque(content) + opaque(b"new-file") + u32(0) + SATTR_NONE),
    ("MKDIR", 9, opaque(content) + opaque(b"new-dir") + SATTR_NONE),
    ("SYMLINK", 10, opaque(content) + opaque(b"new-link") + SATTR_NONE + opaque(b"README.md")),
    ("REMOVE", 12, opaque(content) + opaque(b"README.md")),
    ("RMDIR", 13, opaque(content) + opaque(b"files")),
    ("RENAME", 14, opaque(content) + opaque(b"README.md") + opaque(content) + opaque(b"README2.md")),
    ("LINK", 15, opaque(readme) + opaque(content) + opaque(b"hardlink")),
    ("COMMIT", 21, opaque(readme) + u64(0) + u32(0)),
]
for name, proc, args in mutations:
    k, st = nfs_status(proc, args)
    check(st == ERR_ROFS, f"{name} on a real handle: {k} status {st} (want ROFS 30)")
k, st = nfs_status(2, opaque(root) + SATTR_MODE + u32(0))
check(st == ERR_ROFS, f"SETATTR on the root: status {st}")
st, readme_again = lookup(c, content, b"README.md")
check(st == NFS3_OK and readme_again == readme, "README.md still there with the same handle")
c.close()

# ------------------------------------------------------------------ READDIRPLUS walk
step("READDIRPLUS walk of many/ (20,000 entries) with maxcount 4096")
c = Client()
st, many = lookup(c, content, b"many")
check(st == NFS3_OK, f"LOOKUP many: status {st}")
MAXCOUNT, DIRCOUNT = 4096, 1024
cookie, verf, names, calls, oversize, handles = 0, b"\0" * 8, [], 0, 0, 0
walk_t = time.time()
while True:
    args = opaque(many) + u64(cookie) + verf + u32(DIRCOUNT) + u32(MAXCOUNT)
    xid = next_xid()
    c.s.sendall(record(call_body(xid, NFS, 3, 17, args)))
    rec = recv_record(c.s)
    k, _, d = parse_reply(rec, xid)
    calls += 1
    assert k == "SUCCESS", k
    results_len = d.left()
    if results_len > MAXCOUNT:
        oversize += 1
    st = d.u32()
    d.skip_post_op_attr()
    if st != NFS3_OK:
        check(False, f"READDIRPLUS cookie {cookie}: status {st}")
        break
    verf = d.fixed(8)
    page = 0
    while d.u32():
        d.u64()
        names.append(d.opaque())
        cookie = d.u64()
        d.skip_post_op_attr()
        if d.u32():
            d.opaque(); handles += 1
        page += 1
    eof = d.u32()
    if eof:
        break
    if page == 0:
        check(False, f"READDIRPLUS: empty page without eof at cookie {cookie}")
        break
    if calls > 100000:
        check(False, "READDIRPLUS: no eof after 100000 calls")
        break
names = [n for n in names if n not in (b".", b"..")]
print(f"{calls} READDIRPLUS calls, {len(names)} entries, {time.time() - walk_t:.1f}s")
dups = len(names) - len(set(names))
check(sorted(names) == sorted(MANY_NAMES),
      f"READDIRPLUS walk lists every name of many/ exactly once: {len(names)} names, {dups} duplicated, "
      f"{len(set(MANY_NAMES) - set(names))} missing, want {len(MANY_NAMES)}")
check(handles >= len(names), f"every READDIRPLUS entry carries a handle ({handles})")
check(oversize == 0, f"no READDIRPLUS reply exceeds maxcount {MAXCOUNT} ({oversize} did)")
check(calls >= len(MANY_NAMES) * 100 // MAXCOUNT, f"walk took {calls} calls: pages were really bounded")

step("READDIR with a stale cookie verifier")
args = opaque(many) + u64(0) + b"\0" * 8 + u32(4096)
k, _, d = c.call(NFS, 3, 16, args)
st = d.u32(); d.skip_post_op_attr()
verf = d.fixed(8)
last = None
while d.u32():
    d.u64(); d.opaque(); last = d.u64()
check(st == NFS3_OK and last is not None and verf != b"\0" * 8, f"READDIR first page: status {st}, verifier {verf.hex()}, last cookie {last}")
k, _, d = c.call(NFS, 3, 16, opaque(many) + u64(last) + verf + u32(4096))
st = d.u32()
check(st == NFS3_OK, f"READDIR with the right verifier continues: status {st}")
stale = bytes(b ^ 0x5A for b in verf)
k, _, d = c.call(NFS, 3, 16, opaque(many) + u64(last) + stale + u32(4096))
st = d.u32()
check(st == ERR_BAD_COOKIE, f"READDIR with a stale verifier: status {st} (want BAD_COOKIE 10003)")
k, _, d = c.call(NFS, 3, 17, opaque(many) + u64(last) + stale + u32(1024) + u32(4096))
st = d.u32()
check(st == ERR_BAD_COOKIE, f"READDIRPLUS with a stale verifier: status {st} (want BAD_COOKIE 10003)")
k, _, d = c.call(NFS, 3, 16, opaque(many) + u64(1 << 40) + verf + u32(4096))
st = d.u32()
check(st in (ERR_BAD_COOKIE, NFS3_OK), f"READDIR with a cookie beyond the end: status {st} (BAD_COOKIE or empty eof)")
k, _, d = c.call(NFS, 3, 16, opaque(many) + u64(0) + b"\0" * 8 + u32(16))
st = d.u32()
check(st == 10005, f"READDIR with count 16: status {st} (want TOOSMALL 10005)")
c.close()

# ------------------------------------------------------------------ concurrency
step("pipelining and concurrent connections")
c = Client()
xids = [next_xid() for _ in range(200)]
c.s.sendall(b"".join(record(call_body(x, NFS, 3, 1, opaque(readme))) for x in xids))
got = {}
try:
    for _ in xids:
        rec = recv_record(c.s)
        x = struct.unpack(">I", rec[:4])[0]
        k, _, d = parse_reply(rec, x)
        got[x] = d.u32() if k == "SUCCESS" else k
except Exception as e:
    print(f"pipelining: {e!r}")
c.close()
check(sorted(got) == sorted(xids) and all(v == NFS3_OK for v in got.values()),
      f"200 pipelined GETATTRs on one connection: {len(got)} answered, all OK: {all(v == NFS3_OK for v in got.values())}")

THREADS, SECS = 50, 2.0
results = [None] * THREADS
def worker(i):
    n, errs = 0, []
    try:
        cl = Client()
        end = time.time() + SECS
        while time.time() < end:
            k, st = getattr_status(cl, readme if i % 2 else content)
            if st != NFS3_OK:
                errs.append((k, st))
            n += 1
        cl.close()
    except Exception as e:
        errs.append(repr(e))
    results[i] = (n, errs)
ths = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
t = time.time()
for th in ths: th.start()
for th in ths: th.join(SECS + 30)
hung = sum(th.is_alive() for th in ths)
total = sum(r[0] for r in results if r)
errors = [e for r in results if r for e in r[1]]
print(f"{THREADS} connections: {total} GETATTRs in {time.time() - t:.1f}s ({total / SECS:.0f}/s), {len(errors)} errors {errors[:3]}")
check(hung == 0 and not errors and all(r and r[0] > 0 for r in results),
      f"{THREADS} concurrent connections doing GETATTR loops all succeed ({hung} hung, {len(errors)} errors)")

# idle half-open connections do not block others
idle = [connect() for _ in range(20)]
for s in idle:
    s.sendall(u32(0x80000000 | 100) + b"\0" * 10)       # an unfinished record on each
check(server_alive(), "20 connections stuck inside a record do not block a new client")
for s in idle: s.close()

# ------------------------------------------------------------------ aftermath
step("after the abuse")
c = Client()
k, st = getattr_status(c, readme)
check(st == NFS3_OK, f"normal GETATTR still answers: {k} {st}")
c.close()
print(f"\nrpc checks: {ok} passed, {bad} failed ({time.time() - t0:.1f}s)")
sys.exit(1 if bad else 0)
PY

echo
rc=0
timeout 300 python3 "$E2E_TMP/rpc.py" "$E2E_NFS_PORT" "$E2E_TMP/many.names" || rc=$?
e2e_check "raw RPC checks (status $rc)" test "$rc" = 0

echo
echo "== aftermath"
want=$(awk -F'\t' '$6 == "sizes/s01048577" { print $3 }' "$CONTENT_MF")
got=$("$MONOFS_BIN" cat /local/content/sizes/s01048577 | sha256sum | cut -d' ' -f1)
e2e_check "monofs cat still works (sizes/s01048577 sha256)" test "$got" = "$want"
e2e_check "monofs ls still works" test "$("$MONOFS_BIN" ls /local/content/many | wc -l)" = 20000
e2e_check "router process (monofs up, pid $E2E_UP_PID) still alive" kill -0 "$E2E_UP_PID"
if grep -qiE 'panic|SIGSEGV|overflow' "$E2E_UP_LOG"; then
    e2e_fail "monofs up log mentions a panic:"; grep -iE 'panic|SIGSEGV|overflow' "$E2E_UP_LOG" | head -5
else
    e2e_ok "no panic in the monofs up log"
fi
rc=0; e2e_stop "$E2E_UP_PID" 10 || rc=$?
e2e_check "SIGTERM after the abuse: exit 0" test "$rc" = 0
echo "total $(e2e_secs)s"
e2e_done

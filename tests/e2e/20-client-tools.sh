#!/usr/bin/env bash
# Host-side end-to-end test of the MonoFS client tools, no VM and no root:
#   - a 2-node, 2-shard `monofs up` cluster; `monofs ingest` of the `real` and `content`
#     test repositories (plain progress lines when piped, --json result object)
#   - `monofs cat`: sha256 of every file of `real`, and of `content` except many/ (chunk
#     boundaries, the 110 MiB big/big.bin, unicode/space/metacharacter names) plus a sample
#     of many/, against tests/manifest.py
#   - `monofs stat --json`: types, modes, sizes, mtimes, symlink targets
#   - `monofs ls`: the 20,000-entry many/ lists every name exactly once; `ls --json` parses
#   - exit codes: missing path 3, unreachable server 4
#   - libnfs (nfs-ls, nfs-cat) as an independent client
#   - bad ingests (missing path, unknown ref, unreachable git://, unsupported scheme, ext::)
#     exit 1 with a message and leave GET /api/repos unchanged
#   - GET /metrics
#   - SIGTERM exits 0 promptly; a restart on the same data directory serves the same bytes
#     without ingesting, also with the source repository moved away
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"



e2e_step "test repositories"
e2e_repos_locked
REAL_MF=$(e2e_manifest real)
CONTENT_MF=$(e2e_manifest content)
REAL_COMMIT=$(git -C "$MONOFS_TEST_REPOS/real" rev-parse main)
CONTENT_COMMIT=$(git -C "$MONOFS_TEST_REPOS/content" rev-parse main)
echo "real $REAL_COMMIT, content $CONTENT_COMMIT"

# `real` is ingested from a private clone, which this script later moves away (and back,
# in the exit trap) without disturbing other scripts that use the shared repositories.
SRC="$E2E_TMP/src"
mkdir -p "$SRC"
git clone -q --no-checkout "$MONOFS_TEST_REPOS/real" "$SRC/real"
git -C "$SRC/real" branch -q -f main "$REAL_COMMIT" 2>/dev/null || true
restore_src() { [ -d "$SRC/real.moved" ] && mv "$SRC/real.moved" "$SRC/real" || true; }
e2e_at_exit restore_src

http_get() {
    python3 - "$1" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    sys.stdout.buffer.write(r.read())
PY
}
repos_json() { http_get "$E2E_ROUTER/api/repos" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), sort_keys=True))'; }

cat > "$E2E_TMP/verify.py" <<'PY'
"""Checks driven by a manifest: verify.py MODE MANIFEST NS_PREFIX [ARGS]"""
import hashlib, json, os, random, subprocess, sys

MONOFS = os.environ["MONOFS_BIN"]
mode, manifest, prefix = sys.argv[1], sys.argv[2], sys.argv[3].encode()
rows = []
with open(manifest, "rb") as f:
    for line in f:
        if line.startswith(b"#"):
            continue
        typ, size, sha, oid, target, path = line.rstrip(b"\n").split(b"\t", 5)
        rows.append((typ.decode(), int(size), sha.decode(), target, path))
ok = bad = 0

def report(good, msg):
    global ok, bad
    if good:
        ok += 1
    else:
        bad += 1
        print("FAIL:", msg, flush=True)

def nspath(p):
    return prefix + b"/" + p if p != b"." else prefix

def run(*args):
    return subprocess.run([MONOFS, *args], capture_output=True, timeout=600)

if mode == "cat":
    # cat [all|nomany] [SAMPLE_OF_MANY]
    which = sys.argv[4]
    sample = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    files = [r for r in rows if r[0] in ("file", "exec")]
    many = [r for r in files if r[4].startswith(b"many/")]
    if which == "nomany":
        files = [r for r in files if not r[4].startswith(b"many/")]
        files += random.Random(42).sample(many, min(sample, len(many)))
    for typ, size, sha, _, path in files:
        p = subprocess.run([MONOFS, "cat", nspath(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
        got = hashlib.sha256(p.stdout).hexdigest()
        report(p.returncode == 0 and got == sha and len(p.stdout) == size,
               f"cat {nspath(path)!r}: rc={p.returncode} size={len(p.stdout)}/{size} sha={got[:12]}/{sha[:12]} {p.stderr.decode(errors='replace').strip()}")
    print(f"cat: {ok} files verified, {bad} wrong")

elif mode == "stat":
    # stat COMMIT_TIME: every symlink, exec and submodule, files and dirs outside many/
    mtime = int(sys.argv[4])
    want_perm = {"file": "644", "exec": "755", "symlink": "777", "dir": "755", "submodule": "755"}
    for typ, size, sha, target, path in rows:
        if path.startswith(b"many/"):
            continue
        p = run("stat", "--json", nspath(path))
        try:
            v = json.loads(p.stdout)
        except ValueError:
            report(False, f"stat {nspath(path)!r}: rc={p.returncode} not JSON: {p.stdout[:200]!r} {p.stderr[:200]!r}")
            continue
        want_type = {"file": "file", "exec": "file", "symlink": "symlink", "dir": "dir", "submodule": "dir"}[typ]
        errs = []
        if p.returncode != 0:
            errs.append(f"rc={p.returncode}")
        if v.get("type") != want_type:
            errs.append(f"type {v.get('type')} != {want_type}")
        if typ in ("file", "exec", "symlink") and v.get("size") != size:
            errs.append(f"size {v.get('size')} != {size}")
        m = v.get("mode", "")
        if typ == "exec" and not (int(m or "0", 8) & 0o111):
            errs.append(f"exec without x bits: mode {m}")
        if typ == "file" and (int(m or "0", 8) & 0o111):
            errs.append(f"plain file with x bits: mode {m}")
        if typ in want_perm and m != want_perm[typ]:
            errs.append(f"mode {m} != {want_perm[typ]}")
        if typ == "symlink" and v.get("target", "").encode() != target:
            errs.append(f"target {v.get('target')!r} != {target!r}")
        if v.get("mtime") != mtime:
            errs.append(f"mtime {v.get('mtime')} != commit time {mtime}")
        report(not errs, f"stat {nspath(path)!r}: {'; '.join(errs)}")
    print(f"stat: {ok} paths verified, {bad} wrong")

elif mode == "ls":
    # ls DIR: `monofs ls` and `monofs ls --json` of DIR list exactly the manifest's children
    d = sys.argv[4].encode()
    want = sorted(r[4].rsplit(b"/", 1)[-1] for r in rows
                  if r[4] != b"." and (r[4].rsplit(b"/", 1)[0] if b"/" in r[4] else b".") == d)
    p = run("ls", nspath(d))
    got = sorted(p.stdout.split(b"\n")[:-1]) if p.stdout else []
    dups = len(got) - len(set(got))
    report(p.returncode == 0 and got == want,
           f"ls {nspath(d)!r}: rc={p.returncode} {len(got)} names ({dups} duplicated), want {len(want)}; "
           f"missing {sorted(set(want) - set(got))[:5]} extra {sorted(set(got) - set(want))[:5]}")
    p = run("ls", "--json", nspath(d))
    try:
        v = json.loads(p.stdout)
        jnames = sorted(e["name"].encode() for e in v)
        report(p.returncode == 0 and jnames == want, f"ls --json {nspath(d)!r}: {len(jnames)} names, want {len(want)}")
        report(all("attr" in e and e["attr"]["type"] in ("file", "dir", "symlink") for e in v),
               f"ls --json {nspath(d)!r}: entries without attributes")
    except (ValueError, KeyError, TypeError) as e:
        report(False, f"ls --json {nspath(d)!r}: rc={p.returncode} does not parse: {e}")
    print(f"ls {d.decode()}: {len(want)} names; {ok} checks ok, {bad} failed")

sys.exit(1 if bad else 0)
PY
verify() { python3 "$E2E_TMP/verify.py" "$@"; }

e2e_step "cluster: 2 nodes x 2 shards"
DATA="$E2E_TMP/data"
e2e_up "$DATA" --nodes 2 --shards 2
echo "NFS $E2E_SERVER, HTTP $E2E_ROUTER, pid $E2E_UP_PID"
e2e_check "GET /api/repos is an empty list before any ingest" test "$(repos_json)" = "[]"

e2e_step "ingest real (piped: plain progress on stderr)"
t0=$(date +%s.%N)
set +e
"$MONOFS_BIN" ingest "$SRC/real" --source-id local/real --router "$E2E_ROUTER" >"$E2E_TMP/ingest-real.out" 2>"$E2E_TMP/ingest-real.err" </dev/null
rc=$?
set -e
echo "ingest real: rc=$rc in $(python3 -c "import time; print(round(time.time() - $t0, 1))")s; stderr:"
sed 's/^/    /' "$E2E_TMP/ingest-real.err"
e2e_check "ingest real exits 0" test "$rc" = 0
e2e_check "ingest real prints nothing on stdout" test ! -s "$E2E_TMP/ingest-real.out"
e2e_check "ingest real: plain progress lines ([N.Ns] phase: ...)" grep -qE '^\[[0-9]+\.[0-9]s\] [a-z ]+: [0-9]+ objects' "$E2E_TMP/ingest-real.err"
e2e_check "ingest real: no terminal control characters when piped" \
    python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); sys.exit(1 if (b"\r" in d or b"\x1b" in d) else 0)' "$E2E_TMP/ingest-real.err"
e2e_check "ingest real: last line 'ingested ... at $REAL_COMMIT into local/real'" \
    sh -c "tail -n1 '$E2E_TMP/ingest-real.err' | grep -qE '^ingested .* at $REAL_COMMIT into /?local/real '"

e2e_step "ingest content --json"
t0=$(date +%s.%N)
set +e
"$MONOFS_BIN" ingest "$MONOFS_TEST_REPOS/content" --source-id local/content --json --router "$E2E_ROUTER" >"$E2E_TMP/ingest-content.out" 2>"$E2E_TMP/ingest-content.err" </dev/null
rc=$?
set -e
echo "ingest content: rc=$rc in $(python3 -c "import time; print(round(time.time() - $t0, 1))")s; stdout: $(cat "$E2E_TMP/ingest-content.out")"
tail -n 3 "$E2E_TMP/ingest-content.err" | sed 's/^/    /'
e2e_check "ingest content --json exits 0" test "$rc" = 0
e2e_check "ingest --json prints exactly one JSON object (path, commit) on stdout" python3 - "$E2E_TMP/ingest-content.out" "$CONTENT_COMMIT" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 1, lines
v = json.loads(lines[0])
assert isinstance(v, dict), v
assert v["commit"] == sys.argv[2], v
assert v["path"].strip("/") == "local/content", v
PY
e2e_check "ingest --json still reports progress on stderr" grep -qE '^\[[0-9.]+s\] ' "$E2E_TMP/ingest-content.err"
e2e_check "GET /api/repos lists both repositories at their commits" python3 - "$E2E_ROUTER" "$REAL_COMMIT" "$CONTENT_COMMIT" <<'PY'
import json, sys, urllib.request
v = json.load(urllib.request.urlopen(sys.argv[1] + "/api/repos", timeout=10))
got = {e["path"]: e["commit"] for e in v}
assert got == {"/local/real": sys.argv[2], "/local/content": sys.argv[3]}, got
PY

e2e_step "HTTP API"
cat >"$E2E_TMP/api_check.py" <<'PY'
"""api_check.py ROUTER MODE: raw HTTP checks (stdlib, every read bounded)."""
import http.client, json, os, sys, time
host = sys.argv[1].split("//", 1)[1]
mode = sys.argv[2]

# POSTs carry the admin token of the cluster (e2e_up exports its file).
token = open(os.environ["MONOFS_ADMIN_TOKEN_FILE"]).read().strip()

def req(method, path, body=None, timeout=15):
    c = http.client.HTTPConnection(host, timeout=timeout)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"} if body is not None else {}
    c.request(method, path, body, headers)
    return c, c.getresponse()

if mode == "errors":
    for method, path, body, want in (("GET", "/healthz", None, 200), ("GET", "/no/such/endpoint", None, 404),
                                     ("POST", "/api/ingest", "not json", 400), ("POST", "/api/ingest", "{}", 400),
                                     ("POST", "/api/ingest", json.dumps({"url": " "}), 400)):
        _, r = req(method, path, body)
        data = r.read()
        v = json.loads(data)
        assert r.status == want, (method, path, body, r.status, data)
        assert want == 200 or v.get("error"), (path, data)
        print(f"    {method} {path} {body!r}: {r.status} {data.decode().strip()[:100]}")
elif mode == "stream":
    # POST /api/ingest streams NDJSON: progress lines, then one {"done": ...} line, then
    # the response must end (the zero chunk) so plain HTTP clients return.
    c, r = req("POST", "/api/ingest", json.dumps({"url": sys.argv[3], "source_id": "local/real"}))
    assert r.status == 200, r.status
    lines, done_at = [], None
    while True:
        try:
            line = r.readline()
        except TimeoutError:
            print(f"    {len(lines)} lines; no end of response {time.time() - done_at:.0f}s after the done line"
                  if done_at else f"    {len(lines)} lines; timed out before the done line")
            sys.exit(1)
        if not line:
            break
        v = json.loads(line)
        lines.append(v)
        if "done" in v:
            done_at = time.time()
            if c.sock is not None:  # None once the response has ended
                c.sock.settimeout(5)
            assert v["done"] is True, v
    assert done_at is not None and "done" in lines[-1], lines[-3:]
    assert all("phase" in v for v in lines[:-1]), lines
    print(f"    {len(lines)} NDJSON lines, response closed {time.time() - done_at:.2f}s after the done line")
PY
e2e_check "HTTP API: /healthz, 404 for unknown endpoints, 400 with an error for bad ingest bodies" \
    python3 "$E2E_TMP/api_check.py" "$E2E_ROUTER" errors
e2e_check "POST /api/ingest: the NDJSON response ends after its done line" \
    python3 "$E2E_TMP/api_check.py" "$E2E_ROUTER" stream "$SRC/real"

e2e_step "monofs cat: every file of real"
t0=$(date +%s)
e2e_check "cat: every file of real matches the manifest" verify cat "$REAL_MF" /local/real all
echo "($(( $(date +%s) - t0 ))s)"

e2e_step "monofs cat: content (all but many/, plus 100 of many/)"
t0=$(date +%s)
e2e_check "cat: content files (sizes/, big/, names/, ...) match the manifest" verify cat "$CONTENT_MF" /local/content nomany 100
echo "($(( $(date +%s) - t0 ))s)"

e2e_step "monofs stat --json"
REAL_TIME=$(git -C "$MONOFS_TEST_REPOS/real" log -1 --format=%ct main)
CONTENT_TIME=$(git -C "$MONOFS_TEST_REPOS/content" log -1 --format=%ct main)
e2e_check "stat: real types/modes/sizes/mtimes" verify stat "$REAL_MF" /local/real "$REAL_TIME"
e2e_check "stat: content types/modes/sizes/mtimes/symlink targets" verify stat "$CONTENT_MF" /local/content "$CONTENT_TIME"

e2e_step "monofs ls"
t0=$(date +%s)
e2e_check "ls: many/ (20,000 entries) lists every name exactly once" verify ls "$CONTENT_MF" /local/content many
echo "($(( $(date +%s) - t0 ))s)"
for d in . names sort links vendor/sub; do
    e2e_check "ls: content/$d matches the manifest" verify ls "$CONTENT_MF" /local/content "$d"
done
e2e_check "ls: real/ matches the manifest" verify ls "$REAL_MF" /local/real .
e2e_check "ls --json / parses and lists local" \
    sh -c "'$MONOFS_BIN' ls --json / | python3 -c 'import json,sys; v=json.load(sys.stdin); assert [e[\"name\"] for e in v] == [\"local\"], v'"
e2e_check "ls /local lists content and real" \
    test "$("$MONOFS_BIN" ls /local | LC_ALL=C sort | tr '\n' ' ')" = "content real "

e2e_step "exit codes"
expect_rc() {  # expect_rc WANT DESCRIPTION CMD...
    local want="$1" what="$2" rc=0; shift 2
    "$@" >"$E2E_TMP/rc.out" 2>"$E2E_TMP/rc.err" || rc=$?
    if [ "$rc" = "$want" ] && [ -s "$E2E_TMP/rc.err" ]; then
        e2e_ok "$what: exit $rc ($(head -c 200 "$E2E_TMP/rc.err" | tr '\n' ' '))"
    else
        e2e_fail "$what: exit $rc, want $want; stderr: $(head -c 300 "$E2E_TMP/rc.err")"
    fi
}
DEAD_PORT=$(e2e_free_ports 1)
expect_rc 3 "cat of a missing file" "$MONOFS_BIN" cat /local/content/no-such-file
expect_rc 3 "stat of a missing repository" "$MONOFS_BIN" stat /local/no-such-repo
expect_rc 3 "ls of a missing directory" "$MONOFS_BIN" ls /local/content/files/nope/deeper
expect_rc 1 "cat of a directory" "$MONOFS_BIN" cat /local/content/files
expect_rc 4 "cat with an unreachable server" "$MONOFS_BIN" cat /local/real/Cargo.toml --server "127.0.0.1:$DEAD_PORT"
expect_rc 4 "ls with an unreachable server" "$MONOFS_BIN" ls / --server "127.0.0.1:$DEAD_PORT"
expect_rc 4 "ingest with an unreachable router" "$MONOFS_BIN" ingest "$SRC/real" --router "http://127.0.0.1:$DEAD_PORT"

e2e_step "libnfs tools (nfs-ls, nfs-cat)"
if command -v nfs-cat >/dev/null && command -v nfs-ls >/dev/null; then
    Q="version=3&nfsport=$E2E_NFS_PORT&mountport=$E2E_NFS_PORT"
    nfs_sha() { timeout 60 nfs-cat "nfs://127.0.0.1$1?$Q" | sha256sum | cut -d' ' -f1; }
    mf_sha() { awk -F'\t' -v p="$2" '$6 == p { print $3 }' "$1"; }
    for f in Cargo.toml src/lib.rs; do
        e2e_check "nfs-cat /local/real/$f equals git" test "$(nfs_sha "/local/real/$f")" = "$(mf_sha "$REAL_MF" "$f")"
    done
    for f in sizes/s01048577 sizes/s03158073 bin/tool; do
        e2e_check "nfs-cat /local/content/$f equals git" test "$(nfs_sha "/local/content/$f")" = "$(mf_sha "$CONTENT_MF" "$f")"
    done
    # nfs-ls prints "mode nlink uid gid size name"; no name in these directories has a space.
    for d in real real/src content/sort; do
        mf=$REAL_MF; rel=${d#real}; rel=${rel#/}
        case "$d" in content/*) mf=$CONTENT_MF; rel=${d#content/} ;; esac
        [ -n "$rel" ] || rel=.
        want=$(awk -F'\t' -v d="$rel" '$6 != "." { n = split($6, a, "/"); parent = (n == 1) ? "." : substr($6, 1, length($6) - length(a[n]) - 1); if (parent == d) print a[n] }' "$mf" | LC_ALL=C sort)
        got=$(timeout 60 nfs-ls "nfs://127.0.0.1/local/$d?$Q" | awk '{ print $NF }' | grep -vxE '\.|\.\.' | LC_ALL=C sort || true)
        if [ -n "$want" ] && [ "$got" = "$want" ]; then
            e2e_ok "nfs-ls /local/$d lists the same $(echo "$want" | wc -l) names as git"
        else
            e2e_fail "nfs-ls /local/$d: got [$(echo $got)] want [$(echo $want)]"
        fi
    done
else
    e2e_fail "libnfs-utils (nfs-ls, nfs-cat) not installed (.ci/run installs them)"
fi

e2e_step "bad ingests leave the namespace unchanged"
before=$(repos_json)
bad_ingest() {  # bad_ingest DESCRIPTION MESSAGE_REGEX URL [ARGS...]
    local what="$1" re="$2" rc=0; shift 2
    local t0=$SECONDS
    timeout 120 "$MONOFS_BIN" ingest "$@" --router "$E2E_ROUTER" >"$E2E_TMP/bad.out" 2>"$E2E_TMP/bad.err" </dev/null || rc=$?
    local msg
    msg=$(grep -v '^\[' "$E2E_TMP/bad.err" | tr '\n' ' ' | head -c 300)
    if [ "$rc" = 1 ] && grep -qiE "$re" "$E2E_TMP/bad.err"; then
        e2e_ok "ingest of $what: exit 1 in $((SECONDS - t0))s: $msg"
    else
        e2e_fail "ingest of $what: exit $rc in $((SECONDS - t0))s (want 1 and /$re/): $msg"
    fi
}
GIT_DEAD_PORT=$(e2e_free_ports 1)
bad_ingest "a non-existent path" "not found|no such|does not exist|not a git|cannot|failed" "$E2E_TMP/no/such/repo"
bad_ingest "a non-existent ref" "nope" "$MONOFS_TEST_REPOS/content" --ref nope
bad_ingest "an unreachable git:// port" "refused|unreachable|connect|failed" "git://127.0.0.1:$GIT_DEAD_PORT/repo.git"
bad_ingest "an unsupported scheme (ftp://)" "scheme" "ftp://127.0.0.1/repo.git"
bad_ingest "git's ext:: transport" "scheme|unsupported|refused|not allowed|failed" "ext::sh -c touch% $E2E_TMP/ext-ran"
e2e_check "ext:: did not run a command" test ! -e "$E2E_TMP/ext-ran"
after=$(repos_json)
e2e_check "GET /api/repos unchanged after the bad ingests" test "$before" = "$after"
e2e_check "content still served after the bad ingests" \
    test "$("$MONOFS_BIN" cat /local/content/files/hello.txt)" = "hello, world"

e2e_step "metrics"
http_get "$E2E_ROUTER/metrics" >"$E2E_TMP/metrics.txt"
grep '^monofs_router_' "$E2E_TMP/metrics.txt" | sed 's/^/    /'
e2e_check "/metrics has monofs_router_nfs_ops_total with reads counted" \
    python3 - "$E2E_TMP/metrics.txt" <<'PY'
import re, sys
ops = {m[0]: float(m[1]) for m in re.findall(r'^monofs_router_nfs_ops_total\{op="(\w+)"\} (\S+)$', open(sys.argv[1]).read(), re.M)}
assert ops.get("read", 0) > 0 and ops.get("lookup", 0) > 0 and ops.get("readdir", 0) > 0, ops
PY
e2e_check "/metrics counts the ingests" grep -qE '^monofs_router_ingests_total [2-9]' "$E2E_TMP/metrics.txt"
e2e_check "/metrics counts the failed ingests" grep -qE '^monofs_router_ingests_failed_total [1-9]' "$E2E_TMP/metrics.txt"

e2e_step "restart on the same data directory"
SAMPLE=(real/Cargo.toml real/src/lib.rs content/sizes/s01048576 content/bin/tool "content/names/héllo wörld.txt" content/big/big.bin)
sums() { local p; for p in "${SAMPLE[@]}"; do printf '%s %s\n' "$("$MONOFS_BIN" cat "/local/$p" | sha256sum | cut -d' ' -f1)" "$p"; done; }
sums >"$E2E_TMP/sums.before"
repos_json >"$E2E_TMP/repos.before"
t0=$(date +%s.%N)
rc=0; e2e_stop "$E2E_UP_PID" 10 || rc=$?
dt=$(python3 -c "import time; print(round(time.time() - $t0, 2))")
e2e_check "SIGTERM: monofs up exits 0 (status $rc after ${dt}s)" test "$rc" = 0

e2e_up "$DATA" --nodes 2 --shards 2
repos_json >"$E2E_TMP/repos.after"
e2e_check "restart: GET /api/repos identical without ingesting" cmp -s "$E2E_TMP/repos.before" "$E2E_TMP/repos.after"
sums >"$E2E_TMP/sums.after"
e2e_check "restart: same sha256 for ${#SAMPLE[@]} files" cmp -s "$E2E_TMP/sums.before" "$E2E_TMP/sums.after"
e2e_check "restart: every file of real still matches" verify cat "$REAL_MF" /local/real all

mv "$SRC/real" "$SRC/real.moved"
rc=0; e2e_stop "$E2E_UP_PID" 10 || rc=$?
e2e_check "SIGTERM again: exit 0" test "$rc" = 0
e2e_up "$DATA" --nodes 2 --shards 2
e2e_check "source moved away: every file of real still matches" verify cat "$REAL_MF" /local/real all
sums >"$E2E_TMP/sums.moved"
e2e_check "source moved away: same sha256 for ${#SAMPLE[@]} files" cmp -s "$E2E_TMP/sums.before" "$E2E_TMP/sums.moved"
restore_src
rc=0; e2e_stop "$E2E_UP_PID" 10 || rc=$?
e2e_check "final SIGTERM: exit 0" test "$rc" = 0

echo
echo "total $(e2e_secs)s"
e2e_done

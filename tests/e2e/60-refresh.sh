#!/usr/bin/env bash
# Refresh: a repository moves to the new commit of its ref (adds, modifies, deletes,
# renames, a mode change) and a kernel client with it mounted sees the new tree on its
# next lookup, while a file it holds open keeps reading the content it opened.
# The guest triggers the refresh itself through a small HTTP hook on the host, so the
# mount stays up across it.
. "$(dirname "$0")/../lib/common.sh"

repo="$E2E_TMP/r"
export GIT_AUTHOR_NAME=MonoFS GIT_AUTHOR_EMAIL=t@monofs GIT_COMMITTER_NAME=MonoFS GIT_COMMITTER_EMAIL=t@monofs
git init -q -b main "$repo"
(
    cd "$repo"
    echo keep > keep.txt
    echo old > change.txt
    echo bye > delete.txt
    mkdir -p dir/sub gone stable
    echo a > dir/sub/a.txt
    echo x > gone/x.txt
    for i in $(seq 1 200); do echo "stable $i" > "stable/f$i"; done
    echo "rename me" > rename_me.txt
    printf '#!/bin/sh\necho hi\n' > run.sh
    git add -A
    GIT_AUTHOR_DATE=2024-01-01T00:00:00Z GIT_COMMITTER_DATE=2024-01-01T00:00:00Z git commit -qm A
)

port=$(e2e_free_port); http=$(e2e_free_port); node=$(e2e_free_port); fport=$(e2e_free_port)
e2e_bg "$MONOFS_BIN" up --data-dir "$E2E_TMP/data" --port "$port" --http-port "$http" \
    --node-port "$node" --fetcher-port "$fport" --nodes 2 --shards 1
e2e_wait_port "$port" 60
e2e_wait_port "$http" 30
router="http://127.0.0.1:$http"
export MONOFS_ADMIN_TOKEN_FILE="$E2E_TMP/data/admin.token"
"$MONOFS_BIN" ingest "$repo" --source-id local/r --router "$router"

# The hook: GET /refresh makes commit B and refreshes /local/r before answering.
cat > "$E2E_TMP/hook.py" <<PY
import http.server, subprocess, sys
REPO, BIN, ROUTER = sys.argv[1], sys.argv[2], sys.argv[3]
def sh(*a):
    subprocess.run(a, cwd=REPO, check=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            with open(REPO + "/change.txt", "w") as f: f.write("new\n")
            sh("git", "rm", "-q", "delete.txt"); sh("git", "rm", "-qr", "gone")
            sh("git", "mv", "rename_me.txt", "renamed.txt")
            sh("chmod", "+x", "run.sh")
            sh("mkdir", "-p", "added"); open(REPO + "/added/new.txt", "w").write("fresh\n")
            sh("git", "add", "-A")
            subprocess.run(["git", "commit", "-qm", "B"], cwd=REPO, check=True,
                env={**__import__("os").environ, "GIT_AUTHOR_DATE": "2024-02-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-02-01T00:00:00Z"})
            r = subprocess.run([BIN, "admin", "refresh", "--storage-id", "/local/r", "--router", ROUTER])
            code = 200 if r.returncode == 0 else 500
        except Exception as e:
            print("hook failed:", e, file=sys.stderr); code = 500
        self.send_response(code); self.end_headers(); self.wfile.write(b"done\n")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[4])), H).serve_forever()
PY
hook=$(e2e_free_port)
e2e_bg python3 "$E2E_TMP/hook.py" "$repo" "$MONOFS_BIN" "$router" "$hook"
e2e_wait_port "$hook" 10

cat > "$E2E_TMP/guest.sh" <<GUEST
. /test/lib.sh
# actimeo=1: attributes are trusted for a second, as a CI client that wants to see
# refreshes promptly would mount (the default is 3-60 s).
monofs_mount -o actimeo=1 /mnt || { echo "mount failed"; exit 1; }
R=/mnt/local/r
monofs_check "before: change.txt is old" [ "\$(cat \$R/change.txt)" = old ]
monofs_check "before: run.sh is 644" [ "\$(stat -c %a \$R/run.sh)" = 644 ]
exec 3< \$R/change.txt
monofs_check "refresh hook" wget -q -O /tmp/hook "http://10.0.2.2:$hook/refresh"
sleep 3
monofs_check "after: change.txt is new" [ "\$(cat \$R/change.txt)" = new ]
monofs_check "after: delete.txt gone" [ ! -e \$R/delete.txt ]
monofs_check "after: directory gone/ gone" [ ! -e \$R/gone ]
monofs_check "after: rename_me.txt gone" [ ! -e \$R/rename_me.txt ]
monofs_check "after: renamed.txt there" [ "\$(cat \$R/renamed.txt)" = "rename me" ]
monofs_check "after: run.sh is 755" [ "\$(stat -c %a \$R/run.sh)" = 755 ]
monofs_check "after: added/new.txt there" [ "\$(cat \$R/added/new.txt)" = fresh ]
monofs_check "after: untouched files intact" [ "\$(cat \$R/keep.txt \$R/dir/sub/a.txt \$R/stable/f200)" = "\$(printf 'keep\na\nstable 200')" ]
monofs_check "after: listing is the new tree" [ "\$(ls \$R | tr '\n' ' ')" = "added change.txt dir keep.txt renamed.txt run.sh stable " ]
monofs_check "open file still reads what it opened" [ "\$(cat <&3)" = old ]
exec 3<&-
monofs_done
GUEST
e2e_vm --name 60-refresh --timeout 300 --port "$port" "$E2E_TMP/guest.sh"
echo "refresh: ok"

#!/usr/bin/env bash
# Ingest and refresh over Git's smart HTTP protocol: `git http-backend` behind busybox
# httpd (a small CGI-capable server) on loopback. Content read back equals git's; a
# refresh after a push moves the published tree; a missing ref fails clearly.
. "$(dirname "$0")/../lib/common.sh"
e2e_repos_locked
command -v busybox >/dev/null || { echo "FAIL: busybox (httpd) not installed"; exit 1; }

www="$E2E_TMP/www"; repos="$E2E_TMP/repos"
mkdir -p "$www/cgi-bin" "$repos"
git clone -q --bare "$MONOFS_TEST_REPOS/real" "$repos/real.git"
cat > "$www/cgi-bin/git" <<CGI
#!/bin/sh
export GIT_PROJECT_ROOT="$repos" GIT_HTTP_EXPORT_ALL=1
exec git http-backend
CGI
chmod +x "$www/cgi-bin/git"
hp=$(e2e_free_port)
e2e_bg busybox httpd -f -p "127.0.0.1:$hp" -h "$www"
e2e_wait_port "$hp" 10
url="http://127.0.0.1:$hp/cgi-bin/git/real.git"
e2e_check "the remote speaks smart HTTP (git ls-remote)" git ls-remote "$url" HEAD

e2e_up "$E2E_TMP/data" --nodes 2 --shards 1 --refresh-interval 3
ns=/127.0.0.1/cgi-bin/git/real
e2e_check "ingest over smart HTTP" "$MONOFS_BIN" ingest "$url"
same() { cmp -s <("$MONOFS_BIN" cat "$ns/$1") <(git -C "$repos/real.git" show "HEAD:$1"); }
for f in Cargo.toml README.md src/lib.rs; do
    e2e_check "$ns/$f equals git's" same "$f"
done

# A push to the remote, then a refresh through the admin command.
work="$E2E_TMP/work"
git clone -q "$repos/real.git" "$work"
(
    cd "$work"
    echo "refreshed over HTTP" > HTTP.md
    git rm -q README.md
    git add HTTP.md
    git -c user.name=MonoFS -c user.email=t@monofs commit -qm "over http"
    git push -q origin HEAD:main
)
e2e_check "admin refresh over smart HTTP" "$MONOFS_BIN" admin refresh --storage-id "$ns"
e2e_check "the new file is there" test "$("$MONOFS_BIN" cat "$ns/HTTP.md")" = "refreshed over HTTP"
set +e
"$MONOFS_BIN" stat "$ns/README.md" >/dev/null 2>&1; rc=$?
set -e
e2e_check "the deleted file is gone (exit 3)" test "$rc" = 3
e2e_check "an unchanged file reads the same" same src/lib.rs

# Another push; the router's periodic refresh (every 3 s) picks it up by itself.
(
    cd "$work"
    echo "second" > HTTP.md
    git -c user.name=MonoFS -c user.email=t@monofs commit -qam "second"
    git push -q origin HEAD:main
)
seen=""
for _ in $(seq 1 30); do
    [ "$("$MONOFS_BIN" cat "$ns/HTTP.md" 2>/dev/null)" = second ] && { seen=1; break; }
    sleep 1
done
e2e_check "--refresh-interval moved the repository to the pushed commit" test -n "$seen"

set +e
"$MONOFS_BIN" ingest "$url" --ref no-such-branch --source-id http/missing 2>"$E2E_TMP/miss.err"; rc=$?
set -e
cat "$E2E_TMP/miss.err"
e2e_check "a missing ref over HTTP fails (exit 1)" test "$rc" = 1
e2e_check "and says which ref" grep -q "no-such-branch" "$E2E_TMP/miss.err"
e2e_done

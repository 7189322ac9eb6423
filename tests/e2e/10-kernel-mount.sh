#!/usr/bin/env bash
# Kernel NFS client end to end: a 2-node `monofs up` cluster ingests the generated
# repositories over three transports (file://, a plain local path, git:// at a tag with
# --source-id), and the stock Debian kernel in the test VM mounts it and checks:
#   - every path of content (HEAD), real and content@v1 against tests/manifest.py
#     (types, modes, sizes, sha256, symlink targets, exact directory listings)
#   - ls -la shows symlink targets, cat, stat -c %a of an executable, empty submodule dir
#   - a 20,000-entry directory lists exactly 20,000 names, no duplicates
#   - writes (create, truncate, mkdir, rm, symlink, rename) fail with EROFS
#   - a re-mount with nconnect=4 reads correctly; find -maxdepth 3 works
# Then the cluster is stopped and started again on the same data directory with no
# ingest, the source repositories are moved away, and a second, short VM reads files
# (and the sha256 of the 110 MiB file): a second `monofs up` serves what was ingested
# before without fetching again.
. "$(dirname "$0")/../lib/common.sh"

fail() { echo "FAIL: $*" >&2; exit 1; }

[ -x "$MONOFS_BIN" ] || fail "no $MONOFS_BIN (cargo build --release -p monofs)"

e2e_step "test repositories"
e2e_repos_locked
man_content=$(e2e_manifest content)
man_real=$(e2e_manifest real)
man_v1=$(e2e_manifest content v1)
# manifest field 3 (sha256) of PATH
mhash() { awk -F'\t' -v p="$2" '$6 == p { print $3 }' "$1"; }
big_sha=$(mhash "$man_content" big/big.bin)
real_file=$(awk -F'\t' '$1 == "file" && $2 > 100 && $6 !~ /\// { print $6; exit }' "$man_real")
real_sha=$(mhash "$man_real" "$real_file")
[ -n "$big_sha" ] && [ -n "$real_sha" ] || fail "manifests lack big/big.bin or a top-level file of real"

# Private bare clones (objects hard-linked, ~1 s), so that moving the sources away later
# cannot disturb other tests using $MONOFS_TEST_REPOS. Same commits, same manifests.
src="$E2E_TMP/src"
mkdir -p "$src"
git clone -q --bare "$MONOFS_TEST_REPOS/content" "$src/content"
git clone -q --bare "$MONOFS_TEST_REPOS/real" "$src/real"

e2e_step "git daemon"
gd_port=$(e2e_free_ports 1)
e2e_bg git daemon --export-all --base-path="$src" --listen=127.0.0.1 --port="$gd_port" --reuseaddr "$src"
git_pid=$E2E_BG_PID
e2e_wait_port "$gd_port" 20

e2e_step "monofs up (2 nodes)"
data="$E2E_TMP/data"
e2e_up "$data" --nodes 2 --shards 1

ingest() {
    local t0 rc=0
    t0=$(e2e_secs)
    echo "e2e: monofs ingest $*" >&2
    e2e_ingest "$@" > "$E2E_TMP/ingest.log" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        cat "$E2E_TMP/ingest.log" >&2
        fail "monofs ingest $* exited with $rc"
    fi
    tail -n 2 "$E2E_TMP/ingest.log" >&2
    echo "e2e: ingest $1: $(awk -v a="$t0" -v b="$(e2e_secs)" 'BEGIN {printf "%.1f", b - a}')s" >&2
}
e2e_step "ingest"
ingest "file://$src/content" --source-id local/content
ingest "$src/real" --source-id local/real
ingest "git://127.0.0.1:$gd_port/content" --ref v1 --source-id git/content-v1
# GET /api/repos lists the three repositories (WHEN says at which point of the test).
expect_repos() {
    local json
    json=$(curl -fsS "$E2E_ROUTER/api/repos") || fail "GET /api/repos $1"
    for p in local/content local/real git/content-v1; do
        grep -q "\"/$p\"" <<<"$json" || fail "$1, /api/repos does not list $p: $json"
    done
    echo "ok: $1, /api/repos lists local/content, local/real, git/content-v1" >&2
}
expect_repos "after the ingests"

# ------------------------------------------------------------------ VM 1
cat > "$E2E_TMP/guest1.sh" <<GUEST
. /test/lib.sh
set -u
M=/mnt/monofs
C=\$M/local/content
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="\$1" -v b="\$(now)" 'BEGIN {printf "%.1f", b - a}'; }
T0=\$(now)

if ! monofs_mount \$M; then monofs_fail "mount"; monofs_done; fi
monofs_ok "mounted (\$(since \$T0)s)"
monofs_check "namespace root lists local and git" sh -c 'ls \$0 | grep -qx local && ls \$0 | grep -qx git' \$M

t=\$(now)
if sh /test/check-tree.sh /test/$(basename "$man_content") \$C; then monofs_ok "check-tree content HEAD (\$(since \$t)s)"; else monofs_fail "check-tree content HEAD (\$(since \$t)s)"; fi
t=\$(now)
if sh /test/check-tree.sh /test/$(basename "$man_real") \$M/local/real; then monofs_ok "check-tree real (\$(since \$t)s)"; else monofs_fail "check-tree real (\$(since \$t)s)"; fi
# v1 (git://, --ref v1): every content hash except big/big.bin (same blob as HEAD, hashed above)
t=\$(now)
if sh /test/check-tree.sh --hash-max 4194304 /test/$(basename "$man_v1") \$M/git/content-v1; then monofs_ok "check-tree content v1 (\$(since \$t)s)"; else monofs_fail "check-tree content v1 (\$(since \$t)s)"; fi
monofs_check "v1 files/version.txt is v1" [ "\$(cat \$M/git/content-v1/files/version.txt)" = v1 ]
monofs_check "HEAD files/version.txt is v2" [ "\$(cat \$C/files/version.txt)" = v2 ]
monofs_check "v1 has no CHANGES.txt" [ ! -e \$M/git/content-v1/CHANGES.txt ]

t=\$(now)
l=\$(ls -la \$C/links/relative)
echo "  \$l"
monofs_check "ls -la shows the symlink target" sh -c 'case "\$0" in *"relative -> ../files/hello.txt") exit 0;; *) exit 1;; esac' "\$l"
monofs_check "readlink of a directory symlink" [ "\$(readlink \$C/links/dir)" = ../files ]
monofs_check "cat through a symlink" [ "\$(cat \$C/links/relative)" = "hello, world" ]
monofs_check "cat files/hello.txt" [ "\$(cat \$C/files/hello.txt)" = "hello, world" ]
monofs_check "stat -c %a bin/run.sh is 755" [ "\$(stat -c %a \$C/bin/run.sh)" = 755 ]
monofs_check "stat -c %a files/hello.txt is 644" [ "\$(stat -c %a \$C/files/hello.txt)" = 644 ]
monofs_check "bin/run.sh is executable (-x)" [ -x \$C/bin/run.sh ]
monofs_check "submodule vendor/sub is an empty directory" sh -c '[ -d "\$0" ] && [ -z "\$(ls -A "\$0")" ]' \$C/vendor/sub
n=\$(ls \$C/many | wc -l)
monofs_check "many/ lists exactly 20000 names (got \$n)" [ "\$n" -eq 20000 ]
d=\$(ls \$C/many | sort | uniq -d | head -n 5)
monofs_check "many/ lists no name twice (\${d:-none})" [ -z "\$d" ]
monofs_check "many/f19999 reads 19999" [ "\$(cat \$C/many/f19999)" = 19999 ]
echo "small checks: \$(since \$t)s"

# Writes fail: each command must fail, and say "Read-only file system".
# Opening an EXISTING file for writing is refused by the client before any write reaches
# the server: the kernel checks ACCESS at open, and MonoFS's ACCESS never grants MODIFY or
# EXTEND (nfs/src/backend.rs, as knfsd does for a read-only export), so that is EACCES
# "Permission denied"; for those, EROFS is accepted too (a server granting MODIFY and
# answering ROFS to SETATTR/WRITE). Any other outcome fails.
write_fails() {
    _desc=\$1; _want=\$2; shift 2
    if "\$@" 2>/tmp/err; then
        monofs_fail "\$_desc succeeded"
    elif grep -q "\$_want" /tmp/err; then
        monofs_ok "\$_desc fails: \$(cat /tmp/err)"
    else
        monofs_fail "\$_desc fails without '\$_want': \$(cat /tmp/err)"
    fi
}
erofs() { _d=\$1; shift; write_fails "\$_d" "Read-only file system" "\$@"; }
erofs_or_eacces() { _d=\$1; shift; write_fails "\$_d" "Read-only file system\\|Permission denied" "\$@"; }
erofs "touch at the namespace root" touch \$M/x
erofs "touch a new file in a repository" touch \$C/newfile
erofs_or_eacces "truncate an existing file (echo >)" sh -c 'echo x > \$0' \$C/files/hello.txt
erofs_or_eacces "append to an existing file (echo >>)" sh -c 'echo x >> \$0' \$C/files/hello.txt
erofs "mkdir" mkdir \$C/newdir
erofs "mkdir at the namespace root" mkdir \$M/newdir
erofs "rm a file" rm \$C/files/hello.txt
erofs "rmdir an empty directory" rmdir \$C/vendor/sub
erofs "ln -s" ln -s hello.txt \$C/files/newlink
erofs "mv" mv \$C/files/hello.txt \$C/files/moved.txt
erofs "chmod" chmod 600 \$C/files/hello.txt
monofs_check "files/hello.txt unchanged after the write attempts" [ "\$(cat \$C/files/hello.txt)" = "hello, world" ]
monofs_check "no newfile appeared" [ ! -e \$C/newfile ]
monofs_check "umount" monofs_umount \$M

# nconnect (Linux >= 5.3)
t=\$(now)
if monofs_mount -o nconnect=4 \$M 2>/tmp/err; then
    monofs_ok "mount -o nconnect=4"
    grep " \$M " /proc/mounts
    monofs_check "/proc/mounts shows nconnect=4" grep -q "^[^ ]* \$M nfs .*nconnect=4" /proc/mounts
    monofs_check "nconnect: cat files/hello.txt" [ "\$(cat \$C/files/hello.txt)" = "hello, world" ]
    s=\$(sha256sum \$C/sizes/s03158073 | cut -d' ' -f1)
    monofs_check "nconnect: sha256 of sizes/s03158073" [ "\$s" = $(mhash "$man_content" sizes/s03158073) ]
    s=\$(sha256sum \$M/local/real/$real_file | cut -d' ' -f1)
    monofs_check "nconnect: sha256 of real/$real_file" [ "\$s" = $real_sha ]
    hp=\$(printf '%04X' \$MONOFS_PORT)
    echo "TCP connections to the server port: \$(grep -c ":\$hp 01 " /proc/net/tcp)"
    t2=\$(now)
    n=\$(find \$M -maxdepth 3 2>/tmp/err | wc -l)
    monofs_check "find \$M -maxdepth 3 (\$n entries, \$(since \$t2)s)" sh -c '[ ! -s /tmp/err ] && [ "\$0" -gt 20 ]' "\$n"
    monofs_check "find shows local/content/files" sh -c 'find \$0 -maxdepth 3 | grep -qx "\$0/local/content/files"' \$M
    monofs_check "find shows git/content-v1/many" sh -c 'find \$0 -maxdepth 3 | grep -qx "\$0/git/content-v1/many"' \$M
    monofs_check "umount (nconnect)" monofs_umount \$M
else
    r=\$(uname -r)
    case "\$r" in
        [0-4].*|5.[0-2].*) monofs_ok "kernel \$r has no nconnect: skipped (\$(cat /tmp/err))" ;;
        *) monofs_fail "mount -o nconnect=4 on kernel \$r: \$(cat /tmp/err)" ;;
    esac
fi
echo "nconnect part: \$(since \$t)s"
echo "guest total: \$(since \$T0)s"
monofs_done
GUEST

e2e_step "VM 1: mount, check-tree x3, edge cases, EROFS, nconnect"
vm1_t0=$(e2e_secs)
e2e_vm --name 10-kernel-mount --timeout 700 --port "$E2E_NFS_PORT" "$E2E_TMP/guest1.sh" \
    "$MONOFS_ROOT/tests/check-tree.sh" "$man_content" "$man_real" "$man_v1" \
    || fail "VM 1 (status $?)"
echo "e2e: VM 1 took $(awk -v a="$vm1_t0" -v b="$(e2e_secs)" 'BEGIN {printf "%.1f", b - a}')s" >&2

# ------------------------------------------------------------------ restart, no ingest
e2e_step "restart monofs up on the same data directory, sources moved away"
e2e_stop "$E2E_UP_PID" || fail "monofs up did not exit 0 on SIGTERM"
e2e_stop "$git_pid" || true  # git daemon ends by the signal (143)
mv "$src" "$src.moved"
e2e_up "$data" --nodes 2 --shards 1
expect_repos "after restart"

cat > "$E2E_TMP/guest2.sh" <<GUEST
. /test/lib.sh
set -u
M=/mnt/monofs
C=\$M/local/content
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="\$1" -v b="\$(now)" 'BEGIN {printf "%.1f", b - a}'; }
if ! monofs_mount \$M; then monofs_fail "mount after restart"; monofs_done; fi
monofs_ok "mounted the restarted cluster"
monofs_check "cat files/hello.txt" [ "\$(cat \$C/files/hello.txt)" = "hello, world" ]
monofs_check "v1 files/version.txt is v1" [ "\$(cat \$M/git/content-v1/files/version.txt)" = v1 ]
monofs_check "many/ lists 20000 names" [ "\$(ls \$C/many | wc -l)" -eq 20000 ]
s=\$(sha256sum \$M/local/real/$real_file | cut -d' ' -f1)
monofs_check "sha256 of real/$real_file" [ "\$s" = $real_sha ]
t=\$(now)
s=\$(sha256sum \$C/big/big.bin | cut -d' ' -f1)
monofs_check "sha256 of big/big.bin (110 MiB, \$(since \$t)s)" [ "\$s" = $big_sha ]
monofs_check "umount" monofs_umount \$M
monofs_done
GUEST

e2e_step "VM 2: read after restart"
vm2_t0=$(e2e_secs)
e2e_vm --name 10-kernel-mount-restart --timeout 240 --port "$E2E_NFS_PORT" "$E2E_TMP/guest2.sh" \
    || fail "VM 2 (status $?)"
echo "e2e: VM 2 took $(awk -v a="$vm2_t0" -v b="$(e2e_secs)" 'BEGIN {printf "%.1f", b - a}')s" >&2
if grep -qi "ingest" "$E2E_UP_LOG"; then
    echo "e2e: note: the restarted cluster's log mentions an ingest:" >&2
    grep -i "ingest" "$E2E_UP_LOG" | head -n 5 >&2
fi
e2e_step "PASS"

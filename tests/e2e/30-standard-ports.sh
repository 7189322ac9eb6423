#!/usr/bin/env bash
# Standard ports: `monofs up --port 2049 --portmap-port 111` lets Debian's mount.nfs mount
# MonoFS with no port options, as `mount -t nfs host:/ /mnt` does:
#   - vers=3: mount.nfs asks the portmapper on 111 for NFS and MOUNT, then mounts
#   - no vers=: mount.nfs tries NFSv4 first on 2049, MonoFS answers PROG_MISMATCH (3..3),
#     mount.nfs falls back to v3 and the mount shows vers=3 in /proc/mounts
# Needs root (ports < 1024) and free ports 111 and 2049 on the host: skipped (exit 0) when
# not root; fails when something else (rpcbind, a kernel nfsd) holds 111 or 2049.
#
# As root with unshare(1), the script re-runs itself in a private network namespace (its
# own loopback; QEMU user networking maps the guest's 10.0.2.2 to that loopback), so a
# host rpcbind/nfs-ganesha/knfsd (the rpcbind and nfs-ganesha packages .ci/run installs
# may be started by systemd) or another test cannot hold 111/2049. MONOFS_E2E_NO_NETNS=1
# runs it in the host's network namespace instead.
if [ "$(id -u)" = 0 ] && [ -z "${MONOFS_E2E_IN_NETNS:-}" ] && [ "${MONOFS_E2E_NO_NETNS:-0}" != 1 ] \
    && command -v unshare >/dev/null && command -v ip >/dev/null \
    && unshare -n true 2>/dev/null; then
    echo "e2e: running in a private network namespace (unshare -n)" >&2
    exec unshare -n env MONOFS_E2E_IN_NETNS=1 bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi
. "$(dirname "$0")/../lib/common.sh"

fail() { echo "FAIL: $*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
    echo "SKIP: 30-standard-ports needs root (binds ports 111 and 2049); not root, skipped"
    exit 0
fi
[ -x "$MONOFS_BIN" ] || fail "no $MONOFS_BIN (cargo build --release -p monofs)"

e2e_step "ports 111 and 2049 must be free"
busy=$(ss -Hlntu '( sport = :111 or sport = :2049 )' 2>/dev/null || true)
if [ -n "$busy" ]; then
    echo "$busy" >&2
    ss -Hlntup '( sport = :111 or sport = :2049 )' >&2 2>/dev/null || true
    fail "something already listens on port 111 or 2049 (rpcbind? a kernel nfsd?); stop it to run this test"
fi
echo "ok: nothing listens on 111 or 2049" >&2

e2e_step "test repositories"
e2e_repos_locked
man_real=$(e2e_manifest real)
real_file=$(awk -F'\t' '$1 == "file" && $2 > 100 && $6 !~ /\// { print $6; exit }' "$man_real")
real_sha=$(awk -F'\t' -v p="$real_file" '$6 == p { print $3 }' "$man_real")
[ -n "$real_sha" ] || fail "no top-level file in the manifest of real"

e2e_step "monofs up --port 2049 --portmap-port 111"
# --bind 0.0.0.0 not needed: QEMU user networking delivers the guest's 10.0.2.2 to 127.0.0.1.
e2e_up "$E2E_TMP/data" --nodes 1 --port 2049 --portmap-port 111
e2e_wait_port 111 10 || fail "portmapper not listening on 111"
t0=$(e2e_secs)
"$MONOFS_BIN" ingest "$MONOFS_TEST_REPOS/real" --source-id local/real --router "$E2E_ROUTER" > "$E2E_TMP/ingest.log" 2>&1 \
    || { cat "$E2E_TMP/ingest.log" >&2; fail "monofs ingest real"; }
echo "e2e: ingest real: $(awk -v a="$t0" -v b="$(e2e_secs)" 'BEGIN {printf "%.1f", b - a}')s" >&2
if command -v rpcinfo >/dev/null; then
    # the portmapper on 111 resolves NFS v3 and MOUNT v3 (rpcinfo then calls NULL on 2049)
    for pv in "100003 3" "100005 3"; do
        rpcinfo -T tcp 127.0.0.1 $pv >&2 || fail "rpcinfo -T tcp 127.0.0.1 $pv"
    done
    echo "ok: rpcinfo: the portmapper on 111 resolves NFS v3 and MOUNT v3" >&2
    # rpcinfo -p asks the portmapper for its own port first, then dumps the table.
    pm=$(rpcinfo -p 127.0.0.1) || fail "rpcinfo -p 127.0.0.1"
    echo "$pm" >&2
    for want in "100000 *2 *tcp *111" "100003 *3 *tcp *2049" "100005 *3 *tcp *2049"; do
        echo "$pm" | grep -Eq "$want" || fail "rpcinfo -p lacks $want"
    done
    echo "ok: rpcinfo -p lists the portmapper, NFS v3 and MOUNT v3" >&2
fi

cat > "$E2E_TMP/guest.sh" <<GUEST
. /test/lib.sh
set -u
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="\$1" -v b="\$(now)" 'BEGIN {printf "%.1f", b - a}'; }
F=local/real/$real_file

# 1. monofs_mount_plain: /sbin/mount.nfs 10.0.2.2:/ DIR -o nolock,vers=3 — no port
#    options, the portmapper on 111 gives NFS and MOUNT. (nolock is the helper's: the guest
#    runs no rpc.statd, and MonoFS is read-only, so no NLM locking is wanted.)
t=\$(now)
if monofs_mount_plain -o vers=3,retry=0 /mnt/monofs 2>/tmp/err; then
    monofs_ok "mount.nfs -o nolock,vers=3 via the portmapper (\$(since \$t)s)"
    grep " /mnt/monofs " /proc/mounts
    s=\$(sha256sum /mnt/monofs/\$F | cut -d' ' -f1)
    monofs_check "sha256 of \$F" [ "\$s" = $real_sha ]
    monofs_check "ls /mnt/monofs/local lists real" sh -c 'ls /mnt/monofs/local | grep -qx real'
    monofs_check "umount" monofs_umount /mnt/monofs
else
    monofs_fail "mount.nfs -o nolock,vers=3: \$(cat /tmp/err)"
fi

# 2. no vers=: mount.nfs tries NFSv4 first; MonoFS answers PROG_MISMATCH 3..3 and
#    mount.nfs falls back to NFSv3.
t=\$(now)
mkdir -p /mnt2
if /sbin/mount.nfs 10.0.2.2:/ /mnt2 -o nolock,retry=0 2>/tmp/err; then
    monofs_ok "mount.nfs without vers= (\$(since \$t)s)"
    grep " /mnt2 " /proc/mounts
    monofs_check "/proc/mounts shows the fallback to vers=3" sh -c 'grep " /mnt2 nfs " /proc/mounts | grep -q "vers=3"'
    monofs_check "cat after the fallback" sh -c '[ "\$(sha256sum /mnt2/\$0 | cut -d" " -f1)" = $real_sha ]' "\$F"
    monofs_check "umount /mnt2" umount /mnt2
else
    monofs_fail "mount.nfs without vers= (\$(since \$t)s): \$(cat /tmp/err)"
fi
monofs_done
GUEST

e2e_step "VM: mount.nfs on the standard ports"
e2e_vm --name 30-standard-ports --timeout 180 --port 2049 "$E2E_TMP/guest.sh" || fail "VM (status $?)"
e2e_step "PASS"

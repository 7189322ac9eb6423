# Helpers for MonoFS guest test scripts: `. /test/lib.sh`.
# Environment: MONOFS_PORT (NFS+MOUNT port of the MonoFS router on the host),
# MONOFS_ADDR (10.0.2.2, the host's loopback as seen from the guest).

MONOFS_ADDR=${MONOFS_ADDR:-10.0.2.2}

# monofs_mount [-o OPTS] [-r] [-p PORT] [-e EXPORT] DIR
#   mount(2) with vers=3,proto=tcp,port=P,mountport=P,mountproto=tcp,nolock,addr=..
#   (no portmapper, no mount.nfs). OPTS are appended to the NFS options.
monofs_mount() {
    eval "_monofs_dir=\${$#}"
    mkdir -p "$_monofs_dir"
    /sbin/monofs-mount -p "$MONOFS_PORT" -a "$MONOFS_ADDR" "$@"
}

# monofs_mount_plain [-o OPTS] DIR
#   Debian's mount.nfs against the standard ports (portmapper 111, NFS 2049, MOUNT via
#   the portmapper), as `mount -t nfs -o nolock[,OPTS] 10.0.2.2:/ DIR` does on a Debian
#   client: /sbin/mount.nfs is called directly (busybox mount would fall back to its own
#   attempt after the helper fails, muddling errors). nolock: the guest runs no rpc.statd.
#   Add vers=3 to skip the NFSv4 attempt; retry=0 to fail at once instead of retrying
#   for 2 minutes.
monofs_mount_plain() {
    _monofs_opts=nolock
    if [ "$1" = "-o" ]; then _monofs_opts="nolock,$2"; shift 2; fi
    mkdir -p "$1"
    /sbin/mount.nfs "$MONOFS_ADDR:/" "$1" -o "$_monofs_opts"
}

# monofs_umount DIR
monofs_umount() { umount "$1"; }

# Minimal assertions; each prints a line and counts failures in MONOFS_FAILS.
MONOFS_FAILS=0
monofs_ok()   { echo "ok: $*"; }
monofs_fail() { echo "FAIL: $*"; MONOFS_FAILS=$((MONOFS_FAILS + 1)); }
# monofs_check DESCRIPTION COMMAND... : run COMMAND, pass if it exits 0
monofs_check() {
    _d=$1; shift
    if "$@"; then monofs_ok "$_d"; else monofs_fail "$_d"; fi
}
# monofs_done: exit with the failure count (0 = all passed)
monofs_done() {
    echo "guest: $MONOFS_FAILS failure(s)"
    [ "$MONOFS_FAILS" -eq 0 ]
    exit $?
}

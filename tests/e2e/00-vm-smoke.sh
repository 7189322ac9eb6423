#!/usr/bin/env bash
# VM harness smoke test: the guest boots Debian's kernel, loads the NFS client modules,
# reaches the host over QEMU user networking (busybox wget from a python http.server on
# the host's loopback) and the NFS mount paths are wired up.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d)"
srv=""
trap '[ -n "$srv" ] && kill "$srv" 2>/dev/null; rm -rf "$work"' EXIT

mkdir -p "$work/www"
head -c 1048576 /dev/urandom > "$work/www/blob.bin"
want=$(sha256sum "$work/www/blob.bin" | cut -d' ' -f1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" >"$work/http.log" 2>&1 &
srv=$!
for _ in $(seq 50); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.1
done

# a port with nothing listening: the kernel NFS client must refuse quickly, not hang
closed=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cat > "$work/guest.sh" <<GUEST
. /test/lib.sh
set -u
for m in sunrpc nfs nfsv3; do
    monofs_check "module \$m loaded" grep -q "^\$m " /proc/modules
done
monofs_check "nfs filesystem registered" grep -qw nfs /proc/filesystems
monofs_check "eth0 has 10.0.2.15" sh -c 'ip addr show eth0 | grep -q "inet 10.0.2.15/24"'
monofs_check "default route via 10.0.2.2" sh -c 'ip route | grep -q "default via 10.0.2.2"'
monofs_check "wget from the host" wget -q -O /tmp/blob.bin "http://10.0.2.2:$port/blob.bin"
got=\$(sha256sum /tmp/blob.bin | cut -d' ' -f1)
monofs_check "downloaded content intact" [ "\$got" = "$want" ]
monofs_check "mount.nfs runs" sh -c '/sbin/mount.nfs -V 2>&1 | grep -q nfs-utils'
monofs_check "monofs-mount helper present" [ -x /sbin/monofs-mount ]
t0=\$(cut -d' ' -f1 /proc/uptime)
if monofs_mount -o soft,timeo=10,retrans=1 /mnt/closed 2>/tmp/mnt.err; then
    monofs_fail "mount of a closed port succeeded"
else
    monofs_ok "mount of a closed port fails: \$(cat /tmp/mnt.err)"
fi
echo "closed-port mount took \$(awk -v a=\$t0 -v b=\$(cut -d' ' -f1 /proc/uptime) 'BEGIN{print b-a}')s"
monofs_done
GUEST

"$ROOT/vm/run.sh" --name 00-vm-smoke --timeout 300 --port "$closed" "$work/guest.sh"

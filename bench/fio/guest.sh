#!/bin/sh
# Guest side of bench/fio/run-vm.sh (busybox sh in the kernel-client VM): mounts MonoFS
# with the stock kernel NFS client and runs each read-only fio job, printing its JSON
# between marker lines on the console for the host to collect.
. /test/lib.sh
set -u
FIO_DIR=/test/fio-bundle
FIO="$FIO_DIR/lib/ld-linux-x86-64.so.2 --library-path $FIO_DIR/lib $FIO_DIR/fio"
mkdir -p /mnt/monofs
monofs_mount -o "${MONOFS_FIO_MOUNT_OPTS:-rsize=1048576}" /mnt/monofs || { echo "fio: mount failed"; exit 1; }
root="/mnt/monofs/local/$MONOFS_FIO_REPO"
export MONOFS_FIO_DIR="$root/$MONOFS_FIO_SMALLDIR" MONOFS_FIO_FILE="$root/$MONOFS_FIO_BIGFILE"
export FIO_RUNTIME="${FIO_RUNTIME:-3}" MONOFS_FIO_SMALL_BS="${MONOFS_FIO_SMALL_BS:-1}"
ls "$MONOFS_FIO_DIR" >/dev/null && stat "$MONOFS_FIO_FILE" >/dev/null || { echo "fio: test paths missing"; exit 1; }
failed=0
for job in /test/fio-jobs/*.fio; do
    name=$(basename "$job" .fio)
    case "$name" in volume-*) echo "fio: $name skipped (for volumes; the namespace is read-only)"; continue ;; esac
    echo "fio: running $name for ${FIO_RUNTIME}s"
    if $FIO --readonly --output-format=json --output="/tmp/$name.json" "$job" >/tmp/fio.err 2>&1; then
        echo "MONOFS-FIO-JSON-BEGIN $name"
        cat "/tmp/$name.json"
        echo "MONOFS-FIO-JSON-END $name"
    else
        echo "fio: $name FAILED"; cat /tmp/fio.err; failed=$((failed + 1))
    fi
done
monofs_umount /mnt/monofs
exit "$failed"

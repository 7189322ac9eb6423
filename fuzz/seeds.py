#!/usr/bin/env python3
"""Write the seed corpus of every fuzz target into fuzz/corpus/TARGET/: well-formed
messages in each wire format (ONC RPC calls for NFSv3, MOUNT and PORTMAP; node
protocol requests and responses; directory and namespace records; a Go module
zip). Deterministic: running it again writes the same files.
Usage: fuzz/seeds.py [OUT_DIR]   (default: the corpus next to this script)"""

import hashlib
import io
import os
import struct
import sys
import zipfile

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def u32(v):
    return struct.pack(">I", v)


def u64(v):
    return struct.pack(">Q", v)


def xdr_opaque(b):
    return u32(len(b)) + b + b"\0" * (-len(b) % 4)


def rpc_call(xid, prog, vers, proc, args, unix=True):
    if unix:
        cred = u32(1) + xdr_opaque(u32(0) + xdr_opaque(b"client") + u32(1000) + u32(1000) + u32(1) + u32(1000))
    else:
        cred = u32(0) + u32(0)
    return u32(xid) + u32(0) + u32(2) + u32(prog) + u32(vers) + u32(proc) + cred + u32(0) + u32(0) + args


def rpc_seeds():
    NFS, MOUNT, PMAP = 100003, 100005, 100000
    root, file_, link = xdr_opaque(b"\x01"), xdr_opaque(b"\x02"), xdr_opaque(b"\x03")
    sattr = u32(1) + u32(0o644) + u32(0) + u32(0) + u32(0) + u32(0) + u32(0)
    calls = {
        "nfs-null": (NFS, 3, 0, b""),
        "nfs-getattr": (NFS, 3, 1, root),
        "nfs-setattr": (NFS, 3, 2, file_ + sattr + u32(0)),
        "nfs-lookup": (NFS, 3, 3, root + xdr_opaque(b"file")),
        "nfs-access": (NFS, 3, 4, file_ + u32(0x3F)),
        "nfs-readlink": (NFS, 3, 5, link),
        "nfs-read": (NFS, 3, 6, file_ + u64(4096) + u32(65536)),
        "nfs-write": (NFS, 3, 7, file_ + u64(0) + u32(5) + u32(2) + xdr_opaque(b"hello")),
        "nfs-create": (NFS, 3, 8, root + xdr_opaque(b"new") + u32(0) + sattr),
        "nfs-mkdir": (NFS, 3, 9, root + xdr_opaque(b"d") + sattr),
        "nfs-symlink": (NFS, 3, 10, root + xdr_opaque(b"l") + sattr + xdr_opaque(b"file")),
        "nfs-remove": (NFS, 3, 12, root + xdr_opaque(b"file")),
        "nfs-rename": (NFS, 3, 14, root + xdr_opaque(b"file") + root + xdr_opaque(b"f2")),
        "nfs-readdir": (NFS, 3, 16, root + u64(0) + b"\0" * 8 + u32(4096)),
        "nfs-readdir-cont": (NFS, 3, 16, root + u64(1) + b"\x07" * 8 + u32(512)),
        "nfs-readdirplus": (NFS, 3, 17, root + u64(0) + b"\0" * 8 + u32(4096) + u32(32768)),
        "nfs-fsstat": (NFS, 3, 18, root),
        "nfs-fsinfo": (NFS, 3, 19, root),
        "nfs-pathconf": (NFS, 3, 20, root),
        "nfs-commit": (NFS, 3, 21, file_ + u64(0) + u32(0)),
        "nfs-v2": (NFS, 2, 1, root),
        "mount-null": (MOUNT, 3, 0, b""),
        "mount-mnt": (MOUNT, 3, 1, xdr_opaque(b"/")),
        "mount-umnt": (MOUNT, 3, 3, xdr_opaque(b"/")),
        "mount-export": (MOUNT, 3, 5, b""),
        "portmap-getport": (PMAP, 2, 3, u32(NFS) + u32(3) + u32(6) + u32(0)),
        "portmap-dump": (PMAP, 2, 4, b""),
        "unknown-prog": (400000, 1, 0, b""),
    }
    out = {name: rpc_call(i + 1, *c) for i, (name, c) in enumerate(calls.items())}
    out["nfs-getattr-auth-none"] = rpc_call(99, NFS, 3, 1, root, unix=False)
    return out


def b16(b):
    return struct.pack(">H", len(b)) + b


def b32(b):
    return u32(len(b)) + b


def nodes():
    return u32(2) + b32(b"n1") + b32(b"127.0.0.1:7000") + b32(b"n2") + b32(b"127.0.0.1:7100")


def owner_filter():
    """Members n1..n3, rf 2, owned by n1, not by n3."""
    ids = lambda xs: u32(len(xs)) + b"".join(b32(x) for x in xs)
    return ids([b"n1", b"n2", b"n3"]) + struct.pack(">H", 2) + ids([b"n1"]) + ids([b"n3"])


def proto_seeds():
    oid = bytes(range(20))
    tree_key = b"T" + oid
    chunk_key = b"B" + oid + u32(3)
    return {
        "hello": b"\x01",
        "put-batch": b"\x02" + u32(2) + b16(tree_key) + b32(b"\0\0\0\0") + b16(chunk_key) + b32(b"chunk data"),
        "get": b"\x03" + b16(chunk_key) + u64(4096) + u32(65536),
        "stat": b"\x04" + b16(b"Nns"),
        "ingest": b"\x10\x00\x00" + b32(b"https://github.com/org/repo") + b32(b"main") + b32(b"") + struct.pack(">H", 2) + nodes(),
        "ingest-gomod": b"\x10\x01\x01" + b32(b"golang.org/x/mod@v0.20.0") + b32(b"") + b32(b"") + struct.pack(">H", 1) + nodes(),
        "fetch-blob": b"\x11\x00" + b32(b"file:///srv/repo") + oid + u64(5 << 20) + u32(1) + u32(4) + struct.pack(">H", 2) + nodes(),
        "status": b"\x12",
        "digest": b"\x06" + owner_filter(),
        "digest-all": b"\x06" + u32(0) + struct.pack(">H", 1) + u32(0) + u32(0),
        "list-keys": b"\x07" + owner_filter() + b"\x01" + struct.pack(">H", 4095) + b"\x00" + u32(4096),
        "list-keys-after": b"\x07" + owner_filter() + b"\x00" + b"\x01" + b16(tree_key) + u32(100),
        "stats": b"\x08",
        "ok": b"\x80",
        "data": b"\x81" + b32(b"some bytes"),
        "not-found": b"\x82",
        "size": b"\x83" + u64(12345),
        "hello-ok": b"\x84" + b32(b"node-1") + struct.pack(">HH", 4, 1),
        "progress": b"\x90" + b32(b"storing") + u64(10) + u64(4096),
        "ingest-done": b"\x91" + b32(ns_record()),
        "wrong-shard": b"\xfe" + struct.pack(">H", 2),
        # A DIGEST reply is 4096 buckets (64 KiB + 5 bytes), over the fuzzer's input size: no seed.
        "keys": b"\x86" + u32(2) + b16(tree_key) + u64(300) + b16(chunk_key) + u64(1 << 20) + b"\x01" + b16(chunk_key),
        "keys-last": b"\x86" + u32(0) + b"\x00",
        "shard-stats": b"\x87" + u64(1000) + u64(5 << 30) + u64(2) + u64(6 << 30),
        "error": b"\xff" + b32(b"ref 'nope' not found"),
    }


def dir_record(names):
    out = u32(len(names))
    for i, (name, mode, size) in enumerate(sorted(names)):
        out += b16(name) + u32(mode) + hashlib.sha1(name).digest() + u64(size)
    return out


def dir_seeds():
    return {
        "empty": dir_record([]),
        "kinds": dir_record([
            (b"README.md", 0o100644, 13),
            (b"run.sh", 0o100755, 19),
            (b"link", 0o120000, 9),
            (b"src", 0o40000, 2),
            (b"sub", 0o160000, 0),
            ("ünïcødé file.txt".encode(), 0o100644, 8),
        ]),
        "long-name": dir_record([(b"n" * 255, 0o100644, 1)]),
    }


def ns_entry(path, url, ref, t, subdirs):
    return (b32(path) + b32(url) + b32(ref) + hashlib.sha1(url).digest() + hashlib.sha1(path).digest()
            + struct.pack(">q", t) + u64(subdirs))


def ns_record():
    return u32(3) + b"".join([
        ns_entry(b"github.com/org/repo", b"https://github.com/org/repo", b"main", 1612325106, 3),
        ns_entry(b"go/pkg/mod/golang.org/x/mod@v0.20.0", b"go:golang.org/x/mod@v0.20.0", b"v0.20.0 h1:x", 1700000000, 5),
        ns_entry(b"local/fixture", b"/srv/fixture", b"", -1, 0),
    ])


def ns_seeds():
    return {"empty": u32(0), "three": ns_record()}


def zip_bytes(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, date_time=(2021, 2, 3, 4, 5, 6))
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_STORED if name.endswith("/") else zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()


def zip_seeds():
    p = "example.com/m@v1.0.0/"
    return {
        "module": zip_bytes([
            (p + "go.mod", b"module example.com/m\n\ngo 1.21\n", 0o100644),
            (p + "m.go", b"package m\n\nfunc M() int { return 1 }\n", 0o100644),
            (p + "internal/", b"", 0o40755),
            (p + "internal/x.go", b"package internal\n", 0o100644),
            (p + "scripts/run.sh", b"#!/bin/sh\necho hi\n", 0o100755),
        ]),
        "wrong-prefix": zip_bytes([("other@v1.0.0/go.mod", b"module other\n", 0o100644)]),
    }


def main():
    targets = {
        "rpc_dispatch": rpc_seeds(),
        "net_proto": proto_seeds(),
        "dir_record": dir_seeds(),
        "ns_record": ns_seeds(),
        "gomod_zip": zip_seeds(),
    }
    for target, seeds in targets.items():
        d = os.path.join(OUT, target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds in {d}")


if __name__ == "__main__":
    main()

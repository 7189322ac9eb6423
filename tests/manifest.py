#!/usr/bin/env python3
"""Print the content manifest of a Git revision, for tests/check-tree.sh.

usage: tests/manifest.py REPO_DIR [REV]        (REV defaults to HEAD)

Output, one line per path, tab separated, sorted by path bytes:

    TYPE  SIZE  SHA256  OID  TARGET  PATH

    TYPE    file | exec | symlink | submodule | dir
    SIZE    bytes for file/exec, target length for symlink, number of entries for dir,
            0 for submodule
    SHA256  of the content (file/exec/symlink target), "-" for dir/submodule
    OID     the Git object id (blob, tree, or the gitlink's commit)
    TARGET  the symlink target, "-" for other types
    PATH    relative to the root; the root itself is "."

The first line is a comment: "# monofs-manifest repo=NAME rev=REV commit=OID tree=OID".
Paths and targets holding a tab or newline cannot be represented and are an error.
"""
import hashlib
import os
import subprocess
import sys
import threading


def git(repo, *args, **kw):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, **kw).stdout


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    repo = sys.argv[1]
    rev = sys.argv[2] if len(sys.argv) == 3 else "HEAD"
    commit = git(repo, "rev-parse", "--verify", rev + "^{commit}").decode().strip()
    root_tree = git(repo, "rev-parse", "--verify", rev + "^{tree}").decode().strip()

    raw = git(repo, "ls-tree", "-r", "-t", "-z", "--long", "--full-tree", commit)
    entries = []  # (path bytes, mode, type, oid, size)
    children = {b".": 0}
    for rec in raw.split(b"\0"):
        if not rec:
            continue
        meta, path = rec.split(b"\t", 1)
        mode, otype, oid, size = meta.split()
        if b"\n" in path or b"\t" in path:
            sys.exit(f"manifest: path with tab/newline not supported: {path!r}")
        entries.append((path, mode.decode(), otype.decode(), oid.decode(), size.decode()))
        parent = path.rsplit(b"/", 1)[0] if b"/" in path else b"."
        children[parent] = children.get(parent, 0) + 1
        if otype == b"tree":
            children.setdefault(path, 0)

    # content hashes of all blobs in one `git cat-file --batch` pass
    blobs = sorted({e[3] for e in entries if e[2] == "blob"})
    sha = {}
    content = {}  # symlink targets (small)
    link_oids = {e[3] for e in entries if e[1] == "120000"}
    if blobs:
        p = subprocess.Popen(["git", "-C", repo, "cat-file", "--batch"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        def feed():
            p.stdin.write("".join(o + "\n" for o in blobs).encode())
            p.stdin.close()

        t = threading.Thread(target=feed)
        t.start()
        out = p.stdout
        for _ in blobs:
            header = out.readline().split()
            oid, size = header[0].decode(), int(header[2])
            h = hashlib.sha256()
            keep = [] if oid in link_oids else None
            left = size
            while left:
                chunk = out.read(min(left, 1 << 20))
                if not chunk:
                    sys.exit("manifest: short read from git cat-file")
                h.update(chunk)
                if keep is not None:
                    keep.append(chunk)
                left -= len(chunk)
            out.read(1)  # trailing newline
            sha[oid] = h.hexdigest()
            if keep is not None:
                content[oid] = b"".join(keep)
        t.join()
        if p.wait() != 0:
            sys.exit("manifest: git cat-file failed")

    w = sys.stdout.buffer
    name = os.path.basename(os.path.abspath(repo).rstrip("/"))
    w.write(f"# monofs-manifest repo={name} rev={rev} commit={commit} tree={root_tree}\n".encode())
    rows = [(b".", f"dir\t{children[b'.']}\t-\t{root_tree}\t-\t".encode())]
    for path, mode, otype, oid, size in entries:
        if otype == "tree":
            row = f"dir\t{children.get(path, 0)}\t-\t{oid}\t-\t"
        elif otype == "commit":
            row = f"submodule\t0\t-\t{oid}\t-\t"
        elif mode == "120000":
            target = content[oid]
            if b"\n" in target or b"\t" in target:
                sys.exit(f"manifest: symlink target with tab/newline not supported: {path!r}")
            rows.append((path, b"symlink\t%d\t%s\t%s\t%s\t" % (len(target), sha[oid].encode(), oid.encode(), target)))
            continue
        else:
            kind = "exec" if mode == "100755" else "file"
            row = f"{kind}\t{size}\t{sha[oid]}\t{oid}\t-\t"
        rows.append((path, row.encode()))
    rows.sort(key=lambda r: r[0])
    for path, row in rows:
        w.write(row + path + b"\n")


if __name__ == "__main__":
    main()

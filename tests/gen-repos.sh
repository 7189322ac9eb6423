#!/usr/bin/env bash
# Generate the Git repositories the MonoFS end-to-end tests serve.
#
# usage: tests/gen-repos.sh OUTDIR [--big-mb N] [--many N] [--force]
#
#   OUTDIR/content  non-bare repo of edge cases (deterministic: same commit ids everywhere
#                   for the same options):
#       links/       relative, absolute, dangling symlinks and a symlink to a directory
#       bin/         executable files
#       files/       small files, an empty file, a file also present at dup/
#       sizes/       files around the 4 KiB / 64 KiB / 1 MiB (CHUNK_SIZE) boundaries
#       names/       unicode, spaces, shell metacharacters, a 255-byte name
#       sort/        names whose Git tree order differs from plain byte order (foo vs foo.txt)
#       deep/        a 32-level deep path
#       many/        a directory with 20,000 entries (--many)
#       dup/         identical files and identical subtrees at different paths
#       vendor/sub   a submodule (gitlink 160000) with .gitmodules
#       big/big.bin  a 110 MiB pseudo-random file (--big-mb)
#     history: commit "v1" (annotated tag v1), then commit "v2" on main that changes
#     files/version.txt and adds CHANGES.txt.
#   OUTDIR/real     non-bare repo with a real crate's sources from the local cargo registry
#                   (serde-1.* if present), one commit on main, lightweight tag v1.
#
# Re-running with the same options is a no-op (OUTDIR/.gen-stamp); --force regenerates.
# Prints "name commit" lines for both repos at the end.
set -euo pipefail

usage() { echo "usage: tests/gen-repos.sh OUTDIR [--big-mb N] [--many N] [--force]" >&2; exit 2; }
out=""
big_mb=110
many=20000
force=0
while [ $# -gt 0 ]; do
    case "$1" in
        --big-mb) big_mb="$2"; shift 2 ;;
        --big-mb=*) big_mb="${1#*=}"; shift ;;
        --many) many="$2"; shift 2 ;;
        --many=*) many="${1#*=}"; shift ;;
        --force) force=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) usage ;;
        *) [ -z "$out" ] || usage; out="$1"; shift ;;
    esac
done
[ -n "$out" ] || usage
mkdir -p "$out"
out="$(cd "$out" && pwd)"
SELF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

stamp="big_mb=$big_mb many=$many gen=$(sha256sum "$SELF_DIR/gen-repos.sh" | cut -c1-16)"
if [ "$force" = 0 ] && [ "$(cat "$out/.gen-stamp" 2>/dev/null)" = "$stamp" ] \
    && [ -d "$out/content/.git" ] && [ -d "$out/real/.git" ]; then
    echo "content $(git -C "$out/content" rev-parse main)"
    echo "real $(git -C "$out/real" rev-parse main)"
    exit 0
fi
rm -f "$out/.gen-stamp"

export GIT_AUTHOR_NAME="MonoFS Test" GIT_AUTHOR_EMAIL="test@monofs.invalid"
export GIT_COMMITTER_NAME="MonoFS Test" GIT_COMMITTER_EMAIL="test@monofs.invalid"
export GIT_AUTHOR_DATE="2024-01-02T03:04:05+00:00" GIT_COMMITTER_DATE="2024-01-02T03:04:05+00:00"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export TZ=UTC LC_ALL=C
g() { git -c user.name="MonoFS Test" -c user.email=test@monofs.invalid \
          -c core.autocrlf=false -c core.fileMode=true -c core.symlinks=true \
          -c core.quotepath=false -c init.defaultBranch=main -c gc.auto=0 \
          -c commit.gpgsign=false -c tag.gpgsign=false "$@"; }

# ------------------------------------------------------------------ content
repo="$out/content"
rm -rf "$repo"
g init -q -b main "$repo"
cd "$repo"

python3 - "$big_mb" "$many" <<'PY'
import hashlib, os, sys
big_mb, many = int(sys.argv[1]), int(sys.argv[2])

def w(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)

def prng(seed, n):
    # deterministic pseudo-random bytes (SHAKE-256 stream)
    return hashlib.shake_256(seed.encode()).digest(n)

w("README.md", "# MonoFS test content\n\nEdge cases for the MonoFS NFS namespace.\n")
w(".hidden", "hidden file\n")
w("files/hello.txt", "hello, world\n")
w("files/empty", b"")
w("files/version.txt", "v1\n")
w("files/no-newline", "no newline at end")
w("files/crlf.txt", "line one\r\nline two\r\n")
w("files/binary.bin", bytes(range(256)) * 16)
w("bin/run.sh", "#!/bin/sh\necho monofs\n", 0o755)
w("bin/tool", prng("tool", 5000), 0o755)
w("bin/empty-exec", b"", 0o755)

for n in (0, 1, 4095, 4096, 4097, 65535, 65536, 65537, 131072,
          1048575, 1048576, 1048577, 2 * 1048576, 3 * 1048576 + 12345):
    w(f"sizes/s{n:08d}", prng(f"size-{n}", n))

for name in ("héllo wörld.txt", "日本語のファイル.txt", "emoji-😀.txt", "with space",
             " leading space", "trailing space ", "semi;colon", "quote'single",
             'quote"double', "dollar$sign", "back\\slash", "star*", "question?",
             "percent%20", "hash#tag", "-leading-dash", "a" * 255, "UPPER", "upper",
             "ÅÄÖ", "Ω≈ç√", "tab-less=equals", "[brackets]", "{braces}", "(parens)"):
    w(f"names/{name}", f"name: {name}\n")
w("names/dir with spaces/inner file.txt", "inner\n")
w("names/ünïcödé dir/ファイル", "unicode dir\n")

# Git sorts tree entries as if directories ended in '/': foo.txt < foo/ < foo0
for name in ("foo.txt", "foo-bar", "foo0", "foo/inner", "foo.d/inner", "a", "B", "_", "~"):
    w(f"sort/{name}", f"{name}\n")

deep = "deep/" + "/".join(f"d{i:02d}" for i in range(1, 33))
w(f"{deep}/leaf.txt", "at the bottom\n")

os.makedirs("many", exist_ok=True)
for i in range(many):
    with open(f"many/f{i:05d}", "w") as f:
        f.write(f"{i}\n")

# identical blobs and identical subtrees at different paths
w("dup/hello-copy.txt", "hello, world\n")
for top in ("dup/a", "dup/b", "dup/nested/c"):
    w(f"{top}/tree/x.txt", "same x\n")
    w(f"{top}/tree/y.txt", "same y\n")
    w(f"{top}/tree/sub/z.bin", prng("z", 70000))
    w(f"{top}/tree/run", "#!/bin/sh\n", 0o755)
w("dup/empty1", b"")
w("dup/empty2", b"")

os.makedirs("big", exist_ok=True)
with open("big/big.bin", "wb") as f:
    remaining = big_mb * 1048576
    # 16 MiB blocks, each its own SHAKE-256 stream, to bound memory
    block = 0
    while remaining > 0:
        n = min(remaining, 16 * 1048576)
        f.write(hashlib.shake_256(b"monofs-big-%d" % block).digest(n))
        remaining -= n
        block += 1
PY

mkdir -p links
ln -s ../files/hello.txt links/relative
ln -s /etc/hostname links/absolute
ln -s does/not/exist links/dangling
ln -s ../files links/dir
ln -s . links/self
ln -s "../names/héllo wörld.txt" "links/to unicode"
ln -s "$(printf 'x%.0s' $(seq 1 200))" links/long-target

cat > .gitmodules <<'EOF'
[submodule "vendor/sub"]
	path = vendor/sub
	url = https://github.com/monofs-test/submodule.git
EOF

g add -A .
g update-index --add --cacheinfo 160000,0123456789abcdef0123456789abcdef01234567,vendor/sub
g commit -q -m "v1: MonoFS test content"
g tag -a v1 -m "v1"

export GIT_AUTHOR_DATE="2024-02-03T04:05:06+00:00" GIT_COMMITTER_DATE="2024-02-03T04:05:06+00:00"
echo "v2" > files/version.txt
echo "changes since v1" > CHANGES.txt
g add files/version.txt CHANGES.txt
g commit -q -m "v2: change version, add CHANGES.txt"

# ------------------------------------------------------------------ real
export GIT_AUTHOR_DATE="2024-03-04T05:06:07+00:00" GIT_COMMITTER_DATE="2024-03-04T05:06:07+00:00"
real="$out/real"
rm -rf "$real"
g init -q -b main "$real"
src=""
for pat in 'serde-1.*' 'gix-0.*' 'libc-0.2.*' '*'; do
    for d in $(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/$pat 2>/dev/null | LC_ALL=C sort); do
        [ -d "$d" ] && { src="$d"; break 2; }
    done
done
if [ -n "$src" ]; then
    echo "gen-repos: real: $(basename "$src") from the cargo registry" >&2
    cp -a "$src/." "$real/"
    rm -f "$real/.cargo-ok"
    msg="import $(basename "$src")"
else
    echo "gen-repos: real: no cargo registry, using the MonoFS sources" >&2
    git -C "$SELF_DIR/.." archive HEAD | tar -x -C "$real"
    msg="import MonoFS sources"
fi
cd "$real"
g add -A -f .
g commit -q -m "$msg"
g tag v1

cd "$out"
echo "$stamp" > "$out/.gen-stamp"
echo "content $(git -C "$out/content" rev-parse main)"
echo "real $(git -C "$out/real" rev-parse main)"

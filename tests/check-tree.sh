#!/bin/sh
# Verify a mounted (or checked out) tree against a manifest from tests/manifest.py.
#
# usage: tests/check-tree.sh [--no-hash] [--hash-max BYTES] [--ignore PATH]... [-v] MANIFEST DIR
#
# POSIX sh; runs on a host (GNU tools) and in the MonoFS test VM (busybox: find,
# stat, sha256sum, readlink, awk, sort). Checks, for every manifest path: it exists with
# the right type (dir, regular file, symlink; submodules are empty directories), exec bit
# (exec: owner x set; file: no x bits), size (files, symlinks), sha256 of the content and
# symlink target; and that every directory lists exactly the expected names (no extras,
# no duplicates). Work is done in a few passes over the whole tree (find -exec stat {} +,
# find -exec sha256sum {} +), not per file.
#   --no-hash         skip content hashes (types, sizes, listings, targets only)
#   --hash-max BYTES  hash only files of at most BYTES bytes (bigger: size checked only)
#   --ignore PATH     do not report PATH (and what is below it) as unexpected, e.g. .git
#                     for a host checkout (repeatable)
#   -v                print every failure (default: the first 50)
# Prints "check: N passed, M failed" and exits 1 on any failure (2 on usage errors).
set -u
hash=1
hash_max=""
verbose=0
ignore=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-hash) hash=0; shift ;;
        --hash-max) hash_max="$2"; shift 2 ;;
        --ignore) ignore="$ignore$2
"; shift 2 ;;
        -v) verbose=1; shift ;;
        -*) echo "check-tree: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -eq 2 ] || { echo "usage: check-tree.sh [--no-hash] [--hash-max BYTES] [--ignore PATH]... [-v] MANIFEST DIR" >&2; exit 2; }
manifest="$1"
dir="$2"
[ -r "$manifest" ] || { echo "check-tree: cannot read $manifest" >&2; exit 2; }
[ -d "$dir" ] || { echo "check-tree: not a directory: $dir" >&2; exit 2; }
case "$manifest" in /*) ;; *) manifest="$(pwd)/$manifest" ;; esac

tmp="$(mktemp -d "${TMPDIR:-/tmp}/check-tree.XXXXXX")" || exit 2
trap 'rm -rf "$tmp"' EXIT
cd "$dir" || exit 2
export LC_ALL=C

# 1. every entry with lstat raw mode (hex) and size
# (find -exec {} +, not xargs -0: busybox 1.35 xargs -0 corrupts long argument lists)
find . -exec stat -c '%f %s %n' {} + > "$tmp/stat" 2> "$tmp/stat.err" \
    || echo "find/stat: exit status $?" >> "$tmp/stat.err"

# 2. symlink targets (few; one readlink each)
find . -type l > "$tmp/links"
while IFS= read -r p; do
    t=$(readlink "$p") || t="<readlink failed>"
    printf '%s\t%s\n' "$p" "$t"
done < "$tmp/links" > "$tmp/targets"

# 3. content hashes in one pass
: > "$tmp/sums"
if [ "$hash" = 1 ]; then
    if [ -n "$hash_max" ]; then
        find . -type f ! -size +"${hash_max}c" -exec sha256sum {} +
    else
        find . -type f -exec sha256sum {} +
    fi > "$tmp/sums" 2> "$tmp/sums.err" || echo "find/sha256sum: exit status $?" >> "$tmp/sums.err"
fi

printf '%s' "$ignore" > "$tmp/ignore"

# errors while walking or reading the tree are failures too
errors=0
for e in stat.err sums.err; do
    if [ -s "$tmp/$e" ]; then
        echo "check-tree: errors from ${e%.err}:"
        head -n 20 "$tmp/$e"
        errors=$((errors + $(wc -l < "$tmp/$e")))
    fi
done

awk -v hash="$hash" -v errors="$errors" -v hash_max="$hash_max" -v verbose="$verbose" \
    -v F_IGNORE="$tmp/ignore" -v F_STAT="$tmp/stat" -v F_TARGETS="$tmp/targets" -v F_SUMS="$tmp/sums" '
function fail(msg) {
    failed++
    if (verbose || failed <= 50) print "FAIL: " msg
}
function norm(p) { if (p == ".") return "."; sub(/^\.\//, "", p); return p }
function parent(p,   q) { q = p; if (q !~ /\//) return "."; sub(/\/[^\/]*$/, "", q); return q }
function ignored(p,   q) {
    for (q = p; ; q = parent(q)) { if (q in ign) return 1; if (q == ".") return 0 }
}
function hex2dec(h,   i, n, c) {
    n = 0; h = tolower(h)
    for (i = 1; i <= length(h); i++) { c = index("0123456789abcdef", substr(h, i, 1)) - 1; n = n * 16 + c }
    return n
}
FILENAME == F_IGNORE { if ($0 != "") ign[$0] = 1; next }
FILENAME == F_STAT {
    # "%f %s %n": raw mode hex, size, name (may contain spaces)
    m = $1; s = $2
    p = norm(substr($0, length($1) + length($2) + 3))
    seen[p]++
    mode[p] = hex2dec(m); size[p] = s
    next
}
FILENAME == F_TARGETS {
    i = index($0, "\t")
    target[norm(substr($0, 1, i - 1))] = substr($0, i + 1)
    next
}
FILENAME == F_SUMS {
    line = $0
    if (substr(line, 1, 1) == "\\") {
        # GNU coreutils escapes names holding a backslash or newline
        line = substr(line, 2); esc = 1
    } else esc = 0
    h = substr(line, 1, 64); p = substr(line, 67)
    if (esc) { gsub(/\\\\/, "\001", p); gsub(/\\n/, "\n", p); gsub(/\001/, "\\", p) }
    sum[norm(p)] = h
    next
}
# the manifest: TYPE SIZE SHA256 OID TARGET PATH (tab separated)
/^#/ { next }
{
    n = split($0, f, "\t")
    if (n < 6) { fail("bad manifest line: " $0); next }
    type = f[1]; esize = f[2]; esha = f[3]; etarget = f[5]
    # the path is everything after the fifth tab
    rest = $0
    for (k = 1; k <= 5; k++) rest = substr(rest, index(rest, "\t") + 1)
    p = rest
    expected[p] = 1
    total++
    if (!(p in seen)) { fail(p ": missing (expected " type ")"); next }
    if (seen[p] > 1) { fail(p ": listed " seen[p] " times"); next }
    fm = mode[p]; ft = int(fm / 4096)   # S_IFMT >> 12: 4 dir, 8 file, 10 symlink
    perm = fm % 4096
    ok = 1
    if (type == "dir" || type == "submodule") {
        if (ft != 4) { fail(p ": not a directory (mode " sprintf("%o", fm) ")"); next }
        if (type == "submodule") subm[p] = 1
    } else if (type == "symlink") {
        if (ft != 10) { fail(p ": not a symlink (mode " sprintf("%o", fm) ")"); next }
        if (!(p in target)) { fail(p ": no symlink target read"); ok = 0 }
        else if (target[p] != etarget) { fail(p ": symlink target \"" target[p] "\", expected \"" etarget "\""); ok = 0 }
        if (size[p] != esize) { fail(p ": symlink size " size[p] ", expected " esize); ok = 0 }
    } else if (type == "file" || type == "exec") {
        if (ft != 8) { fail(p ": not a regular file (mode " sprintf("%o", fm) ")"); next }
        xbits = int(perm / 64) % 2
        if (type == "exec" && xbits != 1) { fail(p ": not executable (mode " sprintf("%o", perm) ")"); ok = 0 }
        if (type == "file" && (int(perm / 64) % 2 || int(perm / 8) % 2 || perm % 2)) { fail(p ": unexpectedly executable (mode " sprintf("%o", perm) ")"); ok = 0 }
        if (size[p] != esize) { fail(p ": size " size[p] ", expected " esize); ok = 0 }
        if (hash == 1 && (hash_max == "" || esize + 0 <= hash_max + 0)) {
            if (!(p in sum)) { fail(p ": content not read"); ok = 0 }
            else if (sum[p] != esha) { fail(p ": sha256 " sum[p] ", expected " esha); ok = 0 }
        }
    } else { fail(p ": unknown manifest type " type); next }
    if (ok) passed++
}
END {
    # anything on disk the manifest does not list is an extra directory entry
    for (p in seen) {
        if (!(p in expected) && !ignored(p)) {
            par = parent(p)
            if (par in subm) fail(par ": submodule directory is not empty (has " p ")")
            else fail(parent(p) ": unexpected entry " p)
            extra++
        }
    }
    if (errors > 0) fail(errors " error(s) while walking or reading the tree")
    if (failed > 50 && !verbose) print "... " failed - 50 " more failures (use -v)"
    printf "check: %d passed, %d failed\n", passed, failed
    exit failed > 0 ? 1 : 0
}' "$tmp/ignore" "$tmp/stat" "$tmp/targets" "$tmp/sums" "$manifest"
exit $?

"""catall.py MANIFEST NS_PREFIX [SKIP_PREFIX...]: `monofs cat` of every file of a
tests/manifest.py manifest under NS_PREFIX, sha256 and size checked (MONOFS_BIN and
MONOFS_SERVER from the environment). Exit 1 if any file is wrong or none was read."""
import hashlib, os, subprocess, sys
MONOFS = os.environ["MONOFS_BIN"]
skip = [p.encode() for p in sys.argv[3:]]
ok = bad = 0
for line in open(sys.argv[1], "rb"):
    if line.startswith(b"#"):
        continue
    typ, size, sha, _oid, _target, path = line.rstrip(b"\n").split(b"\t", 5)
    if typ not in (b"file", b"exec") or any(path.startswith(s) for s in skip):
        continue
    p = subprocess.run([MONOFS, "cat", sys.argv[2].encode() + b"/" + path], capture_output=True, timeout=300)
    got = hashlib.sha256(p.stdout).hexdigest()
    if p.returncode == 0 and got == sha.decode() and len(p.stdout) == int(size):
        ok += 1
    else:
        bad += 1
        print("FAIL: cat", path, p.returncode, len(p.stdout), p.stderr.decode(errors="replace").strip())
print(f"cat: {ok} files verified, {bad} wrong")
sys.exit(1 if bad or not ok else 0)

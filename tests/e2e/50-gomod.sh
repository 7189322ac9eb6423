#!/usr/bin/env bash
# Host-side end-to-end test of Go module ingest, no VM and no root:
#   - a GOPROXY directory with module zips built here (python3 zipfile): example.com/hello
#     v1.0.0 and v1.1.0 (an executable file, a subdirectory), example.com/Foo/bar v1.0.0
#     (upper case: `!`-escaped paths), served by `python3 -m http.server` on loopback
#   - `monofs up --gomod-proxy http://127.0.0.1:PORT`, `monofs ingest --go MODULE@VERSION`
#   - /go/pkg/mod/<escaped module>@<version>/...: every file byte-identical to the zip's
#   - /go/proxy/<escaped module>/@v/{list,<v>.info,<v>.mod,<v>.zip}: the zip byte-identical
#     to the proxy's, `list` growing with each ingested version, @latest resolved
#   - a version the proxy lacks: ingest exits non-zero naming the module, version and proxy
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"



e2e_step "module proxy directory"
PROXY="$E2E_TMP/goproxy"
SRC="$E2E_TMP/modsrc"
python3 - "$PROXY" "$SRC" <<'PY'
import json, os, sys, zipfile

proxy, src = sys.argv[1], sys.argv[2]

def esc(s):
    return "".join("!" + c.lower() if c.isupper() else c for c in s)

def publish(module, version, files):
    """files: {path: (bytes, executable)}; writes the proxy files and an extracted copy."""
    d = os.path.join(proxy, esc(module), "@v")
    os.makedirs(d, exist_ok=True)
    zpath = os.path.join(d, esc(version) + ".zip")
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for p, (data, ex) in sorted(files.items()):
            zi = zipfile.ZipInfo(f"{module}@{version}/{p}", date_time=(2021, 2, 3, 4, 5, 6))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = (0o100755 if ex else 0o100644) << 16
            z.writestr(zi, data)
    with open(os.path.join(d, esc(version) + ".mod"), "wb") as f:
        f.write(files["go.mod"][0])
    with open(os.path.join(d, esc(version) + ".info"), "w") as f:
        json.dump({"Version": version, "Time": "2021-02-03T04:05:06Z"}, f)
    with open(os.path.join(d, "list"), "a") as f:
        f.write(version + "\n")
    for p, (data, ex) in files.items():
        out = os.path.join(src, esc(module) + "@" + esc(version), p)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as f:
            f.write(data)

def hello(msg):
    return {
        "go.mod": (b"module example.com/hello\n\ngo 1.19\n", False),
        "hello.go": (b'package hello\n\nconst Msg = "%s"\n' % msg.encode(), False),
        "internal/greet/greet.go": (b"package greet\n", False),
        "tools/gen.sh": (b"#!/bin/sh\necho gen\n", True),
        "LICENSE": (b"MIT\n", False),
    }

publish("example.com/hello", "v1.0.0", hello("one"))
publish("example.com/hello", "v1.1.0", hello("two"))
publish("example.com/Foo/bar", "v1.0.0", {
    "go.mod": (b"module example.com/Foo/bar\n", False),
    "bar.go": (b"package bar\n", False),
    "big.bin": (bytes((i * 7919) % 251 for i in range(3 * 1024 * 1024 + 17)), False),
})
PY
find "$PROXY" -type f | sort

PPORT=$(e2e_free_ports 1)
e2e_bg python3 -m http.server --bind 127.0.0.1 --directory "$PROXY" "$PPORT"
e2e_wait_port "$PPORT" 20

e2e_step "cluster with --gomod-proxy"
e2e_up "$E2E_TMP/data" --gomod-proxy "http://127.0.0.1:$PPORT"

ingest_go() {
    timeout 300 "$MONOFS_BIN" ingest --go "$1" --router "$E2E_ROUTER" </dev/null
}

# Every file of an extracted module, compared with the source it was zipped from.
check_tree() {
    local ns="$1" dir="$2" f rel
    while IFS= read -r f; do
        rel="${f#"$dir"/}"
        e2e_check "$ns/$rel is byte-identical" cmp -s <("$MONOFS_BIN" cat "$ns/$rel") "$f"
    done < <(find "$dir" -type f | sort)
    e2e_check "$ns lists the module's top level" test \
        "$("$MONOFS_BIN" ls "$ns" | LC_ALL=C sort | tr '\n' ' ')" = "$(ls -A "$dir" | LC_ALL=C sort | tr '\n' ' ')"
}

e2e_step "ingest example.com/hello@v1.0.0"
e2e_check "ingest --go example.com/hello@v1.0.0 exits 0" ingest_go example.com/hello@v1.0.0
check_tree /go/pkg/mod/example.com/hello@v1.0.0 "$SRC/example.com/hello@v1.0.0"
AV=/go/proxy/example.com/hello/@v
e2e_check "@v/list names v1.0.0" test "$("$MONOFS_BIN" cat $AV/list)" = "v1.0.0"
e2e_check "@v/v1.0.0.zip is the proxy's zip" \
    cmp -s <("$MONOFS_BIN" cat $AV/v1.0.0.zip) "$PROXY/example.com/hello/@v/v1.0.0.zip"
e2e_check "@v/v1.0.0.mod is the proxy's" \
    cmp -s <("$MONOFS_BIN" cat $AV/v1.0.0.mod) "$PROXY/example.com/hello/@v/v1.0.0.mod"
e2e_check "@v/v1.0.0.info is the proxy's" \
    cmp -s <("$MONOFS_BIN" cat $AV/v1.0.0.info) "$PROXY/example.com/hello/@v/v1.0.0.info"

e2e_step "ingest example.com/hello@latest (v1.1.0)"
e2e_check "ingest --go example.com/hello@latest exits 0" ingest_go example.com/hello@latest
check_tree /go/pkg/mod/example.com/hello@v1.1.0 "$SRC/example.com/hello@v1.1.0"
e2e_check "@v/list names both versions" test "$("$MONOFS_BIN" cat $AV/list | tr '\n' ' ')" = "v1.0.0 v1.1.0 "
e2e_check "@v lists both versions' files" test "$("$MONOFS_BIN" ls $AV | LC_ALL=C sort | tr '\n' ' ')" = \
    "list v1.0.0.info v1.0.0.mod v1.0.0.zip v1.1.0.info v1.1.0.mod v1.1.0.zip "
e2e_check "@v/v1.1.0.zip is the proxy's zip" \
    cmp -s <("$MONOFS_BIN" cat $AV/v1.1.0.zip) "$PROXY/example.com/hello/@v/v1.1.0.zip"
e2e_check "the v1.0.0 tree is still published" \
    cmp -s <("$MONOFS_BIN" cat /go/pkg/mod/example.com/hello@v1.0.0/hello.go) "$SRC/example.com/hello@v1.0.0/hello.go"

e2e_step "ingest example.com/Foo/bar@v1.0.0 (escaped path)"
e2e_check "ingest --go example.com/Foo/bar@v1.0.0 exits 0" ingest_go example.com/Foo/bar@v1.0.0
check_tree "/go/pkg/mod/example.com/!foo/bar@v1.0.0" "$SRC/example.com/!foo/bar@v1.0.0"
e2e_check "/go/proxy/example.com/!foo/bar/@v/v1.0.0.zip is the proxy's zip" \
    cmp -s <("$MONOFS_BIN" cat "/go/proxy/example.com/!foo/bar/@v/v1.0.0.zip") "$PROXY/example.com/!foo/bar/@v/v1.0.0.zip"

e2e_step "a version the proxy lacks"
rc=0
timeout 120 "$MONOFS_BIN" ingest --go example.com/hello@v1.9.9 --router "$E2E_ROUTER" \
    >"$E2E_TMP/bad.out" 2>"$E2E_TMP/bad.err" </dev/null || rc=$?
cat "$E2E_TMP/bad.err"
e2e_check "ingest of a missing version fails" test "$rc" != 0
e2e_check "the message names module, version and proxy" \
    grep -q "module example.com/hello version v1.9.9 not found in proxy http://127.0.0.1:$PPORT" "$E2E_TMP/bad.err"
e2e_check "the published list is unchanged" test "$("$MONOFS_BIN" cat $AV/list | tr '\n' ' ')" = "v1.0.0 v1.1.0 "

if command -v go >/dev/null 2>&1; then
    e2e_step "go resolves modules from the MonoFS proxy layout (via monofs cat into a file proxy)"
    GP="$E2E_TMP/from-monofs"
    mkdir -p "$GP/example.com/hello/@v"
    for f in list v1.1.0.info v1.1.0.mod v1.1.0.zip; do
        "$MONOFS_BIN" cat "$AV/$f" >"$GP/example.com/hello/@v/$f"
    done
    mkdir -p "$E2E_TMP/gomain" && cd "$E2E_TMP/gomain"
    printf 'module example.com/main\n\ngo 1.19\n\nrequire example.com/hello v1.1.0\n' >go.mod
    printf 'package main\n\nimport "example.com/hello"\n\nfunc main() { println(hello.Msg) }\n' >main.go
    e2e_check "go build with GOPROXY=file:// of MonoFS's files" env GOPROXY="file://$GP" \
        GOFLAGS=-mod=mod GOSUMDB=off GOPATH="$E2E_TMP/gopath" GOCACHE="$E2E_TMP/gocache" \
        go build -o /dev/null .
    cd - >/dev/null
fi

e2e_stop "$E2E_UP_PID"
e2e_done

#!/usr/bin/env bash
# The MonoFS test suite: build, unit/integration tests, then the end-to-end scripts.
#
# usage: tests/run-all.sh [--no-setup] [--no-cargo] [E2E_NAME_PATTERN...]
#
#   0. tests/setup.sh                   (apt packages, the VM's kernel and initramfs)
#   1. cargo build --release            (release everywhere, so the build is shared)
#   2. cargo test --workspace --release
#   3. tests/e2e/*.sh in order (only those matching a pattern, if given), each under
#      `timeout $MONOFS_E2E_TIMEOUT` (default 1200 s), output streamed and kept in
#      target/e2e-logs/NAME.log
# --no-setup (or MONOFS_SKIP_SETUP=1) skips step 0, --no-cargo (or MONOFS_SKIP_CARGO=1)
# steps 1-2.
# The last line is "e2e: N passed, M failed"; the exit status is non-zero if anything failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

skip_cargo="${MONOFS_SKIP_CARGO:-0}"
skip_setup="${MONOFS_SKIP_SETUP:-0}"
patterns=()
for a in "$@"; do
    case "$a" in
        --no-cargo) skip_cargo=1 ;;
        --no-setup) skip_setup=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) patterns+=("$a") ;;
    esac
done

scripts=()
for s in tests/e2e/*.sh; do
    [ -e "$s" ] || continue
    if [ "${#patterns[@]}" -gt 0 ]; then
        m=0
        for p in "${patterns[@]}"; do case "$(basename "$s")" in *$p*) m=1 ;; esac; done
        [ "$m" = 1 ] || continue
    fi
    scripts+=("$s")
done

section() { echo; echo "==== $* ($(date -u +%H:%M:%S))"; }
t_start=$(date +%s)
status=0

if [ "$skip_setup" != 1 ]; then
    section "setup"
    tests/setup.sh
fi

if [ "$skip_cargo" != 1 ]; then
    section "cargo build --release"
    if ! cargo build --release --workspace; then
        echo "run-all: cargo build failed; end-to-end tests not run"
        echo "e2e: 0 passed, ${#scripts[@]} failed"
        exit 1
    fi
    section "cargo test --workspace --release"
    if ! cargo test --workspace --release; then
        echo "run-all: cargo test FAILED"
        status=1
    fi
fi

mkdir -p target/e2e-logs
passed=0
failed=0
failed_names=()
for s in "${scripts[@]}"; do
    name="$(basename "$s" .sh)"
    section "e2e $name"
    t0=$(date +%s)
    set +e
    timeout -k 10 "${MONOFS_E2E_TIMEOUT:-1200}" bash "$s" </dev/null 2>&1 | tee "target/e2e-logs/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    dt=$(( $(date +%s) - t0 ))
    if [ "$rc" = 0 ]; then
        passed=$((passed + 1))
        echo "e2e: $name: PASS (${dt}s)"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        [ "$rc" = 124 ] && echo "e2e: $name: TIMEOUT" 
        echo "e2e: $name: FAIL (status $rc, ${dt}s, log target/e2e-logs/$name.log)"
    fi
done

section "summary"
echo "total time: $(( $(date +%s) - t_start ))s"
[ "$status" = 0 ] || echo "cargo test: FAILED"
[ "$failed" = 0 ] || echo "failed e2e: ${failed_names[*]}"
echo "e2e: $passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$status" = 0 ]

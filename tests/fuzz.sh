#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every target in fuzz/, each for a
# bounded time, starting from the checked-in corpus (fuzz/corpus/TARGET).
#
# usage: tests/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 30 s, all targets)
#
# The toolchain is stable Rust: cargo-fuzz runs with `--sanitizer none` (no ASan,
# which needs nightly's -Zsanitizer) and RUSTC_BOOTSTRAP=1 for the unstable flags
# it may pass; coverage comes from LLVM's SanitizerCoverage pass, which stable rustc
# runs with -Cpasses=sancov-module. Rust's own checks (bounds, overflow in debug
# assertions builds, every panic) are what the targets catch.
#
# The corpus is copied to a temporary directory, so new inputs never dirty the tree.
# A crash fails the script; its input is kept in target/fuzz-crashes/TARGET/ and is
# printed in base64. Each target must report growing coverage (libFuzzer's `cov:`
# and `ft:`), or the script fails: that means the instrumentation is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS="${1:-30}"
shift || true
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (cargo install --locked)"
    cargo install --locked cargo-fuzz
fi
if ! command -v c++ >/dev/null 2>&1; then
    echo "fuzz: a C++ compiler is needed to build libFuzzer (tests/setup.sh installs g++)" >&2
    exit 1
fi

cd "$ROOT/fuzz"
mapfile -t all < <(cargo fuzz list --fuzz-dir .)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi

t0=$(date +%s)
echo "fuzz: building ${#targets[@]} targets"
for t in "${targets[@]}"; do
    cargo fuzz build --sanitizer none --fuzz-dir . "$t" >/dev/null
done
echo "fuzz: built in $(( $(date +%s) - t0 ))s"
bin_dir="$ROOT/fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

work="$(mktemp -d "${TMPDIR:-/tmp}/monofs-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
crashes="$ROOT/target/fuzz-crashes"
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
    cp -r "$ROOT/fuzz/corpus/$t/." "$work/corpus/$t/" 2>/dev/null || true
    log="$work/$t.log"
    echo "fuzz: $t for ${SECS}s ($(ls "$work/corpus/$t" | wc -l) seeds)"
    set +e
    "$bin_dir/$t" "$work/corpus/$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    inited=$(grep -m1 -E 'INITED .*cov: [0-9]+' "$log" || true)
    last=$(grep -E '^#[0-9]+.*cov: [0-9]+' "$log" | tail -n 1 || true)
    echo "  start: ${inited:-none}"
    echo "  end:   ${last:-none}"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "  executions: ${runs:-?}, corpus now $(ls "$work/corpus/$t" | wc -l) inputs"
    if [ "$rc" != 0 ]; then
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -n 5 | sed 's/^/  /'
        mkdir -p "$crashes/$t"
        for a in "$work/artifacts/$t"/*; do
            [ -f "$a" ] || continue
            cp "$a" "$crashes/$t/"
            echo "  reproducer: $crashes/$t/$(basename "$a")"
            echo "  base64: $(base64 -w0 "$a")"
        done
        echo "  log: $crashes/$t/$t.log"
        cp "$log" "$crashes/$t/$t.log"
        failed+=("$t")
        continue
    fi
    cov0=$(sed -n 's/.*INITED .*cov: \([0-9]*\).*/\1/p' "$log" | head -n 1)
    ft0=$(sed -n 's/.*INITED .*ft: \([0-9]*\).*/\1/p' "$log" | head -n 1)
    ft1=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    if [ -z "$cov0" ] || [ "${cov0:-0}" -eq 0 ]; then
        echo "  no coverage reported: the target is not instrumented"
        failed+=("$t")
    elif [ -n "$ft1" ] && [ "$ft1" -le "$ft0" ]; then
        echo "  (no new features found in ${SECS}s)"
    fi
done
echo "fuzz: ${#targets[@]} targets, $(( $(date +%s) - t0 ))s in all"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz: no crashes"

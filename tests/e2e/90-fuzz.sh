#!/usr/bin/env bash
# Coverage-guided fuzzing of the wire decoders (tests/fuzz.sh): every fuzz target for
# MONOFS_FUZZ_SECONDS (default 30) from the checked-in corpus; fails on any crash.
set -euo pipefail
exec bash "$(dirname "$0")/../fuzz.sh" "${MONOFS_FUZZ_SECONDS:-30}"

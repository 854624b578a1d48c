#!/usr/bin/env bash
# Runs the test suite: fetches the real all-MiniLM-L6-v2 model (once, into .cache/) for the
# parity tests, then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
LECR_MINILM="$(./scripts/fetch-minilm.sh)"
export LECR_MINILM LECR_NO_PROGRESS=1
cargo test --release --all-targets "$@"

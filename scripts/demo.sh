#!/usr/bin/env bash
# The main job end to end on the bundled defaults: generate a corpus, check it, split it.
# Outputs go to ${OUT:-out/demo}.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out/demo}"
cargo build --release --quiet
bin=target/release/lecr
$bin synth --out "$out/data" --switch
$bin data check --data "$out/data" --max-problems 10
$bin split --data "$out/data" --folds 10 --out "$out/split"
echo "demo outputs: $out/data (corpus), $out/split (corpus with fold columns)"

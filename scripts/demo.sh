#!/usr/bin/env bash
# The main job end to end on the bundled defaults (a few minutes on 2 cores):
#   generate a corpus -> check it -> split it into folds -> score the lexical baseline ->
#   fine-tune all-MiniLM-L6-v2 briefly (English topics, 1 epoch) -> score it -> quantize it
#   to int8 (the CPU deployment path) -> score that -> predict with it.
# Outputs go to ${OUT:-out/demo}.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out/demo}"
export LECR_NO_PROGRESS="${LECR_NO_PROGRESS:-}"
cargo build --release --quiet
bin=target/release/lecr
model="$(./scripts/fetch-minilm.sh)"
rm -rf "$out/run"
$bin synth --out "$out/data" --switch
$bin data check --data "$out/data" --max-problems 10
$bin split --data "$out/data" --folds 10 --out "$out/split"
$bin eval --data "$out/split" --fold 0 --model lexical --margins 0.10:0.40:0.05
$bin train --set data="$out/split" --set model="$model" --set output="$out/run" \
  --set epochs=1 --set batch_size=32 --set 'languages=["en"]' --set warmup_epochs=0.2
$bin eval --data "$out/split" --fold 0 --model "$out/run/best" --margin 0.16
$bin quantize --model "$out/run/best" --data "$out/split" --out "$out/int8"
$bin eval --data "$out/split" --fold 0 --model "$out/int8" --margin 0.16
$bin predict --data "$out/split" --model "$out/int8" --out "$out/submission.csv"
echo "demo outputs: $out/data (corpus), $out/split (with folds), $out/run (training run), $out/int8 (int8 model), $out/submission.csv"

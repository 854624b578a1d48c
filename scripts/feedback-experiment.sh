#!/usr/bin/env bash
# Does curator feedback help? On a generated corpus: train all-MiniLM-L6-v2 with fold 0 held
# out (run A), let a simulated curator review A's top 20 recommendations for half of fold 0's
# topics (accepting the true ones, rejecting the rest), train again from the same start with the
# same seed plus those decisions (run B), and score A and B on the *other* half of fold 0.
# The same curator's decisions also go the way Studio records them: a Studio export (IMPORTED,
# REJECTED with reasons, previews, re-mounted lists) read by `lecr feedback import`, then run C
# trains on that folder; B and C should agree. The corpus has Studio's ids (`--studio-ids`).
# Every run is scored at the same token limit (EVAL_MAX_LEN, default 96), whatever its
# lecr.json says. Outputs in ${OUT:-out/feedback}; run A is reused when it exists. About 35 min
# on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out/feedback}"
cargo build --release --quiet
bin=target/release/lecr
model="$(./scripts/fetch-minilm.sh)"
if [ ! -f "$out/split/topics.csv" ]; then
  $bin synth --out "$out/data" --topics 3000 --contents 6000 --languages en,es,fr --seed 7 \
    --studio-ids
  $bin split --data "$out/data" --folds 5 --out "$out/split"
fi
train() { # output folder, extra settings...
  local o="$1"; shift
  $bin train --set data="$out/split" --set model="$model" --set output="$o" \
    --set epochs=1 --set batch_size=32 --set max_len=48 --set lr=5e-4 --set lr_end=1e-4 \
    --set warmup_epochs=0.1 --set seed=42 "$@"
}
[ -d "$out/run-a/best" ] || train "$out/run-a"
rm -rf "$out/curator"
$bin feedback simulate --data "$out/split" --fold 0 --model "$out/run-a/best" \
  --share 0.5 --review 20 --store "$out/curator"
rm -rf "$out/studio-export" "$out/studio-import"
$bin feedback simulate --data "$out/split" --fold 0 --model "$out/run-a/best" \
  --share 0.5 --review 20 --studio-export "$out/studio-export"
if [ -x /usr/bin/time ]; then  # Debian's `time` package: wall time and peak memory
  /usr/bin/time -v $bin feedback import --studio "$out/studio-export" --out "$out/studio-import" \
    2> "$out/import-time.txt"
  grep -E "Elapsed|Maximum resident" "$out/import-time.txt"
else
  $bin feedback import --studio "$out/studio-export" --out "$out/studio-import"
fi
rm -rf "$out/run-b" "$out/run-c"
train "$out/run-b" --set feedback="$out/curator"
train "$out/run-c" --set feedback="$out/studio-import"
for r in run-a run-b run-c; do
  echo "== $r on fold 0's topics that the curator did not review"
  $bin eval --data "$out/split" --fold 0 --model "$out/$r/best" --max-len "${EVAL_MAX_LEN:-96}" \
    --skip-topics "$out/curator/reviewed-topics.txt" --margins 0.10:0.30:0.02 2>&1 | tee "$out/eval-$r.txt"
done
echo "feedback experiment outputs: $out (run-a, curator, run-b, studio-export, studio-import, run-c, eval-run-*.txt)"

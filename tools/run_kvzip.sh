#!/usr/bin/env bash
# The Fast KVzip study of docs/results.md ("Fast KVzip study and eviction"), end to end on the
# King James Bible: for the baseline (MHA) and FusedKV, train the tiny model at 2112 tokens
# (configs/tiny_long*.yaml; skipped when the run directory already has its final checkpoint),
# train gates on the frozen model (configs/gates.yaml, forward-only), then evaluate every policy
# at keep ratios 1.0, 0.5, 0.3 and 0.2 on held-out contexts of 1024 tokens, and write the table.
#   GATE_STEPS=5000 CONTEXTS=40 bash tools/run_kvzip.sh
set -euo pipefail
cd "$(dirname "$0")/.."
GATE_STEPS=${GATE_STEPS:-5000}
CONTEXTS=${CONTEXTS:-40}
bash tools/setup.sh
BUILD_TARGET=kvtrain bash tools/build.sh
KVTRAIN=${BUILD_DIR:-build}/kvtrain

bash tools/prepare_kjv.sh "$KVTRAIN"

for model in tiny_long tiny_long_fusedkv; do
  run=runs/$model
  steps=$(sed -n 's/^ *steps: *\([0-9]*\).*/\1/p' configs/$model.yaml | head -n 1)
  final=$run/$(printf 'ckpt_%08d.h5' "$steps")
  [ -f "$final" ] || "$KVTRAIN" train --config configs/$model.yaml --resume
  "$KVTRAIN" gates --checkpoint "$final" --config configs/gates.yaml --resume \
    --set output.dir="$run/gates" --set gates.steps="$GATE_STEPS" --set gates.cache_dir="$run/gates/contexts"
  "$KVTRAIN" eval --checkpoint "$final" --gates "$run/gates/gates.h5" \
    --policy full,gates,kvzip,streaming,random --keep 1.0,0.5,0.3,0.2 \
    --context 1024 --continuation 64 --contexts "$CONTEXTS" --json "$run/eviction.jsonl"
done
/usr/bin/python3 tools/eviction_table.py runs/tiny_long runs/tiny_long_fusedkv | tee runs/eviction_table.md

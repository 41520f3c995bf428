#!/usr/bin/env bash
# bench_inference.sh — kvtrain's inference path, every tiny variant side by side in one run
# (docs/design.md, "Inference and the KV cache"; issue 6 item 4): prefill time, per-token decode time and KV bytes measured from
# the cache, at contexts 256, 1024 and 2048 (model.max_seq_len raised to 2048 for all).
#
# Usage (from the repository root):
#   bash tools/bench_inference.sh [OUT]   # OUT: the Markdown table [runs/bench_inference.md], + .json
#
# Random init (each config's train.seed), random prompts: timing only, no checkpoint needed.
# Prefill: median of REPEATS runs of the whole prompt (chunked by InferenceModel, 256 tokens a
# chunk). Decode: mean of DECODE steps starting at the context; at context = max_seq_len the cache
# is full, so there the steps cover the last DECODE positions (the table's notes say so).
# The load average at start and end is printed in the table's header line: on a shared machine
# the timings move with it.
#
# Environment (defaults in brackets):
#   KVTRAIN   kvtrain binary [build/kvtrain]
#   CONTEXTS  context lengths [256,1024,2048]
#   MAX_SEQ   model.max_seq_len for every config [2048]
#   REPEATS   prefill repeats (median) [3]
#   DECODE    decode steps averaged [32]
#   THREADS   train.threads [1]: one thread, because on a shared, oversubscribed machine OpenMP
#             barriers between 2 threads cost a scheduler time slice each (measured: 100x slower
#             decode at load 7 on 2 cores); THREADS=0 uses all cores
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/bench_inference.md}
KVTRAIN=${KVTRAIN:-build/kvtrain}
CONTEXTS=${CONTEXTS:-256,1024,2048}
MAX_SEQ=${MAX_SEQ:-2048}
REPEATS=${REPEATS:-3}
DECODE=${DECODE:-32}
THREADS=${THREADS:-1}
mkdir -p "$(dirname "$OUT")"
[ -x "$KVTRAIN" ] || { echo "bench_inference.sh: $KVTRAIN not found; build it first" >&2; exit 1; }

args=()
for v in tiny tiny_gqa_half tiny_cla tiny_yoco tiny_fusedkv_lite tiny_fusedkv tiny_lrkv; do
  args+=(--config "configs/$v.yaml")
done
echo "bench_inference.sh: load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)" >&2
"$KVTRAIN" bench --inference "${args[@]}" \
  --set model.max_seq_len="$MAX_SEQ" --set train.threads="$THREADS" \
  --contexts "$CONTEXTS" --repeats "$REPEATS" --decode-tokens "$DECODE" \
  --json "${OUT%.md}.json" > "$OUT"
echo "bench_inference.sh: load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cat "$OUT"
echo "bench_inference.sh: wrote $OUT and ${OUT%.md}.json" >&2

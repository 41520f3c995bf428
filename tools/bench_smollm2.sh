#!/usr/bin/env bash
# tools/bench_smollm2.sh — inference speed on a real model, side by side in one run: kvtrain
# (`bench --inference --checkpoint` on the imported SmolLM2-135M, fp32) against transformers +
# PyTorch (fp32, its DynamicCache) and llama.cpp (llama-cpp-python: F32 and F16 conversions of
# the same weights, and the original Q4_1 file), all at the same thread count.
#
#   bash tools/bench_smollm2.sh [OUT_DIR]      # [runs/bench_smollm2]
#
# Writes OUT_DIR/kvtrain.md (+ .json), OUT_DIR/peers.md (+ .jsonl) and OUT_DIR/machine.txt
# (CPU, load before and after). Prefill: a context of N random token ids (the same seeds on both
# sides), median of REPEATS; decode: mean ms/token of DECODE greedy steps after it.
# Run it on an idle machine: the load average is recorded, and figures taken under load time the
# scheduler rather than the code. Needs tools/fetch_smollm2.sh's files and the venv of
# `tools/py_venv.sh --llama-cpp` (made when missing; llama.cpp builds from source, ~15 min).
#
# Environment: THREADS [2], CONTEXTS [512,2048,8192], DECODE [32], REPEATS [3],
#              PEERS [torch-fp32,llamacpp-f32,llamacpp-f16,llamacpp-q4_1], KVTRAIN [build/kvtrain]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/bench_smollm2}
THREADS=${THREADS:-2}
CONTEXTS=${CONTEXTS:-512,2048,8192}
DECODE=${DECODE:-32}
REPEATS=${REPEATS:-3}
PEERS=${PEERS:-torch-fp32,llamacpp-f32,llamacpp-f16,llamacpp-q4_1}
KVTRAIN=${KVTRAIN:-build/kvtrain}
mkdir -p "$OUT"
mapfile -t files < <(KVTRAIN="$KVTRAIN" bash tools/fetch_smollm2.sh)
GGUF=${files[0]}
CKPT=${files[1]}
PY=$(bash tools/py_venv.sh --llama-cpp)
{
  grep -m1 "model name" /proc/cpuinfo
  echo "threads $THREADS; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/machine.txt"
# kvtrain: its own threads (train.threads), chunked prefill of 256 tokens a chunk.
OMP_NUM_THREADS=$THREADS "$KVTRAIN" bench --inference --checkpoint "$CKPT" --contexts "$CONTEXTS" \
  --decode-tokens "$DECODE" --repeats "$REPEATS" --set train.threads="$THREADS" \
  --json "$OUT/kvtrain.json" > "$OUT/kvtrain.md"
"$PY" tools/bench_inference_peers.py --gguf "$GGUF" --threads "$THREADS" --contexts "$CONTEXTS" \
  --decode "$DECODE" --repeats "$REPEATS" --peers "$PEERS" --work "$OUT/work" \
  --json "$OUT/peers.jsonl" > "$OUT/peers.md"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"
cat "$OUT/machine.txt" "$OUT/kvtrain.md" "$OUT/peers.md"

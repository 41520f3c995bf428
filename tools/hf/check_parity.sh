#!/usr/bin/env bash
# tools/hf/check_parity.sh — export parity for every variant (docs/design.md, "Inference and the KV cache", docs/export.md).
#
#   tools/hf/check_parity.sh [WORK_DIR]     (default: a new directory under /tmp)
#
# Prepares a small corpus and tokenizer with `kvtrain prepare`, trains a tiny model per variant
# for 3 steps (mha, gqa, mqa, cla, yoco, fusedkv_lite, fusedkv, lrkv), exports each (lrkv also
# with --merge-lrkv), installs transformers into $KVT_HF_SITE (default /tmp/hfsite) with pip if it
# is not importable, and runs tools/hf/check_parity.py on every export. Prints how long the
# install took and one PASS/FAIL line per variant; exits 1 if any variant fails.
#
# Environment: KVTRAIN (default build/kvtrain), PYTHON (default /usr/bin/python3, which has
# Debian's torch, numpy, h5py and yaml), KVT_HF_SITE (pip --target directory, put on PYTHONPATH),
# TRANSFORMERS_SPEC (default transformers==4.40.2, which supports torch 1.13).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KVTRAIN="${KVTRAIN:-$ROOT/build/kvtrain}"
PYTHON="${PYTHON:-/usr/bin/python3}"
SITE="${KVT_HF_SITE:-/tmp/hfsite}"
SPEC="${TRANSFORMERS_SPEC:-transformers==4.40.2}"
WORK="${1:-$(mktemp -d /tmp/kvt_parity.XXXXXX)}"
mkdir -p "$WORK"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

[ -x "$KVTRAIN" ] || { echo "check_parity: no kvtrain binary at $KVTRAIN (build it first)" >&2; exit 1; }

# ---- transformers ------------------------------------------------------------------------------
t0=$(date +%s.%N)
if "$PYTHON" -c "import transformers, safetensors, sentencepiece, google.protobuf" 2>/dev/null; then
  echo "check_parity: transformers already importable ($("$PYTHON" -c 'import transformers; print(transformers.__version__)'))"
else
  echo "check_parity: installing $SPEC into $SITE"
  mkdir -p "$SITE"
  # Pins that fit transformers 4.40 (newer tokenizers/huggingface_hub refuse it); numpy<2 for
  # Debian's torch 1.13; protobuf for LlamaTokenizer(legacy=False).
  "$PYTHON" -m pip install --quiet --break-system-packages --target "$SITE" "$SPEC" \
    "tokenizers>=0.19,<0.20" "safetensors>=0.4.1,<0.5" "huggingface_hub>=0.19.3,<0.24" \
    sentencepiece "protobuf<5" "numpy<2"
fi
t1=$(date +%s.%N)
printf 'check_parity: transformers install/check took %.1f s\n' "$(echo "$t1 - $t0" | bc)"

# ---- corpus and tokenizer ----------------------------------------------------------------------
if [ ! -f "$WORK/data/tokenizer.model" ]; then
  "$PYTHON" - "$WORK/text.txt" <<'EOF'
import random, sys
words = "the lord said unto moses and his people went into land of light water earth day".split()
r = random.Random(3)
with open(sys.argv[1], "w") as f:
    for _ in range(1500):
        f.write(" ".join(r.choice(words) for _ in range(12)) + ".\n")
EOF
  "$KVTRAIN" prepare --input "$WORK/text.txt" --out "$WORK/data" --vocab-size 320 --val-fraction 0.1 \
    --val-block 0 > "$WORK/prepare.log"
fi

# ---- one tiny model per variant ----------------------------------------------------------------
declare -A MODEL=(
  [mha]="n_layers: 2"
  [gqa]="n_layers: 2, n_kv_heads: 2, tie_embeddings: false"
  [mqa]="n_layers: 2, n_kv_heads: 1"
  [cla]="n_layers: 3, kv_sharing: cla"
  [yoco]="n_layers: 4, kv_sharing: yoco"
  [fusedkv_lite]="n_layers: 4, kv_sharing: fusedkv_lite, storage_layers: 3"
  [fusedkv]="n_layers: 4, n_kv_heads: 2, kv_sharing: fusedkv"
  [lrkv]="n_layers: 2, lrkv_rank: 3, tie_embeddings: false"
)
VARIANTS=(mha gqa mqa cla yoco fusedkv_lite fusedkv lrkv)
fail=0
results=()
for v in "${VARIANTS[@]}"; do
  cat > "$WORK/$v.yaml" <<EOF
model: {vocab_size: 320, d_model: 48, n_heads: 4, max_seq_len: 64, init_std: 0.2, ${MODEL[$v]}}
train: {batch_size: 2, seq_len: 32, steps: 3, warmup_steps: 1, eval_every: 0, threads: 2, lr: 0.01}
data: {train: '$WORK/data/*train*.bin', val: '$WORK/data/*val*.bin', tokenizer: '$WORK/data/tokenizer.model'}
output: {dir: '$WORK/run_$v'}
EOF
  s0=$(date +%s.%N)
  "$KVTRAIN" train --config "$WORK/$v.yaml" > "$WORK/train_$v.log" 2>&1 || { echo "train $v failed, see $WORK/train_$v.log"; fail=1; continue; }
  ckpt=$(ls "$WORK/run_$v"/ckpt_*.h5 | sort | tail -1)
  exports=("$v:")
  [ "$v" = lrkv ] && exports+=("lrkv_merged:--merge-lrkv")
  for e in "${exports[@]}"; do
    name="${e%%:*}" flag="${e#*:}"
    "$KVTRAIN" export --checkpoint "$ckpt" --out "$WORK/hf_$name" --force $flag > "$WORK/export_$name.log" 2>&1 \
      || { echo "export $name failed: $(tail -1 "$WORK/export_$name.log")"; fail=1; continue; }
    if "$PYTHON" "$ROOT/tools/hf/check_parity.py" --checkpoint "$ckpt" --export "$WORK/hf_$name" \
         --kvtrain "$KVTRAIN" --name "$name"; then
      results+=("$name PASS")
    else
      results+=("$name FAIL"); fail=1
    fi
  done
  printf 'check_parity: %s done in %.1f s\n' "$v" "$(echo "$(date +%s.%N) - $s0" | bc)"
done
echo "check_parity: summary (work dir $WORK)"
for r in "${results[@]}"; do echo "  $r"; done
exit $fail

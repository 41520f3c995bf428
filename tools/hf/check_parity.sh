#!/usr/bin/env bash
# tools/hf/check_parity.sh — export parity with transformers 5.x for every variant
# (docs/design.md, "Inference and the KV cache", docs/export.md).
#
#   tools/hf/check_parity.sh [WORK_DIR]     (default: a new directory under /tmp)
#
# Prepares a small corpus (words, digits, punctuation, non-ASCII, whitespace runs) and tokenizer
# with `kvtrain prepare`, trains a tiny model per variant for 3 steps (mha, gqa, mqa, cla, yoco,
# fusedkv_lite, fusedkv, lrkv), exports each in fp32 and bf16 (lrkv also with --merge-lrkv), dumps
# each checkpoint's weights to .npz with Debian's python3 (h5py), and runs tools/hf/check_parity.py
# on all exports in one process of the torch 2 / transformers 5 venv (tools/py_venv.sh). Prints
# one PASS/FAIL line per export; exits 1 if any fails. WORK_DIR/hf_mha is what
# tools/hf/check_tokenizer.py then checks (CTest export_tokenizer_hf).
#
# Environment: KVTRAIN (default build/kvtrain), PYTHON (default: the python `tools/py_venv.sh`
# prints, made on first use), PY_VENV (where tools/py_venv.sh keeps the venv), SYS_PYTHON
# (default /usr/bin/python3, which has h5py and yaml).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KVTRAIN="${KVTRAIN:-$ROOT/build/kvtrain}"
SYS_PYTHON="${SYS_PYTHON:-/usr/bin/python3}"
WORK="${1:-$(mktemp -d /tmp/kvt_parity.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

[ -x "$KVTRAIN" ] || { echo "check_parity: no kvtrain binary at $KVTRAIN (build it first)" >&2; exit 1; }
PYTHON="${PYTHON:-$(bash "$ROOT/tools/py_venv.sh")}"
case "$PYTHON" in /*) ;; */*) PYTHON="$ROOT/$PYTHON" ;; esac  # py_venv.sh prints it relative to the root
"$PYTHON" -c "import torch, transformers; print('check_parity: torch', torch.__version__, 'transformers', transformers.__version__)"

# ---- corpus and tokenizer ----------------------------------------------------------------------
if [ ! -f "$WORK/data/tokenizer.model" ]; then
  "$SYS_PYTHON" - "$WORK/text.txt" <<'EOF'
import random, sys
words = ("the lord said unto moses and his people went into land of light water earth day "
         "café naïve über Straße été 日本 語 ok, yes; no. 1984 42 3.14 (a) [b] \"quoted\" it's").split()
r = random.Random(3)
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for _ in range(1500):
        sep = r.choice([" ", " ", " ", "  ", "\t", "   "])
        f.write(sep.join(r.choice(words) for _ in range(12)) + ".\n")
EOF
  "$KVTRAIN" prepare --input "$WORK/text.txt" --out "$WORK/data" --vocab-size 400 --val-fraction 0.1 \
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
cases="$WORK/cases.json"
echo "[" > "$cases"
sep=""
for v in "${VARIANTS[@]}"; do
  cat > "$WORK/$v.yaml" <<EOF
model: {vocab_size: 400, d_model: 48, n_heads: 4, max_seq_len: 64, init_std: 0.2, ${MODEL[$v]}}
train: {batch_size: 2, seq_len: 32, steps: 3, warmup_steps: 1, eval_every: 0, threads: 2, lr: 0.01}
data: {train: '$WORK/data/*train*.bin', val: '$WORK/data/*val*.bin', tokenizer: '$WORK/data/tokenizer.model'}
output: {dir: '$WORK/run_$v'}
EOF
  rm -rf "$WORK/run_$v"
  "$KVTRAIN" train --config "$WORK/$v.yaml" > "$WORK/train_$v.log" 2>&1 || { echo "train $v failed, see $WORK/train_$v.log"; fail=1; continue; }
  ckpt=$(ls "$WORK/run_$v"/ckpt_*.h5 | sort | tail -1)
  # The checkpoint's config and weights for the float64 reference (the venv has no h5py).
  "$SYS_PYTHON" - "$ckpt" "$WORK/ref_$v.npz" <<'EOF'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    raw = f["config"][()]
    raw = raw.reshape(-1)[0] if isinstance(raw, np.ndarray) else raw
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    arrays = {"param:" + n: np.array(ds[()], dtype=np.float32) for n, ds in f["model"].items()}
np.savez(sys.argv[2], config=np.array(text), **arrays)
EOF
  exports=("$v:")
  [ "$v" = lrkv ] && exports+=("lrkv_merged:--merge-lrkv")
  for e in "${exports[@]}"; do
    name="${e%%:*}" flag="${e#*:}"
    for dtype in fp32 bf16; do
      dir="$WORK/hf_$name"; [ "$dtype" = bf16 ] && dir="$WORK/hf_${name}_bf16"
      "$KVTRAIN" export --checkpoint "$ckpt" --out "$dir" --force --dtype "$dtype" $flag > "$WORK/export_${name}_$dtype.log" 2>&1 \
        || { echo "export $name $dtype failed: $(tail -1 "$WORK/export_${name}_$dtype.log")"; fail=1; continue; }
      printf '%s{"name": "%s", "dtype": "%s", "checkpoint": "%s", "reference": "%s", "export": "%s"}\n' \
        "$sep" "$name" "$dtype" "$ckpt" "$WORK/ref_$v.npz" "$dir" >> "$cases"
      sep=","
    done
  done
done
echo "]" >> "$cases"

# ---- an imported-style checkpoint: mha's weights with /text/tokenizer.json (hf_mha's) and
# kvtrain's /text/tokenizer_config.json with a ChatML template, as `kvtrain import` embeds them;
# tools/hf/check_tokenizer.py --imported checks its export (CTest export_tokenizer_torch2).
if [ -d "$WORK/hf_mha" ]; then
  imp="$WORK/run_imported"
  rm -rf "$imp" && mkdir -p "$imp"
  cp "$(ls "$WORK/run_mha"/ckpt_*.h5 | sort | tail -1)" "$imp/ckpt_00000003.h5"
  "$SYS_PYTHON" - "$imp/ckpt_00000003.h5" "$WORK/hf_mha/tokenizer.json" <<'PYEOF'
import json, sys, h5py, numpy as np
chatml = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
cfg = {"bos_token_id": 1, "eos_token_id": 2, "eot_token_id": -1, "add_bos_token": True, "chat_template": chatml}
texts = {"tokenizer.json": open(sys.argv[2], "rb").read(), "tokenizer_config.json": json.dumps(cfg).encode()}
with h5py.File(sys.argv[1], "a") as f:
    g = f.require_group("text")
    for name, b in texts.items():  # fixed-length strings, shape [1], as the checkpoint writer makes them
        g.create_dataset(name, data=np.array([b], dtype=f"S{len(b)}"))
PYEOF
  (cd "$imp" && sha256sum ckpt_00000003.h5 > ckpt_00000003.h5.sha256)
  "$KVTRAIN" export --checkpoint "$imp/ckpt_00000003.h5" --out "$WORK/hf_imported" --force > "$WORK/export_imported.log" 2>&1 \
    || { echo "export imported failed: $(tail -1 "$WORK/export_imported.log")"; fail=1; }
fi
"$PYTHON" "$ROOT/tools/hf/check_parity.py" --cases "$cases" --kvtrain "$KVTRAIN" || fail=1
exit $fail

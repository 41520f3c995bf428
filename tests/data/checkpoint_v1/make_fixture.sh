#!/usr/bin/env bash
# Regenerates the version-1 checkpoint fixture of tests/test_checkpoint_v1.cpp with a kvtrain of
# checkpoint format version 1 (commit 454a8cb or earlier):
#   bash tests/data/checkpoint_v1/make_fixture.sh build/kvtrain
# Writes, next to this script: train.bin (an llm.c shard of 3000 uint16 tokens over a vocabulary
# of 64), run.yaml (a micro model: 1 layer, d_model 16), and ckpt_00000002.h5 / ckpt_00000004.h5
# with their .sha256 sidecars (one 4-step run, checkpoints every 2 steps).
set -euo pipefail
KVTRAIN=$(realpath "${1:?usage: make_fixture.sh path/to/kvtrain}")
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

/usr/bin/python3 - "$HERE/train.bin" <<'PY'
import sys
import numpy as np
# A second-order pattern with some noise, fixed by the seed: enough structure to learn from.
rng = np.random.default_rng(7)
n, v = 3000, 64
t = np.zeros(n, dtype=np.uint16)
for i in range(2, n):
    t[i] = (3 * int(t[i - 1]) + int(t[i - 2]) + (rng.integers(0, 4) == 0) * rng.integers(0, v)) % v
header = np.zeros(256, dtype=np.int32)
header[:3] = (20240520, 1, n)
with open(sys.argv[1], "wb") as f:
    header.tofile(f)
    t.tofile(f)
PY

cat > "$HERE/run.yaml" <<YAML
# The micro model of the version-1 checkpoint fixture (make_fixture.sh).
model: {vocab_size: 64, d_model: 16, n_layers: 1, n_heads: 2, n_kv_heads: 2, d_ff: 32, max_seq_len: 16}
train: {batch_size: 2, seq_len: 12, grad_accum: 2, steps: 4, lr: 0.01, warmup_steps: 1, eval_every: 0, seed: 99, threads: 1}
data: {train: train.bin, val: ''}
output: {dir: run, checkpoint_every: 2, keep_last: 3}
YAML

(cd "$WORK" && cp "$HERE/train.bin" "$HERE/run.yaml" . && OMP_NUM_THREADS=1 "$KVTRAIN" train --config run.yaml)
for s in 00000002 00000004; do
  cp "$WORK/run/ckpt_$s.h5" "$WORK/run/ckpt_$s.h5.sha256" "$HERE/"
done
ls -l "$HERE"

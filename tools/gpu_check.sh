#!/usr/bin/env bash
# The one-shot GPU check, run on a machine with a GPU from the repository root, with the folder
# gpu_bundle/ made here by tools/gpu_bundle.sh carried along. No network and nothing installed:
# it uses the bundle's binaries and libraries and the machine's own CUDA libraries (the toolkit's,
# or PyTorch's cuBLAS, cuDNN and NCCL wheels). Budget: 5 minutes. It prints the library versions
# first, then runs, each step under its own time limit:
#   1. every CUDA test (the bundle's test binaries)
#   2. 20 steps of configs/tiny.yaml on the GPU against the CPU figures carried in the bundle:
#      fp32 losses to 1e-4 relative, bf16 to 2e-3 relative (docs/gpu.md, "The one-shot GPU check")
#   3. 10 steps of configs/gpt124m.yaml at batch 2 in bf16: tokens/s and MFU against the H200's
#      dense bf16 peak (989 TFLOP/s, NVIDIA's datasheet)
#   4. a 1-rank NCCL run (KVT_FORCE_NCCL=1, ZeRO-1, small buckets), whose losses must equal
#      step 2's fp32 run (1e-6 relative)
#   5. prefill and decode on the device for every variant config
# and writes one summary, ${OUT:-.}/gpu_summary.md (Markdown, for docs/results.md), as it goes.
#   bash tools/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
DEST=${OUT:-.}
SUMMARY=$DEST/gpu_summary.md
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PEAK_TFLOPS=989
elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "$*" | tee -a "$SUMMARY"; }
: > "$SUMMARY"

[ -f gpu_bundle/bundle.tar.xz ] || { say "gpu_check: no gpu_bundle/bundle.tar.xz (make it with tools/gpu_bundle.sh and carry gpu_bundle)"; exit 1; }
tar -C "$WORK" -xJf gpu_bundle/bundle.tar.xz
BIN=$WORK/bin
# CUDA libraries: the toolkit's, then any pip wheel's (nvidia/*/lib), then the bundle's own.
libdirs=/usr/local/cuda/lib64
for d in $(python3 -c 'import nvidia, os; p = nvidia.__path__[0]; print(" ".join(os.path.join(p, x, "lib") for x in sorted(os.listdir(p))))' 2>/dev/null); do
  [ -d "$d" ] && libdirs=$libdirs:$d
done
export LD_LIBRARY_PATH=$libdirs:$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}

say "# kvtrain GPU check ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
say ""
say "## Versions"
say '```'
say "bundle: $(head -1 gpu_bundle/MANIFEST 2>/dev/null); $(sed -n 2p gpu_bundle/MANIFEST 2>/dev/null)"
say "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
say "nvcc: $(nvcc --version 2>/dev/null | tail -1)"
say "$(timeout 25 python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "nccl", ".".join(map(str, torch.cuda.nccl.version())))' 2>&1 | tail -1)"
say "resolved by kvtrain:"
ldd "$BIN/kvtrain" | grep -E "cudart|cublas|cudnn|nccl|not found" | sed 's/^\s*/  /' | tee -a "$SUMMARY"
say '```'
say "versions printed at $(elapsed) s"

# ---- 1. CUDA tests ------------------------------------------------------------------------
say ""
say "## 1. CUDA tests"
say ""
say "| binary | passed | failed | skipped | seconds |"
say "|---|---|---|---|---|"
for t in "$BIN"/test_*; do
  name=$(basename "$t")
  t0=$(date +%s)
  # the CUDA cases only (the suites are named Cuda*, *_cuda*): CPU cases ran in CI
  timeout 100 "$t" --gtest_brief=1 --gtest_filter='*cuda*:*Cuda*:*CUDA*' > "$WORK/$name.log" 2>&1
  rc=$?
  p=$(grep -oP '\[  PASSED  \] \K[0-9]+' "$WORK/$name.log" | tail -1)
  f=$(grep -oP '\[  FAILED  \] \K[0-9]+(?= test)' "$WORK/$name.log" | tail -1)
  s=$(grep -oP '\[  SKIPPED \] \K[0-9]+(?= test)' "$WORK/$name.log" | tail -1)
  say "| $name | ${p:-0} | ${f:-0}$([ $rc -ne 0 ] && echo " (exit $rc)") | ${s:-0} | $(( $(date +%s) - t0 )) |"
  grep -E '^\[  FAILED  \] [A-Za-z]' "$WORK/$name.log" | head -20 | sed 's/^/    /' | tee -a "$SUMMARY"
  cp "$WORK/$name.log" "$DEST/" 2>/dev/null
done
say "tests done at $(elapsed) s"

# ---- 2. tiny config: GPU against the carried CPU figures ---------------------------------
data="$WORK/data/kjv"
train_tiny() {  # precision, run dir, env (VAR=value or ""), steps [, more --set overrides]
  local prec=$1 dir=$2 envs=$3 steps=$4
  shift 4
  timeout 60 env $envs "$BIN/kvtrain" train --config configs/tiny.yaml --set train.steps="$steps" "$@" \
    --set train.eval_every=0 --set output.checkpoint_every=1000 --set train.backend=cuda \
    --set train.precision="$prec" --set output.dir="$dir" --set data.train="$data/*train*.bin" \
    --set data.val="$data/*val*.bin" --set data.tokenizer="$data/tokenizer.model" > "$dir.log" 2>&1
}
compare() {  # gpu metrics, reference metrics, relative tolerance [, "prefix": the reference may be longer]
  python3 - "$1" "$2" "$3" "${4:-}" <<'EOF'
import json, sys
def losses(p):
    return [r["loss"] for r in map(json.loads, open(p)) if r.get("kind") == "train"]
g, c, tol = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
if sys.argv[4] == "prefix":
    c = c[:len(g)]
n = min(len(g), len(c))
if n == 0:
    print("no losses to compare"); sys.exit(1)
rel = [abs(a - b) / abs(b) for a, b in zip(g[:n], c[:n])]
worst = max(range(n), key=lambda i: rel[i])
ok = len(g) == len(c) and rel[worst] <= tol
print(f"{'PASS' if ok else 'FAIL'}: {n} steps, max relative difference {rel[worst]:.2e} at step {worst + 1} "
      f"(GPU {g[worst]:.6f}, CPU {c[worst]:.6f}; tolerance {tol:g}); final loss GPU {g[n-1]:.6f} CPU {c[n-1]:.6f}")
sys.exit(0 if ok else 1)
EOF
}
say ""
say "## 2. Tiny config, 20 steps, GPU vs CPU"
say ""
for spec in fp32:1e-4 bf16:2e-3; do
  prec=${spec%%:*}; tol=${spec##*:}
  t0=$(date +%s)
  if train_tiny "$prec" "$WORK/tiny_$prec" "" 20; then
    say "- $prec: $(compare "$WORK/tiny_$prec/metrics.jsonl" "$WORK/ref/cpu_tiny_$prec.jsonl" "$tol") ($(( $(date +%s) - t0 )) s; $(grep -o '[0-9]* tok/s' "$WORK/tiny_$prec.log" | tail -1))"
  else
    say "- $prec: FAIL: kvtrain train exited non-zero: $(tail -1 "$WORK/tiny_$prec.log")"
  fi
done
say "tiny runs done at $(elapsed) s"

# ---- 3. 124M, batch 2, bf16: tokens/s and MFU --------------------------------------------
say ""
say "## 3. 124M config, batch 2 x 1024, bf16, 10 timed steps"
say ""
if timeout 90 "$BIN/kvtrain" bench --config configs/gpt124m.yaml --set train.backend=cuda \
     --set train.precision=bf16 --set train.batch_size=2 --set train.grad_accum=1 --set train.global_batch=0 \
     --steps 10 --warmup 2 --json "$WORK/bench124m.json" > "$WORK/bench124m.log" 2>&1; then
  python3 - "$WORK/bench124m.json" "$PEAK_TFLOPS" <<'EOF' | tee -a "$SUMMARY"
import json, sys
r, peak = json.load(open(sys.argv[1])), float(sys.argv[2])
tflops = r["gflops"] / 1e3
print(f"- {r['tokens_per_s']:.0f} tokens/s, {tflops:.1f} TFLOP/s (model FLOPs, 6N + attention), "
      f"MFU {100 * tflops / peak:.1f}% of {peak:g} TFLOP/s dense bf16; median step {r['step_ms']:.1f} ms")
EOF
else
  say "- FAIL: $(tail -2 "$WORK/bench124m.log" | tr '\n' ' ')"
fi
cp "$WORK/bench124m.log" "$DEST/" 2>/dev/null
say "124M bench done at $(elapsed) s"

# ---- 4. 1-rank NCCL ---------------------------------------------------------------------
say ""
say "## 4. One-rank NCCL"
say ""
# ZeRO-1 with small buckets, so the run goes through bucketed reduce-scatters and all-gathers
if train_tiny fp32 "$WORK/tiny_nccl" KVT_FORCE_NCCL=1 5 --set train.zero=1 --set train.bucket_mb=0.25; then
  say "- KVT_FORCE_NCCL=1, ZeRO-1, 0.25 MiB buckets, 5 steps against the first 5 of step 2's fp32 run (the gradient norm sums in another order: 1e-6): $(compare "$WORK/tiny_nccl/metrics.jsonl" "$WORK/tiny_fp32/metrics.jsonl" 1e-6 prefix 2>&1)"
else
  say "- FAIL: $(tail -1 "$WORK/tiny_nccl.log")"
fi
say "NCCL run done at $(elapsed) s"

# ---- 5. prefill and decode per variant --------------------------------------------------
say ""
say "## 5. Prefill and decode on the device, every variant (random init)"
say ""
variants=(configs/tiny.yaml configs/tiny_gqa.yaml configs/tiny_mqa.yaml configs/tiny_cla.yaml
          configs/tiny_yoco.yaml configs/tiny_fusedkv.yaml configs/tiny_fusedkv_lite.yaml configs/tiny_lrkv.yaml)
args=(); for v in "${variants[@]}"; do args+=(--config "$v"); done
if timeout 60 "$BIN/kvtrain" bench --inference "${args[@]}" --set train.backend=cuda --contexts 256 \
     --decode-tokens 16 --repeats 1 --json "$WORK/inference.json" > "$WORK/inference.log" 2>&1; then
  grep '^|' "$WORK/inference.log" | tee -a "$SUMMARY"
else
  say "- FAIL: $(tail -2 "$WORK/inference.log" | tr '\n' ' ')"
fi
say ""
say "total $(elapsed) s"

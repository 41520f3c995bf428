#!/usr/bin/env bash
# Packs what the one-shot GPU check (tools/gpu_check.sh) needs on a machine that has a GPU but no
# network and none of kvtrain's non-CUDA development files (HDF5, yaml-cpp, SentencePiece, GTest,
# OpenMPI, oneDNN): gpu_bundle/bundle.tar.xz, at most 60 MiB, holding
#   bin/   kvtrain and the test binaries with CUDA cases, built here with CUDA (stripped)
#   lib/   the non-CUDA shared libraries they load (glibc and the CUDA libraries stay out: the
#          GPU machine brings its own, e.g. PyTorch's cuBLAS, cuDNN and NCCL wheels)
#   data/  the tiny config's corpus (datasets/kjv shards and tokenizer)
#   ref/   CPU reference figures computed here: 20 steps of configs/tiny.yaml in fp32 and in the
#          CPU's bf16 emulation (metrics.jsonl each), and the machine they ran on
# and gpu_bundle/MANIFEST (sizes, git revision, build settings). Carry the folder gpu_bundle to
# the GPU machine with the working tree and run `bash tools/gpu_check.sh` there.
#   bash tools/gpu_bundle.sh            # BUILD_DIR (default build) must be a CUDA build, or is made one
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
LIMIT_MIB=60
OUT=gpu_bundle
STAGE=$(mktemp -d)
# Whatever fails (a full disk in tar, a build error), no staging folder or partial tarball stays.
trap 'rm -rf "$STAGE" "$OUT/bundle.tar.xz.tmp"' EXIT

export PATH=/usr/local/cuda/bin:$PATH
echo "gpu_bundle: building $BUILD_DIR with CUDA (a no-op when it is built)"
BUILD_DIR=$BUILD_DIR bash tools/build.sh -DKVT_CUDA=ON >/dev/null
grep -q "kvtrain: CUDA backend ON" "$BUILD_DIR.cmake.log" ||
  { echo "gpu_bundle: $BUILD_DIR is not a CUDA build (see $BUILD_DIR.cmake.log)"; exit 1; }

# Test binaries that hold CUDA cases (they skip without a GPU here).
tests=()
for src in tests/test_*.cpp; do
  name=$(basename "$src" .cpp)
  grep -q "cuda_available\|make_ops(\"cuda\")" "$src" && [ -x "$BUILD_DIR/tests/$name" ] && tests+=("$name")
done
mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/data" "$STAGE/ref"
cp "$BUILD_DIR/kvtrain" "$STAGE/bin/"
for t in "${tests[@]}"; do cp "$BUILD_DIR/tests/$t" "$STAGE/bin/"; done
strip --strip-unneeded "$STAGE"/bin/*

# Shared libraries: everything ldd resolves except glibc's own and CUDA's (found there).
skip='^(libc|libm|libdl|libpthread|librt|libutil|ld-linux[^ ]*|libcuda|libcudart|libcublas|libcublasLt|libcudnn[a-z_]*|libnccl|libnvrtc|libnvJitLink)\.so'
for b in "$STAGE"/bin/*; do ldd "$b"; done | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
  while read -r soname path; do
    [[ "$soname" =~ $skip ]] && continue
    cp -L "$path" "$STAGE/lib/$soname"
  done

# The tiny config's corpus (prepared here once, as the main job does).
bash tools/prepare_kjv.sh "$BUILD_DIR/kvtrain" >/dev/null
mkdir -p "$STAGE/data/kjv"
cp datasets/kjv/*.bin datasets/kjv/tokenizer.model "$STAGE/data/kjv/"

# CPU reference figures: 20 steps of the tiny config, fp32 and bf16 emulation, no checkpoint.
for prec in fp32 bf16; do
  "$BUILD_DIR/kvtrain" train --config configs/tiny.yaml --set train.steps=20 --set train.eval_every=0 \
    --set train.precision=$prec --set output.checkpoint_every=1000 --set output.dir="$STAGE/run_$prec" \
    --set data.train="$PWD/datasets/kjv/*train*.bin" --set data.val="$PWD/datasets/kjv/*val*.bin" \
    > "$STAGE/ref/train_$prec.log"
  cp "$STAGE/run_$prec/metrics.jsonl" "$STAGE/ref/cpu_tiny_$prec.jsonl"
  rm -rf "$STAGE/run_$prec"
done
{
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "threads: ${OMP_NUM_THREADS:-$(nproc)}; load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$STAGE/ref/machine.txt"

mkdir -p "$OUT"
tar -C "$STAGE" -cJf "$OUT/bundle.tar.xz.tmp" bin lib data ref
mv "$OUT/bundle.tar.xz.tmp" "$OUT/bundle.tar.xz"
size=$(stat -c %s "$OUT/bundle.tar.xz")
{
  echo "git: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  echo "cuda architectures: $(grep -o 'generate-code=arch=compute_[0-9]*' "$BUILD_DIR/CMakeFiles/kvt_kernels.dir/flags.make" | sort -u | sed 's/.*compute_/sm_/' | tr '\n' ' ')"
  echo "nvcc: $(nvcc --version | tail -1)"
  echo "bundle.tar.xz: $size bytes ($((size / 1048576)) MiB, limit $LIMIT_MIB MiB)"
  echo "binaries:"; (cd "$STAGE/bin" && du -b -- * | sed 's/^/  /')
  echo "libraries:"; (cd "$STAGE/lib" && du -b -- * | sed 's/^/  /')
} > "$OUT/MANIFEST"
cat "$OUT/MANIFEST"
if [ "$size" -gt $((LIMIT_MIB * 1048576)) ]; then
  rm -f "$OUT/bundle.tar.xz"  # it would not travel; MANIFEST says what was in it
  echo "gpu_bundle: the bundle is $((size / 1048576)) MiB, over the $LIMIT_MIB MiB limit (see $OUT/MANIFEST)" >&2
  exit 1
fi

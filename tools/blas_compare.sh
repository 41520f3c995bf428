#!/usr/bin/env bash
# blas_compare.sh — sgemm speed of each CPU BLAS library on kvtrain's shapes, side by side on this
# machine (docs/results.md, "CPU GEMM libraries"). A benchmark, never part of CI.
#
#   THREADS=2 bash tools/blas_compare.sh
#
# Builds tools/blas_bench/blas_bench.cpp against every library it finds and runs it:
#   OpenBLAS (Debian, OpenMP build) as detected, then with OPENBLAS_CORETYPE=Prescott (what an
#   OpenBLAS too old for the CPU runs), BLIS (libblis-dev, OpenMP build), oneDNN (libdnnl-dev),
#   and MKL with mkl_gnu_thread and CNR pinned (MKL=1: pip-installs mkl-devel into
#   ${MKL_PREFIX:-build/mkl}; otherwise only when that prefix already holds it).
# Missing libraries are skipped with a line saying so. Output: one markdown table (rows = shapes,
# columns = libraries), headed by the CPU model, threads and load average at start and end.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
OUT=${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/blas_compare.XXXXXX")}
MKL_PREFIX=${MKL_PREFIX:-build/mkl}
SRC=tools/blas_bench/blas_bench.cpp
export OMP_NUM_THREADS=$THREADS
lib=/usr/lib/x86_64-linux-gnu
build() {  # name, extra g++ arguments...
  local name=$1; shift
  g++ -O2 -fopenmp "$SRC" -o "$OUT/bench_$name" "$@" 2> "$OUT/build_$name.log" \
    || { echo "# $name: not built ($(head -c 200 "$OUT/build_$name.log" | tr '\n' ' '))"; return 1; }
}
names=() cols=()
run() {  # column label, binary name, env...
  local label=$1 bin=$2; shift 2
  env "$@" "$OUT/bench_$bin" > "$OUT/$label.md"
  names+=("$label")
}
echo "# blas_compare: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
     "(family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')," \
     "model $(grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')), $(nproc) cores," \
     "$THREADS threads, load average at start $(cut -d' ' -f1-3 /proc/loadavg); files in $OUT"
if build openblas -I/usr/include/x86_64-linux-gnu/openblas-openmp "$lib/openblas-openmp/libopenblas.so"; then
  core=$(OPENBLAS_VERBOSE=2 "$OUT/bench_openblas" 2>&1 | sed -n 's/^Core: //p' | head -1 || true)
  run "OpenBLAS ($core)" openblas
  run "OpenBLAS (Prescott forced)" openblas OPENBLAS_CORETYPE=Prescott
fi
if build blis -I/usr/include/blis "$lib/blis-openmp/libblis.so" -Wl,-rpath,"$lib/blis-openmp"; then
  run "BLIS 0.9 (OpenMP)" blis
fi
if build dnnl -DUSE_DNNL -ldnnl; then run "oneDNN" dnnl; fi
if [[ "${MKL:-0}" == 1 && ! -e "$MKL_PREFIX/include/mkl.h" ]]; then
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --prefix "$MKL_PREFIX" mkl-devel mkl-include
fi
ml="$MKL_PREFIX/lib"
mkl_so() { ls "$ml"/libmkl_"$1".so.* 2>/dev/null | head -1; }
if [[ -e "$MKL_PREFIX/include/mkl.h" ]] && build mkl -DUSE_MKL -I"$MKL_PREFIX/include" \
     "$(mkl_so gf_lp64)" "$(mkl_so gnu_thread)" "$(mkl_so core)" \
     -Wl,-rpath,"$(cd "$ml" && pwd)" -lpthread -lm -ldl; then
  ver=$(ls -d "$ml"/python3*/site-packages/mkl-*.dist-info 2>/dev/null | sed 's/.*mkl-\(.*\)\.dist-info/\1/' | head -1)
  run "MKL ${ver} (gnu_thread, CNR)" mkl
else
  echo "# MKL: not found in $MKL_PREFIX (MKL=1 installs it from PyPI)"
fi
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" "${names[@]}" <<'PY'
import sys
out, names = sys.argv[1], sys.argv[2:]
cols = []
for n in names:
    rows = [l.strip().strip("|").split("|") for l in open(f"{out}/{n}.md") if l.startswith("| ") and "GFLOP" not in l]
    cols.append({r[0].strip(): r[1].strip() for r in rows})
shapes = list(cols[0].keys())
print("\n| shape (GFLOP/s) | " + " | ".join(names) + " |")
print("|---|" + "---:|" * len(names))
for s in shapes:
    print(f"| {s} | " + " | ".join(c.get(s, "") for c in cols) + " |")
PY

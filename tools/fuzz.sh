#!/usr/bin/env bash
# tools/fuzz.sh — builds the libFuzzer harnesses of the GGUF, safetensors and tokenizer.json
# parsers with clang (ASan + UBSan) into build-fuzz/ and runs each for FUZZ_SECONDS
# (docs/design.md, "Fuzzing"). Exits non-zero on any crash, sanitizer report, leak, timeout or
# allocation over the limits; the input that did it lands in build-fuzz/artifacts/.
#
#   FUZZ_SECONDS=30     seconds per target
#   FUZZ_TARGETS="gguf safetensors tokenizer_json"
#   FUZZ_BUILD=<repo>/build-fuzz   build directory (its corpus/ grows from run to run)
#   FUZZ_ARGS=          extra libFuzzer flags (e.g. -jobs=1 -workers=1)
#   FUZZ_CXX=clang++    the compiler (clang 14 or later: -fsanitize=fuzzer)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${FUZZ_SECONDS:-30}
targets=${FUZZ_TARGETS:-"gguf safetensors tokenizer_json"}
build=${FUZZ_BUILD:-$root/build-fuzz}
cxx=${FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || echo clang++)}

# No clang: exit 77, which CTest's fuzz_parsers_short reports as skipped.
command -v "$cxx" >/dev/null || { echo "fuzz.sh: $cxx not found (clang with libFuzzer needed)" >&2; exit 77; }
probe='extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }'
echo "$probe" | "$cxx" -fsanitize=fuzzer -x c++ - -o /dev/null 2>/dev/null ||
  { echo "fuzz.sh: $cxx cannot link -fsanitize=fuzzer (libclang-rt-14-dev missing?)" >&2; exit 77; }
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S "$root/tests/fuzz" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" "${launcher[@]}" >"$build.configure.log" 2>&1 ||
    { cat "$build.configure.log" >&2; exit 1; }
fi
cmake --build "$build" -j"${FUZZ_BUILD_JOBS:-2}" >"$build/build.log" 2>&1 || { tail -40 "$build/build.log" >&2; exit 1; }
rm -rf "$build/seeds"
"$build/fuzz_seeds" "$build/seeds"
mkdir -p "$build/artifacts"

status=0
for t in $targets; do
  mkdir -p "$build/corpus/$t"
  log=$build/fuzz_$t.log
  # 2 GB of RSS, no single allocation over 512 MB, 10 s per input: a header claiming 2^60
  # tensors must be an error, not an allocation.
  rc=0
  "$build/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
    -max_len=16384 -dict="$root/tests/fuzz/$t.dict" -artifact_prefix="$build/artifacts/$t-" \
    -print_final_stats=1 ${FUZZ_ARGS:-} "$build/corpus/$t" "$build/seeds/$t" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  echo "fuzz_$t: ${seconds} s, ${execs:-?} execs, ${cov:-cov ?}, corpus $(ls "$build/corpus/$t" | wc -l) files, rc $rc"
  if [[ $rc -ne 0 ]]; then
    status=1
    grep -E 'ERROR|SUMMARY|runtime error|escaped|does not name|Test unit written' "$log" | head -20 >&2 || true
    echo "fuzz_$t: FAILED, log $log" >&2
  fi
done
exit $status

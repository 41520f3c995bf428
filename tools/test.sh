#!/usr/bin/env bash
# The README's test command: install what is missing, build (CUDA too when nvcc is found),
# and run every test. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" --timeout 900

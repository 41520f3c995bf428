#!/usr/bin/env bash
# Fetches the header-only cudnn-frontend C++ API (the flash-attention graphs of the CUDA backend,
# kernels/cuda/sdpa.cpp) into $1 (default build/_deps/cudnn_frontend): pip downloads the PINNED
# PyPI wheel nvidia-cudnn-frontend (its include/ sits at the wheel's top) and unpacks include/.
# CMake runs it at configure time when the CUDA backend is on. Offline: point
# CUDNN_FRONTEND_WHEEL_DIR at a folder holding the wheel (pip --no-index --find-links).
# Exits non-zero with one line saying what failed.
set -euo pipefail
VERSION=1.16.0  # compiles with nvcc 13.0 / g++ 12 against cuDNN 9.19; bump only after checking
DEST=${1:-build/_deps/cudnn_frontend}
STAMP="$DEST/include/.version"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$VERSION" && -f "$DEST/include/cudnn_frontend.h" ]]; then
  exit 0
fi
PY=${PYTHON:-python3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# Headers are the same in every wheel of a version: ask for one fixed platform and Python.
ARGS=(download -q --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64
      "nvidia-cudnn-frontend==$VERSION" -d "$TMP")
if [[ -n "${CUDNN_FRONTEND_WHEEL_DIR:-}" ]]; then
  ARGS+=(--no-index --find-links "$CUDNN_FRONTEND_WHEEL_DIR")
fi
if ! PIP_ROOT_USER_ACTION=ignore "$PY" -m pip "${ARGS[@]}" > "$TMP/pip.log" 2>&1; then
  echo "fetch_cudnn_frontend: pip download nvidia-cudnn-frontend==$VERSION failed: $(tail -n 1 "$TMP/pip.log")" >&2
  exit 1
fi
WHEEL=$(ls "$TMP"/nvidia_cudnn_frontend-"$VERSION"-*.whl 2>/dev/null | head -n 1)
if [[ -z "$WHEEL" ]]; then
  echo "fetch_cudnn_frontend: no nvidia_cudnn_frontend-$VERSION wheel in pip's download" >&2
  exit 1
fi
rm -rf "$DEST/include"
mkdir -p "$DEST"
"$PY" - "$WHEEL" "$DEST" <<'PYEOF'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("include/")]
    if not any(n == "include/cudnn_frontend.h" for n in names):
        sys.exit("fetch_cudnn_frontend: %s has no include/cudnn_frontend.h" % wheel)
    z.extractall(dest, names)
PYEOF
echo "$VERSION" > "$STAMP"

#!/usr/bin/env bash
# tools/py_venv.sh — the one Python venv for peers and parity (PyTorch 2.x, transformers 5.x,
# gguf-py, llama-cpp-python), cached in the build tree; prints its python's path.
#
#   tools/py_venv.sh [--llama-cpp]
#
# Reused when its python imports what it needs, else made with the python3 on PATH
# (`python3 -m venv`) and pip from PyPI. PyTorch's wheel brings ~5 GB of CUDA libraries: the
# venv is ~6.5 GB on disk; with a warm pip cache it takes ~3 minutes, cold ~6–10.
# --llama-cpp also builds llama-cpp-python from source (llama.cpp's C++, ~15 minutes on
# 2 cores); only the inference benchmark and the tokenizer-fixture script need it.
#
# Environment:
#   PY_VENV  where the venv lives [build/py_venv]
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VENV=${PY_VENV:-build/py_venv}
want_llama=0
[[ "${1:-}" == "--llama-cpp" ]] && want_llama=1
py="$PY_VENV/bin/python"
# Pinned: the peers every figure in docs/results.md was measured against.
PKGS=("torch==2.15.0" "transformers==5.24.0" "gguf==0.19.0" "numpy" "safetensors" "sentencepiece"
      "protobuf" "pyyaml" "tokenizers" "accelerate")  # accelerate: transformers loads GGUF with it
LLAMA_PKG="llama-cpp-python==0.3.36"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
check='import torch, transformers, gguf, numpy, safetensors, yaml, tokenizers, accelerate
assert torch.__version__.split(".")[0] == "2" and transformers.__version__.split(".")[0] == "5"'
if [[ ! -x "$py" ]] || ! "$py" -c "$check" >/dev/null 2>&1; then
  echo "# py_venv: making $PY_VENV (torch 2.x, transformers 5.x, gguf)" >&2
  python3 -m venv "$PY_VENV"
  "$py" -m pip install -q "${PKGS[@]}" >&2
  "$py" -c "$check" || { echo "py_venv: $PY_VENV: the packages do not import" >&2; exit 1; }
fi
if (( want_llama )) && ! "$py" -c "import llama_cpp" >/dev/null 2>&1; then
  echo "# py_venv: building $LLAMA_PKG from source (~15 minutes on 2 cores)" >&2
  CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    "$py" -m pip install -q --no-binary llama-cpp-python "$LLAMA_PKG" >&2
fi
echo "$py"

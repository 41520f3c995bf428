#!/usr/bin/env bash
# tools/hf/gguf_dequant_parity.sh — kvtrain's GGUF dequantization vs gguf-py, bit for bit
# (tools/hf/gguf_dequant_parity.py; docs/design.md, "Importing models").
#
#   tools/hf/gguf_dequant_parity.sh [WORK_DIR]
#
# Environment: GGUFDEQUANT [build/tests/ggufdequant], PY_VENV (see tools/py_venv.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
GGUFDEQUANT="${GGUFDEQUANT:-$ROOT/build/tests/ggufdequant}"
[ -x "$GGUFDEQUANT" ] || { echo "gguf_dequant_parity: no executable $GGUFDEQUANT (build it first)" >&2; exit 1; }
PY="$(bash "$ROOT/tools/py_venv.sh")"
exec "$PY" "$ROOT/tools/hf/gguf_dequant_parity.py" --ggufdequant "$GGUFDEQUANT" ${1:+--work "$1"}

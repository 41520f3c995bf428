#!/usr/bin/env bash
# tools/hf/smollm2_parity.sh — SmolLM2-135M-Instruct parity of `kvtrain import` with Hugging Face
# transformers in float64 (tools/hf/smollm2_parity.py; docs/design.md, "Importing models").
#
#   tools/hf/smollm2_parity.sh [WORK_DIR]     (default: a new directory under /tmp)
#
# Needs the GGUF and its import from tools/fetch_smollm2.sh (CTest fixture smollm2) and the venv
# of tools/py_venv.sh. transformers' GGUF loader needs accelerate, which the venv may lack: then
# accelerate and psutil are installed with pip (--no-deps) into $PY_EXTRA, put on PYTHONPATH.
# The text is datasets/kjv/kjv.txt, or the KJV written from Debian's bible-kjv as
# tools/prepare_kjv.sh does when that file is absent.
#
# Environment: KVTRAIN [build/kvtrain], LOGITDUMP [build/tests/logitdump],
#   SMOLLM2_DIR [build/models/smollm2] (SmolLM2-135M-Instruct.Q4_1.gguf, smollm2.h5),
#   PY_VENV (see tools/py_venv.sh), KJV_TEXT [datasets/kjv/kjv.txt].
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
KVTRAIN="${KVTRAIN:-$ROOT/build/kvtrain}"
LOGITDUMP="${LOGITDUMP:-$ROOT/build/tests/logitdump}"
SMOLLM2_DIR="${SMOLLM2_DIR:-$ROOT/build/models/smollm2}"
GGUF="$SMOLLM2_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
H5="$SMOLLM2_DIR/smollm2.h5"
WORK="${1:-$(mktemp -d /tmp/kvt_smollm2.XXXXXX)}"
mkdir -p "$WORK"
for f in "$KVTRAIN" "$LOGITDUMP"; do
  [ -x "$f" ] || { echo "smollm2_parity: no executable $f (build it first)" >&2; exit 1; }
done
for f in "$GGUF" "$H5"; do
  [ -f "$f" ] || { echo "smollm2_parity: $f missing (run bash tools/fetch_smollm2.sh)" >&2; exit 1; }
done

source "$ROOT/tools/hf/venv_env.sh"

TEXT="${KJV_TEXT:-$ROOT/datasets/kjv/kjv.txt}"
if [ ! -f "$TEXT" ]; then
  TEXT="$WORK/kjv.txt"
  bible -f "Genesis 1:1-Revelation 22:21" | sed -E 's/^[0-9A-Za-z]+[0-9]+:[0-9]+ //' > "$TEXT"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
exec "$PY" "$ROOT/tools/hf/smollm2_parity.py" --gguf "$GGUF" --checkpoint "$H5" --logitdump "$LOGITDUMP" \
  --kvtrain "$KVTRAIN" --text "$TEXT" --work "$WORK"

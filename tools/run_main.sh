#!/usr/bin/env bash
# The README's main job, end to end on a fresh machine: install, build, prepare a real corpus
# (the King James Bible from Debian's bible-kjv), train the tiny model on CPU, and leave a
# checkpoint, metrics.jsonl and a loss-curve PNG in the run directory.
#   CONFIG=configs/tiny.yaml RUN=runs/tiny bash tools/run_main.sh [--set key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/tiny.yaml}
RUN=${RUN:-runs/tiny}
bash tools/setup.sh
BUILD_TARGET=kvtrain bash tools/build.sh
KVTRAIN=${BUILD_DIR:-build}/kvtrain

bash tools/prepare_kjv.sh "$KVTRAIN"
echo "corpus: $(grep -o '"bigram_entropy[^,]*' datasets/kjv/stats.json)"

"$KVTRAIN" train --config "$CONFIG" --set output.dir="$RUN" "$@"
/usr/bin/python3 tools/plot_loss.py "$RUN" --out "$RUN/loss.png" \
  --bigram "$(/usr/bin/python3 -c 'import json;print(json.load(open("datasets/kjv/stats.json"))["bigram_entropy_nats"])')"
echo "run directory $RUN: $(ls "$RUN" | tr '\n' ' ')"

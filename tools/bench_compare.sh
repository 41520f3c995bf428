#!/usr/bin/env bash
# bench_compare.sh — CPU training throughput, kvtrain vs PyTorch fp32, side by side in one run
# on the same machine and thread count (docs/design.md, "Performance"; issue "core trainer" item 8).
#
# Usage (from the repository root):
#   KVTRAIN=build/kvtrain THREADS=2 bash tools/bench_compare.sh
#
# For each config it alternates `kvtrain bench` and tools/bench_torch.py (kvtrain, torch,
# kvtrain, torch, ... ROUNDS times each) to spread machine drift over both, every run with the
# same train.seq_len, batch size and threads (train.threads for kvtrain, torch.set_num_threads
# for PyTorch, and OMP_NUM_THREADS for both). Each run reports the median of STEPS timed full
# steps (forward + backward + grad clip + AdamW) after WARMUP untimed ones; the table keeps, per
# config and implementation, the best (lowest) of the ROUNDS medians, and the run-by-run table
# follows it. GFLOP/s use kvtrain's model FLOPs (model/transformer.cpp train_flops_per_token) for
# both. Peak RSS is the process's ru_maxrss; PyTorch's includes the Python + libtorch runtime
# (its JSON has baseline_rss_mib, the RSS before the model was built).
#
# Environment (defaults in brackets):
#   KVTRAIN   kvtrain binary [build/kvtrain]
#   PYTHON    Python with torch (+ PyYAML) [/usr/bin/python3]
#   THREADS   threads for both [nproc]
#   CONFIGS   space-separated configs [configs/tiny.yaml configs/bench_25m.yaml]
#   SEQ_LEN   train.seq_len for every config [256]
#   BATCH     train.batch_size for every config [empty = each config's own]
#   STEPS     timed steps per run [5]
#   WARMUP    untimed steps per run [1]
#   ROUNDS    runs per implementation and config, alternating [2]
#   OUT_DIR   where the per-run JSON and logs go [a new mktemp -d directory, printed]
# Exit status: 0, or 1 when a run fails or the two implementations' parameter counts differ.
# Quick smoke test: CONFIGS=configs/tiny.yaml STEPS=2 WARMUP=1 ROUNDS=1 bash tools/bench_compare.sh
set -euo pipefail

KVTRAIN=${KVTRAIN:-build/kvtrain}
PYTHON=${PYTHON:-/usr/bin/python3}
THREADS=${THREADS:-$(nproc)}
CONFIGS=${CONFIGS:-configs/tiny.yaml configs/bench_25m.yaml}
SEQ_LEN=${SEQ_LEN:-256}
BATCH=${BATCH:-}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-2}
OUT_DIR=${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bench_compare.XXXXXX")}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

[[ -x "$KVTRAIN" ]] || { echo "bench_compare: no kvtrain binary at '$KVTRAIN' (set KVTRAIN)" >&2; exit 1; }
mkdir -p "$OUT_DIR"
export OMP_NUM_THREADS="$THREADS"

sets=(--set "train.seq_len=$SEQ_LEN")
[[ -n "$BATCH" ]] && sets+=(--set "train.batch_size=$BATCH")

echo "# bench_compare: threads $THREADS, seq_len $SEQ_LEN, batch ${BATCH:-from config}," \
     "$STEPS steps after $WARMUP warm-up, $ROUNDS rounds; output in $OUT_DIR"
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')," \
     "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
runs=()
for cfg in $CONFIGS; do
  tag=$(basename "$cfg" .yaml)
  for ((r = 1; r <= ROUNDS; r++)); do
    for impl in kvtrain torch; do
      base="$OUT_DIR/${tag}.${impl}.${r}"
      if [[ $impl == kvtrain ]]; then
        cmd=("$KVTRAIN" bench --config "$cfg" "${sets[@]}" --set "train.threads=$THREADS"
             --steps "$STEPS" --warmup "$WARMUP" --json "$base.json")
      else
        cmd=("$PYTHON" "$HERE/bench_torch.py" --config "$cfg" "${sets[@]}" --threads "$THREADS"
             --steps "$STEPS" --warmup "$WARMUP" --json "$base.json")
      fi
      echo "## $tag round $r: $impl" >&2
      if ! "${cmd[@]}" > "$base.log" 2>&1; then
        cat "$base.log" >&2
        echo "bench_compare: failed: ${cmd[*]}" >&2
        exit 1
      fi
      sed 's/^/   /' "$base.log" >&2
      runs+=("$impl:$base.json")
    done
  done
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

"$PYTHON" - "${runs[@]}" <<'EOF'
import json, sys
rows = []
for arg in sys.argv[1:]:
    impl, path = arg.split(":", 1)
    with open(path) as f:
        j = json.load(f)
    j["impl"] = impl
    rows.append(j)
hdr = "| config | params | implementation | threads | step ms | tokens/s | GFLOP/s | peak RSS MiB |"
sep = "|---|---:|---|---:|---:|---:|---:|---:|"

def line(j, impl):
    if impl == "torch":
        impl = f"PyTorch {j.get('torch_version', '')} fp32"
    return (f"| {j['config']} (B={j['batch']}, T={j['seq_len']}) | {j['params'] / 1e6:.2f}M | {impl} "
            f"| {j['threads']} | {j['step_ms']:.1f} | {j['tokens_per_s']:.0f} | {j['gflops']:.2f} "
            f"| {j['peak_rss_mib']:.0f} |")

configs = list(dict.fromkeys(j["config"] for j in rows))
best, status, notes = {}, 0, []
for c in configs:
    for impl in ("kvtrain", "torch"):
        rs = [j for j in rows if j["config"] == c and j["impl"] == impl]
        b = dict(min(rs, key=lambda j: j["step_ms"]))
        b["peak_rss_mib"] = max(j["peak_rss_mib"] for j in rs)
        best[c, impl] = b
    k, t = best[c, "kvtrain"], best[c, "torch"]
    if k["params"] != t["params"]:
        status = 1
        notes.append(f"- **{c}: parameter counts differ** (kvtrain {k['params']}, torch {t['params']})")
    else:
        notes.append(f"- {c}: params equal ({k['params']}); kvtrain / torch tokens/s = "
                     f"{k['tokens_per_s'] / t['tokens_per_s']:.2f}x")
print("\nBest of each implementation's per-run medians:\n")
print(hdr); print(sep)
for c in configs:
    for impl in ("kvtrain", "torch"):
        print(line(best[c, impl], impl))
print()
print("\n".join(notes))
print("\nEvery run, in the order run:\n")
print(hdr); print(sep)
for j in rows:
    print(line(j, j["impl"]))
sys.exit(status)
EOF

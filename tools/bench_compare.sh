#!/usr/bin/env bash
# bench_compare.sh — CPU training throughput, kvtrain vs PyTorch 2.x (eager and torch.compile)
# fp32, side by side in one run on the same machine and thread count (docs/design.md,
# "Performance"; issue #13). A benchmark: never part of CI or the tests.
#
# Usage (from the repository root):
#   KVTRAIN=build/kvtrain THREADS=2 bash tools/bench_compare.sh
# Quick smoke test (tiny only, seconds plus one torch.compile):
#   RUNS="configs/tiny.yaml:128:16" STEPS=2 WARMUP=1 ROUNDS=1 bash tools/bench_compare.sh
#
# PyTorch: unless PYTHON is set, the script uses the venv BENCH_VENV, reused when its python
# imports torch, numpy and yaml, else made with `python3 -m venv` (the python3 on PATH) and
# `pip install torch numpy pyyaml` (the current PyTorch from PyPI, MKL inside).
#
# Runs: RUNS is a space-separated list of config:seq_len:batch[:steps[:warmup]]; steps and
# warm-up default to STEPS and WARMUP. For each run it alternates the implementations of IMPLS
# (kvtrain, eager, compile, kvtrain, eager, compile, ... ROUNDS times each) to spread machine
# drift over all, every one with the same train.seq_len, batch size and threads (train.threads
# for kvtrain, torch.set_num_threads for PyTorch, OMP_NUM_THREADS for both):
#   kvtrain  `kvtrain bench --config C --set train.seq_len=T --set train.batch_size=B ...`
#   eager    tools/bench_torch.py: the same model, attention F.scaled_dot_product_attention
#   compile  tools/bench_torch.py --compile: torch.compile of the model (forward + backward;
#            grad clip and AdamW stay eager); compilation falls in the warm-up, its time is
#            reported apart (compile s = first step - median step)
# What is timed: each run reports the median of its timed full steps (forward + backward +
# grad clip + AdamW) after its untimed warm-up steps; the summary keeps, per run and
# implementation, the best (lowest) of the ROUNDS medians, and the run-by-run table follows.
# GFLOP/s use kvtrain's model FLOPs (model/transformer.cpp train_flops_per_token) for all.
# Peak RSS is the process's ru_maxrss; PyTorch's includes the Python + libtorch runtime (its
# JSON has baseline_rss_mib, the RSS before the model was built).
# sgemm peak: before the first run and after the last, tools/bench_torch.py --sgemm-peak times
# torch.mm of 2048^2 and 4096^2 fp32 (MKL) with THREADS threads, best of several calls; the
# larger of the two measurements is the peak that kvtrain's GFLOP/s are divided by.
# The summary (markdown) starts with the CPU model, torch version and BLAS build lines,
# kvtrain's "cpu" / "blas" JSON fields when it writes them, threads and the load average at
# start and end; it ends with the targets of issue #13 (tiny T=128 and T=256 >= 1.2x eager,
# bench_25m and bench_100m >= 1.05x eager, bench_25m >= 75% of the sgemm peak), met or missed.
#
# Environment (defaults in brackets):
#   KVTRAIN     kvtrain binary [build/kvtrain]
#   BENCH_VENV  venv with torch, numpy, PyYAML, made when missing [build/bench_venv]
#   PYTHON      Python with torch (+ PyYAML); set it to skip the venv [$BENCH_VENV/bin/python]
#   THREADS     threads for all [nproc]
#   RUNS        config:seq_len:batch[:steps[:warmup]] ... [configs/tiny.yaml:128:16
#               configs/tiny.yaml:256:16 configs/bench_25m.yaml:256:8 configs/bench_100m.yaml:512:4:3:1]
#   IMPLS       implementations, in the order run [kvtrain eager compile]
#   STEPS       timed steps per run, where RUNS does not say [5]
#   WARMUP      untimed steps per run, where RUNS does not say [1] (compile: at least 1)
#   ROUNDS      runs per implementation and config, alternating [2]
#   OUT_DIR     where the per-run JSON and logs go [a new mktemp -d directory, printed]
# Exit status: 0, or 1 when a run fails (the others still run) or the implementations'
# parameter counts differ. Targets missed do not change it.
set -euo pipefail

KVTRAIN=${KVTRAIN:-build/kvtrain}
BENCH_VENV=${BENCH_VENV:-build/bench_venv}
THREADS=${THREADS:-$(nproc)}
RUNS=${RUNS:-configs/tiny.yaml:128:16 configs/tiny.yaml:256:16 configs/bench_25m.yaml:256:8 configs/bench_100m.yaml:512:4:3:1}
IMPLS=${IMPLS:-kvtrain eager compile}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-2}
OUT_DIR=${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bench_compare.XXXXXX")}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

[[ -x "$KVTRAIN" ]] || { echo "bench_compare: no kvtrain binary at '$KVTRAIN' (set KVTRAIN)" >&2; exit 1; }
for impl in $IMPLS; do
  [[ $impl == kvtrain || $impl == eager || $impl == compile ]] ||
    { echo "bench_compare: IMPLS: unknown implementation '$impl' (kvtrain, eager, compile)" >&2; exit 1; }
done
for spec in $RUNS; do
  IFS=: read -r cfg seq batch steps warm extra <<< "$spec"
  [[ -f "$cfg" && $seq =~ ^[0-9]+$ && $batch =~ ^[0-9]+$ && ${steps:-1} =~ ^[0-9]+$ &&
     ${warm:-0} =~ ^[0-9]+$ && -z "${extra:-}" ]] ||
    { echo "bench_compare: RUNS: bad entry '$spec' (config:seq_len:batch[:steps[:warmup]], config a file)" >&2; exit 1; }
done

# ---- PyTorch venv ----------------------------------------------------------------------------
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON="$BENCH_VENV/bin/python"
  if ! "$PYTHON" -c 'import torch, numpy, yaml' 2>/dev/null; then
    echo "# bench_compare: making $BENCH_VENV (python3 -m venv; pip install torch numpy pyyaml)" >&2
    python3 -m venv "$BENCH_VENV"
    "$PYTHON" -m pip install torch numpy pyyaml >&2
  fi
fi
"$PYTHON" -c 'import torch, yaml' ||
  { echo "bench_compare: '$PYTHON' cannot import torch and yaml (set PYTHON or BENCH_VENV)" >&2; exit 1; }

mkdir -p "$OUT_DIR"
export OMP_NUM_THREADS="$THREADS"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# bench_compare: threads $THREADS, $ROUNDS rounds of [$IMPLS], python $PYTHON; output in $OUT_DIR" >&2

manifest="$OUT_DIR/manifest.tsv"  # impl, run label, JSON path, ok|failed
: > "$manifest"
failed=0

# run NAME LABEL JSON CMD...: run CMD with its output in JSON's .log, and record it.
run() {
  local impl=$1 label=$2 json=$3
  shift 3
  echo "## $label: $impl" >&2
  if "$@" > "${json%.json}.log" 2>&1; then
    sed 's/^/   /' "${json%.json}.log" | grep -v 'No CUDA runtime is found' >&2 || true
    printf '%s\t%s\t%s\tok\n' "$impl" "$label" "$json" >> "$manifest"
  else
    cat "${json%.json}.log" >&2
    echo "bench_compare: failed: $*" >&2
    printf '%s\t%s\t%s\tfailed\n' "$impl" "$label" "$json" >> "$manifest"
    failed=1
  fi
}

run sgemm "sgemm peak (start)" "$OUT_DIR/sgemm.start.json" \
  "$PYTHON" "$HERE/bench_torch.py" --sgemm-peak --threads "$THREADS" --json "$OUT_DIR/sgemm.start.json"
for spec in $RUNS; do
  IFS=: read -r cfg seq batch steps warm <<< "$spec"
  steps=${steps:-$STEPS}
  warm=${warm:-$WARMUP}
  label="$cfg T=$seq B=$batch ($steps steps, $warm warm-up)"
  tag="$(basename "$cfg" .yaml).T$seq.B$batch"
  sets=(--set "train.seq_len=$seq" --set "train.batch_size=$batch")
  for ((r = 1; r <= ROUNDS; r++)); do
    for impl in $IMPLS; do
      json="$OUT_DIR/$tag.$impl.$r.json"
      case $impl in
        kvtrain) cmd=("$KVTRAIN" bench --config "$cfg" "${sets[@]}" --set "train.threads=$THREADS") ;;
        eager)   cmd=("$PYTHON" "$HERE/bench_torch.py" --config "$cfg" "${sets[@]}" --threads "$THREADS") ;;
        compile) cmd=("$PYTHON" "$HERE/bench_torch.py" --compile --config "$cfg" "${sets[@]}" --threads "$THREADS") ;;
      esac
      run "$impl" "$label" "$json" "${cmd[@]}" --steps "$steps" --warmup "$warm" --json "$json"
    done
  done
done
run sgemm "sgemm peak (end)" "$OUT_DIR/sgemm.end.json" \
  "$PYTHON" "$HERE/bench_torch.py" --sgemm-peak --threads "$THREADS" --json "$OUT_DIR/sgemm.end.json"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

status=0
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//') \
CORES=$(nproc) THREADS="$THREADS" ROUNDS="$ROUNDS" LOAD_START="$LOAD_START" LOAD_END="$LOAD_END" \
  "$PYTHON" - "$manifest" <<'EOF' || status=1
import json, os, sys

E = os.environ
rows, failed = [], []  # (impl, label, json)
with open(sys.argv[1]) as f:
    for line in f:
        impl, label, path, ok = line.rstrip("\n").split("\t")
        if ok != "ok":
            failed.append((impl, label))
            continue
        with open(path) as g:
            j = json.load(g)
        j["impl"], j["label"] = impl, label
        rows.append(j)

sgemm = [j for j in rows if j["impl"] == "sgemm"]
runs = [j for j in rows if j["impl"] != "sgemm"]
peak = max((j["peak_gflops"] for j in sgemm), default=None)
impls = list(dict.fromkeys(j["impl"] for j in runs))

print("\n## bench_compare summary\n")
print(f"- CPU: {E['CPU_MODEL']} ({E['CORES']} cores); threads {E['THREADS']}, {E['ROUNDS']} round(s)")
print(f"- load average: start {E['LOAD_START']}, end {E['LOAD_END']}")
if sgemm:
    print(f"- PyTorch {sgemm[0]['torch_version']}: " + "; ".join(sgemm[0]["blas"]))
    print("- sgemm peak (torch.mm fp32, best of several): " + "; ".join(
        j["label"].split("(")[1].rstrip(")") + " " +
        ", ".join(f"{n}x{n} {g:.1f}" for n, g in j["gflops_by_n"].items()) for j in sgemm) +
        f" GFLOP/s -> peak {peak:.1f} GFLOP/s")
kv = next((j for j in runs if j["impl"] == "kvtrain"), None)
if kv is not None:
    print(f"- kvtrain: cpu {kv.get('cpu', '(not in its JSON)')}; blas {kv.get('blas', '(not in its JSON)')}")
for impl, label in failed:
    print(f"- **failed: {impl} on {label}**")


def fmt(v, spec, suffix=""):
    return "-" if v is None else format(v, spec) + suffix


labels = list(dict.fromkeys(j["label"] for j in runs))
best, status, notes = {}, 1 if failed else 0, []
for lab in labels:
    for impl in impls:
        rs = [j for j in runs if j["label"] == lab and j["impl"] == impl]
        if rs:
            b = dict(min(rs, key=lambda j: j["step_ms"]))
            b["peak_rss_mib"] = max(j["peak_rss_mib"] for j in rs)
            best[lab, impl] = b
    counts = {impl: best[lab, impl]["params"] for impl in impls if (lab, impl) in best}
    if len(set(counts.values())) > 1:
        status = 1
        notes.append(f"- **{lab}: parameter counts differ** ({counts})")

print("\nBest of each implementation's per-run medians (tokens/s; ratios are kvtrain / PyTorch):\n")
print("| run | params | kvtrain tok/s | eager tok/s | compile tok/s | kvtrain/eager | kvtrain/compile "
      "| kvtrain GFLOP/s | of sgemm peak | compile s | peak RSS MiB kvtrain / eager / compile |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
derived = {}
for lab in labels:
    k, e, c = (best.get((lab, i)) for i in ("kvtrain", "eager", "compile"))
    tps = lambda j: None if j is None else j["tokens_per_s"]
    r_e = k["tokens_per_s"] / e["tokens_per_s"] if k and e else None
    r_c = k["tokens_per_s"] / c["tokens_per_s"] if k and c else None
    frac = k["gflops"] / peak if k and peak else None
    derived[lab] = dict(ratio=r_e, frac=frac)
    params = next(j["params"] for j in (k, e, c) if j)
    rss = " / ".join(fmt(j and j["peak_rss_mib"], ".0f") for j in (k, e, c))
    print(f"| {lab} | {params / 1e6:.2f}M | {fmt(tps(k), '.0f')} | {fmt(tps(e), '.0f')} "
          f"| {fmt(tps(c), '.0f')} | {fmt(r_e, '.2f', 'x')} | {fmt(r_c, '.2f', 'x')} "
          f"| {fmt(k and k['gflops'], '.1f')} | {fmt(frac and 100 * frac, '.1f', '%')} "
          f"| {fmt(c and c.get('compile_s'), '.1f')} | {rss} |")
if notes:
    print()
    print("\n".join(notes))

# Issue #13's targets: (config name, seq_len or None = any, quantity, threshold).
TARGETS = [("tiny", 128, "ratio", 1.2), ("tiny", 256, "ratio", 1.2),
           ("bench_25m", None, "ratio", 1.05), ("bench_100m", None, "ratio", 1.05),
           ("bench_25m", None, "frac", 0.75)]
print("\nTargets:\n")
for name, T, what, thr in TARGETS:
    desc = (f"{name}{f' T={T}' if T else ''}: "
            + (f"kvtrain >= {thr:.2f}x eager tokens/s" if what == "ratio"
               else f"kvtrain model FLOP/s >= {100 * thr:.0f}% of the sgemm peak"))
    hits = [lab for lab in labels if os.path.basename(lab.split(" ")[0]) == name + ".yaml"
            and (T is None or f" T={T} " in lab)]
    if not hits:
        print(f"- {desc}: not run")
    for lab in hits:
        v = derived[lab][what]
        if v is None:
            print(f"- {desc} ({lab}): no result")
        elif what == "ratio":
            print(f"- {desc} ({lab}): " + (f"met ({v:.2f}x)" if v >= thr
                                           else f"missed by {thr - v:.2f}x ({v:.2f}x)"))
        else:
            print(f"- {desc} ({lab}): " + (f"met ({100 * v:.1f}%)" if v >= thr
                                           else f"missed by {100 * (thr - v):.1f} points ({100 * v:.1f}%)"))

print("\nEvery run, in the order run:\n")
print("| run | implementation | threads | step ms | tokens/s | GFLOP/s | compile s | peak RSS MiB |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for j in runs:
    impl = j["impl"] if j["impl"] == "kvtrain" else f"PyTorch {j['torch_version']} {j['impl']}"
    print(f"| {j['label']} | {impl} | {j['threads']} "
          f"| {j['step_ms']:.1f} | {j['tokens_per_s']:.0f} | {j['gflops']:.2f} "
          f"| {fmt(j.get('compile_s'), '.1f')} | {j['peak_rss_mib']:.0f} |")
sys.exit(status)
EOF
exit $(( status | failed ))

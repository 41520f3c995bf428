#!/usr/bin/python3
"""Train every attention variant x seed with kvtrain; write a Markdown table and one loss PNG.

    /usr/bin/python3 tools/compare_variants.py --kvtrain build/kvtrain --seeds 3 \\
        --set model.n_layers=8 --out runs/compare

Variants (configs/, identical but for the attention scheme): MHA baseline (tiny.yaml), GQA at
half cache, CLA, YOCO-like, FusedKV-Lite, FusedKV, LRKV at half cache. Every run uses the same
data, token budget and schedule; `--set` overrides apply to all of them (for example more layers
or steps), and each run also gets train.seed=<seed> and output.dir=<out>/<variant>_s<seed>.

Per variant the table reports: parameters (the banner's count), training FLOPs per token (from
metrics.jsonl: flops_per_s / tokens_per_s, kvtrain's model FLOPs), KV-cache bytes per token at
fp32 and bf16 (the banner's "KV cache:" line when printed, else computed from the resolved
config.yaml with docs/design.md, "The model family"'s formulas), final validation loss mean ± sample sd over seeds, and
tokens/s (median over steps after the first, mean over seeds). It then judges the papers'
claims; a gap smaller than 2 x the larger of the two sds is "unresolved".

A run that already finished with the same command (recorded in <run>.cmd) is reused; any other
run directory of that name is emptied and trained afresh (--force retrains everything). The plot reuses tools/plot_loss.py's reader: one colour per
variant, validation loss mean over seeds (band: min..max), training loss mean faintly.
"""
import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_loss  # noqa: E402  (read_metrics; matplotlib with the Agg backend)

VARIANTS = [  # (name, config, label)
    ("mha", "configs/tiny.yaml", "MHA (baseline)"),
    ("gqa_half", "configs/tiny_gqa_half.yaml", "GQA, half cache"),
    ("cla", "configs/tiny_cla.yaml", "CLA"),
    ("yoco", "configs/tiny_yoco.yaml", "YOCO-like"),
    ("fusedkv_lite", "configs/tiny_fusedkv_lite.yaml", "FusedKV-Lite"),
    ("fusedkv", "configs/tiny_fusedkv.yaml", "FusedKV"),
    ("lrkv", "configs/tiny_lrkv.yaml", "LRKV, half cache"),
]
HALF_CACHE = ["gqa_half", "cla", "yoco", "fusedkv_lite", "fusedkv", "lrkv"]


def fail(msg):
    sys.exit(f"compare_variants: {msg}")


def read_jsonl(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def yaml_scalar(text, section, key):
    """A scalar of the resolved config.yaml kvtrain writes (two-level, one key per line)."""
    m = re.search(rf"^{section}:\n((?:[ \t]+.*\n?)*)", text, re.M)
    if not m:
        return None
    k = re.search(rf"^\s+{key}:\s*\"?([^\"\n#]*)\"?", m.group(1), re.M)
    return k.group(1).strip() if k else None


def kv_values_from_config(run_dir):
    """KV-cache values per token from the resolved config (docs/design.md, "The model family")."""
    text = open(os.path.join(run_dir, "config.yaml")).read()
    g = lambda k: yaml_scalar(text, "model", k)  # noqa: E731
    L, d, H = int(g("n_layers")), int(g("d_model")), int(g("n_heads"))
    hkv = int(g("n_kv_heads") or 0) or H
    r = int(g("lrkv_rank") or 0)
    scheme = g("kv_sharing") or "none"
    n = int(g("storage_layers") or 0)
    dh = d // H
    if r > 0:
        return 2 * L * (dh + H * r)
    stored = {"none": L, "cla": (L + 1) // 2}.get(scheme, n or L // 2)
    return 2 * stored * hkv * dh


def run_done(run_dir, cmd):
    """The run finished (an eval at its last step) with exactly this command."""
    path = os.path.join(run_dir, "metrics.jsonl")
    cfg = os.path.join(run_dir, "config.yaml")
    if not (os.path.isfile(path) and os.path.isfile(cfg) and os.path.isfile(run_dir + ".cmd")):
        return False
    with open(run_dir + ".cmd") as f:
        if json.load(f) != cmd:
            return False
    steps = int(yaml_scalar(open(cfg).read(), "train", "steps"))
    evals = [r for r in read_jsonl(path) if r.get("kind") == "eval"]
    return bool(evals) and evals[-1]["step"] == steps


def train_command(args, name, config, seed):
    run_dir = os.path.join(args.out, f"{name}_s{seed}")
    cmd = [args.kvtrain, "train", "--config", config]
    for s in args.set:
        cmd += ["--set", s]
    return run_dir, cmd + ["--set", f"train.seed={seed}", "--set", f"output.dir={run_dir}"]


def train_one(args, name, config, seed):
    run_dir, cmd = train_command(args, name, config, seed)
    log = os.path.join(run_dir + ".log")
    os.makedirs(args.out, exist_ok=True)
    if os.path.isdir(run_dir):  # a stale or different run: start over, not resume
        for f in os.listdir(run_dir):
            os.remove(os.path.join(run_dir, f))
    print(f"[{time.strftime('%H:%M:%S')}] {name} seed {seed}: {' '.join(cmd)}", flush=True)
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=args.root)
    if p.returncode != 0:
        tail = open(log).read()[-2000:]
        fail(f"{name} seed {seed} failed (exit {p.returncode}); end of {log}:\n{tail}")
    with open(run_dir + ".cmd", "w") as f:
        json.dump(cmd, f)
    return run_dir, log


def summarize_run(run_dir, log):
    recs = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    train = [r for r in recs if r.get("kind") == "train"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    if not train or not evals:
        fail(f"{run_dir}: metrics.jsonl has no train or no eval record")
    text = open(log).read() if log and os.path.isfile(log) else ""
    m = re.search(r"^params: (\d+)", text, re.M)
    params = int(m.group(1)) if m else None
    kv = re.search(r"KV cache:.*?: (\d+) values/token", text)
    kv_values = int(kv.group(1)) if kv else kv_values_from_config(run_dir)
    later = train[1:] or train
    return {
        "params": params,
        "flops_per_token": statistics.median(r["flops_per_s"] / r["tokens_per_s"] for r in later),
        "kv_values": kv_values,
        "val": evals[-1]["val_loss"],
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in later),
    }


def mean_sd(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else float("nan"))


def verdict(a, b, better):
    """Claim 'a <= b' (better=True) on (mean, sd) pairs: holds, fails or unresolved."""
    (ma, sa), (mb, sb) = a, b
    tol = 2 * max(sa, sb) if not (math.isnan(sa) or math.isnan(sb)) else float("nan")
    gap = mb - ma  # > 0: a is lower (better)
    if math.isnan(tol):
        return f"unresolved (one seed; gap {gap:+.4f})"
    if abs(gap) < tol:
        return f"unresolved (gap {gap:+.4f} within 2 sd = {tol:.4f})"
    return ("holds" if (gap > 0) == better else "fails") + f" (gap {gap:+.4f}, 2 sd = {tol:.4f})"


def claims(stats):
    base = stats["mha"]["val_ms"]
    lines = []
    for v in ("fusedkv", "fusedkv_lite"):
        if v in stats:
            lines.append(f"- {stats[v]['label']} at or below the MHA baseline: "
                         + verdict(stats[v]["val_ms"], base, True))
    if "lrkv" in stats:
        lines.append("- LRKV below MHA: " + verdict(stats["lrkv"]["val_ms"], base, True))
    half = [v for v in HALF_CACHE if v in stats and v != "cla"]
    if "cla" in stats and half:
        worst_other = max(half, key=lambda v: stats[v]["val_ms"][0])
        lines.append(f"- CLA worst among the half-cache schemes (vs the next worst, "
                     f"{stats[worst_other]['label']}): "
                     + verdict(stats[worst_other]["val_ms"], stats["cla"]["val_ms"], True))
    return lines


def write_table(stats, args, seeds):
    rows = ["| variant | params | train FLOPs/token | KV bytes/token fp32 (bf16) | "
            f"final val loss (mean ± sd, {len(seeds)} seeds) | tokens/s |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, _, _ in VARIANTS:
        if name not in stats:
            continue
        s = stats[name]
        m, sd = s["val_ms"]
        sd_txt = "n/a" if math.isnan(sd) else f"{sd:.4f}"
        params = f"{s['params']:,}" if s["params"] else "?"
        rows.append(f"| {s['label']} | {params} | {s['flops']:.3e} | {4 * s['kv']:,} ({2 * s['kv']:,}) | "
                    f"{m:.4f} ± {sd_txt} | {s['tps']:,.0f} |")
    text = "\n".join(rows) + "\n\nClaims of the papers (unresolved: gap < 2 x the larger sd):\n\n"
    text += "\n".join(claims(stats)) + "\n"
    text += f"\nSettings: seeds {seeds}; overrides {args.set or 'none'}.\n"
    return text


def plot(stats, runs, out):
    plt = plot_loss.plt
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, (name, _, _) in enumerate(VARIANTS):
        if name not in runs:
            continue
        color = f"C{i % 10}"
        vals, trains = [], []
        for run_dir in runs[name]:
            tr, va = plot_loss.read_metrics(run_dir)
            trains.append(dict(tr))
            vals.append(dict(va))
        steps = sorted(set.intersection(*(set(v) for v in vals)))
        if steps:
            ys = [[v[s] for v in vals] for s in steps]
            ax.plot(steps, [statistics.mean(y) for y in ys], color=color, lw=2, marker="o", ms=3,
                    label=f"{stats[name]['label']} val")
            ax.fill_between(steps, [min(y) for y in ys], [max(y) for y in ys], color=color, alpha=0.15)
        tsteps = sorted(set.intersection(*(set(t) for t in trains)))
        if tsteps:
            ax.plot(tsteps, [statistics.mean(t[s] for t in trains) for s in tsteps], color=color,
                    alpha=0.3, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("kvtrain: KV-lean attention variants (val: mean over seeds, band min..max; "
                 "faint: train)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kvtrain", default="build/kvtrain", help="the kvtrain binary")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per variant (1234, 1235, ...)")
    ap.add_argument("--first-seed", type=int, default=1234)
    ap.add_argument("--set", action="append", default=[], help="override for every run (repeatable)")
    ap.add_argument("--variants", default=",".join(v for v, _, _ in VARIANTS),
                    help="comma-separated subset of " + ",".join(v for v, _, _ in VARIANTS))
    ap.add_argument("--out", default="runs/compare", help="directory of the runs")
    ap.add_argument("--table", help="Markdown output (default <out>/comparison.md)")
    ap.add_argument("--plot", help="PNG output (default <out>/comparison.png)")
    ap.add_argument("--force", action="store_true", help="retrain runs that already finished")
    a = ap.parse_args()
    a.root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    a.kvtrain = os.path.abspath(a.kvtrain)
    a.out = os.path.abspath(a.out)
    if not os.access(a.kvtrain, os.X_OK):
        fail(f"{a.kvtrain}: not an executable (build kvtrain first, or pass --kvtrain)")
    chosen = a.variants.split(",")
    unknown = [v for v in chosen if v not in {n for n, _, _ in VARIANTS}]
    if unknown:
        fail(f"unknown variant(s) {unknown}")
    if "mha" not in chosen:
        fail("the MHA baseline (mha) is needed to judge the claims")
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))

    stats, runs = {}, {}
    for name, config, label in VARIANTS:
        if name not in chosen:
            continue
        per_seed = []
        for seed in seeds:
            run_dir, cmd = train_command(a, name, config, seed)
            log = run_dir + ".log"
            if a.force or not run_done(run_dir, cmd):
                run_dir, log = train_one(a, name, config, seed)
            else:
                print(f"{name} seed {seed}: reusing the finished run {run_dir}")
            per_seed.append(summarize_run(run_dir, log))
            runs.setdefault(name, []).append(run_dir)
        stats[name] = {
            "label": label,
            "params": per_seed[0]["params"],
            "flops": statistics.mean(s["flops_per_token"] for s in per_seed),
            "kv": per_seed[0]["kv_values"],
            "val_ms": mean_sd([s["val"] for s in per_seed]),
            "tps": statistics.mean(s["tokens_per_s"] for s in per_seed),
        }
    table = a.table or os.path.join(a.out, "comparison.md")
    png = a.plot or os.path.join(a.out, "comparison.png")
    text = write_table(stats, a, seeds)
    with open(table, "w") as f:
        f.write(text)
    plot(stats, runs, png)
    print(text)
    print(f"compare_variants: wrote {table} and {png}")


if __name__ == "__main__":
    main()

"""Markdown tables of `kvtrain eval --json` results (tools/run_kvzip.sh): one table per run
directory (its eviction.jsonl), one row per (policy, keep), plus the gates' held-out metrics
from the run's gates/metrics.jsonl and how sparse the KVzip targets are. Each loss is shown with
its paired difference to the full cache over the same contexts, mean +- standard error.

    /usr/bin/python3 tools/eviction_table.py runs/tiny_long runs/tiny_long_fusedkv
"""

import json
import math
import os
import sys

POLICIES = ["full", "kvzip", "gates", "streaming", "snapkv", "random"]
LEGACY = {"recent": "streaming"}  # older records name StreamingLLM by its old policy name


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def paired(values, full):
    """Mean and standard error of values[i] - full[i]."""
    d = [v - f for v, f in zip(values, full)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def cell(r, full, what):
    """what: "continuation" or "reconstruction"."""
    text = f"{r[what + '_loss']:.4f}"
    if r["policy"] != "full":
        m, se = paired(r[what + "_losses"], full[what + "_losses"])
        text += f" ({m:+.4f} ± {se:.4f})"
    return text


def main(run_dirs):
    runs = []
    for d in run_dirs:
        recs = read_jsonl(os.path.join(d, "eviction.jsonl"))
        rows = {(LEGACY.get(r["policy"], r["policy"]), r["keep"]): r for r in recs if "policy" in r}
        sparsity = next((r for r in recs if "targets_ge_0.05" in r), None)
        gate_evals = [r for r in read_jsonl(os.path.join(d, "gates", "metrics.jsonl"))
                      if r.get("kind") == "eval"]
        runs.append((os.path.basename(d.rstrip("/")), rows, sparsity, gate_evals[-1] if gate_evals else None))

    keeps = sorted({k for _, rows, _, _ in runs for (_, k) in rows}, reverse=True)
    for name, rows, _, _ in runs:
        full = rows[("full", 1.0)]
        print(f"**{name}** (loss in nats per token; in brackets the paired difference to the full cache)\n")
        print("| policy | keep | continuation loss | reconstruction loss | KV bytes kept per context |")
        print("|---|---:|---:|---:|---:|")
        for p in POLICIES:
            for k in keeps:
                r = rows.get((p, k))
                if r is None:
                    continue
                print(f"| {p} | {k:.2f} | {cell(r, full, 'continuation')} | {cell(r, full, 'reconstruction')} | "
                      f"{r['kv_bytes_kept']:,} ({100 * r['kv_bytes_kept'] / r['kv_bytes']:.1f}%) |")
        print()
    for name, rows, sparsity, gate_eval in runs:
        any_row = next(iter(rows.values()))
        line = f"- {name}: {any_row['contexts']} held-out contexts of {any_row['context']} tokens"
        if sparsity:
            line += (f"; KVzip targets >= 0.05: {100 * sparsity['targets_ge_0.05']:.2f}% of entries, "
                     f">= 0.01: {100 * sparsity['targets_ge_0.01']:.2f}%")
        if gate_eval:
            line += (f"; gates after {gate_eval['step']} steps: held-out BCE {gate_eval['val_loss']:.4f}, "
                     f"accuracy@0.05 {gate_eval['accuracy']:.4f}, recall of the top 30% "
                     f"{gate_eval['recall']:.4f}")
        print(line)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])

#!/usr/bin/env python3
"""Loss curves of one or several kvtrain runs in one PNG (or SVG).

    /usr/bin/python3 tools/plot_loss.py RUN_DIR [RUN_DIR ...] --out loss.png [--bigram 3.52]

Reads RUN_DIR/metrics.jsonl (train records: step, loss; eval records: step, val_loss). A resumed
run continues the same file (kvtrain drops records past the resume step), so it plots as one
continuous curve. The legend names each run by its directory and, when RUN_DIR/config.yaml says
so, its attention variant (kv_sharing, n_kv_heads, lrkv_rank).
"""
import argparse
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        sys.exit(f"plot_loss: {path}: no such file")
    train, val = {}, {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                sys.exit(f"plot_loss: {path}:{n}: not JSON")
            if r.get("kind") == "eval":
                val[r["step"]] = r["val_loss"]
            elif "loss" in r:
                train[r["step"]] = r["loss"]  # a later record of the same step wins
    return sorted(train.items()), sorted(val.items())


def variant_label(run_dir):
    name = os.path.basename(os.path.normpath(run_dir))
    cfg = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(cfg):
        return name
    text = open(cfg).read()

    def key(k):
        m = re.search(rf"^\s*{k}:\s*\"?([^\"\n#]+)", text, re.M)
        return m.group(1).strip() if m else None

    parts = []
    sharing = key("kv_sharing")
    if sharing and sharing != "none":
        parts.append(sharing)
    rank = key("lrkv_rank")
    if rank and rank != "0":
        parts.append(f"lrkv r={rank}")
    heads, kv = key("n_heads"), key("n_kv_heads")
    if heads and kv and not parts:
        parts.append("MHA" if kv == heads else ("MQA" if kv == "1" else f"GQA kv={kv}"))
    return f"{name} ({', '.join(parts)})" if parts else name


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories")
    ap.add_argument("--out", required=True, help="output .png or .svg")
    ap.add_argument("--bigram", type=float, help="draw the corpus bigram entropy (nats)")
    ap.add_argument("--title", default="kvtrain loss")
    a = ap.parse_args()
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, run in enumerate(a.runs):
        train, val = read_metrics(run)
        color = f"C{i % 10}"
        label = variant_label(run)
        if train:
            ax.plot([s for s, _ in train], [l for _, l in train], color=color, alpha=0.35, lw=1,
                    label=f"{label} train")
        if val:
            ax.plot([s for s, _ in val], [l for _, l in val], color=color, lw=2, marker="o", ms=3,
                    label=f"{label} val")
    if a.bigram is not None:
        ax.axhline(a.bigram, color="k", ls="--", lw=1, label=f"bigram entropy {a.bigram:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(a.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"plot_loss: wrote {a.out}")


if __name__ == "__main__":
    main()

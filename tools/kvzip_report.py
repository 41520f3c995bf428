"""The report of the Fast KVzip study on SmolLM2 (tools/kvzip_study.sh).

    /usr/bin/python3 tools/kvzip_report.py OUT [--docs DIR]

Reads meta.json and ctx_*.json (one record per evaluated context, written by `kvtrain eval --study`)
of OUT/eval and every OUT/eval_* directory, pooled by context (a condition's result from the first
directory that has it), OUT/memory.json (the `--memory-probe` lines), OUT/gates/metrics.jsonl and
OUT/gates/config.yaml, and writes
  DIR/kvzip_smollm2.md: one table per task (rows policy x keep; mean +- standard error over
      contexts; a loss or a rate of a policy also as its paired difference to the full cache over
      the same contexts, mean +- paired standard error), needle accuracy per depth with binomial
      standard errors, the full-cache ceiling and the no-context floor, the memory table, the gates'
      share of prefill and decode time, the gate training statistics and the claims;
  DIR/figures/kvzip_{reconstruction,continuation,needle,freecopy}.png: score against keep ratio,
      one line per policy, error bars of 1 SE, the full cache as a horizontal line;
  OUT/summary.json: the claim verdicts and their numbers.
A claim holds or fails when the 2-SE interval of its difference settles it, and is unresolved
otherwise; anything not measured is reported as "not run".
"""

import argparse
import glob
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

POLICIES = ["full", "kvzip", "gates", "snapkv", "streaming", "random"]
NLL_MARGIN = 0.05      # nats: "near-lossless" reconstruction and "close to the oracle"
NEEDLE_MARGIN = 0.01   # 1 point of needle accuracy
OVERHEAD_LIMIT = 0.02  # "about 1%": holds up to 2%
SE_TARGET = 0.02       # nats: every paired SE should be below this
NOT_RUN = "not run"


# ---- statistics ------------------------------------------------------------------------------

def mean_se(xs):
    """Mean and standard error (sample SD / sqrt n; 0 for one value) of a list, None if empty."""
    xs = [float(x) for x in xs if x is not None]
    n = len(xs)
    if n == 0:
        return None
    m = sum(xs) / n
    if n < 2:
        return m, 0.0, n
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return m, math.sqrt(var / n), n


def binomial(xs):
    """Accuracy of booleans and its binomial standard error sqrt(p (1 - p) / n)."""
    xs = [bool(x) for x in xs if x is not None]
    n = len(xs)
    if n == 0:
        return None
    p = sum(xs) / n
    return p, math.sqrt(p * (1 - p) / n), n


def paired(a, b):
    """Mean and paired standard error of a[c] - b[c] over the contexts c both have (dicts; None
    when either is missing or they share no context)."""
    if not a or not b:
        return None
    common = sorted(c for c in a if c in b and a[c] is not None and b[c] is not None)
    return mean_se([float(a[c]) - float(b[c]) for c in common])


def within(d, margin):
    """|difference| within margin: holds if the 2-SE interval lies inside [-margin, margin],
    fails if it lies wholly outside, unresolved otherwise."""
    if d is None:
        return NOT_RUN
    m, se, _ = d
    lo, hi = m - 2 * se, m + 2 * se
    if -margin <= lo and hi <= margin:
        return "holds"
    if lo > margin or hi < -margin:
        return "fails"
    return "unresolved"


def below(d):
    """difference < 0: holds if below 0 by more than 2 SE, fails if above 0 by more than 2 SE."""
    if d is None:
        return NOT_RUN
    m, se, _ = d
    if m + 2 * se < 0:
        return "holds"
    if m - 2 * se > 0:
        return "fails"
    return "unresolved"


def combine(verdicts):
    vs = [v for v in verdicts if v != NOT_RUN]
    if not vs:
        return NOT_RUN
    if "fails" in vs:
        return "fails"
    if all(v == "holds" for v in vs) and len(vs) == len(verdicts):
        return "holds"
    return "unresolved"


# ---- reading ---------------------------------------------------------------------------------

def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_jsonl(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def study_dirs(out):
    """The study's evaluation directories: OUT/eval and every OUT/eval_* (kvzip_study.sh runs one per
    group of policies and contexts), in name order."""
    return sorted(d for d in glob.glob(os.path.join(out, "eval*")) if os.path.isdir(d))


def keeps_of(meta):
    """The keep ratios a study directory ran: its --keep, or 1.0 when its only policy is full."""
    if set(meta.get("policies", [])) <= {"full"}:
        return "1.0"
    return ", ".join(str(k) for k in meta.get("keeps", []))


def load(out):
    """Pools the records of every evaluation directory by context. Each field of a (policy, keep)
    result of a context comes from the first directory (in name order) where it is not null, so
    directories that ran different tasks on the same contexts combine; context-level fields (depth,
    no-context control, ...) likewise. Returns the first meta.json with the policies and
    keeps of all, the pooled contexts, {(policy, keep): {context: result}} and one line per
    directory (which contexts and conditions it holds)."""
    meta, by_ctx, cond, parts = {}, {}, {}, []
    for d in study_dirs(out):
        m = read_json(os.path.join(d, "meta.json")) or {}
        for k, v in m.items():  # the first directory's options, an empty one from a later directory;
            if k in ("policies", "keeps"):  # the policies and keeps of all
                meta[k] = list(dict.fromkeys(meta.get(k, []) + list(v or [])))
            elif meta.get(k) in (None, "", []):
                meta[k] = v
        got = []
        for path in sorted(glob.glob(os.path.join(d, "ctx_*.json"))):
            r = read_json(path)
            if r is None:
                continue
            try:
                ctx, results = int(r["context"]), [(res["policy"], round(float(res["keep"]), 4), res)
                                                   for res in r.get("results", [])]
            except (KeyError, TypeError, ValueError) as e:
                sys.exit(f"kvzip_report: {path}: not a study record ({type(e).__name__}: {e})")
            got.append(ctx)
            c = by_ctx.setdefault(ctx, {})
            for k, v in r.items():
                if k != "results" and c.get(k) is None:
                    c[k] = v
            for policy, keep, res in results:  # field by field: a needle-only directory adds
                have = cond.setdefault((policy, keep), {}).setdefault(ctx, {})  # to a needle-less one
                for k, v in res.items():
                    if have.get(k) is None:
                        have[k] = v
        if got:
            parts.append(f"`{os.path.basename(d)}`: {len(got)} contexts ({min(got)}–{max(got)}); policies "
                         f"{', '.join(m.get('policies', []))}; keeps {keeps_of(m)}; "
                         f"tasks {', '.join(m.get('tasks', []))}; {m.get('threads')} thread(s)")
    if meta.get("keeps"):
        meta["keeps"] = sorted(meta["keeps"], reverse=True)
    ctxs = [by_ctx[c] for c in sorted(by_ctx)]
    return meta, ctxs, cond, parts


def field(cond, key, name, sub=None):
    """{context: value} of one result field (or of its freecopy sub-record)."""
    out = {}
    for c, r in cond.get(key, {}).items():
        v = r.get(name) if sub is None else (r.get(sub) or {}).get(name)
        if v is not None:
            out[c] = float(v) if not isinstance(v, bool) else float(v)
    return out


# ---- formatting ------------------------------------------------------------------------------

def fmt(s, digits=4, pct=False):
    if s is None:
        return NOT_RUN
    m, se, _ = s
    if pct:
        return f"{100 * m:.1f}% ± {100 * se:.1f}"
    return f"{m:.{digits}f} ± {se:.{digits}f}"


def fmt_diff(s, digits=4, pct=False):
    if s is None:
        return ""
    m, se, _ = s
    if pct:
        return f" ({100 * m:+.1f} ± {100 * se:.1f})"
    return f" ({m:+.{digits}f} ± {se:.{digits}f})"


def conditions(cond):
    """(policy, keep) in table order: policies as POLICIES, then any other; keeps descending."""
    order = {p: i for i, p in enumerate(POLICIES)}
    return sorted(cond, key=lambda k: (order.get(k[0], len(POLICIES)), k[0], -k[1]))


FULL = ("full", 1.0)


def task_table(cond, title, name, kind, sub=None, digits=4, note=""):
    """Markdown table of one task; kind: "mean" (continuous) or "binomial" (booleans)."""
    full = field(cond, FULL, name, sub)
    rows = []
    for key in conditions(cond):
        vals = field(cond, key, name, sub)
        if not vals:
            continue
        s = binomial(vals.values()) if kind == "binomial" else mean_se(vals.values())
        pct = kind == "binomial"
        diff = paired(vals, full) if key != FULL else None
        rows.append(f"| {key[0]} | {key[1]:.2f} | {s[2]} | {fmt(s, digits, pct)}{fmt_diff(diff, digits, pct)} |")
    L = [f"### {title}", ""]
    if not rows:
        return L + [NOT_RUN, ""]
    if note:
        L += [note, ""]
    L += ["| policy | keep | contexts | mean ± SE (paired difference to full ± SE) |", "|---|---:|---:|---:|"]
    return L + rows + [""]


# ---- figures ---------------------------------------------------------------------------------

def figure_series(cond, name, kind, sub=None, scale=1.0, diff=False):
    """The points of a figure: (full, {policy: [(keep, y, error)]}). full is (mean, SE) of the full
    cache, or (0, 0) with diff, where each point is the paired difference to the full cache over
    the contexts both have (policies evaluated on other contexts than full stay comparable)."""
    stat = binomial if kind == "binomial" else mean_se
    full_vals = field(cond, FULL, name, sub)
    f = stat(full_vals.values())
    full = None if f is None else ((0.0, 0.0) if diff else (scale * f[0], scale * f[1]))
    series = {}
    for p in POLICIES[1:] + sorted({k[0] for k in cond} - set(POLICIES)):
        pts = []
        for key in conditions(cond):
            if key[0] != p:
                continue
            vals = field(cond, key, name, sub)
            s = paired(vals, full_vals) if diff else stat(vals.values())
            if s is not None:
                pts.append((key[1], scale * s[0], scale * s[1]))
        if pts:
            series[p] = sorted(pts)
    return full, series


def figure(cond, path, title, ylabel, name, kind, sub=None, scale=1.0, diff=False):
    fig, ax = plt.subplots(figsize=(6, 4))
    full, series = figure_series(cond, name, kind, sub, scale, diff)
    any_data = bool(series) or full is not None
    if full is not None:
        m, se = full
        ax.axhline(m, color="black", lw=1, label="full")
        if se > 0:
            ax.axhspan(m - se, m + se, color="black", alpha=0.1)
    for p, pts in series.items():
        ax.errorbar([x for x, _, _ in pts], [y for _, y, _ in pts], yerr=[e for _, _, e in pts],
                    marker="o", capsize=3, label=p)
    if not any_data:
        ax.text(0.5, 0.5, NOT_RUN, ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("keep ratio (share of KV entries kept)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if any_data:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the report ------------------------------------------------------------------------------

def needle_section(ctxs, cond):
    L = ["### Needle retrieval", ""]
    depths = sorted({c.get("depth") for c in ctxs if c.get("depth") is not None})
    full = field(cond, FULL, "needle_correct")
    if not full and not any(field(cond, k, "needle_correct") for k in cond):
        return L + [NOT_RUN, ""]
    floor = binomial([(c.get("no_context") or {}).get("needle_correct") for c in ctxs])
    L += [f"Accuracy (binomial SE; in brackets the paired difference to the full cache). Full-cache "
          f"ceiling: {fmt(binomial(full.values()), pct=True)}; no-context floor (the question without "
          f"the context): {fmt(floor, pct=True)}.", ""]
    L += ["| policy | keep | needles | " + " | ".join(f"depth {d:g}" for d in depths) + " | overall |",
          "|---|---:|---:|" + "---:|" * (len(depths) + 1)]
    depth_of = {c["context"]: c.get("depth") for c in ctxs}
    for key in conditions(cond):
        vals = field(cond, key, "needle_correct")
        if not vals:
            continue
        cells = [fmt(binomial([v for c, v in vals.items() if depth_of.get(c) == d]), pct=True) for d in depths]
        diff = paired(vals, full) if key != FULL else None
        cells.append(fmt(binomial(vals.values()), pct=True) + fmt_diff(diff, pct=True))
        L.append(f"| {key[0]} | {key[1]:.2f} | {len(vals)} | " + " | ".join(cells) + " |")
    return L + [""]


def memory_section(memory):
    L = ["### Memory (one process per keep ratio, gates)", ""]
    if not memory:
        return L + [NOT_RUN, ""]
    L += ["| policy | keep | context | entries kept / total | KV allocated MiB | KV peak MiB | process peak RSS MiB |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    mib = lambda b: f"{b / 1048576:.1f}" if b is not None else NOT_RUN
    for m in sorted(memory, key=lambda m: -float(m.get("keep", 0))):
        L.append(f"| {m.get('policy')} | {float(m.get('keep', 0)):.2f} | {m.get('context')} | "
                 f"{m.get('entries_kept', 0):,} / {m.get('entries_total', 0):,} | {mib(m.get('kv_alloc_bytes'))} | "
                 f"{mib(m.get('kv_peak_bytes'))} | {mib(m.get('vmhwm_bytes'))} |")
    return L + [""]


def overhead(cond):
    """Gate seconds over prefill seconds (all gates conditions), and the decode one (free copy)."""
    g = p = dg = d = 0.0
    for key, rs in cond.items():
        if key[0] != "gates":
            continue
        for r in rs.values():
            if r.get("gate_seconds") is not None and r.get("prefill_seconds"):
                g += r["gate_seconds"]
                p += r["prefill_seconds"]
            f = r.get("freecopy") or {}
            if f.get("decode_gate_seconds") is not None and f.get("decode_seconds"):
                dg += f["decode_gate_seconds"]
                d += f["decode_seconds"]
    return (g / p if p else None), (dg / d if d else None)


def gate_section(out):
    L = ["### Gate training", ""]
    recs = read_jsonl(os.path.join(out, "gates", "metrics.jsonl"))
    cfg_text = None
    try:
        with open(os.path.join(out, "gates", "config.yaml")) as f:
            cfg_text = f.read()
    except OSError:
        pass
    if not recs:
        return L + [NOT_RUN, ""], None
    train = [r for r in recs if r.get("kind") == "train"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    stats = {}
    if cfg_text:
        try:
            import yaml
            g = (yaml.safe_load(cfg_text) or {}).get("gates", {})
            stats.update({k: g.get(k) for k in ("steps", "lr", "optimizer", "schedule", "context", "repeat_prompt")})
        except Exception:  # noqa: BLE001 - the config is only informative here
            pass
    if train:
        stats["last_step"] = train[-1].get("step")
        stats["last_loss"] = train[-1].get("loss")
        tps = [r["tokens_per_s"] for r in train if r.get("tokens_per_s")]
        stats["context_tokens_per_s"] = sum(tps) / len(tps) if tps else None
        stats["train_seconds"] = sum(r.get("step_time_s", 0) or 0 for r in train)
    if evals:
        e = evals[-1]
        stats.update({"eval_step": e.get("step"), "val_loss": e.get("val_loss"), "accuracy": e.get("accuracy"),
                      "recall": e.get("recall"), "target_density": e.get("target_density"),
                      "eval_contexts": e.get("contexts")})
    num = lambda v, f: NOT_RUN if v is None else format(v, f)
    if "steps" in stats:
        L.append(f"- recipe: {stats.get('optimizer')} lr {stats.get('lr')} schedule {stats.get('schedule')}, "
                 f"{stats.get('steps')} steps of one {stats.get('context')}-token context; repeat prompt "
                 f"{json.dumps(stats.get('repeat_prompt'))}")
    if train:
        L.append(f"- trained to step {stats['last_step']}: last training loss {num(stats['last_loss'], '.4f')}, "
                 f"{num(stats['context_tokens_per_s'], '.0f')} context tokens/s on average, "
                 f"{stats['train_seconds'] / 3600:.2f} h of steps")
    if evals:
        L.append(f"- held-out at step {stats['eval_step']} ({stats.get('eval_contexts')} contexts): gate loss "
                 f"{num(stats['val_loss'], '.4f')}, accuracy@0.05 {num(stats['accuracy'], '.4f')}, recall of the "
                 f"true top 30% {num(stats['recall'], '.4f')}, targets >= 0.05: "
                 f"{num(100 * stats['target_density'] if stats['target_density'] is not None else None, '.2f')}%")
    return L + [""], stats


def claims(cond, ctxs):
    rec = {k: field(cond, k, "reconstruction_nll") for k in cond}
    needle = {k: field(cond, k, "needle_correct") for k in cond}
    full_rec, full_needle = rec.get(FULL, {}), needle.get(FULL, {})
    keeps = sorted({k[1] for k in cond if k[0] == "gates" and rec[k]}, reverse=True)  # with reconstruction
    res = {}

    def num(d):
        return None if d is None else {"mean": d[0], "se": d[1], "n": d[2]}

    # (a) near-lossless at 30-40% KV
    a = {}
    for k in (0.4, 0.3):
        g = ("gates", k)
        if g not in cond and k == 0.4:
            continue
        dn = paired(needle.get(g), full_needle)
        dr = paired(rec.get(g), full_rec)
        vn, vr = within(dn, NEEDLE_MARGIN), within(dr, NLL_MARGIN)
        a[f"{k:.1f}"] = {"verdict": combine([vn, vr]), "needle": {"verdict": vn, **(num(dn) or {})},
                         "reconstruction_nll": {"verdict": vr, **(num(dr) or {})}}
    res["a_near_lossless_30_40"] = {"verdict": combine([v["verdict"] for v in a.values()]) if a else NOT_RUN,
                                    "per_keep": a}
    # (b) gates close to the KVzip oracle, at the keeps where both were run
    b = {}
    for k in keeps:
        d = paired(rec.get(("gates", k)), rec.get(("kvzip", k)))
        if d is not None:
            b[f"{k:.2f}"] = {"verdict": within(d, NLL_MARGIN), **num(d)}
    res["b_close_to_kvzip"] = {"verdict": combine([v["verdict"] for v in b.values()]) if b else NOT_RUN,
                               "per_keep": b}
    # (c) gates ahead of snapkv, streaming, random at the same keep (where that policy was run)
    c = {}
    for k in keeps:
        for other in ("snapkv", "streaming", "random"):
            d = paired(rec.get(("gates", k)), rec.get((other, k)))
            if d is not None:
                c[f"{other}@{k:.2f}"] = {"verdict": below(d), **num(d)}
    res["c_ahead_of_baselines"] = {"verdict": combine([v["verdict"] for v in c.values()]) if c else NOT_RUN,
                                   "per_keep": c}
    # (d) gate overhead about 1% of the forward
    share, dshare = overhead(cond)
    res["d_gate_overhead"] = {"verdict": NOT_RUN if share is None else ("holds" if share <= OVERHEAD_LIMIT else "fails"),
                              "prefill_share": share, "decode_share": dshare}
    # every paired SE
    ses, close, above = [], [], []
    for key in cond:
        if key == FULL:
            continue
        for name in ("reconstruction_nll", "continuation_nll"):
            d = paired(field(cond, key, name), field(cond, FULL, name))
            if d is not None and d[2] > 1:
                ses.append(d[1])
                if key[0] in ("gates", "kvzip"):
                    close.append(d[1])
                if d[1] > SE_TARGET:
                    above.append({"policy": key[0], "keep": key[1], "task": name.replace("_nll", ""),
                                  "se": d[1], "n": d[2]})
    # and the differences the claims (b) and (c) rest on: gates - kvzip, gates - each baseline
    between = []
    for other, per in (("kvzip", b), (None, c)):
        for k, v in per.items():
            if v.get("n", 0) > 1:
                between.append(v["se"])
                if v["se"] > SE_TARGET:
                    name = other or k.split("@")[0]
                    above.append({"policy": f"gates − {name}", "keep": float(k.split("@")[-1]),
                                  "task": "reconstruction", "se": v["se"], "n": v["n"]})
    res["contexts"] = len(ctxs)
    res["max_paired_se"] = max(ses) if ses else None
    res["max_paired_se_gates_kvzip"] = max(close) if close else None
    res["max_paired_se_claims"] = max(between) if between else None
    res["all_paired_se_le_0.02"] = (max(ses + between) <= SE_TARGET) if ses else None
    res["paired_se_above_0.02"] = sorted(above, key=lambda a: (a["task"], a["policy"], -a["keep"]))
    return res


def claims_section(res):
    def d_text(v):
        if "mean" not in v:
            return NOT_RUN
        return f"{v['mean']:+.4f} ± {v['se']:.4f} (n = {v['n']})"

    L = ["## Claims", "",
         f"Each verdict from the 2-SE interval of the paired difference over contexts: it holds when the "
         f"interval lies inside the margin, fails when it lies wholly outside, and is unresolved "
         f"otherwise. {res['contexts']} contexts.", ""]
    a = res["a_near_lossless_30_40"]
    L.append(f"- **(a) near-lossless at 30–40% KV** (gates: needle accuracy within {100 * NEEDLE_MARGIN:.0f} point "
             f"and reconstruction NLL within {NLL_MARGIN} nats of full): **{a['verdict']}**")
    for k, v in a["per_keep"].items():
        L.append(f"  - keep {k}: {v['verdict']}; needle gates − full {d_text(v['needle'])} → {v['needle']['verdict']}; "
                 f"reconstruction NLL gates − full {d_text(v['reconstruction_nll'])} nats → "
                 f"{v['reconstruction_nll']['verdict']}")
    b = res["b_close_to_kvzip"]
    L.append(f"- **(b) gates close to the KVzip oracle** (|gates − kvzip| reconstruction NLL within {NLL_MARGIN} "
             f"nats): **{b['verdict']}**")
    for k, v in b["per_keep"].items():
        L.append(f"  - keep {k}: gates − kvzip {d_text(v)} nats → {v['verdict']}")
    c = res["c_ahead_of_baselines"]
    L.append(f"- **(c) gates ahead of snapkv, streaming and random at the same keep** (reconstruction NLL of gates "
             f"− the other below 0 by more than 2 SE): **{c['verdict']}**")
    for k, v in c["per_keep"].items():
        L.append(f"  - {k}: gates − {k.split('@')[0]} {d_text(v)} nats → {v['verdict']}")
    d = res["d_gate_overhead"]
    share = NOT_RUN if d["prefill_share"] is None else f"{100 * d['prefill_share']:.2f}%"
    dshare = NOT_RUN if d["decode_share"] is None else f"{100 * d['decode_share']:.2f}%"
    L.append(f"- **(d) gate overhead about 1% of the forward** (holds if the measured share of prefill time is at "
             f"most {100 * OVERHEAD_LIMIT:.0f}%): **{d['verdict']}**; gate seconds / prefill seconds = {share}, "
             f"during free-copy decoding {dshare}")
    mx, mc, mb = res["max_paired_se"], res["max_paired_se_gates_kvzip"], res["max_paired_se_claims"]
    L.append(f"- precision: largest paired SE of an NLL difference to full "
             f"{NOT_RUN if mx is None else f'{mx:.4f}'} nats (of gates and kvzip "
             f"{NOT_RUN if mc is None else f'{mc:.4f}'}); of the differences (b) and (c) rest on "
             f"{NOT_RUN if mb is None else f'{mb:.4f}'} nats; every paired SE <= {SE_TARGET}: "
             f"{NOT_RUN if res['all_paired_se_le_0.02'] is None else ('yes' if res['all_paired_se_le_0.02'] else 'no')}")
    if res["paired_se_above_0.02"]:
        L.append(f"  - above {SE_TARGET}: " + "; ".join(f"{a['policy']}@{a['keep']:.2f} {a['task']} "
                                                     f"{a['se']:.4f} (n = {a['n']})"
                                                     for a in res["paired_se_above_0.02"]))
    return L + [""]


def report(out, docs):
    meta, ctxs, cond, parts = load(out)
    memory = read_json(os.path.join(out, "memory.json")) or []
    figdir = os.path.join(docs, "figures")
    os.makedirs(figdir, exist_ok=True)

    L = ["# Fast KVzip on SmolLM2-135M-Instruct", "",
         "Written by `tools/kvzip_report.py` from the run of `tools/kvzip_study.sh` in "
         f"`{out}`. Losses in nats per token; every cell is the mean ± standard error over contexts, in "
         "brackets the paired difference to the full cache over the same contexts ± its paired standard "
         "error.", ""]
    if meta:
        L += [f"- model `{meta.get('checkpoint')}`, gates `{meta.get('gates')}`, data `{meta.get('data')}`; "
              f"context {meta.get('context')} tokens, continuation {meta.get('continuation')}, free copy "
              f"{meta.get('generate')} tokens after a primer of {meta.get('freecopy_primer', 0)} context tokens "
              f"on {meta.get('freecopy_contexts')} contexts at keep "
              f"{meta.get('freecopy_keeps')}; kvtrain {meta.get('kvtrain')}",
              f"- {len(ctxs)} contexts evaluated; policies {', '.join(meta.get('policies', []))}; keep ratios "
              f"{', '.join(str(k) for k in meta.get('keeps', []))}"] + [f"  - {p}" for p in parts] + [""]
    else:
        L += [f"- evaluation: {NOT_RUN if not ctxs else f'{len(ctxs)} contexts (no meta.json)'}", ""]

    L += ["## Results", ""]
    L += task_table(cond, "Reconstruction (NLL of the context after the repeat prompt)", "reconstruction_nll", "mean")
    L += task_table(cond, "Copy prefix (greedy tokens of the context reproduced before the first error)",
                    "copy_prefix", "mean", digits=1)
    L += task_table(cond, "Copy accuracy (share of the context's tokens that are the teacher-forced argmax)",
                    "copy_accuracy", "mean")
    L += task_table(cond, "Continuation (NLL of the next 64 tokens)", "continuation_nll", "mean")
    L += needle_section(ctxs, cond)
    L += task_table(cond, "Free copy: match rate (share of the generated tokens that match the context)",
                    "match_rate", "mean", sub="freecopy")
    L += task_table(cond, "Free copy: LCS rate (longest common subsequence with the context, over the "
                    "generated tokens: tolerant to a shifted start)", "lcs_rate", "mean", sub="freecopy")
    L += task_table(cond, "Free copy: copy prefix (tokens before the first mismatch)", "copy_prefix", "mean",
                    sub="freecopy", digits=1)
    L += memory_section(memory)
    share, dshare = overhead(cond)
    L += ["### Gate cost", "",
          f"- prefill: sum of gate seconds / sum of prefill seconds over every gates condition = "
          f"{NOT_RUN if share is None else f'{100 * share:.2f}%'}",
          f"- decode (free copy): sum of decode gate seconds / sum of decode seconds = "
          f"{NOT_RUN if dshare is None else f'{100 * dshare:.2f}%'}", ""]
    gl, gstats = gate_section(out)
    L += gl
    res = claims(cond, ctxs)
    res["gate_training"] = gstats
    L += claims_section(res)
    L += ["### Figures", "",
          "Reconstruction, continuation and needles are drawn as the paired difference to the full "
          "cache ± its paired SE (the policies ran on different numbers of contexts); free copy as "
          "the mean ± SE over its contexts.", ""] + [f"![{n}](figures/kvzip_{n}.png)" for n in
                                ("reconstruction", "continuation", "needle", "freecopy")] + [""]

    # the losses and the needles as paired differences to the full cache: the policies were
    # evaluated on different numbers of contexts, so their plain means are not comparable
    figure(cond, os.path.join(figdir, "kvzip_reconstruction.png"), "Reconstruction",
           "NLL − full cache, paired (nats/token)", "reconstruction_nll", "mean", diff=True)
    figure(cond, os.path.join(figdir, "kvzip_continuation.png"), "Continuation",
           "NLL − full cache, paired (nats/token)", "continuation_nll", "mean", diff=True)
    figure(cond, os.path.join(figdir, "kvzip_needle.png"), "Needle retrieval",
           "accuracy − full cache, paired (points)", "needle_correct", "binomial", scale=100, diff=True)
    figure(cond, os.path.join(figdir, "kvzip_freecopy.png"), "Free copy", "LCS rate (%)",
           "lcs_rate", "mean", sub="freecopy", scale=100)

    md = os.path.join(docs, "kvzip_smollm2.md")
    with open(md + ".tmp", "w") as f:
        f.write("\n".join(L))
    os.replace(md + ".tmp", md)
    splice_results(os.path.join(docs, "results.md"), L)
    with open(os.path.join(out, "summary.json.tmp"), "w") as f:
        json.dump(res, f, indent=1)
    os.replace(os.path.join(out, "summary.json.tmp"), os.path.join(out, "summary.json"))
    print(f"kvzip_report: wrote {md}, {figdir}/kvzip_*.png and {os.path.join(out, 'summary.json')}")
    return res


BEGIN, END = "<!-- kvzip_smollm2: begin (tools/kvzip_report.py) -->", "<!-- kvzip_smollm2: end -->"


def splice_results(path, lines):
    """Replaces the text between the markers of results.md (when it has them) with the report,
    its title demoted to a section and its figure links made relative to docs/."""
    if not os.path.exists(path):
        return
    text = open(path).read()
    if BEGIN not in text or END not in text:
        return
    body = ["## " + lines[0].lstrip("# ")] + [("#" + l if l.startswith("## ") or l.startswith("### ") else l)
                                              for l in lines[1:]]
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    with open(path + ".tmp", "w") as f:
        f.write(text[:a] + "\n" + "\n".join(body) + "\n" + text[b:])
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="the study directory (tools/kvzip_study.sh's OUT)")
    ap.add_argument("--docs", default="docs", help="where kvzip_smollm2.md and figures/ go (default docs)")
    a = ap.parse_args()
    report(a.out, a.docs)


if __name__ == "__main__":
    main()

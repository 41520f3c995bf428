#!/usr/bin/env python3
"""PyTorch (fp32, CPU) counterpart of `kvtrain bench`: the same model, the same step, the same
FLOP count, for the side-by-side comparison of docs/design.md, "Performance" (tools/bench_compare.sh).

    python tools/bench_torch.py --config configs/tiny.yaml [--compile] \
        [--set section.key=value ...] [--steps 5] [--warmup 1] [--threads N] [--json out.json]
    python tools/bench_torch.py --sgemm-peak [--threads N] [--json out.json]

Needs PyTorch 2.x (+ PyYAML, else a fallback parser for the flat configs/*.yaml layout).

Reads a kvtrain YAML config (model: and train: sections; `--set` overrides as in kvtrain) and
builds the same LLaMA-style model (docs/design.md, "The model family") in PyTorch fp32: token embedding, L blocks of
(RMSNorm -> causal self-attention with rotate-half RoPE -> residual, RMSNorm -> SwiGLU MLP ->
residual), final RMSNorm, tied or untied LM head, no biases. Attention is
F.scaled_dot_product_attention(q, k, v, is_causal=True) (PyTorch's fused CPU kernel); GQA
repeats each KV head H / H_kv times first (repeat-kv). The parameter count equals kvtrain's:
q/k/v are one fused [(H + 2 H_kv) d_h, d] matrix and gate/up one [2F, d] matrix (as kvtrain
stores its activations; the split layout has the same parameters and FLOPs, only fewer, larger
GEMMs). Init as kvtrain: N(0, init_std), o_proj and down_proj N(0, init_std / sqrt(2 L)),
norms 1 (init does not affect timing).

One timed step = zero_grad, grad_accum x (forward, mean cross-entropy / grad_accum, backward),
clip_grad_norm_ (when train.grad_clip > 0), AdamW step (torch.optim.AdamW, fused when
available, betas/eps/weight decay from the config; weight decay on matrices only, on the
embedding / untied head only with train.decay_embeddings, as kvtrain). Inputs and targets are
random tokens of [batch_size, seq_len]. Prints params, the median step time (with the
forward/backward/optimizer split), tokens/s, achieved GFLOP/s with kvtrain's formula
(model/transformer.cpp train_flops_per_token: 6 N_matmul + 12 L H d_h T per token, N_matmul =
L (d (H + 2 H_kv) d_h + H d_h d + 3 d F) + V d) and the process's peak RSS (getrusage
ru_maxrss; includes the Python/PyTorch runtime, printed separately as "baseline" = the RSS
before the model was built).

--compile: torch.compile(model) (Inductor, default mode) compiles the forward, the loss and,
through AOTAutograd, the backward; grad clipping and the AdamW step stay eager. Compilation
happens in the first step, so --compile always runs at least one warm-up step; that step's
time is reported as first_step_s, and compile_s = first_step_s - the median step (the
compilation's own cost, roughly). Without --compile the model runs eagerly.

--sgemm-peak: no model; times torch.mm of square fp32 matrices (2048 and 4096; MKL on the
PyPI wheels) with the same threads, best of several calls each, and prints GFLOP/s = 2 n^3 / s
for each size and their maximum: the machine's sgemm peak as this PyTorch reaches it. Also
prints the torch version and its BLAS / MKL / oneDNN build lines.

--json FILE writes kvtrain bench's JSON fields (config, params, batch, seq_len, threads,
step_ms, tokens_per_s, gflops, peak_rss_mib) plus implementation ("eager" or "compile"),
forward/backward/optimizer ms, baseline_rss_mib, torch_version and, with --compile,
first_step_s and compile_s; with --sgemm-peak: gflops_by_n, peak_gflops, torch_version,
blas (the build lines).

Threads: --threads N, else train.threads when > 0, else os.cpu_count() (kvtrain's rule for one
rank). torch.set_num_threads(N) and one inter-op thread.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import yaml
except ImportError:  # Debian: apt-get install python3-yaml
    yaml = None

MODEL_DEFAULTS = dict(vocab_size=4096, d_model=128, n_layers=4, n_heads=4, n_kv_heads=0, d_ff=0,
                      max_seq_len=256, rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=True,
                      init_std=0.02)
TRAIN_DEFAULTS = dict(batch_size=8, seq_len=128, grad_accum=1, lr=3e-3, weight_decay=0.1,
                      decay_embeddings=False, beta1=0.9, beta2=0.95, eps=1e-8, grad_clip=1.0,
                      seed=1234, threads=0)
# Model keys that change the architecture away from the plain model above: accepted only at
# their "off" value (this script implements the baseline model only).
OFF_VALUES = (None, 0, 0.0, False, "", "none")


# ---- config ----------------------------------------------------------------------------------

def parse_scalar(text):
    if yaml is not None:
        return yaml.safe_load(text) if text.strip() else None
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        return t[1:-1]
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("", "null", "~"):
        return None
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def load_yaml(path):
    with open(path) as f:
        text = f.read()
    if yaml is not None:
        return yaml.safe_load(text) or {}
    # Fallback: the flat two-level layout of configs/*.yaml ("section:" then "  key: value").
    out, section = {}, None
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        key, _, val = line.strip().partition(":")
        if not raw.startswith((" ", "\t")):
            section = out.setdefault(key, {})
        elif section is not None:
            section[key] = parse_scalar(val)
    return out


def load_config(path, overrides):
    doc = load_yaml(path)
    for ov in overrides:
        k, eq, v = ov.partition("=")
        sec, dot, key = k.strip().partition(".")
        if not eq or not dot:
            sys.exit(f"bench_torch: --set wants section.key=value, got '{ov}'")
        doc.setdefault(sec, {})
        doc[sec][key] = parse_scalar(v)
    model = dict(MODEL_DEFAULTS)
    for k, v in (doc.get("model") or {}).items():
        if k in model:
            model[k] = v
        elif v not in OFF_VALUES:
            sys.exit(f"bench_torch: {path}: model.{k} = {v!r} is not supported by this benchmark "
                     "(baseline LLaMA-style model only)")
    train = dict(TRAIN_DEFAULTS)
    for k, v in (doc.get("train") or {}).items():
        if k in train:
            train[k] = v
    m = model
    if m["n_kv_heads"] in (0, None):
        m["n_kv_heads"] = m["n_heads"]
    if m["d_ff"] in (0, None):
        m["d_ff"] = (8 * m["d_model"] // 3 + 31) // 32 * 32
    assert m["d_model"] % m["n_heads"] == 0 and m["n_heads"] % m["n_kv_heads"] == 0
    assert (m["d_model"] // m["n_heads"]) % 2 == 0, "RoPE needs an even head_dim"
    assert train["seq_len"] <= m["max_seq_len"], "train.seq_len > model.max_seq_len"
    return model, train


def train_flops_per_token(m, T):
    """kvtrain's model/transformer.cpp train_flops_per_token, term for term."""
    C, H, Hkv, F_, V, L = (m["d_model"], m["n_heads"], m["n_kv_heads"], m["d_ff"],
                           m["vocab_size"], m["n_layers"])
    D = C // H
    per_layer = C * (H + 2 * Hkv) * D + H * D * C + 3 * C * F_
    n_matmul = L * per_layer + V * C
    return 6.0 * n_matmul + 12.0 * L * H * D * T


# ---- model -----------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, m):
        super().__init__()
        C, H, Hkv, F_ = m["d_model"], m["n_heads"], m["n_kv_heads"], m["d_ff"]
        self.H, self.Hkv, self.D, self.F = H, Hkv, C // H, F_
        self.input_layernorm = RMSNorm(C, m["norm_eps"])
        self.qkv_proj = nn.Linear(C, (H + 2 * Hkv) * self.D, bias=False)  # q, k, v stacked
        self.o_proj = nn.Linear(H * self.D, C, bias=False)
        self.post_attention_layernorm = RMSNorm(C, m["norm_eps"])
        self.gate_up_proj = nn.Linear(C, 2 * F_, bias=False)  # gate, up stacked
        self.down_proj = nn.Linear(F_, C, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        H, Hkv, D = self.H, self.Hkv, self.D
        qkv = self.qkv_proj(self.input_layernorm(x))
        q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
        q = q.view(B, T, H, D).transpose(1, 2)      # [B, H, T, D]
        k = k.view(B, T, Hkv, D).transpose(1, 2)
        v = v.view(B, T, Hkv, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if Hkv != H:  # repeat_kv: query head h reads KV head h // (H / Hkv)
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # softmax(q k^T / sqrt(D)) v
        x = x + self.o_proj(y.transpose(1, 2).reshape(B, T, H * D))
        gate, up = self.gate_up_proj(self.post_attention_layernorm(x)).split(self.F, dim=-1)
        return x + self.down_proj(F.silu(gate) * up)


class Transformer(nn.Module):
    def __init__(self, m):
        super().__init__()
        C, V, D = m["d_model"], m["vocab_size"], m["d_model"] // m["n_heads"]
        self.embed_tokens = nn.Embedding(V, C)
        self.layers = nn.ModuleList(Block(m) for _ in range(m["n_layers"]))
        self.norm = RMSNorm(C, m["norm_eps"])
        self.lm_head = None if m["tie_embeddings"] else nn.Linear(C, V, bias=False)
        T = m["max_seq_len"]
        inv = 1.0 / (m["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
        ang = torch.outer(torch.arange(T, dtype=torch.float64), inv)  # [T, D/2]
        ang = torch.cat((ang, ang), dim=-1)  # rotate-half: channel j pairs with j + D/2
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)
        std, std_proj = m["init_std"], m["init_std"] / math.sqrt(2.0 * m["n_layers"])
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "norm" in name:
                    p.fill_(1.0)
                elif "o_proj" in name or "down_proj" in name:
                    p.normal_(0.0, std_proj)
                else:
                    p.normal_(0.0, std)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.embed_tokens(idx)
        cos, sin = self.cos[:T], self.sin[:T]
        for layer in self.layers:
            x = layer(x, cos, sin)
        x = self.norm(x)
        w = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(x, w)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def param_groups(model, decay_embeddings, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_emb = name.startswith("embed_tokens") or name.startswith("lm_head")
        (decay if (p.dim() >= 2 and (decay_embeddings or not is_emb)) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_adamw(groups, t):
    kw = dict(lr=t["lr"], betas=(t["beta1"], t["beta2"]), eps=t["eps"])
    # Fastest available CPU path: fused (newer PyTorch on CPU), else foreach, else the loop.
    for extra in ({"fused": True}, {"foreach": True}, {}):
        try:
            opt = torch.optim.AdamW(groups, **kw, **extra)
            return opt, (next(iter(extra)) if extra else "for-loop")
        except (TypeError, RuntimeError, ValueError):
            continue
    raise RuntimeError("no usable torch.optim.AdamW")


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def build_info():
    """The torch version and the BLAS / MKL / oneDNN lines of its build configuration."""
    keep = ("math kernel", "mkl", "blas", "lapack", "openmp", "cpu capability")
    lines = []
    for ln in torch.__config__.show().splitlines():
        ln = ln.strip().lstrip("- ").strip()
        if ln.startswith("Build settings:"):  # one long line of KEY=VALUE: keep the BLAS ones
            kv = [x.strip() for x in ln.split(":", 1)[1].split(",")]
            ln = ", ".join(x for x in kv if x.split("=")[0] in ("BLAS_INFO", "LAPACK_INFO",
                                                                 "USE_MKL", "USE_MKLDNN"))
        if ln and any(k in ln.lower() for k in keep):
            lines.append(ln)
    lines.append(f"torch.backends.mkl.is_available() = {torch.backends.mkl.is_available()}, "
                 f"torch.backends.mkldnn.is_available() = {torch.backends.mkldnn.is_available()}")
    return lines


def sgemm_peak(threads, sizes=(2048, 4096)):
    """Best GFLOP/s of C = A B, fp32 n x n, over several calls: 2 n^3 FLOPs per call."""
    out = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        c = torch.empty(n, n)
        torch.mm(a, b, out=c)  # first call: thread pool and MKL buffers
        reps = max(3, min(10, int(4e10 / (2.0 * n ** 3))))  # ~40 GFLOP of calls per size
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            best = min(best, time.perf_counter() - t0)
        out[n] = 2.0 * n ** 3 / best * 1e-9
    return out


def set_threads(threads):
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="kvtrain YAML config (required unless --sgemm-peak)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override a key: section.key=value (repeatable)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (>= 1 with --compile)")
    ap.add_argument("--threads", type=int, default=0,
                    help="intra-op threads (default: train.threads, else os.cpu_count())")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the model (forward + backward); clip and AdamW stay eager")
    ap.add_argument("--sgemm-peak", action="store_true",
                    help="only time torch.mm of 2048^2 and 4096^2 fp32 and print the best GFLOP/s")
    ap.add_argument("--json", dest="json_out", default="", help="also write the result as JSON")
    a = ap.parse_args()
    if a.steps < 1 or a.warmup < 0:
        sys.exit("bench_torch: --steps >= 1 and --warmup >= 0")

    if a.sgemm_peak:
        threads = a.threads if a.threads > 0 else os.cpu_count()
        set_threads(threads)
        info = build_info()
        by_n = sgemm_peak(threads)
        peak = max(by_n.values())
        print(f"sgemm peak | torch {torch.__version__} | threads {threads} | " +
              ", ".join(f"{n}x{n} {g:.1f}" for n, g in by_n.items()) + f" GFLOP/s | peak {peak:.1f} GFLOP/s")
        for ln in info:
            print(f"  {ln}")
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump({"threads": threads, "torch_version": torch.__version__,
                           "gflops_by_n": {str(n): g for n, g in by_n.items()},
                           "peak_gflops": peak, "blas": info}, f, indent=2)
                f.write("\n")
        return
    if not a.config:
        sys.exit("bench_torch: --config is required (or --sgemm-peak)")

    m, t = load_config(a.config, a.overrides)
    threads = a.threads if a.threads > 0 else (t["threads"] if t["threads"] > 0 else os.cpu_count())
    set_threads(threads)
    torch.manual_seed(int(t["seed"]))
    baseline_mib = rss_mib()

    model = Transformer(m)
    n_params = sum(p.numel() for p in model.parameters())
    opt, opt_kind = make_adamw(param_groups(model, t["decay_embeddings"], t["weight_decay"]), t)
    step_model = torch.compile(model) if a.compile else model  # shares model's parameters
    warmup = max(a.warmup, 1) if a.compile else a.warmup       # step 1 compiles
    B, T, A = t["batch_size"], t["seq_len"], t["grad_accum"]
    g = torch.Generator().manual_seed(int(t["seed"]))
    inputs = torch.randint(0, m["vocab_size"], (B, T), generator=g)
    targets = torch.randint(0, m["vocab_size"], (B, T), generator=g)
    params = list(model.parameters())

    fwd, bwd, upd, total, first_step_s = [], [], [], [], 0.0
    for s in range(warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        tf = tb = 0.0
        for _ in range(A):
            t1 = time.perf_counter()
            loss = step_model(inputs, targets) / A
            tf += time.perf_counter() - t1
            t1 = time.perf_counter()
            loss.backward()
            tb += time.perf_counter() - t1
        t2 = time.perf_counter()
        if t["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(params, t["grad_clip"])
        opt.step()
        tu, tt = time.perf_counter() - t2, time.perf_counter() - t0
        if s == 0:
            first_step_s = tt
        if s >= warmup:
            fwd.append(tf)
            bwd.append(tb)
            upd.append(tu)
            total.append(tt)

    def med(v):  # kvtrain's median: the upper middle element
        return sorted(v)[len(v) // 2]

    step_s = med(total)
    tokens = float(B) * T * A
    flops = train_flops_per_token(m, T) * tokens
    peak = rss_mib()
    impl = "compile" if a.compile else "eager"
    mode = "torch.compile (inductor)" if a.compile else "eager"
    print(f"bench {a.config} | torch {torch.__version__} fp32 cpu {mode} (SDPA, AdamW {opt_kind}) | "
          f"params {n_params * 1e-6:.2f}M | batch {B} x {T} (accum {A}) | threads {threads}")
    if a.compile:
        print(f"compile: first step {first_step_s:.1f} s = compilation ~{first_step_s - step_s:.1f} s "
              f"+ one step ({warmup} warm-up step(s) untimed)")
    print(f"step {step_s * 1e3:.1f} ms (forward {med(fwd) * 1e3:.1f}, backward {med(bwd) * 1e3:.1f}, "
          f"optimizer {med(upd) * 1e3:.1f}; median of {a.steps}) | {tokens / step_s:.0f} tokens/s | "
          f"{flops / step_s * 1e-9:.2f} GFLOP/s | peak RSS {peak:.0f} MiB "
          f"(baseline {baseline_mib:.0f} MiB before the model) | last loss {loss.item() * A:.4f}")
    if a.json_out:
        j = {"config": a.config, "params": n_params, "batch": B, "seq_len": T, "threads": threads, "ranks": 1,
             "step_ms": step_s * 1e3, "tokens_per_s": tokens / step_s,
             "gflops": flops / step_s * 1e-9, "peak_rss_mib": peak,
             "implementation": impl, "torch_version": torch.__version__,
             "forward_ms": med(fwd) * 1e3, "backward_ms": med(bwd) * 1e3,
             "optimizer_ms": med(upd) * 1e3, "baseline_rss_mib": baseline_mib,
             "adamw": opt_kind, "warmup": warmup, "step_ms_all": [x * 1e3 for x in total]}
        if a.compile:
            j["first_step_s"] = first_step_s
            j["compile_s"] = first_step_s - step_s
        with open(a.json_out, "w") as f:
            json.dump(j, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()

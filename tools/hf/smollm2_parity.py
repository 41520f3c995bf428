#!/usr/bin/env python3
"""SmolLM2-135M-Instruct parity (docs/design.md, "Importing models"): kvtrain's import of a real
GGUF (Q8_0 embeddings, Q4_1 blocks) against Hugging Face transformers, which dequantizes and
un-permutes the same file with its own code (transformers + gguf-py), evaluated in float64.

  python tools/hf/smollm2_parity.py --gguf DIR/SmolLM2-135M-Instruct.Q4_1.gguf --checkpoint smollm2.h5 \
      --logitdump build/tests/logitdump --kvtrain build/kvtrain --text kjv.txt [--work DIR]

smollm2.h5 is `kvtrain import --from <the gguf>`. Checks (one line each; exit status 1 if any fails):
  1. logits: the first --tokens (256) ids of the text; kvtrain (fp32, CPU, tests/tools/logitdump)
     vs transformers in float64: per position max |Δlogit| <= --rel-tol (1e-4) x max |logit|.
  2. greedy: --gen (32) tokens from a chat prompt, kvtrain's KV-cache decode vs transformers'
     float64 greedy (with its cache): equal ids, and each step's logits within the same
     tolerance, except that at a step where the float64 top-2 margin is below --margin (1e-4) the
     remaining tokens are not compared (reported). Also `kvtrain generate --chat` (its own ChatML
     rendering, stop at EOS): the prompt as many tokens as transformers' chat template, and its
     ids a prefix of the float64 greedy ids.
  3. perplexity on held-out text: --windows (2) windows of --ppl-len (1024) next-token
     predictions from the last 5% of the text (the held-out part `kvtrain prepare --val-block 0`
     would take), kvtrain's own cross-entropy vs transformers' float64: |Δ loss| <= 1e-4 nats.
  4. Hugging Face directory import: the float32 transformers model written with save_pretrained
     (+ its tokenizer), `kvtrain import --from DIR`, logits on the ids of 1. compared with those of
     the GGUF import: bitwise, else within fp32 rounding (max |Δ| <= 1e-6 x max |logit|); which
     one is printed. Skipped with --no-hf-dir.
Also printed, for scale: transformers' own float32 forward vs its float64 (the fp32 rounding of
another implementation). transformers' Llama keeps three float32 islands even in a float64
model (RMSNorm upcasts to float32, the RoPE tables are built in float32, eager attention's
softmax runs in float32): the first two are patched to compute in the input's dtype and the
attention is SDPA (which computes in float64), so the reference is float64 throughout; how much
the patch moves the float64 logits is printed. The figures go to WORK/summary.json.
"""

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file

PROMPT = "What is the capital of France? Answer in one sentence."


def log(*a):
    print(*a, flush=True)


# ---- transformers in float64 -------------------------------------------------------------------

def patch_float64_islands():
    """Makes transformers' LlamaRMSNorm and LlamaRotaryEmbedding compute in float64 for float64
    inputs (they upcast to / build in float32 otherwise); float32 inputs are left as they were."""
    from transformers.models.llama import modeling_llama as ml
    rms_orig, rope_orig = ml.LlamaRMSNorm.forward, ml.LlamaRotaryEmbedding.forward

    def rms_forward(self, x):
        if x.dtype != torch.float64:
            return rms_orig(self, x)
        # y = w * x / sqrt(mean(x^2) + eps)
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def rope_forward(self, x, position_ids):
        if x.dtype != torch.float64:
            return rope_orig(self, x, position_ids)
        cfg = self.config
        dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        theta = float(cfg.rope_parameters["rope_theta"])
        # inv_freq_i = theta^(-2i/D); angle = pos * inv_freq, rotate-half layout [f, f]
        inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        freqs = position_ids[..., None].to(torch.float64) * inv
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling

    def undo():
        ml.LlamaRMSNorm.forward, ml.LlamaRotaryEmbedding.forward = rms_orig, rope_orig

    ml.LlamaRMSNorm.forward, ml.LlamaRotaryEmbedding.forward = rms_forward, rope_forward
    return undo


def load_transformers(gguf_path):
    """(tokenizer, plain float32 LlamaForCausalLM) from the GGUF: AutoModelForCausalLM's GGUF loader
    dequantizes and un-permutes; its weights are copied into a model without the GGUF quantizer
    (which refuses save_pretrained and dtype casts)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    d, name = os.path.dirname(os.path.abspath(gguf_path)), os.path.basename(gguf_path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    q = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    cfg = copy.deepcopy(q.config)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.load_state_dict(q.state_dict(), strict=True)
    model.eval()
    return tok, model


@torch.no_grad()
def hf_logits(model, ids):
    return model(torch.tensor(ids, dtype=torch.long)[None], use_cache=False).logits[0]


@torch.no_grad()
def hf_loss(model, row):
    """Mean next-token cross-entropy of row[1:] given row[:-1] (nats per token)."""
    logits = hf_logits(model, row[:-1])
    return F.cross_entropy(logits, torch.tensor(row[1:], dtype=torch.long)).item()


@torch.no_grad()
def hf_greedy(model, prompt, n):
    """Greedy ids and the logits each step chose from, with transformers' KV cache."""
    out = model(torch.tensor(prompt, dtype=torch.long)[None], use_cache=True)
    cache, logits = out.cache, out.logits[0, -1]
    ids, steps = [], []
    for i in range(n):
        t = int(torch.argmax(logits))  # first maximum on ties, as kvtrain's argmax
        ids.append(t)
        steps.append(logits.clone())
        if i + 1 < n:
            out = model(torch.tensor([[t]], dtype=torch.long), cache=cache, use_cache=True)
            cache, logits = out.cache, out.logits[0, -1]
    return ids, torch.stack(steps)


# ---- kvtrain ------------------------------------------------------------------------------------

def run(cmd, what):
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"smollm2_parity: {what} failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return p, time.time() - t0


def logitdump(exe, ckpt, tensors, work, tag, gen=0):
    ids = os.path.join(work, f"{tag}_ids.safetensors")
    out = os.path.join(work, f"{tag}_kvtrain.safetensors")
    save_file({k: np.asarray(v, dtype=np.int32) for k, v in tensors.items()}, ids)
    cmd = [exe, "--checkpoint", ckpt, "--tokens", ids, "--out", out]
    if gen:
        cmd += ["--generate", str(gen)]
    _, dt = run(cmd, f"logitdump ({tag})")
    return load_file(out), dt


# ---- comparisons --------------------------------------------------------------------------------

def ratios(got, want):
    """Per row: max |got - want| / max |want| (float64)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return np.abs(got - want).max(axis=-1) / np.abs(want).max(axis=-1)


def versions():
    import gguf  # noqa: F401
    import transformers
    from importlib.metadata import version
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "gguf": version("gguf"), "numpy": np.__version__,
            "cpu": cpu, "torch_threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--checkpoint", required=True, help="kvtrain import of the GGUF")
    ap.add_argument("--logitdump", required=True)
    ap.add_argument("--kvtrain", required=True)
    ap.add_argument("--text", required=True, help="plain text (the KJV)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--ppl-len", type=int, default=1024)
    ap.add_argument("--rel-tol", type=float, default=1e-4)
    ap.add_argument("--margin", type=float, default=1e-4)
    ap.add_argument("--loss-tol", type=float, default=1e-4)
    ap.add_argument("--no-hf-dir", action="store_true")
    a = ap.parse_args()
    if a.tokens < 256:
        ap.error("--tokens must be >= 256")
    work = a.work or tempfile.mkdtemp(prefix="kvt_smollm2_")
    os.makedirs(work, exist_ok=True)
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    failures, summary = [], {"versions": versions()}

    def report(what, ok, detail):
        log(f"smollm2_parity: {what}: {'ok' if ok else 'FAIL'} ({detail})")
        if not ok:
            failures.append(what)

    t0 = time.time()
    tok, m32 = load_transformers(a.gguf)
    log(f"smollm2_parity: transformers {transformers.__version__} (torch {torch.__version__}) loaded "
        f"{os.path.basename(a.gguf)} in {time.time() - t0:.0f} s")
    m64 = copy.deepcopy(m32).to(torch.float64)

    # Ids: the text's beginning for the logits, its last 5% for the perplexity, a chat prompt.
    with open(a.text, encoding="utf-8") as f:
        text = f.read()
    ids = tok(text[:40000], add_special_tokens=False)["input_ids"][:a.tokens]
    tail = text[int(len(text) * 0.95):]
    tail = tail[tail.index("\n") + 1:]
    L1 = a.ppl_len + 1
    held = tok(tail[:12 * L1 * a.windows], add_special_tokens=False)["input_ids"]
    if len(ids) < a.tokens or len(held) < L1 * a.windows:
        raise SystemExit(f"smollm2_parity: {a.text}: too short ({len(ids)} / {len(held)} ids)")
    rows = np.array(held[:L1 * a.windows], dtype=np.int32).reshape(a.windows, L1)
    prompt = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                     tokenize=True)
    if isinstance(prompt, dict) or hasattr(prompt, "keys"):
        prompt = prompt["input_ids"]
    prompt = [int(x) for x in prompt]

    kv, dt = logitdump(a.logitdump, a.checkpoint, {"tokens": ids, "rows": rows, "prompt": prompt}, work,
                       "gguf", gen=a.gen)
    log(f"smollm2_parity: kvtrain (logitdump, fp32 CPU) ran {len(ids)} + {a.windows} x {a.ppl_len} tokens "
        f"and {a.gen} greedy steps in {dt:.0f} s")

    # 1. logits
    undo = patch_float64_islands()
    ref = hf_logits(m64, ids).numpy()
    undo()
    unpatched = hf_logits(m64, ids).numpy()
    patch_float64_islands()
    f32 = hf_logits(m32, ids).numpy()
    r = ratios(kv["logits"], ref)
    worst = int(np.argmax(r))
    amax = float(np.abs(ref).max())
    r32 = ratios(f32, ref)
    patch_moves = float(np.abs(unpatched - ref).max())
    log(f"smollm2_parity: max |logit| {amax:.3f} (float64); transformers float32 vs float64: worst ratio "
        f"{r32.max():.3g}; the float64 patch moves the logits by up to {patch_moves:.3g}")
    report("logits", bool(r.max() <= a.rel_tol),
           f"{len(ids)} positions, worst max|Δlogit| / max|logit| = {r.max():.3g} at position {worst} "
           f"(tol {a.rel_tol:g}); max |Δlogit| {np.abs(kv['logits'] - ref).max():.3g}; median ratio "
           f"{np.median(r):.3g}")
    summary["logits"] = {"positions": len(ids), "worst_ratio": float(r.max()), "worst_position": worst,
                         "median_ratio": float(np.median(r)), "max_abs_logit": amax,
                         "max_abs_diff": float(np.abs(kv["logits"] - ref).max()),
                         "hf_fp32_worst_ratio": float(r32.max()), "float64_patch_moves": patch_moves}

    # 2. greedy
    ref_ids, ref_steps = hf_greedy(m64, prompt, a.gen)
    ref_steps = ref_steps.numpy()
    got_ids = [int(x) for x in kv["generated"]]
    # At step i the prefixes agree (the loop stops at the first difference).
    compared, stop, min_margin, step_ratio = 0, None, float("inf"), 0.0
    for i in range(a.gen):
        top2 = np.sort(ref_steps[i])[-2:]
        margin = float(top2[1] - top2[0])
        step_ratio = max(step_ratio, float(ratios(kv["gen_logits"][i:i + 1], ref_steps[i:i + 1])[0]))
        if margin < a.margin:
            stop = (i, margin)
            break
        min_margin = min(min_margin, margin)
        if got_ids[i] != ref_ids[i]:
            break
        compared += 1
    equal = compared == a.gen or stop is not None
    detail = (f"{compared}/{a.gen} tokens equal; smallest float64 top-2 margin {min_margin:.3g}; worst step "
              f"logits ratio {step_ratio:.3g}")
    if stop is not None:
        detail += f"; step {stop[0]}: float64 margin {stop[1]:.3g} < {a.margin:g}, the rest not compared"
    report("greedy", equal and step_ratio <= a.rel_tol, detail)
    completion = tok.decode(got_ids)
    log(f"smollm2_parity: prompt {PROMPT!r} -> kvtrain {completion!r}")
    if got_ids != ref_ids:
        log(f"smollm2_parity: transformers float64 -> {tok.decode(ref_ids)!r}")
    summary["greedy"] = {"prompt": PROMPT, "prompt_tokens": len(prompt), "n": a.gen, "equal_tokens": compared,
                         "min_margin": min_margin, "stopped_at": stop, "worst_step_ratio": step_ratio,
                         "kvtrain_ids": got_ids, "reference_ids": ref_ids, "completion": completion}

    # 2b. the CLI: `kvtrain generate --chat` renders the ChatML turn itself and stops at EOS
    p, _ = run([a.kvtrain, "generate", "--checkpoint", a.checkpoint, "--chat", "--prompt", PROMPT,
                "--temperature", "0", "--max-new-tokens", str(a.gen), "--print-ids", "--threads", "2"],
               "kvtrain generate --chat")
    tag = "generate: ids:"
    cli_ids = next([int(x) for x in line[len(tag):].split()] for line in p.stdout.splitlines()
                   if line.startswith(tag))
    cli_prefill = next(int(line.split()[2]) for line in p.stdout.splitlines()
                       if line.startswith("generate: prefill "))
    k = len(cli_ids) if stop is None else min(len(cli_ids), stop[0])  # not past a near tie
    same = cli_ids[:k] == ref_ids[:k]
    report("generate --chat", cli_prefill == len(prompt) and same,
           f"prompt {cli_prefill} tokens (transformers' chat template: {len(prompt)}); its {len(cli_ids)} ids: "
           f"the first {k} {'equal' if same else 'differ from'} the float64 greedy's")
    summary["generate_chat"] = {"prompt_tokens": cli_prefill, "ids": cli_ids}

    # 3. perplexity
    hf = [hf_loss(m64, row) for row in rows]
    ours = [float(x) for x in kv["loss"]]
    log(f"\n| held-out window | tokens | kvtrain fp32 loss | transformers f64 loss | |Δ| | kvtrain ppl | transformers ppl |")
    log("|---|---|---|---|---|---|---|")
    for n in range(a.windows):
        log(f"| {n + 1} | {a.ppl_len} | {ours[n]:.6f} | {hf[n]:.6f} | {abs(ours[n] - hf[n]):.2g} | "
            f"{np.exp(ours[n]):.4f} | {np.exp(hf[n]):.4f} |")
    mo, mh = float(np.mean(ours)), float(np.mean(hf))
    log(f"| mean | {a.windows * a.ppl_len} | {mo:.6f} | {mh:.6f} | {abs(mo - mh):.2g} | {np.exp(mo):.4f} | "
        f"{np.exp(mh):.4f} |\n")
    dl = max(abs(x - y) for x, y in zip(ours, hf))
    report("perplexity", dl <= a.loss_tol, f"max |Δ loss| {dl:.3g} nats (tol {a.loss_tol:g}); perplexity "
           f"kvtrain {np.exp(mo):.4f}, transformers {np.exp(mh):.4f}")
    summary["perplexity"] = {"windows": a.windows, "len": a.ppl_len, "kvtrain_loss": ours, "hf_loss": hf,
                             "kvtrain_ppl": float(np.exp(mo)), "hf_ppl": float(np.exp(mh))}

    # 4. the Hugging Face directory path
    if not a.no_hf_dir:
        hf_dir = os.path.join(work, "hf_float32")
        m32.save_pretrained(hf_dir)
        tok.save_pretrained(hf_dir)
        h5 = os.path.join(work, "smollm2_from_hf.h5")
        _, dt = run([a.kvtrain, "import", "--from", hf_dir, "--out", h5, "--force"], "kvtrain import --from DIR")
        kv2, _ = logitdump(a.logitdump, h5, {"tokens": ids}, work, "hfdir")
        x, y = kv["logits"], kv2["logits"]
        same = int(np.count_nonzero(x.view(np.uint32) == y.view(np.uint32)))
        rr = float(ratios(y, x).max())
        bitwise = same == x.size
        how = "bitwise equal" if bitwise else f"{x.size - same} of {x.size} logits differ, worst ratio {rr:.3g}"
        report("hf-dir import", bitwise or rr <= 1e-6, f"save_pretrained float32 -> kvtrain import ({dt:.0f} s): "
               f"logits vs the GGUF import: {how}")
        summary["hf_dir"] = {"bitwise": bitwise, "differing": int(x.size - same), "worst_ratio": rr}

    with open(os.path.join(work, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    log(f"smollm2_parity: {'FAIL: ' + ', '.join(failures) if failures else 'PASS'} (summary in {work}/summary.json)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Export parity with Hugging Face transformers 5.x (docs/design.md, "Inference and the KV cache",
docs/export.md): an exported directory loaded with transformers gives kvtrain's logits and greedy
tokens, with transformers' own Cache (DynamicCache) holding what the method stores.

  python tools/hf/check_parity.py --cases CASES.json [--kvtrain build/kvtrain]

CASES.json (written by tools/hf/check_parity.sh): a list of {"name", "dtype" (fp32 | bf16),
"checkpoint" (kvtrain .h5), "reference" (.npz of the checkpoint's config and weights),
"export" (the directory)}. All cases run in this one process; each check prints one line,
the exit status is 1 if any fails.

fp32 exports (tolerances are on max |logit difference|, logits of size ~1-10):
  1. load: AutoModelForCausalLM.from_pretrained (trust_remote_code for model_type kvtrain) with
     no missing, unexpected or mismatched weights.
  2. logits on fixed tokens [2, 24] vs tests/py/reference_model.py (float64) on the checkpoint's
     own weights (so a wrong exporter, e.g. a bad --merge-lrkv composition, shows up): <= 1e-4.
  3. cache: prefill of 12 tokens + 12 one-token steps with the returned transformers Cache equals
     the full forward (<= 1e-4); the cache is a DynamicCache holding exactly the values per token
     the method stores (2 L H_kv d_h for LLaMA, 2 n H_kv d_h for the sharing schemes, 2 L (d_h + H r)
     for LRKV; docs/design.md, "The model family").
  4. padding: generate() on a left-padded batch of two prompts equals each prompt alone
     (attention_mask and position_ids through the cache), 8 greedy tokens.
     Beam search (3 beams) with the cache equals it without; generate() given a DynamicCache()
     made without the config gives the default's tokens.
  5. tokenizer: AutoTokenizer(export) encodes the prompt to BOS + the SentencePiece ids.
  6. greedy: generate(max_new_tokens=20, do_sample=False) from BOS + prompt equals
     `kvtrain generate --temperature 0 --print-ids`.
bf16 exports:
  1. load as above, in float32: logits vs the float64 reference on the checkpoint's weights
     rounded to bf16 (round to nearest even, as the exporter; for --merge-lrkv the merged
     projections, composed in float64, rounded): <= 1e-4 (the file holds exactly those).
  2. load with dtype=torch.bfloat16 (the config's dtype): the weights are bf16 and the logits of a
     bf16 forward are within 0.08 * max |logit| + 0.05 of the same reference; its cached decode
     is within the same bound of its full forward.
  3. greedy tokens of the bf16-weight float32 model vs kvtrain generate (fp32 weights): the count
     of equal tokens is reported, not asserted (bf16 rounding can flip near-ties).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "py"))
import reference_model as ref  # noqa: E402

PROMPT = "the lord said unto"
NEW_TOKENS = 20
TOL = 1e-4


def checkpoint_reference(npz_path):
    """(RefConfig, float32 params as numpy) from check_parity.sh's dump of a checkpoint."""
    import yaml
    z = np.load(npz_path)
    run = yaml.safe_load(str(z["config"]))
    params = {k[len("param:"):]: z[k] for k in z.files if k.startswith("param:")}
    m = run["model"]
    cfg = ref.RefConfig(vocab_size=m["vocab_size"], d_model=m["d_model"], n_layers=m["n_layers"],
                        n_heads=m["n_heads"], n_kv_heads=m.get("n_kv_heads") or m["n_heads"],
                        d_ff=m["d_ff"], rope_theta=float(m["rope_theta"]), norm_eps=float(m["norm_eps"]),
                        tie_embeddings=m["tie_embeddings"], max_seq_len=m["max_seq_len"],
                        kv_sharing=m["kv_sharing"],
                        storage_layers=m["storage_layers"] if m["kv_sharing"] not in ("none", "cla") else 0,
                        lrkv_rank=m["lrkv_rank"], fusion_init=m["fusion_init"])
    cfg.check()
    return cfg, params


def as_reference_params(params, bf16):
    out = {}
    for name, a in params.items():
        t = torch.from_numpy(a)
        if bf16:
            t = t.to(torch.bfloat16)
        out[name] = t.to(torch.float64)
    return out


def merge_lrkv(cfg, params):
    """--merge-lrkv's plain LLaMA, in float64: k_proj rows of head h = k_shared + k_up[h] @ k_down[h r:(h+1) r]."""
    import dataclasses
    H, D, r = cfg.n_heads, cfg.head_dim, cfg.lrkv_rank
    out = {}
    for name, a in params.items():
        t = torch.from_numpy(a).to(torch.float64)
        pre, _, leaf = name.rpartition(".self_attn.")
        if leaf in ("k_shared.weight", "v_shared.weight"):
            kv = leaf[0]
            down = torch.from_numpy(params[f"{pre}.self_attn.{kv}_down.weight"]).to(torch.float64)
            up = torch.from_numpy(params[f"{pre}.self_attn.{kv}_up.weight"]).to(torch.float64)
            heads = [t + up[h] @ down[h * r:(h + 1) * r] for h in range(H)]
            out[f"{pre}.self_attn.{kv}_proj.weight"] = torch.cat(heads, dim=0)
        elif leaf not in ("k_down.weight", "v_down.weight", "k_up.weight", "v_up.weight"):
            out[name] = t
    return dataclasses.replace(cfg, lrkv_rank=0), {k: v.float().numpy() for k, v in out.items()}


def expected_cache_values(cfg, merged_lrkv):
    """Values per token per sequence, docs/design.md, "The model family"."""
    L, Hkv, D = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim
    if merged_lrkv:
        return 2 * L * cfg.n_heads * D
    if cfg.lrkv_rank > 0:
        return 2 * L * (D + cfg.n_heads * cfg.lrkv_rank)
    n = sum(1 for i in range(L) if ref.layer_stores_kv(cfg, i))
    return 2 * n * Hkv * D


def cache_values(cache):
    total = 0
    for layer in cache.layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None and t.dim() == 4 and t.shape[-2] > 0:
                total += t.shape[1] * t.shape[3]
    return total


def kvtrain_generate(kvtrain, ckpt, prompt, n):
    out = subprocess.run([kvtrain, "generate", "--checkpoint", ckpt, "--prompt", prompt, "--max-new-tokens",
                          str(n), "--temperature", "0", "--print-ids", "--threads", "1"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"kvtrain generate failed: {out.stderr.strip() or out.stdout.strip()}")
    for line in out.stdout.splitlines():
        if line.startswith("generate: ids:"):
            return [int(t) for t in line[len("generate: ids:"):].split()]
    raise RuntimeError(f"no 'generate: ids:' line in kvtrain generate's output:\n{out.stdout}")


def load(export, remote, dtype):
    from transformers import AutoModelForCausalLM
    model, info = AutoModelForCausalLM.from_pretrained(export, trust_remote_code=remote, dtype=dtype,
                                                       output_loading_info=True)
    return model.eval(), info


def cached_decode(model, tokens, half):
    """Logits of a prefill of `half` tokens then one token at a time through the returned Cache."""
    out = model(input_ids=tokens[:, :half], use_cache=True)
    steps, cache = [out.logits], out.cache
    for t in range(half, tokens.shape[1]):
        out = model(input_ids=tokens[:, t:t + 1], cache=cache, use_cache=True)
        steps.append(out.logits)
        cache = out.cache
    return torch.cat(steps, dim=1), cache


def run_case(case, kvtrain, report):
    from transformers import AutoTokenizer, DynamicCache
    name, dtype, export = case["name"], case["dtype"], case["export"]
    tag = f"{name}/{dtype}"
    with open(os.path.join(export, "config.json")) as f:
        hf_cfg = json.load(f)
    remote = hf_cfg["model_type"] != "llama"
    cfg, params = checkpoint_reference(case["reference"])
    bf16 = dtype == "bf16"
    ref_cfg, ref_params = cfg, params
    if bf16 and name.endswith("merged"):  # the file rounds the merged projections
        ref_cfg, ref_params = merge_lrkv(cfg, params)
    want_params = as_reference_params(ref_params, bf16)

    T = min(24, cfg.max_seq_len)
    g = torch.Generator().manual_seed(1234)
    tokens = torch.randint(0, cfg.vocab_size, (2, T), generator=g)
    tokens[:, 0] = hf_cfg["bos_token_id"]
    with torch.no_grad():
        want = ref.forward(ref_cfg, want_params, tokens)
    scale = want.abs().max().item()

    t0 = time.time()
    model, info = load(export, remote, torch.float32)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    report(tag, "load", not bad, f"{type(model).__name__} in {time.time() - t0:.1f} s"
           + (f", {bad}" if bad else ", every weight from model.safetensors"))

    with torch.no_grad():
        full = model(input_ids=tokens, use_cache=False).logits
        diff = (full.double() - want).abs().max().item()
        report(tag, "logits vs kvtrain forward" + (" (bf16 weights, fp32 compute)" if bf16 else ""),
               diff <= TOL, f"max |diff| {diff:.2e}, max |logit| {scale:.2f}, tol {TOL:g}")

    sp_ids = None
    if not bf16:
        with torch.no_grad():
            inc, cache = cached_decode(model, tokens, T // 2)
        d2 = (inc - full).abs().max().item()
        vals, exp = cache_values(cache), expected_cache_values(cfg, name.endswith("merged"))
        ok = d2 <= TOL and isinstance(cache, DynamicCache) and vals == exp and cache.get_seq_length() == T
        layers = ",".join(type(layer).__name__.replace("Layer", "") for layer in cache.layers)
        report(tag, "Cache decode vs full forward", ok,
               f"max |diff| {d2:.2e}; {type(cache).__name__}[{layers}] holds {vals} values/token, "
               f"method stores {exp}")

        # Left padding: row 0 is a shorter prompt; greedy tokens equal each prompt alone.
        pad = hf_cfg["eos_token_id"]
        a, b = tokens[0, :6], tokens[1, :9]
        batch = torch.full((2, 9), pad, dtype=torch.long)
        batch[0, 3:], batch[1] = a, b
        mask = torch.ones_like(batch)
        mask[0, :3] = 0
        with torch.no_grad():
            both = model.generate(input_ids=batch, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                  pad_token_id=pad)[:, 9:]
            alone = [model.generate(input_ids=x[None], attention_mask=torch.ones_like(x[None]), max_new_tokens=8,
                                    do_sample=False, pad_token_id=pad)[0, x.shape[0]:] for x in (a, b)]
        # A row alone stops at eos; in the batch it is then padded with pad (= eos) to the end.
        ok = all(both[i, :len(alone[i])].tolist() == alone[i].tolist()
                 and all(t == pad for t in both[i, len(alone[i]):].tolist()) for i in range(2))
        report(tag, "left-padded batch generate", ok,
               f"batch {both.tolist()} vs alone {[x.tolist() for x in alone]}")

        # Beam search reorders the cache (3 beams, with vs without it); a DynamicCache made
        # without the config (layers added as they are written) gives generate()'s tokens.
        x = tokens[:1, :5]
        with torch.no_grad():
            kw = dict(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=8, do_sample=False,
                      pad_token_id=pad)
            beam = model.generate(num_beams=3, **kw)[0].tolist()
            beam_nc = model.generate(num_beams=3, use_cache=False, **kw)[0].tolist()
            plain = model.generate(**kw)[0].tolist()
            given = model.generate(cache=DynamicCache(), **kw)[0].tolist()
        report(tag, "beam search and a config-less DynamicCache", beam == beam_nc and plain == given,
               f"beams {beam[5:]} vs without cache {beam_nc[5:]}; DynamicCache() {given[5:]} vs default {plain[5:]}")

        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=os.path.join(export, "tokenizer.model"))
        tok = AutoTokenizer.from_pretrained(export, trust_remote_code=remote)
        hf_ids = tok(PROMPT)["input_ids"]
        sp_ids = [sp.bos_id()] + sp.encode(PROMPT)
        report(tag, "tokenizer", hf_ids == sp_ids, f"{type(tok).__name__} {hf_ids} vs sentencepiece {sp_ids}")
    else:
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=os.path.join(export, "tokenizer.model"))
        sp_ids = [sp.bos_id()] + sp.encode(PROMPT)

    kv_ids = kvtrain_generate(kvtrain, case["checkpoint"], PROMPT, NEW_TOKENS)
    ids = torch.tensor([sp_ids])
    n_new = min(NEW_TOKENS, cfg.max_seq_len - ids.shape[1])
    with torch.no_grad():
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                             do_sample=False, pad_token_id=hf_cfg["eos_token_id"])
    hf_gen = gen[0, ids.shape[1]:].tolist()
    same = sum(int(x == y) for x, y in zip(hf_gen, kv_ids))
    if not bf16:
        report(tag, f"greedy {NEW_TOKENS} tokens vs kvtrain generate", hf_gen == kv_ids,
               f"hf {hf_gen} vs kvtrain {kv_ids}")
    else:
        report(tag, "greedy (bf16 weights) vs kvtrain generate (fp32)", True,
               f"{same} of {len(kv_ids)} tokens equal (reported, not asserted)")

    if bf16:
        model16, info = load(export, remote, torch.bfloat16)
        tol16 = 0.08 * scale + 0.05
        with torch.no_grad():
            full16 = model16(input_ids=tokens, use_cache=False).logits
            inc16, _ = cached_decode(model16, tokens, T // 2)
        d16 = (full16.double() - want).abs().max().item()
        dinc = (inc16.double() - full16.double()).abs().max().item()
        ok = model16.dtype == torch.bfloat16 and d16 <= tol16 and dinc <= tol16
        report(tag, "bf16 compute: logits and Cache decode", ok,
               f"weights {model16.dtype}; max |diff| vs reference {d16:.3f}, cached vs full {dinc:.3f}, "
               f"tol {tol16:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--kvtrain", default=os.path.join(ROOT, "build", "kvtrain"))
    a = ap.parse_args()

    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    print(f"check_parity: transformers {transformers.__version__}, torch {torch.__version__}", flush=True)
    with open(a.cases) as f:
        cases = json.load(f)
    failed = {}

    def report(tag, what, ok, detail):
        print(f"[{tag}] {what}: {'ok' if ok else 'FAIL'} ({detail})", flush=True)
        if not ok:
            failed.setdefault(tag, []).append(what)

    for case in cases:
        tag = f"{case['name']}/{case['dtype']}"
        try:
            run_case(case, a.kvtrain, report)
        except Exception as e:  # one broken export must not hide the others
            report(tag, "run", False, f"{type(e).__name__}: {e}")
    print("check_parity: summary")
    for case in cases:
        tag = f"{case['name']}/{case['dtype']}"
        print(f"  {tag} {'FAIL: ' + ', '.join(failed[tag]) if tag in failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

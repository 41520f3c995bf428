#!/usr/bin/env python3
"""Export parity check (docs/design.md, "Inference and the KV cache", issue 6 item 6): an exported directory loaded with Hugging
Face transformers gives kvtrain's logits and greedy tokens.

  python3 tools/hf/check_parity.py --checkpoint RUN/ckpt_00000004.h5 --export DIR \
      [--kvtrain build/kvtrain] [--prompt "the lord said unto"] [--tol 1e-4]

Checks, each printed as one line, exit status 1 if any fails:
  1. logits: AutoModelForCausalLM.from_pretrained(DIR) (trust_remote_code for model_type kvtrain)
     on fixed tokens vs the kvtrain-equivalent forward: tests/py/reference_model.py (float64) on
     the checkpoint's own weights and config, read from the HDF5 file with h5py (so a wrong
     exporter, e.g. a bad --merge-lrkv composition, shows up). Max abs diff <= --tol.
  2. cached decode: the HF model's prefill of half the tokens + one-token steps with its cache
     equals its full forward (<= --tol); for kvtrain models, the cache's values per token equal
     what the method stores (docs/design.md, "The model family").
  3. tokenizer: the exported HF tokenizer (slow LlamaTokenizer) encodes the prompt to the same ids
     as the SentencePiece model, BOS first.
  4. greedy: HF generate(max_new_tokens=20, do_sample=False) from BOS + prompt equals
     `kvtrain generate --temperature 0 --print-ids` ids.
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


def checkpoint_reference(path):
    """(RefConfig, float64 params, run config dict) from a kvtrain HDF5 checkpoint."""
    import h5py
    import yaml
    with h5py.File(path, "r") as f:
        raw = f["config"][()]
        if isinstance(raw, np.ndarray):
            raw = raw.reshape(-1)[0]
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        run = yaml.safe_load(text)
        params = {name: torch.from_numpy(np.array(ds[()], dtype=np.float64)) for name, ds in f["model"].items()}
    m = run["model"]
    cfg = ref.RefConfig(vocab_size=m["vocab_size"], d_model=m["d_model"], n_layers=m["n_layers"],
                        n_heads=m["n_heads"], n_kv_heads=m.get("n_kv_heads") or m["n_heads"],
                        d_ff=m["d_ff"], rope_theta=float(m["rope_theta"]), norm_eps=float(m["norm_eps"]),
                        tie_embeddings=m["tie_embeddings"], max_seq_len=m["max_seq_len"],
                        kv_sharing=m["kv_sharing"],
                        storage_layers=m["storage_layers"] if m["kv_sharing"] not in ("none", "cla") else 0,
                        lrkv_rank=m["lrkv_rank"], fusion_init=m["fusion_init"])
    cfg.check()
    return cfg, params, run


def expected_cache_values(cfg):
    """Values per token per sequence, docs/design.md, "The model family"."""
    L, Hkv, D = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim
    if cfg.lrkv_rank > 0:
        return 2 * L * (D + cfg.n_heads * cfg.lrkv_rank)
    n = sum(1 for i in range(L) if ref.layer_stores_kv(cfg, i))
    return 2 * n * Hkv * D


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--export", required=True)
    ap.add_argument("--kvtrain", default=os.path.join(ROOT, "build", "kvtrain"))
    ap.add_argument("--prompt", default="the lord said unto")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--name", default="")
    a = ap.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM, LlamaTokenizer
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    name = a.name or os.path.basename(os.path.normpath(a.export))
    failures = []

    def report(what, ok, detail):
        print(f"[{name}] {what}: {'ok' if ok else 'FAIL'} ({detail})", flush=True)
        if not ok:
            failures.append(what)

    with open(os.path.join(a.export, "config.json")) as f:
        hf_cfg = json.load(f)
    remote = hf_cfg["model_type"] != "llama"
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(a.export, trust_remote_code=remote, torch_dtype=torch.float32)
    model.eval()
    cls = type(model).__name__
    print(f"[{name}] loaded {cls} ({hf_cfg['model_type']}, transformers {transformers.__version__}, "
          f"torch {torch.__version__}) in {time.time() - t0:.1f} s", flush=True)

    # 1. logits on fixed tokens vs the float64 reference on the checkpoint's own weights.
    cfg, params, run = checkpoint_reference(a.checkpoint)
    T = min(24, cfg.max_seq_len)
    g = torch.Generator().manual_seed(1234)
    tokens = torch.randint(0, cfg.vocab_size, (2, T), generator=g)
    tokens[:, 0] = hf_cfg["bos_token_id"]
    with torch.no_grad():
        want = ref.forward(cfg, params, tokens)
        got = model(input_ids=tokens, use_cache=False).logits.double()
    diff = (got - want).abs().max().item()
    report("logits vs kvtrain forward", diff <= a.tol,
           f"max abs diff {diff:.2e}, max |logit| {want.abs().max().item():.2f}, tol {a.tol:g}")

    # 2. cached decode equals the full forward; the cache holds what the method stores.
    with torch.no_grad():
        full = model(input_ids=tokens, use_cache=False).logits
        h = T // 2
        out = model(input_ids=tokens[:, :h], use_cache=True)
        steps, cache = [out.logits], out.past_key_values
        for t in range(h, T):
            out = model(input_ids=tokens[:, t:t + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.past_key_values
        inc = torch.cat(steps, dim=1)
    d2 = (inc - full).abs().max().item()
    detail = f"max abs diff {d2:.2e}"
    ok = d2 <= a.tol
    if remote:
        vals = cache.num_values_per_token()
        exp = expected_cache_values(cfg)
        detail += f"; cache {vals} values/token, method stores {exp}"
        ok = ok and vals == exp
    report("cached decode vs full forward", ok, detail)

    # 3. tokenizer ids.
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.export, "tokenizer.model"))
    tok = LlamaTokenizer.from_pretrained(a.export)
    hf_ids = tok(a.prompt)["input_ids"]
    sp_ids = [sp.bos_id()] + sp.encode(a.prompt)
    report("tokenizer", hf_ids == sp_ids, f"hf {hf_ids} vs sentencepiece {sp_ids}")

    # 4. greedy generation vs kvtrain generate.
    kv_ids = kvtrain_generate(a.kvtrain, a.checkpoint, a.prompt, a.new_tokens)
    with torch.no_grad():
        ids = torch.tensor([sp_ids])
        n_new = min(a.new_tokens, cfg.max_seq_len - ids.shape[1])
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                             do_sample=False, pad_token_id=hf_cfg["eos_token_id"])
    hf_gen = gen[0, ids.shape[1]:].tolist()
    report(f"greedy {a.new_tokens} tokens vs kvtrain generate", hf_gen == kv_ids, f"hf {hf_gen} vs kvtrain {kv_ids}")

    print(f"[{name}] {'PASS' if not failures else 'FAIL: ' + ', '.join(failures)}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

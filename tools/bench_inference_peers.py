#!/usr/bin/env python3
"""tools/bench_inference_peers.py — inference peers for `kvtrain bench --inference` on SmolLM2-135M:
prefill tokens/s of a context of N tokens and decode ms/token after it, at the same thread count
(docs/inference.md, "Peers"; kvtrain's side: tools/bench_inference.sh).

  PY=$(bash tools/py_venv.sh --llama-cpp)
  "$PY" tools/bench_inference_peers.py --gguf build/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
      [--threads 2] [--contexts 512,2048,8192] [--decode 32] [--repeats 3] \\
      [--peers torch-fp32,llamacpp-f32,llamacpp-f16,llamacpp-q4_1] [--work DIR] [--json OUT.jsonl] \\
      [--flash-attn] [--extra-bufts]

Peers (each runs in a subprocess of its own, one after the other):
  torch-fp32     transformers 5.x LlamaForCausalLM from the GGUF (gguf_file=, dtype float32: the
                 Q4_1 weights dequantized by gguf-py), PyTorch 2.x on the CPU, DynamicCache, SDPA.
                 Prefill: one forward of the N tokens (logits_to_keep=1); decode: forward of one
                 token with past_key_values, greedy; wall clock (time.perf_counter).
  llamacpp-f32   llama.cpp (llama-cpp-python) on an all-F32 GGUF, and
  llamacpp-f16   on a mostly-F16 GGUF, both converted here from the Q4_1 file with
                 llama_model_quantize (allow_requantize): the dequantized Q4_1 weights, not
                 SmolLM2's original bf16 ones; cached in --work.
  llamacpp-q4_1  llama.cpp on the original Q4_1 file.
                 n_ctx = N + decode, n_batch = n_ubatch = N (one ubatch for the prefill),
                 n_threads = n_threads_batch = threads, flash attention off (--flash-attn).
                 Times are llama.cpp's own counters
                 (llama_perf_context: t_p_eval_ms over n_p_eval for the prefill, t_eval_ms over
                 n_eval for decode), with the wall clock alongside. ggml's AMX kernels crash
                 (ggml_backend_amx_mul_mat) on a VM whose CPU reports AMX_INT8 without granting
                 it, so use_extra_bufts = false unless --extra-bufts (F16/F32 never use them).
Prompt: N token ids drawn uniformly from the vocab with a fixed seed (as kvtrain's bench), the
same for every peer. Untimed warm-up first; prefill = median of --repeats runs from an empty
cache; decode = mean (and median) of --decode greedy steps starting at position N.

Output: one JSON line per (peer, context) on stderr as it finishes and in --json, then a
Markdown table on stdout; each row names the peer's version, threads, the CPU model
(/proc/cpuinfo) and the load average at the start and end of that peer's run. Timings on a
loaded machine are not results: run it on an idle one (the header's load average says); on
2 busy cores 2 threads time the scheduler (compare --threads 1).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def prompt_ids(n, vocab, seed=1234):
    import random
    rng = random.Random(seed)
    return [rng.randrange(vocab) for _ in range(n)]


# ---- torch ---------------------------------------------------------------------------------------

def run_torch(a, contexts):
    import torch
    import transformers
    torch.set_num_threads(a.threads)
    d, name = os.path.split(os.path.abspath(a.gguf))
    model = transformers.LlamaForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size
    info = {"peer": "torch-fp32", "version": f"transformers {transformers.__version__}, torch "
            f"{torch.__version__}", "weights": "Q4_1 GGUF dequantized to fp32 (gguf-py)",
            "attention": model.config._attn_implementation, "timing": "wall clock"}

    # transformers 5.x renames past_key_values to cache (the old name warns from 5.2x).
    import inspect
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def forward(ids, cache):
        return model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1,
                     **{cache_arg: cache}).logits[0, -1]

    with torch.inference_mode():
        cache = transformers.DynamicCache(config=model.config)  # warm-up
        forward(prompt_ids(64, vocab), cache)
        forward([1], cache)
        for n in contexts:
            ids, start = prompt_ids(n, vocab), loadavg()
            runs = []
            for _ in range(a.repeats):
                cache = transformers.DynamicCache(config=model.config)
                t0 = time.perf_counter()
                logits = forward(ids, cache)
                runs.append((time.perf_counter() - t0) * 1e3)
            steps, tok = [], int(logits.argmax())
            for _ in range(a.decode):
                t0 = time.perf_counter()
                tok = int(forward([tok], cache).argmax())
                steps.append((time.perf_counter() - t0) * 1e3)
            emit(a, info, n, runs, steps, start, {"cache_length": cache.get_seq_length()})


# ---- llama.cpp -----------------------------------------------------------------------------------

def converted(a, ftype_name):
    """The Q4_1 file converted by llama_model_quantize to ftype (cached in --work)."""
    import llama_cpp
    out = os.path.join(a.work, os.path.basename(a.gguf).replace(".gguf", f".{ftype_name}.gguf"))
    if not os.path.exists(out):
        os.makedirs(a.work, exist_ok=True)
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = {"F32": llama_cpp.LLAMA_FTYPE_ALL_F32, "F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16}[ftype_name]
        p.allow_requantize = True
        p.nthread = a.threads
        tmp = out + ".tmp"
        rc = llama_cpp.llama_model_quantize(a.gguf.encode(), tmp.encode(), p)
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize {a.gguf} -> {ftype_name}: error {rc}")
        os.replace(tmp, out)
    return out


def run_llamacpp(a, contexts, peer):
    import llama_cpp
    import numpy as np
    kind = peer.split("-", 1)[1]
    if kind == "q4_1":
        path, weights = a.gguf, "Q4_1 GGUF (original)"
    else:
        path = converted(a, kind.upper())
        weights = f"{kind.upper()} conversion of the dequantized Q4_1 weights (llama_model_quantize)"
    info = {"peer": peer, "version": f"llama-cpp-python {llama_cpp.__version__}", "weights": weights,
            "timing": "llama_perf_context (llama.cpp's counters)",
            "system_info": llama_cpp.llama_print_system_info().decode().strip()}
    # ggml's AMX kernels (used for Q4_1 through its "extra" weight buffers) crash in
    # ggml_backend_amx_mul_mat on a VM that advertises AMX_INT8 without granting it; without
    # --extra-bufts they are off (use_extra_bufts = false; F16/F32 never use them).
    default_params = llama_cpp.llama_cpp.llama_model_default_params

    def model_params():
        p = default_params()
        p.use_extra_bufts = a.extra_bufts
        return p
    llama_cpp.llama_cpp.llama_model_default_params = model_params
    info["use_extra_bufts"], info["flash_attn"] = a.extra_bufts, a.flash_attn

    def last_argmax(llm):  # greedy: the last position's logits (eval keeps none)
        lg = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(lg, shape=(llm.n_vocab(),))))

    for n in contexts:
        llm = llama_cpp.Llama(model_path=path, n_ctx=n + a.decode + 8, n_batch=n, n_ubatch=n,
                              n_threads=a.threads, n_threads_batch=a.threads,
                              flash_attn=a.flash_attn, verbose=False)
        ctx, vocab = llm.ctx, llm.n_vocab()
        ids, start = prompt_ids(n, vocab), loadavg()
        llm.reset()
        llm.eval(prompt_ids(min(64, n), vocab))  # warm-up
        llm.eval([1])
        llama_cpp.llama_synchronize(ctx)
        runs, wall = [], []
        for _ in range(a.repeats):
            llm.reset()  # eval drops the cache past n_tokens (0): an empty cache
            llama_cpp.llama_perf_context_reset(ctx)
            t0 = time.perf_counter()
            llm.eval(ids)
            llama_cpp.llama_synchronize(ctx)  # ends the compute; updates the perf counters
            wall.append((time.perf_counter() - t0) * 1e3)
            perf = llama_cpp.llama_perf_context(ctx)
            assert perf.n_p_eval == n, (perf.n_p_eval, n)
            runs.append(perf.t_p_eval_ms)
        tok = last_argmax(llm)
        llama_cpp.llama_perf_context_reset(ctx)
        steps_wall = []
        for _ in range(a.decode):
            t0 = time.perf_counter()
            llm.eval([tok])
            tok = last_argmax(llm)  # reads the logits: synchronizes
            steps_wall.append((time.perf_counter() - t0) * 1e3)
        perf = llama_cpp.llama_perf_context(ctx)
        assert perf.n_eval == a.decode, (perf.n_eval, a.decode)
        extra = {"decode_ms_per_token_perf": perf.t_eval_ms / perf.n_eval,
                 "prefill_wall_runs_ms": wall, "n_ctx": llm.n_ctx(), "n_ubatch": n}
        # Decode: llama.cpp's mean; the wall-clock steps give the median.
        emit(a, info, n, runs, steps_wall, start, extra, decode_mean=perf.t_eval_ms / perf.n_eval)
        llm.close() if hasattr(llm, "close") else None
        del llm


# ---- output --------------------------------------------------------------------------------------

def emit(a, info, n, runs, steps, start, extra, decode_mean=None):
    pre = statistics.median(runs)
    row = dict(info)
    row.update({"threads": a.threads, "cpu": cpu_model(), "context": n, "prefill_ms": pre,
                "prefill_runs_ms": runs, "prefill_tokens_per_s": n / (pre * 1e-3),
                "decode_steps": len(steps),
                "decode_ms_per_token": decode_mean if decode_mean is not None else statistics.mean(steps),
                "decode_median_ms_per_token": statistics.median(steps),
                "loadavg_start": start, "loadavg_end": loadavg()})
    row.update(extra)
    print(json.dumps(row), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--contexts", default="512,2048,8192")
    ap.add_argument("--decode", type=int, default=32, help="greedy decode steps timed")
    ap.add_argument("--repeats", type=int, default=3, help="prefill runs (median)")
    ap.add_argument("--peers", default="torch-fp32,llamacpp-f32,llamacpp-f16,llamacpp-q4_1")
    ap.add_argument("--work", default="build/bench_peers", help="where the conversions are cached")
    ap.add_argument("--json", help="also write the JSON lines here")
    ap.add_argument("--extra-bufts", action="store_true",
                    help="llama.cpp: keep ggml's extra weight buffers (AMX, repack) on")
    ap.add_argument("--flash-attn", action="store_true",
                    help="llama.cpp: flash attention (llama-cpp-python's default: off)")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # one peer, in the subprocess
    a = ap.parse_args()
    contexts = [int(c) for c in a.contexts.split(",")]
    if a.only:
        os.environ["OMP_NUM_THREADS"] = str(a.threads)
        (run_torch(a, contexts) if a.only == "torch-fp32" else run_llamacpp(a, contexts, a.only))
        return
    peers = a.peers.split(",")
    for p in peers:
        if p not in ("torch-fp32", "llamacpp-f32", "llamacpp-f16", "llamacpp-q4_1"):
            sys.exit(f"bench_inference_peers.py: unknown peer '{p}'")
    load0, rows = loadavg(), []
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OMP_WAIT_POLICY="passive")
    for p in peers:
        cmd = [sys.executable, os.path.abspath(__file__), "--only", p] + \
            [x for x in sys.argv[1:] if not x.startswith("--json") and x != a.json]
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                rows.append(json.loads(line))
                print(line, file=sys.stderr, flush=True)
        if r.returncode != 0:
            sys.exit(f"bench_inference_peers.py: peer {p} failed (exit {r.returncode})")
    if a.json:
        with open(a.json, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"inference peers | {a.threads} thread(s) | {cpu_model()} | prefill: median of {a.repeats} | "
          f"decode: mean of {a.decode} steps | load average {load0} at start, {loadavg()} at end\n")
    print("| peer | version | weights | context | prefill ms | prefill tokens/s | decode ms/token "
          "| decode median | timing | load start → end |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['peer']} | {r['version']} | {r['weights']} | {r['context']} | "
              f"{r['prefill_ms']:.1f} | {r['prefill_tokens_per_s']:.0f} | {r['decode_ms_per_token']:.3f} | "
              f"{r['decode_median_ms_per_token']:.3f} | {r['timing']} | {r['loadavg_start']} → "
              f"{r['loadavg_end']} |")


if __name__ == "__main__":
    main()

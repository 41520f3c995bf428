"""kvtrain's KVzip targets and Fast KVzip gates against an independent float64 PyTorch reference
(docs/design.md, "Fast KVzip gates"; tests/py/reference_gates.py).

Run by CTest as `/usr/bin/python3 tests/py/test_gates_reference.py` with KVT_BUILD_DIR (where
tests/gatedump was built) and KVT_SOURCE_DIR. Two groups:

  * GateReferenceSelfTest: the reference against naive loops, closed forms, torch's own BCE and
    finite differences (no kvtrain involved);
  * KvtrainGatesVsReference: gatedump runs kvtrain's CPU model (fp32) on random context and prompt
    tokens, scores the context with KvzipScorer and runs the (perturbed) gates forward and
    backward; the reference recomputes everything from the dumped parameters and tokens
    (the gates read the reference's own float64 hidden states, so the whole chain is checked).

Tolerances (kvtrain in fp32, the reference in float64):
  KVzip targets: 1e-5 absolute (attention probabilities through up to 4 fp32 layers);
  gate scores: 1e-6 absolute;  gate loss: 1e-6 relative;
  gate gradients: per tensor, max |g_ref - g_kvt| <= 1e-5 * max(1, max |g_ref|).
"""

import json
import math
import os
import sys
import tempfile
import unittest

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_model as ref  # noqa: E402
import reference_gates as rg  # noqa: E402
import dump_tools  # noqa: E402

torch.set_num_threads(1)

TARGET_ATOL = 1e-5
SCORE_ATOL = 1e-6
LOSS_RTOL = 1e-6
GRAD_TOL = 1e-5

BUILD_DIR = os.environ.get("KVT_BUILD_DIR", "")
GATEDUMP = os.path.join(BUILD_DIR, "tests", "gatedump")

BASE_MODEL = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=48,
                  max_seq_len=32, rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=True,
                  init_std=0.2)
P, Q = 10, 3
PERTURB_NORMS = 0.2
SEED = 11

SUMMARY = []


def run_gatedump(tmp, model, tag, context=P, prompt_len=Q, seed=SEED):
    cfg_path = os.path.join(tmp, f"{tag}.yaml")
    dump_tools.write_config(cfg_path, model, 1, 2 * P + Q, SEED)
    out = os.path.join(tmp, f"{tag}.safetensors")
    cmd = [GATEDUMP, "--config", cfg_path, "--out", out, "--context", str(context),
           "--prompt-len", str(prompt_len), "--seed", str(seed),
           "--perturb-norms", str(PERTURB_NORMS)]
    return dump_tools.run_dump(cmd, out)


def max_abs(a):
    return float(a.abs().max()) if a.numel() else 0.0


def random_gate_params(cfg, seed, std=0.5):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, s in rg.gate_param_shapes(cfg).items():
        if n.endswith("norm.weight"):
            out[n] = 1.0 + 0.2 * torch.randn(s, generator=g, dtype=rg.DTYPE)
        else:
            out[n] = std * torch.randn(s, generator=g, dtype=rg.DTYPE)
    return out


# ---- the reference against itself ----------------------------------------------------------

def naive_attention_probs(cfg, params, tokens):
    """Attention probabilities [L][H, T, T] with scalar softmax loops over q, k from the
    reference's projections (its capture gives h and the model's K via kv_of_layer)."""
    T = tokens.shape[1]
    H, D, Hkv = cfg.n_heads, cfg.head_dim, cfg.n_kv_heads
    G = H // Hkv
    cos, sin = ref.rope_cos_sin(T, D, cfg.rope_theta)
    cap = {}
    ref.forward(cfg, params, tokens, capture=cap)
    store, out = {}, []
    for i in range(cfg.n_layers):
        h = cap["attn_input"][i]
        p = ref.layer_prefix(i)
        q = ref.apply_rope((h @ params[p + "self_attn.q_proj.weight"].T).view(1, T, H, D), cos, sin)
        k, _ = ref.kv_of_layer(cfg, params, i, h, cos, sin, store)
        a = torch.zeros(H, T, T, dtype=rg.DTYPE)
        for hh in range(H):
            for t in range(T):
                sc = [float(q[0, t, hh] @ k[0, s, hh // G]) / math.sqrt(D) for s in range(t + 1)]
                m = max(sc)
                w = [math.exp(x - m) for x in sc]
                z = sum(w)
                for s in range(t + 1):
                    a[hh, t, s] = w[s] / z
        out.append(a)
    return out


def naive_targets(cfg, probs, P_, Q_):
    """Loops straight from docs/design.md, "Fast KVzip gates"'s sentence."""
    H, Hkv = cfg.n_heads, cfg.n_kv_heads
    G = H // Hkv
    lrkv = cfg.lrkv_rank > 0
    M = 1 if lrkv else Hkv
    store = rg.storage_layers(cfg)
    tgt = torch.zeros(len(store), M, P_, dtype=rg.DTYPE)
    for i in range(cfg.n_layers):
        for m in range(M):
            heads = range(H) if lrkv else range(m * G, (m + 1) * G)
            for pos in range(P_):
                best = max(float(probs[i][hh, t, pos]) for hh in heads
                           for t in range(P_ + Q_, 2 * P_ + Q_))
                for src in rg.cache_sources(cfg, i):
                    j = store.index(src)
                    tgt[j, m, pos] = max(float(tgt[j, m, pos]), best)
    return tgt


def naive_gate_scores(h, wq, bq, wk, qn, kn, sinks, bias):
    n, C = h.shape
    Hkv, G = bias.shape
    D, S = qn.shape[0], sinks.shape[1]
    out = torch.zeros(n, Hkv, dtype=rg.DTYPE)
    for t in range(n):
        qa = h[t] @ wq.T + bq
        ka = h[t] @ wk.T
        for hh in range(Hkv):
            kv = ka[hh * D:(hh + 1) * D]
            kv = kv / math.sqrt(float((kv * kv).mean()) + rg.GATE_EPS) * kn
            acc = 0.0
            for g in range(G):
                qv = qa[(hh * G + g) * D:(hh * G + g + 1) * D]
                qv = qv / math.sqrt(float((qv * qv).mean()) + rg.GATE_EPS) * qn
                lg = float(qv @ kv) / math.sqrt(D) + float(bias[hh, g])
                z = sum(math.exp(float(qv @ sinks[hh, s]) / math.sqrt(D) - lg) for s in range(S))
                acc += 1.0 / (1.0 + z)
            out[t, hh] = acc / G
    return out


SMALL = dict(vocab_size=11, d_model=16, n_heads=4, d_ff=12, max_seq_len=32)


class GateReferenceSelfTest(unittest.TestCase):
    def test_capture_is_backward_compatible(self):
        cfg = ref.RefConfig(**SMALL, n_layers=3, n_kv_heads=2, kv_sharing="cla")
        params = ref.random_params(cfg, seed=1, std=0.5)
        tokens = torch.randint(0, 11, (1, 9), generator=torch.Generator().manual_seed(2))
        plain = ref.forward(cfg, params, tokens)
        cap = {}
        logits = ref.forward(cfg, params, tokens, capture=cap)
        self.assertTrue(torch.equal(plain, logits))
        self.assertEqual(len(cap["attn_probs"]), 3)
        self.assertEqual(len(cap["attn_input"]), 3)
        for a in cap["attn_probs"]:
            self.assertEqual(tuple(a.shape), (1, 4, 9, 9))
            self.assertLess(max_abs(a.sum(-1) - 1), 1e-12)
            self.assertEqual(max_abs(a.triu(1)), 0.0)

    def test_cache_sources_follow_design_table(self):
        def srcs(**kw):
            cfg = ref.RefConfig(**SMALL, n_kv_heads=4, **kw)
            return [sorted(rg.cache_sources(cfg, i)) for i in range(cfg.n_layers)], \
                rg.storage_layers(cfg)
        self.assertEqual(srcs(n_layers=3), ([[0], [1], [2]], [0, 1, 2]))
        self.assertEqual(srcs(n_layers=3, kv_sharing="cla"), ([[0], [0], [2]], [0, 2]))
        self.assertEqual(srcs(n_layers=4, kv_sharing="yoco"), ([[0], [1], [1], [1]], [0, 1]))
        self.assertEqual(srcs(n_layers=4, kv_sharing="fusedkv_lite", storage_layers=3),
                         ([[0], [1], [2], [0, 2]], [0, 1, 2]))
        self.assertEqual(srcs(n_layers=4, kv_sharing="fusedkv"), ([[0], [1], [0, 1], [0, 1]],
                                                                  [0, 1]))
        self.assertEqual(srcs(n_layers=2, lrkv_rank=2), ([[0], [1]], [0, 1]))

    def test_targets_against_naive_loops(self):
        P_, Q_ = 5, 2
        for kw in [dict(n_layers=3, n_kv_heads=2, kv_sharing="cla"),
                   dict(n_layers=4, n_kv_heads=2, kv_sharing="fusedkv", storage_layers=3),
                   dict(n_layers=4, n_kv_heads=1, kv_sharing="fusedkv_lite", storage_layers=3),
                   dict(n_layers=2, n_kv_heads=4, lrkv_rank=2)]:
            cfg = ref.RefConfig(**SMALL, **kw)
            params = ref.random_params(cfg, seed=3, std=0.5)
            ctx = torch.randint(0, 11, (P_,), generator=torch.Generator().manual_seed(4))
            prm = torch.randint(0, 11, (Q_,), generator=torch.Generator().manual_seed(5))
            tokens = torch.cat([ctx, prm, ctx])
            tgt, own, _ = rg.kvzip_targets(cfg, params, tokens, P_, Q_)
            naive = naive_targets(cfg, naive_attention_probs(cfg, params, tokens[None]), P_, Q_)
            self.assertLess(max_abs(tgt - naive), 1e-12, str(kw))
            self.assertTrue(bool((tgt >= 0).all() and (tgt <= 1).all()), str(kw))
            self.assertTrue(bool((tgt >= own).all()), str(kw))
            if cfg.kv_sharing != "none":
                # readers change some storage layer's targets (else the test would be weak)
                self.assertGreater(max_abs(tgt - own), 1e-3, str(kw))

    def test_gate_zero_sinks_orthogonal_qk_gives_one_over_one_plus_S(self):
        cfg = ref.RefConfig(**SMALL, n_layers=1, n_kv_heads=2)
        gp = random_gate_params(cfg, seed=6)
        p = rg.gate_prefix(0)
        half = rg.GATE_DIM // 2
        gp[p + "sinks"].zero_()
        gp[p + "bias"].zero_()
        gp[p + "q_norm.weight"][half:] = 0  # q lives in the first half, k in the second
        gp[p + "k_norm.weight"][:half] = 0
        h = torch.randn(7, 16, generator=torch.Generator().manual_seed(7), dtype=rg.DTYPE)
        s = rg.gate_scores(cfg, gp, 0, h)
        self.assertEqual(tuple(s.shape), (7, 2))
        self.assertLess(max_abs(s - 1.0 / (1 + rg.GATE_SINKS)), 1e-15)
        # and a bias b on every query head shifts it to 1 / (1 + S e^-b)
        gp[p + "bias"].fill_(1.5)
        s = rg.gate_scores(cfg, gp, 0, h)
        self.assertLess(max_abs(s - 1.0 / (1 + rg.GATE_SINKS * math.exp(-1.5))), 1e-15)

    def test_gate_against_naive_loops(self):
        for kw in [dict(n_kv_heads=2), dict(n_kv_heads=1), dict(n_kv_heads=4, lrkv_rank=2)]:
            cfg = ref.RefConfig(**SMALL, n_layers=1, **kw)
            gp = random_gate_params(cfg, seed=8)
            h = torch.randn(5, 16, generator=torch.Generator().manual_seed(9), dtype=rg.DTYPE)
            p = rg.gate_prefix(0)
            naive = naive_gate_scores(h, *(gp[p + n] for n in (
                "q_proj.weight", "q_proj.bias", "k_proj.weight", "q_norm.weight",
                "k_norm.weight", "sinks", "bias")))
            s = rg.gate_scores(cfg, gp, 0, h)
            if cfg.lrkv_rank > 0:
                naive = naive.amax(dim=1, keepdim=True)
            self.assertLess(max_abs(s - naive), 1e-13, str(kw))
            self.assertTrue(bool(((s > 0) & (s < 1)).all()))

    def test_bce_matches_torch(self):
        g = torch.Generator().manual_seed(10)
        s = torch.rand(50, generator=g, dtype=rg.DTYPE) * 0.98 + 0.01
        t = torch.rand(50, generator=g, dtype=rg.DTYPE)
        self.assertLess(abs(float(rg.bce(s, t) - F.binary_cross_entropy(s, t))), 1e-14)
        # clamped: finite at 0 and 1
        self.assertTrue(math.isfinite(float(rg.bce(torch.tensor([0.0, 1.0], dtype=rg.DTYPE),
                                                   torch.tensor([1.0, 0.0], dtype=rg.DTYPE)))))

    def test_loss_sums_heads_and_layers(self):
        cfg = ref.RefConfig(**SMALL, n_layers=2, n_kv_heads=2)
        gp = random_gate_params(cfg, seed=11)
        g = torch.Generator().manual_seed(12)
        hidden = [torch.randn(6, 16, generator=g, dtype=rg.DTYPE) for _ in range(2)]
        tgt = torch.rand(2, 2, 6, generator=g, dtype=rg.DTYPE)
        loss, scores = rg.gate_loss(cfg, gp, hidden, tgt)
        # = M * mean over all (token, head) pairs of each layer, summed over layers
        expect = sum(2 * F.binary_cross_entropy(scores[j], tgt[j].T) for j in range(2))
        self.assertLess(abs(float(loss - expect)), 1e-13)

    def test_gradcheck_gate(self):
        for kw in [dict(n_kv_heads=2), dict(n_kv_heads=4, lrkv_rank=2)]:
            cfg = ref.RefConfig(**SMALL, n_layers=1, **kw)
            gp = random_gate_params(cfg, seed=13)
            g = torch.Generator().manual_seed(14)
            h = [torch.randn(4, 16, generator=g, dtype=rg.DTYPE)]
            tgt = torch.rand(1, rg.decisions(cfg), 4, generator=g, dtype=rg.DTYPE)
            names = list(gp)

            def f(*ts):
                return rg.gate_loss(cfg, dict(zip(names, ts)), h, tgt)[0]

            inputs = tuple(gp[n].clone().requires_grad_(True) for n in names)
            self.assertTrue(torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5),
                            str(kw))


# ---- kvtrain against the reference ---------------------------------------------------------

class KvtrainGatesVsReference(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.isfile(GATEDUMP):
            raise AssertionError(f"gatedump not found at {GATEDUMP} (set KVT_BUILD_DIR to the "
                                 f"build directory and build the gatedump target)")
        cls._tmp = tempfile.TemporaryDirectory()
        cls.tmp = cls._tmp.name

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def model(self, **kw):
        return {**BASE_MODEL, **kw}

    def check(self, tag, model):
        t, meta = run_gatedump(self.tmp, model, tag)
        cfg = ref.RefConfig.from_dict(json.loads(meta["model"]))
        for k, v in model.items():
            got = json.loads(meta["model"])[k]
            if isinstance(v, float):
                self.assertAlmostEqual(got, v, places=6, msg=f"{tag}: model.{k}")
            else:
                self.assertEqual(got, v, f"{tag}: model.{k}")
        self.assertEqual(int(meta["context"]), P)
        self.assertEqual(int(meta["prompt_len"]), Q)
        store, M = rg.storage_layers(cfg), rg.decisions(cfg)
        self.assertEqual(json.loads(meta["gate_layers"]), store, f"{tag}: gate layers")

        # the frozen model
        params = {k[6:]: torch.from_numpy(v.astype(np.float64)) for k, v in t.items()
                  if k.startswith("param/")}
        self.assertEqual(sorted(params), sorted(ref.param_shapes(cfg)), f"{tag}: model params")
        tokens = torch.from_numpy(t["tokens"].astype(np.int64))
        self.assertEqual(tuple(tokens.shape), (2 * P + Q,))
        self.assertTrue(torch.equal(tokens[:P], tokens[P + Q:]), f"{tag}: context not repeated")

        # KVzip targets
        tgt, own, cap = rg.kvzip_targets(cfg, params, tokens, P, Q)
        kv = torch.from_numpy(t["kvzip"].astype(np.float64))
        self.assertEqual(tuple(kv.shape), (len(store), M, P), f"{tag}: kvzip shape")
        terr = max_abs(kv - tgt)
        if terr > TARGET_ATOL:
            idx = np.unravel_index(int((kv - tgt).abs().argmax()), kv.shape)
            own_note = ""
            if abs(float(kv[idx] - own[idx])) < TARGET_ATOL:
                own_note = " (kvtrain equals the layer's own attention there: readers missed?)"
            self.fail(f"{tag}: kvzip targets max abs err {terr:.3g} at [storage {idx[0]} "
                      f"(layer {store[idx[0]]}), decision {idx[1]}, pos {idx[2]}]: ref "
                      f"{float(tgt[idx]):.6g} kvtrain {float(kv[idx]):.6g} own "
                      f"{float(own[idx]):.6g}{own_note}")
        # not trivial: targets spread, attention far from uniform
        self.assertGreater(float(tgt.max() - tgt.min()), 0.1, f"{tag}: targets nearly constant")

        # gates: parameters as dumped, hidden states from the reference (float64)
        shapes = rg.gate_param_shapes(cfg)
        gparams = {k[11:]: torch.from_numpy(v.astype(np.float64)) for k, v in t.items()
                   if k.startswith("gate_param/")}
        kgrads = {k[10:]: torch.from_numpy(v.astype(np.float64)) for k, v in t.items()
                  if k.startswith("gate_grad/")}
        self.assertEqual(sorted(gparams), sorted(shapes), f"{tag}: gate parameter names")
        self.assertEqual(sorted(kgrads), sorted(shapes), f"{tag}: gate gradient names")
        for n, s in shapes.items():
            self.assertEqual(tuple(gparams[n].shape), s, f"{tag}: shape of {n}")
            self.assertEqual(tuple(kgrads[n].shape), s, f"{tag}: shape of grad {n}")
            if n.endswith("proj.weight") or n.endswith("proj.bias"):  # nn.Linear's init
                bound = 1 / math.sqrt(cfg.d_model)
                self.assertLessEqual(max_abs(gparams[n]), bound + 1e-7, n)
                self.assertGreater(max_abs(gparams[n]), 0.5 * bound, n)
            else:  # perturbed by gatedump so that sinks, bias and the norms matter
                base = 1.0 if n.endswith("norm.weight") else 0.0
                self.assertGreater(max_abs(gparams[n] - base), 0.05, n)

        hidden = [cap["attn_input"][l][0, :P] for l in store]
        loss, scores, grads = rg.gate_loss_and_grads(cfg, gparams, hidden, tgt)
        ks = torch.from_numpy(t["gate_score"].astype(np.float64))
        self.assertEqual(tuple(ks.shape), (len(store), P, M), f"{tag}: gate_score shape")
        serr = max_abs(ks - scores)
        if serr > SCORE_ATOL:
            idx = np.unravel_index(int((ks - scores).abs().argmax()), ks.shape)
            self.fail(f"{tag}: gate scores max abs err {serr:.3g} at [storage {idx[0]}, token "
                      f"{idx[1]}, decision {idx[2]}]: ref {float(scores[idx]):.6g} kvtrain "
                      f"{float(ks[idx]):.6g}")
        kloss = float(t["gate_loss"])
        lerr = abs(kloss - float(loss))
        self.assertLessEqual(lerr, LOSS_RTOL * abs(float(loss)),
                             f"{tag}: gate loss ref {float(loss):.9f} kvtrain {kloss:.9f}")

        failures, worst = [], (0.0, "")
        for n in shapes:
            gr, gk = grads[n], kgrads[n]
            self.assertGreater(max_abs(gr), 0.0, f"{tag}: reference gradient of {n} is zero")
            err = max_abs(gr - gk)
            tol = GRAD_TOL * max(1.0, max_abs(gr))
            if err / max_abs(gr) > worst[0]:
                worst = (err / max_abs(gr), n)
            if err > tol:
                idx = int((gr - gk).abs().argmax())
                failures.append(f"{n}: max abs err {err:.3g} (tol {tol:.3g}) at flat index "
                                f"{idx}: ref {float(gr.flatten()[idx]):.6g} kvtrain "
                                f"{float(gk.flatten()[idx]):.6g}; max|g_ref| {max_abs(gr):.3g}")
        self.assertFalse(failures, f"{tag}: gate gradients differ:\n  " + "\n  ".join(failures))
        SUMMARY.append(f"{tag:<24} |dtarget| {terr:.1e} (readers add {max_abs(tgt - own):.2f}) "
                       f"|dscore| {serr:.1e} loss {float(loss):.5f} |dloss| {lerr:.1e} "
                       f"worst grad err/max|g| {worst[0]:.1e} ({worst[1]})")

    def test_errors_are_clear(self):
        with self.assertRaises(AssertionError) as ctx:
            run_gatedump(self.tmp, self.model(), "too_long", context=15, prompt_len=3)
        self.assertIn("exceeds model.max_seq_len 32", str(ctx.exception))

    def test_mha(self):
        self.check("mha", self.model())

    def test_gqa(self):
        self.check("gqa", self.model(n_kv_heads=2))

    def test_mqa_untied(self):
        self.check("mqa_untied", self.model(n_kv_heads=1, tie_embeddings=False))

    def test_cla_odd_L3_gqa(self):
        self.check("cla_L3_gqa", self.model(kv_sharing="cla", n_layers=3, n_kv_heads=2))

    def test_yoco_L4(self):
        self.check("yoco_L4_n2", self.model(kv_sharing="yoco", n_layers=4, storage_layers=2))

    def test_yoco_L4_n3(self):
        self.check("yoco_L4_n3_mqa", self.model(kv_sharing="yoco", n_layers=4, storage_layers=3,
                                                n_kv_heads=1))

    def test_fusedkv_lite_L4(self):
        self.check("fusedkv_lite_L4_n2", self.model(kv_sharing="fusedkv_lite", n_layers=4,
                                                    storage_layers=2))

    def test_fusedkv_lite_L4_n3_gqa(self):
        self.check("fusedkv_lite_L4_n3_gqa", self.model(kv_sharing="fusedkv_lite", n_layers=4,
                                                        storage_layers=3, n_kv_heads=2))

    def test_fusedkv_L4_n2(self):
        self.check("fusedkv_L4_n2", self.model(kv_sharing="fusedkv", n_layers=4,
                                               storage_layers=2, fusion_init="normal"))

    def test_fusedkv_L4_n3_gqa(self):
        self.check("fusedkv_L4_n3_gqa", self.model(kv_sharing="fusedkv", n_layers=4,
                                                   storage_layers=3, n_kv_heads=2,
                                                   fusion_init="normal"))

    def test_lrkv_r2(self):
        self.check("lrkv_r2", self.model(lrkv_rank=2))

    def test_lrkv_r2_L3(self):
        self.check("lrkv_r2_L3", self.model(lrkv_rank=2, n_layers=3))


if __name__ == "__main__":
    prog = unittest.main(exit=False, verbosity=2)
    print("\n==== kvtrain KVzip targets and gates vs float64 reference ====")
    print(f"tolerances: targets {TARGET_ATOL} abs, scores {SCORE_ATOL} abs, loss {LOSS_RTOL} rel, "
          f"grads {GRAD_TOL} x max(1, max|g|)")
    for line in SUMMARY:
        print(line)
    ok = prog.result.wasSuccessful()
    print("RESULT:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)

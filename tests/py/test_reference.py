"""kvtrain against an independent float64 PyTorch reference (docs/design.md, "Tests").

Run by CTest as `/usr/bin/python3 tests/py/test_reference.py` with KVT_BUILD_DIR (where
tests/refdump was built) and KVT_SOURCE_DIR. Two groups:

  * ReferenceSelfTest: the reference itself against naive loops, finite differences and
    invariants (no kvtrain involved), so a mistake in the oracle is not mistaken for one in
    kvtrain;
  * KvtrainVsReference: refdump runs kvtrain's CPU model (fp32) on random tokens; its parameters
    are loaded into the reference, whose loss, logits and every named gradient must match.

Tolerances (kvtrain computes in fp32, the reference in float64):
  loss:      |loss_ref - loss_kvt| <= 1e-5 * max(1, |loss_ref|)
  gradients: per tensor, max |g_ref - g_kvt| <= 1e-5 * max(1, max |g_ref|), and also
             <= 1e-4 * max |g_ref| (so a tensor with small gradients is still checked; fp32
             gives about 1e-6 of it here)
  logits:    max |z_ref - z_kvt| <= 1e-4
  accumulation, kvtrain vs kvtrain (A=2 x B vs A=1 x 2B): gradients within 1e-6 absolute,
             loss within 1e-6 relative.
"""

import json
import math
import os
import sys
import tempfile
import unittest

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_model as ref  # noqa: E402
import dump_tools  # noqa: E402

# Tiny tensors: one thread is fastest, and spinning OpenMP workers slow a loaded machine down.
torch.set_num_threads(1)

LOSS_RTOL = 1e-5
GRAD_TOL = 1e-5
GRAD_RTOL = 1e-4
LOGITS_ATOL = 1e-4
ACCUM_TOL = 1e-6

BUILD_DIR = os.environ.get("KVT_BUILD_DIR", "")
REFDUMP = os.path.join(BUILD_DIR, "tests", "refdump")

# Tiny shapes; init_std large enough that attention is far from uniform and the loss far from
# log(V), and norm weights perturbed away from 1 so their role is tested too.
BASE_MODEL = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=48,
                  max_seq_len=16, rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=True,
                  init_std=0.2)
B, T = 3, 9
PERTURB_NORMS = 0.2

SUMMARY = []  # lines printed at the end
KV_LEAN_NAMES = ("k_proj", "v_proj", "fuse_", "_shared", "_down", "_up.")


def run_refdump(tmp, model, tag, batch, accum, seed=7, extra=()):
    cfg_path = os.path.join(tmp, f"{tag}.yaml")
    dump_tools.write_config(cfg_path, model, B, T, 7)
    out = os.path.join(tmp, f"{tag}.safetensors")
    cmd = [REFDUMP, "--config", cfg_path, "--out", out, "--batch", str(batch), "--seq", str(T),
           "--accum", str(accum), "--seed", str(seed), "--perturb-norms", str(PERTURB_NORMS),
           *extra]
    return dump_tools.run_dump(cmd, out)


def split_dump(tensors):
    params = {k[len("param/"):]: v for k, v in tensors.items() if k.startswith("param/")}
    grads = {k[len("grad/"):]: v for k, v in tensors.items() if k.startswith("grad/")}
    return params, grads


def ref_config(model):
    return ref.RefConfig.from_dict(model)


# ---- the reference against itself ----------------------------------------------------------

def naive_rope(x, theta):
    """x [B, T, nh, D] -> rotated, one explicit 2x2 rotation per pair (j, j + D/2)."""
    Bn, Tn, nh, D = x.shape
    out = x.clone()
    for t in range(Tn):
        for j in range(D // 2):
            a = t * theta ** (-2.0 * j / D)
            c, s = math.cos(a), math.sin(a)
            x1, x2 = x[:, t, :, j], x[:, t, :, j + D // 2]
            out[:, t, :, j] = x1 * c - x2 * s
            out[:, t, :, j + D // 2] = x2 * c + x1 * s
    return out


def naive_attention(q, k, v):
    """Scalar loops: query head h reads KV head h // (H / Hkv); softmax over s <= t."""
    Bn, Tn, H, D = q.shape
    G = H // k.shape[2]
    out = torch.zeros(Bn, Tn, H * D, dtype=q.dtype)
    for b in range(Bn):
        for h in range(H):
            g = h // G
            for t in range(Tn):
                scores = [float(q[b, t, h] @ k[b, s, g]) / math.sqrt(D) for s in range(t + 1)]
                m = max(scores)
                w = [math.exp(x - m) for x in scores]
                z = sum(w)
                acc = torch.zeros(D, dtype=q.dtype)
                for s in range(t + 1):
                    acc += (w[s] / z) * v[b, s, g]
                out[b, t, h * D:(h + 1) * D] = acc
    return out


class ReferenceSelfTest(unittest.TestCase):
    def test_rope_is_pairwise_rotation(self):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 7, 3, 8, generator=g, dtype=torch.float64)
        cos, sin = ref.rope_cos_sin(7, 8, 500.0)
        got = ref.apply_rope(x, cos, sin)
        torch.testing.assert_close(got, naive_rope(x, 500.0), rtol=0, atol=1e-12)
        # position 0 is the identity; norms of each pair are preserved
        torch.testing.assert_close(got[:, 0], x[:, 0], rtol=0, atol=0)
        pair = lambda y: y[..., :4] ** 2 + y[..., 4:] ** 2  # noqa: E731
        torch.testing.assert_close(pair(got), pair(x), rtol=1e-12, atol=1e-12)

    def test_attention_matches_naive_loops(self):
        g = torch.Generator().manual_seed(2)
        for H, Hkv in [(4, 4), (4, 2), (6, 3), (4, 1)]:
            q = torch.randn(2, 5, H, 4, generator=g, dtype=torch.float64)
            k = torch.randn(2, 5, Hkv, 4, generator=g, dtype=torch.float64)
            v = torch.randn(2, 5, Hkv, 4, generator=g, dtype=torch.float64)
            torch.testing.assert_close(ref.causal_attention(q, k, v), naive_attention(q, k, v),
                                       rtol=0, atol=1e-12, msg=f"H={H} Hkv={Hkv}")

    def test_rmsnorm_and_swiglu_match_scalar_formulas(self):
        g = torch.Generator().manual_seed(3)
        x = torch.randn(3, 6, generator=g, dtype=torch.float64)
        w = torch.randn(6, generator=g, dtype=torch.float64)
        got = ref.rmsnorm(x, w, 1e-5)
        for n in range(3):
            r = 1.0 / math.sqrt(sum(float(v) ** 2 for v in x[n]) / 6 + 1e-5)
            for c in range(6):
                self.assertAlmostEqual(float(got[n, c]), float(x[n, c]) * r * float(w[c]), places=12)
        wg, wu = (torch.randn(5, 6, generator=g, dtype=torch.float64) for _ in range(2))
        wd = torch.randn(6, 5, generator=g, dtype=torch.float64)
        got = ref.swiglu_mlp(x, wg, wu, wd)
        for n in range(3):
            hidden = []
            for f in range(5):
                a = float(x[n] @ wg[f])
                hidden.append(a / (1 + math.exp(-a)) * float(x[n] @ wu[f]))
            for c in range(6):
                self.assertAlmostEqual(float(got[n, c]), sum(hidden[f] * float(wd[c, f])
                                                            for f in range(5)), places=10)

    def test_gradcheck_whole_model(self):
        for tie in (True, False):
            cfg = ref.RefConfig(vocab_size=11, d_model=8, n_layers=2, n_heads=4, n_kv_heads=2,
                                d_ff=12, tie_embeddings=tie)
            params = ref.random_params(cfg, seed=4, std=0.5)
            names = list(params)
            g = torch.Generator().manual_seed(5)
            tokens = torch.randint(0, 11, (2, 6), generator=g)

            def f(*ts):
                return ref.loss_fn(cfg, dict(zip(names, ts)), tokens[:, :5], tokens[:, 1:])[0]

            inputs = tuple(params[n].clone().requires_grad_(True) for n in names)
            self.assertTrue(torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5),
                            f"tie={tie}")

    def test_gqa_equals_mha_with_repeated_kv_heads(self):
        gqa = ref.RefConfig(vocab_size=13, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=20)
        mha = ref.RefConfig(**{**gqa.__dict__, "n_kv_heads": 4})
        p = ref.random_params(gqa, seed=6)
        q = dict(p)
        D = gqa.head_dim
        for i in range(gqa.n_layers):
            for w in ("k_proj", "v_proj"):
                name = f"model.layers.{i}.self_attn.{w}.weight"
                heads = p[name].view(2, D, 16)
                q[name] = heads.repeat_interleave(2, dim=0).reshape(4 * D, 16)  # head h <- h // 2
        tokens = torch.randint(0, 13, (2, 7), generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(ref.forward(gqa, p, tokens), ref.forward(mha, q, tokens),
                                   rtol=0, atol=1e-12)

    def test_causality(self):
        cfg = ref.RefConfig(vocab_size=13, d_model=16, n_layers=2, n_heads=4, n_kv_heads=1, d_ff=20)
        p = ref.random_params(cfg, seed=8)
        tokens = torch.randint(0, 13, (1, 8), generator=torch.Generator().manual_seed(9))
        changed = tokens.clone()
        changed[0, 5] = (changed[0, 5] + 1) % 13
        a, b = ref.forward(cfg, p, tokens), ref.forward(cfg, p, changed)
        self.assertTrue(torch.equal(a[:, :5], b[:, :5]))
        self.assertFalse(torch.allclose(a[:, 5:], b[:, 5:]))

    # -- cross-layer KV sharing and LRKV (docs/design.md, "The model family") ---------------------------------------

    SMALL = dict(vocab_size=13, d_model=16, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=20)

    def logits(self, cfg, params, seed=10):
        tokens = torch.randint(0, cfg.vocab_size, (2, 7), generator=torch.Generator().manual_seed(seed))
        return ref.forward(cfg, params, tokens)

    def test_storage_layers_and_parameter_names(self):
        def kv_layers(**kw):
            shapes = ref.param_shapes(ref.RefConfig(**{**self.SMALL, **kw}))
            return ([i for i in range(kw.get("n_layers", 4))
                     if f"model.layers.{i}.self_attn.k_proj.weight" in shapes],
                    [i for i in range(kw.get("n_layers", 4))
                     if f"model.layers.{i}.self_attn.fuse_k_first" in shapes])
        self.assertEqual(kv_layers(), ([0, 1, 2, 3], []))
        self.assertEqual(kv_layers(kv_sharing="cla", n_layers=5), ([0, 2, 4], []))
        self.assertEqual(kv_layers(kv_sharing="yoco"), ([0, 1], []))
        self.assertEqual(kv_layers(kv_sharing="fusedkv_lite", n_layers=5, storage_layers=3),
                         ([0, 1, 2], []))
        self.assertEqual(kv_layers(kv_sharing="fusedkv", n_layers=5, storage_layers=3),
                         ([0, 1, 2], [3, 4]))
        shapes = ref.param_shapes(ref.RefConfig(**{**self.SMALL, "kv_sharing": "fusedkv"}))
        self.assertEqual(shapes["model.layers.3.self_attn.fuse_k_last"], (2, 2))
        self.assertEqual(shapes["model.layers.3.self_attn.fuse_v_first"], (2, 4))
        lr = ref.param_shapes(ref.RefConfig(**{**self.SMALL, "n_kv_heads": 4, "lrkv_rank": 3}))
        self.assertEqual(lr["model.layers.0.self_attn.k_down.weight"], (12, 16))
        self.assertEqual(lr["model.layers.0.self_attn.v_up.weight"], (4, 4, 3))
        self.assertEqual(lr["model.layers.0.self_attn.k_shared.weight"], (4, 16))
        self.assertNotIn("model.layers.0.self_attn.k_proj.weight", lr)

    def test_bad_sharing_configs_are_rejected(self):
        for kw in [dict(kv_sharing="fusedkv", storage_layers=1), dict(kv_sharing="bogus"),
                   dict(kv_sharing="yoco", storage_layers=5),
                   dict(lrkv_rank=2, kv_sharing="cla", n_kv_heads=4), dict(lrkv_rank=2)]:
            with self.assertRaises(ValueError, msg=str(kw)):
                ref.RefConfig(**{**self.SMALL, **kw}).check()

    def test_sharing_schemes_that_must_coincide(self):
        # CLA at L=2 and YOCO with n=1 both make layer 1 read layer 0's K and V.
        cla = ref.RefConfig(**{**self.SMALL, "n_layers": 2, "kv_sharing": "cla"})
        yoco = ref.RefConfig(**{**self.SMALL, "n_layers": 2, "kv_sharing": "yoco",
                                "storage_layers": 1})
        p = ref.random_params(cla, seed=11)
        torch.testing.assert_close(self.logits(cla, p), self.logits(yoco, p), rtol=0, atol=0)
        # YOCO with n = L stores every layer: the plain model.
        full = ref.RefConfig(**{**self.SMALL, "kv_sharing": "yoco", "storage_layers": 4})
        plain = ref.RefConfig(**self.SMALL)
        p = ref.random_params(plain, seed=12)
        torch.testing.assert_close(self.logits(full, p), self.logits(plain, p), rtol=0, atol=0)
        # ... and reading a storage layer differs from computing one's own K/V.
        y2 = ref.RefConfig(**{**self.SMALL, "kv_sharing": "yoco"})
        p2 = {n: t for n, t in p.items() if n in ref.param_shapes(y2)}
        self.assertFalse(torch.allclose(self.logits(y2, p2), self.logits(plain, p)))

    def test_fusedkv_with_weights_0110_equals_lite(self):
        lite = ref.RefConfig(**{**self.SMALL, "n_layers": 5, "storage_layers": 3,
                                "kv_sharing": "fusedkv_lite"})
        fused = ref.RefConfig(**{**lite.__dict__, "kv_sharing": "fusedkv"})
        p = ref.random_params(fused, seed=13)
        for i in (3, 4):
            pre = f"model.layers.{i}.self_attn."
            p[pre + "fuse_k_first"].zero_()
            p[pre + "fuse_k_last"].fill_(1.0)
            p[pre + "fuse_v_first"].fill_(1.0)
            p[pre + "fuse_v_last"].zero_()
        p_lite = {n: t for n, t in p.items() if "fuse_" not in n}
        torch.testing.assert_close(self.logits(fused, p), self.logits(lite, p_lite), rtol=0,
                                   atol=1e-14)

    def test_fused_keys_commute_with_rope(self):
        # One K weight per RoPE pair makes fusing post-RoPE keys equal RoPE of fused keys.
        g = torch.Generator().manual_seed(14)
        k0, kn = (torch.randn(2, 6, 3, 8, generator=g, dtype=torch.float64) for _ in range(2))
        a0, an = (torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(2))
        cos, sin = ref.rope_cos_sin(6, 8, 10000.0)
        pair = lambda a: torch.cat([a, a], -1)  # noqa: E731
        lhs = pair(a0) * ref.apply_rope(k0, cos, sin) + pair(an) * ref.apply_rope(kn, cos, sin)
        rhs = ref.apply_rope(pair(a0) * k0 + pair(an) * kn, cos, sin)
        torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-12)

    def test_lrkv_equals_mha_with_composed_projections(self):
        r = 3
        lr = ref.RefConfig(**{**self.SMALL, "n_kv_heads": 4, "lrkv_rank": r})
        mha = ref.RefConfig(**{**self.SMALL, "n_kv_heads": 4})
        p = ref.random_params(lr, seed=15)
        q = {n: t for n, t in p.items() if not any(s in n for s in ("_shared", "_down", "_up."))}
        D, C = lr.head_dim, lr.d_model
        for i in range(lr.n_layers):
            pre = f"model.layers.{i}.self_attn."
            for kv in "kv":
                down = p[pre + f"{kv}_down.weight"].view(4, r, C)   # U_h^T
                up = p[pre + f"{kv}_up.weight"]                     # B_h [H, D, r]
                w = p[pre + f"{kv}_shared.weight"][None] + torch.einsum("hdr,hrc->hdc", up, down)
                q[pre + f"{kv}_proj.weight"] = w.reshape(4 * D, C)
        torch.testing.assert_close(self.logits(lr, p), self.logits(mha, q), rtol=0, atol=1e-12)

    def test_gradcheck_sharing_and_lrkv(self):
        small = dict(vocab_size=7, d_model=8, n_layers=3, n_heads=2, n_kv_heads=1, d_ff=6)
        for kw in [dict(kv_sharing="fusedkv", storage_layers=2), dict(kv_sharing="cla"),
                   dict(n_kv_heads=2, lrkv_rank=2)]:
            cfg = ref.RefConfig(**{**small, **kw})
            params = ref.random_params(cfg, seed=16, std=0.5)
            names = list(params)
            tokens = torch.randint(0, 7, (1, 6), generator=torch.Generator().manual_seed(17))

            def f(*ts):
                return ref.loss_fn(cfg, dict(zip(names, ts)), tokens[:, :5], tokens[:, 1:])[0]

            inputs = tuple(params[n].clone().requires_grad_(True) for n in names)
            # fast_mode: finite differences along random directions of all parameters at once
            # (the full Jacobian is checked for the plain model above).
            self.assertTrue(torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5,
                                                     fast_mode=True), str(kw))

    def test_safetensors_reader_reads_kvtrain_layout(self):
        # A file laid out the way tools/safetensors.cpp writes it (padded header, sorted data).
        import struct
        header = {"a": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]},
                  "b": {"dtype": "F64", "shape": [], "data_offsets": [8, 16]},
                  "c": {"dtype": "BF16", "shape": [1], "data_offsets": [16, 18]},
                  "__metadata__": {"format": "pt"}}
        text = json.dumps(header).encode()
        text += b" " * ((8 - len(text) % 8) % 8)
        data = struct.pack("<ii", -1, 5) + struct.pack("<d", 2.5) + struct.pack("<H", 0x3FC0)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x.safetensors")
            with open(path, "wb") as f:
                f.write(struct.pack("<Q", len(text)) + text + data)
            t, meta = ref.read_safetensors(path)
        self.assertEqual(meta, {"format": "pt"})
        self.assertEqual(t["a"].tolist(), [-1, 5])
        self.assertEqual(t["b"].shape, ())
        self.assertEqual(float(t["b"]), 2.5)
        self.assertEqual(t["c"].tolist(), [1.5])


# ---- kvtrain against the reference ---------------------------------------------------------

def max_abs(a):
    return float(a.abs().max()) if a.numel() else 0.0


class KvtrainVsReference(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.isfile(REFDUMP):
            raise AssertionError(f"refdump not found at {REFDUMP} (set KVT_BUILD_DIR to the build "
                                 f"directory and build the refdump target)")
        cls._tmp = tempfile.TemporaryDirectory()
        cls.tmp = cls._tmp.name

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def check_against_reference(self, tag, model, batch=B, accum=1):
        tensors, meta = run_refdump(self.tmp, model, tag, batch, accum)
        # The architecture kvtrain says it built must be the one the test asked for.
        kv_model = json.loads(meta["model"])
        # KV-lean keys are checked even where the test leaves them at their defaults; an unset
        # storage_layers must come back resolved (L/2 for the schemes that use it).
        cfg = ref_config(model)
        expect = {"kv_sharing": cfg.kv_sharing, "fusion_init": cfg.fusion_init,
                  "lrkv_rank": cfg.lrkv_rank,
                  "storage_layers": cfg.n_storage if cfg.kv_sharing in ("yoco", "fusedkv_lite",
                                                                         "fusedkv") else 0}
        for k, v in {**model, **expect}.items():
            self.assertIn(k, kv_model, f"{tag}: refdump metadata lacks model.{k}")
            if isinstance(v, float):
                self.assertAlmostEqual(kv_model[k], v, places=6, msg=f"{tag}: model.{k}")
            else:
                self.assertEqual(kv_model[k], v, f"{tag}: model.{k}")
        params, grads = split_dump(tensors)

        shapes = ref.param_shapes(cfg)
        self.assertEqual(sorted(params), sorted(shapes),
                         f"{tag}: parameter names differ: kvtrain-only "
                         f"{sorted(set(params) - set(shapes))}, reference-only "
                         f"{sorted(set(shapes) - set(params))}")
        self.assertEqual(sorted(grads), sorted(shapes), f"{tag}: gradient names differ")
        for n, s in shapes.items():
            self.assertEqual(tuple(params[n].shape), s, f"{tag}: shape of {n}")
            self.assertEqual(tuple(grads[n].shape), s, f"{tag}: shape of grad {n}")

        tokens = torch.from_numpy(tensors["tokens"].astype(np.int64))
        self.assertEqual(tuple(tokens.shape), (accum * batch, T + 1))
        self.assertTrue(bool((tokens >= 0).all() and (tokens < cfg.vocab_size).all()))
        p64 = {n: torch.from_numpy(v.astype(np.float64)) for n, v in params.items()}
        loss, logits, g = ref.loss_and_grads(cfg, p64, tokens[:, :T], tokens[:, 1:])

        kv_loss = float(tensors["loss"])
        loss_err = abs(float(loss) - kv_loss)
        self.assertLessEqual(loss_err, LOSS_RTOL * max(1.0, abs(float(loss))),
                             f"{tag}: loss ref {float(loss):.9f} kvtrain {kv_loss:.9f}")
        # Far from a uniform prediction: the test would be weak otherwise.
        self.assertGreater(abs(float(loss) - math.log(cfg.vocab_size)), 0.05,
                           f"{tag}: loss {float(loss)} is too close to log(V)")

        kv_logits = torch.from_numpy(tensors["logits"].astype(np.float64))
        self.assertEqual(tuple(kv_logits.shape), (batch, T, cfg.vocab_size))
        logit_err = max_abs(kv_logits - logits[:batch])
        self.assertLessEqual(logit_err, LOGITS_ATOL, f"{tag}: logits max abs error {logit_err:.3g}")

        worst, worst_abs, kv_worst, failures = (0.0, ""), 0.0, (0.0, ""), []
        for n in shapes:
            gr = g[n]
            gk = torch.from_numpy(grads[n].astype(np.float64))
            err = max_abs(gr - gk)
            self.assertGreater(max_abs(gr), 0.0, f"{tag}: reference gradient of {n} is zero")
            scale = max(1.0, max_abs(gr))
            tol = min(GRAD_TOL * scale, GRAD_RTOL * max_abs(gr))
            worst_abs = max(worst_abs, err)
            if err / max_abs(gr) > worst[0]:
                worst = (err / max_abs(gr), n)
            # the tensors the KV-lean variants add or reroute, reported on their own
            if any(s in n for s in KV_LEAN_NAMES) and err / max_abs(gr) >= kv_worst[0]:
                kv_worst = (err / max_abs(gr), n.replace("model.layers.", "L").replace(
                    ".self_attn.", ".").replace(".weight", ""))
            if err > tol:
                idx = int((gr - gk).abs().argmax())
                failures.append(f"{n}: max abs err {err:.3g} (tol {tol:.3g}) at flat "
                                f"index {idx}: ref {float(gr.flatten()[idx]):.6g} kvtrain "
                                f"{float(gk.flatten()[idx]):.6g}; max|g_ref| {max_abs(gr):.3g}")
        self.assertFalse(failures, f"{tag}: gradients differ:\n  " + "\n  ".join(failures))
        SUMMARY.append(f"{tag:<26} loss {float(loss):.6f} |dloss| {loss_err:.1e} "
                       f"max|dlogits| {logit_err:.1e} max|dgrad| {worst_abs:.1e} "
                       f"worst err/max|g| {worst[0]:.1e} ({worst[1]}); K/V tensors "
                       f"{kv_worst[0]:.1e} ({kv_worst[1]})")
        return tensors

    def model(self, **kw):
        return {**BASE_MODEL, **kw}

    def test_refdump_errors_are_clear(self):
        with self.assertRaises(AssertionError) as ctx:
            run_refdump(self.tmp, self.model(max_seq_len=8), "too_long", B, 1,
                        extra=("--set", "train.seq_len=8"))  # a valid config; --seq 9 is not
        self.assertIn("--seq 9 exceeds model.max_seq_len 8", str(ctx.exception))
        with self.assertRaises(AssertionError) as ctx:
            run_refdump(self.tmp, self.model(n_kv_heads=3), "bad_kv", B, 1)
        self.assertIn("model.n_kv_heads", str(ctx.exception))

    def test_mha_tied(self):
        self.check_against_reference("mha_tied", self.model())

    def test_mha_untied(self):
        self.check_against_reference("mha_untied", self.model(tie_embeddings=False))

    def test_gqa_tied(self):
        self.check_against_reference("gqa_tied_L3", self.model(n_kv_heads=2, n_layers=3))

    def test_gqa_untied(self):
        self.check_against_reference("gqa_untied", self.model(n_kv_heads=2, tie_embeddings=False))

    def test_mqa_tied(self):
        self.check_against_reference("mqa_tied", self.model(n_kv_heads=1))

    def test_mqa_untied(self):
        self.check_against_reference("mqa_untied_L3",
                                     self.model(n_kv_heads=1, n_layers=3, tie_embeddings=False))

    # -- cross-layer KV sharing and LRKV (docs/design.md, "The model family" and "Tests": every scheme, n != L/2, odd L for
    # CLA, GQA; fusion weights N(0,1) so that they matter) ------------------------------------

    def test_cla_odd_L3(self):
        # Layers 0 and 2 store; 1 reads 0; 2's K/V feed only itself.
        self.check_against_reference("cla_L3_gqa", self.model(kv_sharing="cla", n_layers=3,
                                                              n_kv_heads=2))

    def test_cla_L4(self):
        self.check_against_reference("cla_L4", self.model(kv_sharing="cla", n_layers=4))

    def test_yoco_n1(self):
        self.check_against_reference("yoco_L4_n1", self.model(kv_sharing="yoco", n_layers=4,
                                                              storage_layers=1))

    def test_yoco_n3(self):
        self.check_against_reference("yoco_L4_n3_gqa_untied",
                                     self.model(kv_sharing="yoco", n_layers=4, storage_layers=3,
                                                n_kv_heads=2, tie_embeddings=False))

    def test_fusedkv_lite_n3(self):
        self.check_against_reference("fusedkv_lite_L4_n3_gqa",
                                     self.model(kv_sharing="fusedkv_lite", n_layers=4,
                                                storage_layers=3, n_kv_heads=2))

    def test_fusedkv_n2_gqa(self):
        # storage_layers left at 0: kvtrain must resolve it to L/2 = 2.
        self.check_against_reference("fusedkv_L4_n2(def)_gqa",
                                     self.model(kv_sharing="fusedkv", n_layers=4, n_kv_heads=2,
                                                fusion_init="normal"))

    def test_fusedkv_n2_mha(self):
        self.check_against_reference("fusedkv_L4_n2_mha",
                                     self.model(kv_sharing="fusedkv", n_layers=4, storage_layers=2,
                                                fusion_init="normal"))

    def test_fusedkv_n3_gqa(self):
        self.check_against_reference("fusedkv_L4_n3_gqa",
                                     self.model(kv_sharing="fusedkv", n_layers=4, storage_layers=3,
                                                n_kv_heads=2, fusion_init="normal"))

    def test_fusedkv_n3_mha_untied(self):
        self.check_against_reference("fusedkv_L4_n3_mha_untied",
                                     self.model(kv_sharing="fusedkv", n_layers=4, storage_layers=3,
                                                fusion_init="normal", tie_embeddings=False))

    def test_fusedkv_lite_init(self):
        # fusion_init lite: kvtrain must start at a_in = b_i0 = 1, others 0 (then FusedKV-Lite).
        t = self.check_against_reference("fusedkv_L4_n2_liteinit",
                                         self.model(kv_sharing="fusedkv", n_layers=4,
                                                    storage_layers=2, fusion_init="lite"))
        for i in (2, 3):
            pre = f"param/model.layers.{i}.self_attn."
            for name, val in (("fuse_k_first", 0), ("fuse_k_last", 1), ("fuse_v_first", 1),
                              ("fuse_v_last", 0)):
                self.assertTrue(np.all(t[pre + name] == val), pre + name)

    def test_fusedkv_normal_init_is_random(self):
        # fusion_init left out: the default, normal, must give N(0, 1) fusion weights.
        t, meta = run_refdump(self.tmp, self.model(kv_sharing="fusedkv", n_layers=4), "fkv_init",
                              B, 1)
        w = np.concatenate([t[f"param/model.layers.{i}.self_attn.{n}"].ravel() for i in (2, 3)
                            for n in ("fuse_k_first", "fuse_k_last", "fuse_v_first",
                                      "fuse_v_last")])
        self.assertEqual(json.loads(meta["model"])["fusion_init"], "normal")
        self.assertGreater(w.size, 100)
        self.assertLess(abs(float(w.mean())), 0.3)
        self.assertLess(abs(float(w.std()) - 1.0), 0.2)

    def test_lrkv_r2(self):
        self.check_against_reference("lrkv_r2", self.model(lrkv_rank=2))

    def test_lrkv_r3_L3_untied(self):
        self.check_against_reference("lrkv_r3_L3_untied",
                                     self.model(lrkv_rank=3, n_layers=3, tie_embeddings=False))

    def test_gradient_accumulation(self):
        model = self.model(n_kv_heads=2, tie_embeddings=False)
        # A=2 micro-batches of B against the reference on the whole 2B batch ...
        acc = self.check_against_reference("gqa_accum2", model, batch=B, accum=2)
        # ... and against kvtrain itself on one micro-batch of 2B with the same tokens.
        full, _ = run_refdump(self.tmp, model, "gqa_full2B", 2 * B, 1)
        self.assertTrue(np.array_equal(acc["tokens"], full["tokens"]),
                        "same seed must give the same tokens for A=2 x B and A=1 x 2B")
        p_acc, g_acc = split_dump(acc)
        p_full, g_full = split_dump(full)
        for n in p_acc:
            self.assertTrue(np.array_equal(p_acc[n], p_full[n]), f"params {n} differ")
        loss_a, loss_f = float(acc["loss"]), float(full["loss"])
        self.assertLessEqual(abs(loss_a - loss_f), ACCUM_TOL * max(1.0, abs(loss_f)),
                             f"loss A=2: {loss_a} vs A=1 2B: {loss_f}")
        worst = 0.0
        for n in g_acc:
            err = float(np.abs(g_acc[n].astype(np.float64) - g_full[n]).max())
            worst = max(worst, err)
            self.assertLessEqual(err, ACCUM_TOL, f"grad {n}: A=2 x B vs A=1 x 2B differ by {err:.3g}")
        SUMMARY.append(f"{'accum A=2xB vs A=1x2B':<28} |dloss| {abs(loss_a - loss_f):.2e}  "
                       f"max grad diff {worst:.2e}")


if __name__ == "__main__":
    prog = unittest.main(exit=False, verbosity=2)
    print("\n==== kvtrain vs float64 reference ====")
    print(f"tolerances: loss rel {LOSS_RTOL}, grad min({GRAD_TOL} x max(1, max|g|), {GRAD_RTOL} x max|g|), "
          f"logits {LOGITS_ATOL}, "
          f"accumulation {ACCUM_TOL}")
    for line in SUMMARY:
        print(line)
    ok = prog.result.wasSuccessful()
    print("RESULT:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)

"""An independent PyTorch reference of kvtrain's model family, written from docs/design.md, "The model family" (not
translated from the C++), evaluated in float64 and differentiated by autograd.

The model: token embedding, L blocks of (RMSNorm -> attention -> residual, RMSNorm -> SwiGLU MLP
-> residual), final RMSNorm, LM head (tied to the embedding or untied), no biases. Weights are
stored [out, in] (y = x W^T) and keyed by the Hugging Face LLaMA names.

Attention reads its keys and values through `kv_of_layer`, the one place that decides where a
layer's (post-RoPE) K and V come from: its own projections, LRKV's shared + low-rank projections,
or the cached K/V of storage layers (CLA, YOCO, FusedKV-Lite, FusedKV; docs/design.md, "The model family").

Also a minimal safetensors reader (json + numpy), so the tests need no `safetensors` package.
"""

import json
import math
import struct
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

DTYPE = torch.float64


@dataclass
class RefConfig:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    max_seq_len: int = 256
    kv_sharing: str = "none"  # none | cla | yoco | fusedkv_lite | fusedkv
    storage_layers: int = 0   # n for yoco / fusedkv(_lite); 0 = L // 2
    lrkv_rank: int = 0        # r > 0: LRKV projections (one KV head per query head)
    # fusedkv's init (normal: N(0,1) | lite: a_in = b_i0 = 1, others 0). Init only: the reference
    # takes its parameters from outside, so this key is validated and otherwise unused.
    fusion_init: str = "normal"

    @property
    def head_dim(self):
        return self.d_model // self.n_heads

    @property
    def n_storage(self):
        """n of docs/design.md, "The model family" for the schemes whose storage layers are 0..n-1."""
        return self.storage_layers if self.storage_layers > 0 else self.n_layers // 2

    @staticmethod
    def from_dict(d):
        """From a dict of model keys (e.g. refdump's metadata); unknown keys are ignored."""
        names = {f.name for f in fields(RefConfig)}
        cfg = RefConfig(**{k: v for k, v in d.items() if k in names})
        if cfg.n_kv_heads in (0, None):
            cfg.n_kv_heads = cfg.n_heads
        cfg.check()
        return cfg

    def check(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} not divisible by n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} is odd")
        if self.kv_sharing not in SCHEMES:
            raise ValueError(f"kv_sharing {self.kv_sharing!r} is not one of {SCHEMES}")
        if self.kv_sharing in ("yoco", "fusedkv_lite", "fusedkv"):
            lo = 2 if self.kv_sharing == "fusedkv" else 1
            if not lo <= self.n_storage <= self.n_layers:
                raise ValueError(f"storage_layers {self.n_storage} must be in [{lo}, "
                                 f"{self.n_layers}] for {self.kv_sharing}")
        if self.fusion_init not in ("normal", "lite"):
            raise ValueError(f"fusion_init {self.fusion_init!r} is not normal or lite")
        if self.kv_sharing in ("none", "cla") and self.storage_layers != 0:
            raise ValueError("storage_layers applies to yoco and fusedkv(_lite) only")
        if self.lrkv_rank < 0:
            raise ValueError(f"lrkv_rank {self.lrkv_rank} < 0")
        if self.lrkv_rank > 0:
            if self.kv_sharing != "none":
                raise ValueError("LRKV with cross-layer sharing is not defined")
            if self.n_kv_heads != self.n_heads:
                raise ValueError("LRKV needs n_kv_heads == n_heads")


SCHEMES = ("none", "cla", "yoco", "fusedkv_lite", "fusedkv")


def layer_prefix(i):
    return f"model.layers.{i}."


def param_shapes(cfg):
    """Name -> shape of every parameter, Hugging Face LLaMA naming, weights [out, in]."""
    C, D, H, Hkv, F_, V = (cfg.d_model, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads, cfg.d_ff,
                           cfg.vocab_size)
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(cfg.n_layers):
        p = layer_prefix(i)
        shapes[p + "input_layernorm.weight"] = (C,)
        shapes[p + "self_attn.q_proj.weight"] = (H * D, C)
        r = cfg.lrkv_rank
        if r > 0:
            for kv in "kv":
                shapes[p + f"self_attn.{kv}_shared.weight"] = (D, C)
                shapes[p + f"self_attn.{kv}_down.weight"] = (H * r, C)
                shapes[p + f"self_attn.{kv}_up.weight"] = (H, D, r)
        elif layer_stores_kv(cfg, i):
            shapes[p + "self_attn.k_proj.weight"] = (Hkv * D, C)
            shapes[p + "self_attn.v_proj.weight"] = (Hkv * D, C)
        elif cfg.kv_sharing == "fusedkv":
            shapes[p + "self_attn.fuse_k_first"] = (Hkv, D // 2)
            shapes[p + "self_attn.fuse_k_last"] = (Hkv, D // 2)
            shapes[p + "self_attn.fuse_v_first"] = (Hkv, D)
            shapes[p + "self_attn.fuse_v_last"] = (Hkv, D)
        shapes[p + "self_attn.o_proj.weight"] = (C, H * D)
        shapes[p + "post_attention_layernorm.weight"] = (C,)
        shapes[p + "mlp.gate_proj.weight"] = (F_, C)
        shapes[p + "mlp.up_proj.weight"] = (F_, C)
        shapes[p + "mlp.down_proj.weight"] = (C, F_)
    shapes["model.norm.weight"] = (C,)
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def random_params(cfg, seed=0, std=0.3):
    """Random float64 parameters (norm weights near 1), for self-tests of the reference."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith("norm.weight"):
            out[name] = 1.0 + 0.2 * torch.randn(shape, generator=g, dtype=DTYPE)
        else:
            out[name] = std * torch.randn(shape, generator=g, dtype=DTYPE)
    return out


# ---- the math of docs/design.md, "The model family" --------------------------------------------------------------

def rmsnorm(x, w, eps):
    """y = x / sqrt(mean(x^2) + eps) * w, over the last dimension."""
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


def rope_cos_sin(T, D, theta, pos0=0):
    """cos, sin of shape [T, D]: angle(p, j) = p * theta^(-2j/D) for j < D/2, repeated for the
    partner dimension j + D/2."""
    j = torch.arange(D // 2, dtype=DTYPE)
    inv_freq = float(theta) ** (-2.0 * j / D)
    pos = torch.arange(pos0, pos0 + T, dtype=DTYPE)
    ang = pos[:, None] * inv_freq[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    """x [B, T, nh, D]; dimension j pairs with j + D/2 (Hugging Face's rotate-half)."""
    return x * cos[None, :, None, :] + rotate_half(x) * sin[None, :, None, :]


def repeat_kv(k, n_rep):
    """[B, T, Hkv, D] -> [B, T, Hkv * n_rep, D]: query head h reads KV head h // n_rep."""
    return k.repeat_interleave(n_rep, dim=2)


def causal_attention(q, k, v, probs_out=None):
    """q [B, T, H, D], k/v [B, T, Hkv, D] -> [B, T, H * D]; softmax(q k^T / sqrt(D)) v with a
    causal mask. probs_out: an optional list that receives the probabilities [B, H, T, T]."""
    B, T, H, D = q.shape
    G = H // k.shape[2]
    k, v = repeat_kv(k, G), repeat_kv(v, G)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    att = torch.softmax(scores, dim=-1)
    if probs_out is not None:
        probs_out.append(att)
    out = torch.einsum("bhts,bshd->bthd", att, v)
    return out.reshape(B, T, H * D)


def swiglu_mlp(x, w_gate, w_up, w_down):
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


# ---- where each layer's K and V come from --------------------------------------------------

def layer_stores_kv(cfg, i):
    """Whether layer i computes (and caches) its own K and V (docs/design.md, "The model family"'s table)."""
    if cfg.kv_sharing == "none":
        return True
    if cfg.kv_sharing == "cla":
        return i % 2 == 0
    return i < cfg.n_storage  # yoco, fusedkv_lite, fusedkv


def lrkv_project(params, prefix, kv, h, H, D, r):
    """LRKV: per head, X W_shared + (X U_h) B_h^T  -> [B, T, H, D] (before RoPE)."""
    B, T, _ = h.shape
    shared = h @ params[prefix + f"self_attn.{kv}_shared.weight"].T                  # [B, T, D]
    latent = (h @ params[prefix + f"self_attn.{kv}_down.weight"].T).view(B, T, H, r)  # X U_h
    up = params[prefix + f"self_attn.{kv}_up.weight"]                                 # [H, D, r]
    return shared[:, :, None, :] + torch.einsum("bthr,hdr->bthd", latent, up)


def kv_of_layer(cfg, params, i, h, cos, sin, kv_store):
    """Post-RoPE K and V [B, T, Hkv, D] that layer i attends to. h is the normalised input of
    layer i; kv_store maps the storage layers already run to their (K, V), which reusing layers
    read (autograd then sums every consumer's gradient into the source, as docs/design.md, "The model family" asks)."""
    B, T, _ = h.shape
    Hkv, D = cfg.n_kv_heads, cfg.head_dim
    p = layer_prefix(i)
    if layer_stores_kv(cfg, i):
        if cfg.lrkv_rank > 0:
            k = lrkv_project(params, p, "k", h, Hkv, D, cfg.lrkv_rank)
            v = lrkv_project(params, p, "v", h, Hkv, D, cfg.lrkv_rank)
        else:
            k = (h @ params[p + "self_attn.k_proj.weight"].T).view(B, T, Hkv, D)
            v = (h @ params[p + "self_attn.v_proj.weight"].T).view(B, T, Hkv, D)
        k = apply_rope(k, cos, sin)
        kv_store[i] = (k, v)
        return k, v
    n = cfg.n_storage
    if cfg.kv_sharing == "cla":
        return kv_store[i - 1]
    if cfg.kv_sharing == "yoco":
        return kv_store[n - 1]
    if cfg.kv_sharing == "fusedkv_lite":
        return kv_store[n - 1][0], kv_store[0][1]
    # fusedkv: per (KV head, channel) weights; one K weight per RoPE pair (j, j + D/2).
    (k0, v0), (kn, vn) = kv_store[0], kv_store[n - 1]
    pair = lambda a: torch.cat([a, a], dim=-1)  # noqa: E731  [Hkv, D/2] -> [Hkv, D]
    a0, an = pair(params[p + "self_attn.fuse_k_first"]), pair(params[p + "self_attn.fuse_k_last"])
    b0, bn = params[p + "self_attn.fuse_v_first"], params[p + "self_attn.fuse_v_last"]
    return a0 * k0 + an * kn, b0 * v0 + bn * vn


# ---- the model -----------------------------------------------------------------------------

def forward(cfg, params, tokens, capture=None):
    """tokens [B, T] (int64) -> logits [B, T, V]. capture: an optional dict that receives, per
    layer, "attn_input" (the normalised hidden state entering attention [B, T, C]) and
    "attn_probs" (the attention probabilities [B, H, T, T], row t = query t) as lists."""
    B, T = tokens.shape
    H, D = cfg.n_heads, cfg.head_dim
    cos, sin = rope_cos_sin(T, D, cfg.rope_theta)
    x = params["model.embed_tokens.weight"][tokens]
    kv_store = {}
    probs = None
    if capture is not None:
        capture["attn_input"], capture["attn_probs"] = [], []
        probs = capture["attn_probs"]
    for i in range(cfg.n_layers):
        p = layer_prefix(i)
        h = rmsnorm(x, params[p + "input_layernorm.weight"], cfg.norm_eps)
        if capture is not None:
            capture["attn_input"].append(h)
        q = apply_rope((h @ params[p + "self_attn.q_proj.weight"].T).view(B, T, H, D), cos, sin)
        k, v = kv_of_layer(cfg, params, i, h, cos, sin, kv_store)
        x = x + causal_attention(q, k, v, probs) @ params[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, params[p + "post_attention_layernorm.weight"], cfg.norm_eps)
        x = x + swiglu_mlp(h, params[p + "mlp.gate_proj.weight"], params[p + "mlp.up_proj.weight"],
                           params[p + "mlp.down_proj.weight"])
    x = rmsnorm(x, params["model.norm.weight"], cfg.norm_eps)
    head = params["model.embed_tokens.weight" if cfg.tie_embeddings else "lm_head.weight"]
    return x @ head.T


def loss_fn(cfg, params, inputs, targets):
    """Mean cross-entropy over all B*T tokens, and the logits."""
    logits = forward(cfg, params, inputs)
    loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), targets.reshape(-1))
    return loss, logits


def value_and_grads(fn, params):
    """fn(params) -> (loss, aux); returns loss, aux and d loss / d param for every parameter
    (autograd, float64)."""
    leaves = {n: t.detach().to(DTYPE).clone().requires_grad_(True) for n, t in params.items()}
    loss, aux = fn(leaves)
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    return loss.detach(), aux.detach(), dict(zip(names, grads))


def loss_and_grads(cfg, params, inputs, targets):
    """Loss, logits and d loss / d param for every parameter (autograd, float64)."""
    return value_and_grads(lambda p: loss_fn(cfg, p, inputs, targets), params)


# ---- safetensors (minimal reader) ----------------------------------------------------------

_NP_DTYPES = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8"}


def read_safetensors(path):
    """Returns (tensors: name -> numpy array, metadata: dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = memoryview(raw)[8 + n:]
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        if e["dtype"] == "BF16":
            u16 = np.frombuffer(data[b:end], dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        else:
            arr = np.frombuffer(data[b:end], dtype=_NP_DTYPES[e["dtype"]])
        shape = tuple(e["shape"])
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name}: {arr.size} values for shape {shape}")
        out[name] = arr.reshape(shape).copy()
    return out, meta

"""PyTorch implementation of kvtrain's KV-lean LLaMA variants for Hugging Face transformers
(trust_remote_code), docs/design.md, "The model family" and §9. Shipped by `kvtrain export` next to configuration_kvtrain.py.

The model is LLaMA (RMSNorm, rotate-half RoPE, SwiGLU, no biases, optional tied embeddings) with
one change: where each layer's K and V come from.

  kv_sharing    storage layers  K of a reusing layer i         V of a reusing layer i
  none          all             own                            own
  cla           even layers     K of i-1                       V of i-1
  yoco          0..n-1          K of n-1                       V of n-1
  fusedkv_lite  0..n-1          K of n-1                       V of 0
  fusedkv       0..n-1          a_i0 K_0 + a_in K_{n-1}        b_i0 V_0 + b_in V_{n-1}

K always means post-RoPE keys. FusedKV's K weights are [H_kv, d_h/2], one per RoPE pair (j, j + d_h/2).
LRKV (lrkv_rank r > 0): K_h = X W_shared^K + (X U_h^K)(B_h^K)^T, same for V; RoPE after the sum.

The cache (KvtrainCache) stores exactly what the method stores: post-RoPE K/V of storage layers
only for the sharing schemes; for LRKV, per layer X W_shared^K, X W_shared^V (before RoPE) and
the per-head latents X U_h (r each), from which every step rebuilds and rotates K_h and V_h.
"""

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

try:  # transformers >= 4.36
    from transformers.cache_utils import Cache as _CacheBase
except ImportError:  # pragma: no cover
    _CacheBase = object

from .configuration_kvtrain import KvtrainConfig


# ---- where K and V come from ------------------------------------------------------------------

def layer_stores_kv(config, i):
    s = config.kv_sharing
    if s == "none":
        return True
    if s == "cla":
        return i % 2 == 0
    return i < config.n_storage


def kv_sources(config, i):
    """(kind, first, last): own | reuse (k_layer, v_layer) | fused (layer 0, layer n-1)."""
    if layer_stores_kv(config, i):
        return ("own", i, i)
    n = config.n_storage
    s = config.kv_sharing
    if s == "cla":
        return ("reuse", i - 1, i - 1)
    if s == "yoco":
        return ("reuse", n - 1, n - 1)
    if s == "fusedkv_lite":
        return ("reuse", n - 1, 0)
    return ("fused", 0, n - 1)


# ---- the cache --------------------------------------------------------------------------------

class KvtrainCache(_CacheBase):
    """Per storage layer: ("kv", K post-RoPE [B, Hkv, T, D], V [B, Hkv, T, D]); for LRKV layers:
    ("lrkv", K_shared [B, T, D], V_shared [B, T, D], K latents [B, T, H, r], V latents [B, T, H, r]).
    Layers that reuse another layer's K/V have no entry."""

    def __init__(self):
        self.layers = {}
        self._seen_tokens = 0

    # concatenation along the time axis of each stored tensor
    def append(self, layer, kind, tensors, time_dims):
        if layer in self.layers:
            old = self.layers[layer]
            tensors = tuple(torch.cat([o, t], dim=d) for o, t, d in zip(old[1:], tensors, time_dims))
        self.layers[layer] = (kind,) + tuple(tensors)
        return tensors

    def get(self, layer):
        return self.layers[layer][1:]

    def get_seq_length(self, layer_idx: Optional[int] = 0) -> int:
        if not self.layers:
            return 0
        first = min(self.layers)
        kind, t0 = self.layers[first][0], self.layers[first][1]
        return t0.shape[2] if kind == "kv" else t0.shape[1]

    def get_max_length(self):
        return None

    def get_usable_length(self, new_seq_length, layer_idx=0):
        return self.get_seq_length(layer_idx)

    def __len__(self):
        return len(self.layers)

    def num_values_per_token(self):
        """Values the cache holds per token and sequence (all layers)."""
        total = 0
        for entry in self.layers.values():
            if entry[0] == "kv":
                total += sum(t.shape[1] * t.shape[3] for t in entry[1:])
            else:
                total += sum(t.shape[-1] * (t.shape[2] if t.dim() == 4 else 1) for t in entry[1:])
        return total

    def nbytes(self):
        return sum(t.numel() * t.element_size() for e in self.layers.values() for t in e[1:])

    def reorder_cache(self, beam_idx):
        for layer, entry in list(self.layers.items()):
            self.layers[layer] = (entry[0],) + tuple(
                t.index_select(0, beam_idx.to(t.device)) for t in entry[1:])


# ---- building blocks --------------------------------------------------------------------------

class KvtrainRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class _Weight(nn.Module):
    """Holds one tensor named `weight` (for k_up.weight / v_up.weight [H, D, r])."""

    def __init__(self, *shape):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(*shape))


def rope_cos_sin(positions, dim, theta, dtype, device):
    """cos, sin [T, D] for absolute positions; pair (j, j + D/2), angle p * theta^(-2j/D)."""
    j = torch.arange(dim // 2, dtype=torch.float64, device=device)
    inv_freq = float(theta) ** (-2.0 * j / dim)
    ang = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    """x [B, nh, T, D]."""
    return x * cos[None, None] + rotate_half(x) * sin[None, None]


class KvtrainAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        C, H, Hkv, D = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.H, self.Hkv, self.D, self.r = H, Hkv, D, config.lrkv_rank
        self.source = kv_sources(config, layer_idx)
        self.q_proj = nn.Linear(C, H * D, bias=False)
        if self.r > 0:
            self.k_shared = nn.Linear(C, D, bias=False)
            self.v_shared = nn.Linear(C, D, bias=False)
            self.k_down = nn.Linear(C, H * self.r, bias=False)
            self.v_down = nn.Linear(C, H * self.r, bias=False)
            self.k_up = _Weight(H, D, self.r)
            self.v_up = _Weight(H, D, self.r)
        elif self.source[0] == "own":
            self.k_proj = nn.Linear(C, Hkv * D, bias=False)
            self.v_proj = nn.Linear(C, Hkv * D, bias=False)
        elif self.source[0] == "fused":
            self.fuse_k_first = nn.Parameter(torch.zeros(Hkv, D // 2))
            self.fuse_k_last = nn.Parameter(torch.zeros(Hkv, D // 2))
            self.fuse_v_first = nn.Parameter(torch.zeros(Hkv, D))
            self.fuse_v_last = nn.Parameter(torch.zeros(Hkv, D))
        self.o_proj = nn.Linear(H * D, C, bias=False)

    def _lrkv_expand(self, shared, latent, up):
        """shared [B, T, D], latent [B, T, H, r], up [H, D, r] -> [B, H, T, D]."""
        return (shared[:, :, None, :] + torch.einsum("bthr,hdr->bthd", latent, up)).transpose(1, 2)

    def kv(self, h, cache, cos_all, sin_all):
        """K (post-RoPE), V [B, Hkv, S, D] over all positions so far, this layer's view."""
        B, T, _ = h.shape
        kind, first, last = self.source
        if self.r > 0:
            ks, vs = self.k_shared(h), self.v_shared(h)
            kl = self.k_down(h).view(B, T, self.H, self.r)
            vl = self.v_down(h).view(B, T, self.H, self.r)
            ks, vs, kl, vl = cache.append(self.layer_idx, "lrkv", (ks, vs, kl, vl), (1, 1, 1, 1))
            # Rebuild every cached position's K_h, V_h and rotate K (RoPE acts after the sum).
            k = apply_rope(self._lrkv_expand(ks, kl, self.k_up.weight), cos_all, sin_all)
            v = self._lrkv_expand(vs, vl, self.v_up.weight)
            return k, v
        if kind == "own":
            k = self.k_proj(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
            v = self.v_proj(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
            S = cos_all.shape[0]
            k = apply_rope(k, cos_all[S - T:], sin_all[S - T:])
            return cache.append(self.layer_idx, "kv", (k, v), (2, 2))
        if kind == "reuse":
            return cache.get(first)[0], cache.get(last)[1]
        (k0, v0), (kn, vn) = cache.get(first), cache.get(last)
        pair = lambda a: torch.cat([a, a], dim=-1)[None, :, None, :]  # noqa: E731
        a0, an = pair(self.fuse_k_first), pair(self.fuse_k_last)
        b0, bn = self.fuse_v_first[None, :, None, :], self.fuse_v_last[None, :, None, :]
        return a0 * k0 + an * kn, b0 * v0 + bn * vn

    def forward(self, h, cache, cos_all, sin_all, mask):
        B, T, _ = h.shape
        S = cos_all.shape[0]
        q = self.q_proj(h).view(B, T, self.H, self.D).transpose(1, 2)
        q = apply_rope(q, cos_all[S - T:], sin_all[S - T:])
        k, v = self.kv(h, cache, cos_all, sin_all)
        G = self.H // k.shape[1]
        if G > 1:
            k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.D)
        scores = scores.masked_fill(~mask, float("-inf"))
        att = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = torch.matmul(att, v).transpose(1, 2).reshape(B, T, self.H * self.D)
        return self.o_proj(out)


class KvtrainMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        C, Fd = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(C, Fd, bias=False)
        self.up_proj = nn.Linear(C, Fd, bias=False)
        self.down_proj = nn.Linear(Fd, C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class KvtrainDecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.input_layernorm = KvtrainRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = KvtrainAttention(config, layer_idx)
        self.post_attention_layernorm = KvtrainRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = KvtrainMLP(config)

    def forward(self, x, cache, cos_all, sin_all, mask):
        x = x + self.self_attn(self.input_layernorm(x), cache, cos_all, sin_all, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


# ---- models -----------------------------------------------------------------------------------

class KvtrainPreTrainedModel(PreTrainedModel):
    config_class = KvtrainConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["KvtrainDecoderLayer"]
    _supports_cache_class = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)
        elif isinstance(module, _Weight):
            module.weight.data.normal_(0.0, 0.1 / math.sqrt(max(1, module.weight.shape[-1])))
        elif isinstance(module, KvtrainRMSNorm):
            module.weight.data.fill_(1.0)
        elif isinstance(module, KvtrainAttention) and hasattr(module, "fuse_k_first"):
            for p in (module.fuse_k_first, module.fuse_k_last, module.fuse_v_first, module.fuse_v_last):
                p.data.normal_(0.0, 1.0)


class KvtrainModel(KvtrainPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(KvtrainDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = KvtrainRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids, past_key_values=None, attention_mask=None, use_cache=True, **kwargs):
        B, T = input_ids.shape
        cache = past_key_values if isinstance(past_key_values, KvtrainCache) else KvtrainCache()
        if past_key_values is not None and not isinstance(past_key_values, KvtrainCache):
            if len(past_key_values) != 0:
                raise ValueError("past_key_values must be a KvtrainCache (from a previous call)")
        past = cache.get_seq_length()
        S = past + T
        if S > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {S} tokens is longer than max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        x = self.embed_tokens(input_ids)
        positions = torch.arange(S, device=input_ids.device)
        cos_all, sin_all = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype, x.device)
        # [B, 1, T, S]: query past + t sees keys s <= past + t (and not padded ones).
        mask = positions[None, :] <= (past + torch.arange(T, device=input_ids.device))[:, None]
        mask = mask[None, None].expand(B, 1, T, S)
        if attention_mask is not None:
            am = attention_mask.to(torch.bool)
            if am.shape[-1] != S:
                raise ValueError(f"attention_mask covers {am.shape[-1]} positions, expected {S}")
            mask = mask & am[:, None, None, :]
        for layer in self.layers:
            x = layer(x, cache, cos_all, sin_all, mask)
        cache._seen_tokens = S
        return self.norm(x), (cache if use_cache else None)


class KvtrainForCausalLM(KvtrainPreTrainedModel):
    _tied_weights_keys = ["lm_head.weight"]

    def __init__(self, config):
        super().__init__(config)
        self.model = KvtrainModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def get_decoder(self):
        return self.model

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, labels=None,
                use_cache=None, return_dict=None, **kwargs):
        use_cache = self.config.use_cache if use_cache is None else use_cache
        hidden, cache = self.model(input_ids, past_key_values=past_key_values,
                                   attention_mask=attention_mask, use_cache=use_cache)
        logits = self.lm_head(hidden).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cache)
        if return_dict is False:
            return out.to_tuple()
        return out

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      use_cache=True, **kwargs):
        if isinstance(past_key_values, KvtrainCache) and past_key_values.get_seq_length() > 0:
            input_ids = input_ids[:, past_key_values.get_seq_length():]
        else:
            past_key_values = None
        return {"input_ids": input_ids, "past_key_values": past_key_values,
                "attention_mask": attention_mask, "use_cache": use_cache}

    def _reorder_cache(self, past_key_values, beam_idx):
        past_key_values.reorder_cache(beam_idx)
        return past_key_values

"""PyTorch implementation of kvtrain's KV-lean LLaMA variants for Hugging Face transformers 5.x
(trust_remote_code), docs/design.md, "The model family" and docs/export.md. Shipped by
`kvtrain export` next to configuration_kvtrain.py.

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

The cache is transformers' own `Cache` (a `DynamicCache`, which `generate()` makes from the
config; `model(..., cache=DynamicCache(config=model.config))` by hand), holding exactly what the
method stores:
  * storage layers: post-RoPE K and V [B, H_kv, T, d_h] through `cache.update`; the layers that
    reuse them hold a `DummyLayer` (config.kv_sharing_modes) and read `cache.layers[j].keys`;
  * LRKV layers: one "head" of width d_h + H r per token, [B, 1, T, d_h + H r], for K the
    concatenation of X W_shared^K (before RoPE) and the latents X U_h^K of every head, same for
    V; each step rebuilds every position's K_h, V_h from it and rotates K_h by its position.
`cache_values_per_token(cache)` counts the values held per token and sequence.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init  # skips tensors already loaded (_is_hf_initialized)
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_kvtrain import KvtrainConfig


# ---- where K and V come from ------------------------------------------------------------------

def kv_sources(config, i):
    """(kind, k_layer, v_layer): own | reuse (K of k_layer, V of v_layer) | fused (layer 0, layer n-1)."""
    if config.layer_stores_kv(i):
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


def cache_values_per_token(cache):
    """Values a Cache holds per token and sequence, all layers (keys [B, h, T, w]: h w each)."""
    total = 0
    for layer in cache.layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None and t.dim() == 4 and t.shape[-2] > 0:
                total += t.shape[1] * t.shape[3]
    return total


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


def rope_cos_sin(positions, dim, theta, dtype):
    """cos, sin [B, T, D] for absolute positions [B, T]; pair (j, j + D/2), angle p * theta^(-2j/D)."""
    j = torch.arange(dim // 2, dtype=torch.float64, device=positions.device)
    inv_freq = float(theta) ** (-2.0 * j / dim)
    ang = positions.to(torch.float64)[..., None] * inv_freq
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    """x [B, nh, T, D], cos/sin [B, T, D]."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


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

    def _lrkv_expand(self, packed, up):
        """packed [B, 1, S, D + H r] (shared | latents), up [H, D, r] -> [B, H, S, D]."""
        B, _, S, _ = packed.shape
        shared = packed[:, 0, :, : self.D]
        latent = packed[:, 0, :, self.D:].reshape(B, S, self.H, self.r)
        return (shared[:, :, None, :] + torch.einsum("bshr,hdr->bshd", latent, up)).transpose(1, 2)

    def kv(self, h, cache, rope_new, rope_keys):
        """K (post-RoPE), V [B, Hkv, S, D] over all positions so far, this layer's view."""
        B, T, _ = h.shape
        kind, first, last = self.source
        if self.r > 0:
            kp = torch.cat([self.k_shared(h), self.k_down(h)], dim=-1)[:, None]
            vp = torch.cat([self.v_shared(h), self.v_down(h)], dim=-1)[:, None]
            kp, vp = cache.update(kp, vp, self.layer_idx)
            # Rebuild every cached position's K_h, V_h and rotate K (RoPE acts after the sum).
            k = apply_rope(self._lrkv_expand(kp, self.k_up.weight), *rope_keys)
            return k, self._lrkv_expand(vp, self.v_up.weight)
        if kind == "own":
            k = self.k_proj(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
            v = self.v_proj(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
            return cache.update(apply_rope(k, *rope_new), v, self.layer_idx)
        if kind == "reuse":
            return cache.layers[first].keys, cache.layers[last].values
        k0, v0 = cache.layers[first].keys, cache.layers[first].values
        kn, vn = cache.layers[last].keys, cache.layers[last].values
        pair = lambda a: torch.cat([a, a], dim=-1)[None, :, None, :]  # noqa: E731
        a0, an = pair(self.fuse_k_first), pair(self.fuse_k_last)
        b0, bn = self.fuse_v_first[None, :, None, :], self.fuse_v_last[None, :, None, :]
        return a0 * k0 + an * kn, b0 * v0 + bn * vn

    def forward(self, h, cache, rope_new, rope_keys, mask):
        B, T, _ = h.shape
        q = self.q_proj(h).view(B, T, self.H, self.D).transpose(1, 2)
        q = apply_rope(q, *rope_new)
        k, v = self.kv(h, cache, rope_new, rope_keys)
        G = self.H // k.shape[1]
        if G > 1:
            k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)).float() / math.sqrt(self.D)
        scores = scores.masked_fill(~mask, torch.finfo(torch.float32).min)
        att = torch.softmax(scores, dim=-1).to(q.dtype)
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

    def forward(self, x, cache, rope_new, rope_keys, mask):
        x = x + self.self_attn(self.input_layernorm(x), cache, rope_new, rope_keys, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


# ---- models -----------------------------------------------------------------------------------

class KvtrainPreTrainedModel(PreTrainedModel):
    config_class = KvtrainConfig
    config: KvtrainConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["KvtrainDecoderLayer"]

    def _init_weights(self, module):
        """Only for weights a checkpoint lacks (from_pretrained fills the rest from model.safetensors)."""
        super()._init_weights(module)
        if isinstance(module, _Weight):
            init.normal_(module.weight, 0.0, 0.1 / math.sqrt(max(1, module.weight.shape[-1])))
        elif isinstance(module, KvtrainAttention) and hasattr(module, "fuse_k_first"):
            for p in (module.fuse_k_first, module.fuse_k_last, module.fuse_v_first, module.fuse_v_last):
                init.normal_(p, 0.0, 1.0)


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

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                use_cache=True, **kwargs):
        """Returns (last hidden state, the cache or None). `cache`: a transformers Cache (None: a fresh
        DynamicCache, kept only if use_cache). attention_mask: 2D [B, past + T], 1 = attend.
        position_ids [B, T]: the new tokens' positions (default: past + t, or the count of unmasked
        tokens before them when attention_mask is given, as generate() makes them)."""
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError(f"cache must be a transformers Cache (e.g. DynamicCache), got {type(cache).__name__}")
        keep = use_cache
        if cache is None:
            cache = DynamicCache(config=self.config)
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T = x.shape[:2]
        past = cache.get_seq_length()
        S = past + T
        if S > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {S} tokens is longer than max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        dev = x.device
        # Positions of all S keys (LRKV rotates every cached key each step) and of the T new tokens.
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[-1] != S:
                raise ValueError(f"attention_mask must be 2D [batch, {S}], got {tuple(attention_mask.shape)}")
            am = attention_mask.to(torch.bool)
            key_pos = (am.long().cumsum(-1) - 1).clamp(min=0)
        else:
            am = None
            key_pos = torch.arange(S, device=dev)[None].expand(B, S)
        new_pos = key_pos[:, past:] if position_ids is None else position_ids.to(dev).expand(B, T)
        rope_new = rope_cos_sin(new_pos, self.config.head_dim, self.config.rope_theta, x.dtype)
        rope_keys = rope_cos_sin(key_pos, self.config.head_dim, self.config.rope_theta, x.dtype)
        # [B, 1, T, S]: query past + t sees keys s <= past + t (and not padded ones).
        mask = torch.arange(S, device=dev)[None, :] <= (past + torch.arange(T, device=dev))[:, None]
        mask = mask[None, None].expand(B, 1, T, S)
        if am is not None:
            mask = mask & am[:, None, None, :]
        for layer in self.layers:
            x = layer(x, cache, rope_new, rope_keys, mask)
        return self.norm(x), (cache if keep else None)


class KvtrainForCausalLM(KvtrainPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.model = KvtrainModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    cache_values_per_token = staticmethod(cache_values_per_token)

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

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                labels=None, use_cache=None, logits_to_keep=0, return_dict=None, **kwargs):
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        hidden, cache = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   cache=cache, inputs_embeds=inputs_embeds, use_cache=use_cache)
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)
        if return_dict is False:
            return out.to_tuple()
        return out

"""An independent float64 PyTorch reference of Fast KVzip (docs/design.md, "Fast KVzip gates"), written from the design
text (not translated from the C++): KVzip targets from the reference model's attention
probabilities, and the gate module with its BCE loss (gradients by autograd).

KVzip target. Input [context (P) ; repeat prompt (Q) ; the same context], one teacher-forced
forward. For each layer, KV head g and context position p < P: the largest attention probability
that any query of the repeated copy (positions [P + Q, 2P + Q)) of any of the G query heads of g
(heads g G .. g G + G - 1) puts on p. A storage layer's target is the max over itself and every
layer that reads its cache. LRKV: one target per token and layer, the max over all heads.

Gate of a storage layer (d' = 16, S = 16 sinks), on h [n, C], the normalised hidden state that
enters the layer's attention:
  q = q_norm-RMSNorm(h W_q^T + c) viewed [n, Hkv, G, d']   (each d'-vector, eps 1e-6)
  k = k_norm-RMSNorm(h W_k^T)      viewed [n, Hkv, d']
  l_g = q_g . k / sqrt(d') + b_g,  l_gs = q_g . K_s / sqrt(d')
  score = mean_g 1 / (1 + sum_s exp(l_gs - l_g))       [n, Hkv]; LRKV: max over heads, [n, 1]
Loss: binary cross-entropy of score vs target (score clamped to [1e-7, 1 - 1e-7]), mean over
tokens, summed over heads and layers.
"""

import math

import torch

import reference_model as ref

DTYPE = torch.float64
GATE_DIM = 16    # d'
GATE_SINKS = 16  # S
GATE_EPS = 1e-6
BCE_CLAMP = 1e-7


# ---- which storage layers' caches a layer reads (docs/design.md, "The model family"'s table) ---------------------

def storage_layers(cfg):
    """The layers that store K/V (and have a gate), in increasing order."""
    return [i for i in range(cfg.n_layers) if ref.layer_stores_kv(cfg, i)]


def decisions(cfg):
    """Gate decisions per token of a storage layer: H_kv, or 1 for LRKV."""
    return 1 if cfg.lrkv_rank > 0 else cfg.n_kv_heads


def cache_sources(cfg, i):
    """The storage layers whose cache layer i attends to (a set; {i} for a storing layer)."""
    if ref.layer_stores_kv(cfg, i):
        return {i}
    n = cfg.n_storage
    if cfg.kv_sharing == "cla":
        return {i - 1}
    if cfg.kv_sharing == "yoco":
        return {n - 1}
    if cfg.kv_sharing == "fusedkv_lite":
        return {n - 1, 0}   # K of n-1, V of 0
    if cfg.kv_sharing == "fusedkv":
        return {0, n - 1}   # both fused layers
    raise ValueError(f"layer {i} of {cfg.kv_sharing} reads no cache")


# ---- KVzip targets -------------------------------------------------------------------------

def layer_kvzip(cfg, probs, P, Q):
    """probs [1, H, T, T] of one layer -> [M, P]: per KV head (LRKV: one row, all heads), the max
    over the repeated copy's queries and the G query heads of that KV head."""
    H = cfg.n_heads
    T = 2 * P + Q
    assert probs.shape == (1, H, T, T), probs.shape
    att = probs[0, :, P + Q:T, :P]                       # [H, P queries, P keys]
    per_head = att.amax(dim=1)                            # [H, P]: max over queries
    if cfg.lrkv_rank > 0:
        return per_head.amax(dim=0, keepdim=True)         # [1, P]
    G = H // cfg.n_kv_heads
    return per_head.view(cfg.n_kv_heads, G, P).amax(dim=1)  # [Hkv, P]


def kvzip_targets(cfg, params, tokens, P, Q):
    """tokens [2P + Q] (the full input). Returns (targets [n_storage, M, P], own [n_storage, M, P]
    (each storage layer's own attention only), capture of the forward)."""
    T = 2 * P + Q
    tokens = torch.as_tensor(tokens, dtype=torch.int64).view(1, T)
    cap = {}
    with torch.no_grad():
        ref.forward(cfg, params, tokens, capture=cap)
    store = storage_layers(cfg)
    M = decisions(cfg)
    targets = torch.zeros(len(store), M, P, dtype=DTYPE)
    own = torch.zeros(len(store), M, P, dtype=DTYPE)
    for i in range(cfg.n_layers):
        s = layer_kvzip(cfg, cap["attn_probs"][i], P, Q)
        for src in cache_sources(cfg, i):
            j = store.index(src)
            targets[j] = torch.maximum(targets[j], s)
        if i in store:
            own[store.index(i)] = s
    return targets, own, cap


# ---- the gate ------------------------------------------------------------------------------

def gate_prefix(layer):
    return f"gates.{layer}."


def gate_param_shapes(cfg):
    C, Hkv = cfg.d_model, cfg.n_kv_heads
    G = cfg.n_heads // Hkv
    D, S = GATE_DIM, GATE_SINKS
    shapes = {}
    for l in storage_layers(cfg):
        p = gate_prefix(l)
        shapes[p + "q_proj.weight"] = (Hkv * G * D, C)
        shapes[p + "q_proj.bias"] = (Hkv * G * D,)
        shapes[p + "k_proj.weight"] = (Hkv * D, C)
        shapes[p + "q_norm.weight"] = (D,)
        shapes[p + "k_norm.weight"] = (D,)
        shapes[p + "sinks"] = (Hkv, S, D)
        shapes[p + "bias"] = (Hkv, G)
    return shapes


def gate_head_scores(h, wq, bq, wk, qn, kn, sinks, bias):
    """h [n, C] -> per-KV-head scores [n, Hkv] (docs/design.md, "Fast KVzip gates")."""
    n = h.shape[0]
    Hkv, G = bias.shape
    D = qn.shape[0]
    q = ref.rmsnorm((h @ wq.T + bq).view(n, Hkv, G, D), qn, GATE_EPS)
    k = ref.rmsnorm((h @ wk.T).view(n, Hkv, D), kn, GATE_EPS)
    l_g = torch.einsum("nhgd,nhd->nhg", q, k) / math.sqrt(D) + bias[None]       # [n, Hkv, G]
    l_gs = torch.einsum("nhgd,hsd->nhgs", q, sinks) / math.sqrt(D)              # [n, Hkv, G, S]
    per_query = 1.0 / (1.0 + torch.exp(l_gs - l_g[..., None]).sum(dim=-1))       # [n, Hkv, G]
    return per_query.mean(dim=-1)


def gate_scores(cfg, gparams, layer, h):
    """Scores [n, M] of storage layer `layer`'s gate on h [n, C] (LRKV: max over its heads)."""
    p = gate_prefix(layer)
    s = gate_head_scores(h, gparams[p + "q_proj.weight"], gparams[p + "q_proj.bias"],
                         gparams[p + "k_proj.weight"], gparams[p + "q_norm.weight"],
                         gparams[p + "k_norm.weight"], gparams[p + "sinks"], gparams[p + "bias"])
    if cfg.lrkv_rank > 0:
        return s.amax(dim=1, keepdim=True)
    return s


def bce(score, target):
    """-mean(t log s + (1 - t) log(1 - s)), s clamped to [1e-7, 1 - 1e-7]."""
    s = score.clamp(BCE_CLAMP, 1.0 - BCE_CLAMP)
    return -(target * torch.log(s) + (1.0 - target) * torch.log(1.0 - s)).mean()


def gate_loss(cfg, gparams, hidden, targets):
    """hidden: per storage layer (gate order) h [P, C]; targets [n_storage, M, P].
    Returns (loss: sum over layers and heads of the token-mean BCE, scores [n_storage, P, M])."""
    store = storage_layers(cfg)
    total = torch.zeros((), dtype=DTYPE)
    scores = []
    for j, l in enumerate(store):
        s = gate_scores(cfg, gparams, l, hidden[j])              # [P, M]
        t = targets[j].T                                          # [P, M]
        total = total + sum(bce(s[:, m], t[:, m]) for m in range(s.shape[1]))
        scores.append(s)
    return total, torch.stack(scores)


def gate_loss_and_grads(cfg, gparams, hidden, targets):
    """Loss, scores and the gradient of every gate parameter (autograd, float64)."""
    return ref.value_and_grads(lambda p: gate_loss(cfg, p, hidden, targets), gparams)

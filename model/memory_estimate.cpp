// model/memory_estimate.cpp — closed-form byte counts of every allocation (model/memory_estimate.h).
// Each function mirrors one constructor's layout; the comments name the buffers it counts.
#include "model/memory_estimate.h"

#include <algorithm>
#include <limits>

#include "model/gates.h"
#include "model/kv_cache.h"
#include "model/kv_sharing.h"

namespace kvt {

namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// Saturating arithmetic: a config too large to count reads as "more than any machine has".
uint64_t add(uint64_t a, uint64_t b) { return a > kMax - b ? kMax : a + b; }
uint64_t mul(uint64_t a, uint64_t b) {
  uint64_t r = 0;
  return __builtin_mul_overflow(a, b, &r) ? kMax : r;
}
template <typename... Ts>
uint64_t mul(uint64_t a, uint64_t b, Ts... rest) {
  return mul(mul(a, b), static_cast<uint64_t>(rest)...);
}
// An arena slot of n floats, rounded up to 16 floats (64 bytes) as the arenas carve them.
uint64_t slot(uint64_t n) { return n > kMax - 15 ? kMax : (n + 15) / 16 * 16; }

ModelConfig resolved(const ModelConfig& cfg) {
  ModelConfig c = cfg;
  c.resolve();
  return c;
}

// Whether another layer reads layer l's K or V. In every scheme a reusing layer reads either
// its predecessor (cla) or the same storage layers as every other reusing layer (yoco,
// fusedkv_lite, fusedkv), so probing layer l + 1 and the last layer decides it in O(1); the test
// checks this against has_kv_consumers for every scheme.
bool has_consumers(const ModelConfig& cfg, int l) {
  auto reads = [&](int i) {
    if (i <= l || i >= cfg.n_layers) return false;
    const KvSource s = kv_source_of_layer(cfg, i);
    return s.kind != KvSource::Kind::own && (s.k_layer == l || s.v_layer == l);
  };
  return reads(l + 1) || reads(cfg.n_layers - 1);
}

// Columns of layer l's input projection (Transformer's qkv[l]) and the K/V floats per position
// it stores in the inference cache.
struct LayerShape {
  uint64_t proj = 0, cache_width = 0;
  bool own_kv_buffer = false;  // fused or LRKV: K|V [N, 2 Hkv D] of its own
  bool dedicated_grad = false;  // a storage layer others read: its own dqkv buffer
};
LayerShape layer_shape(const ModelConfig& c, int l) {
  const uint64_t H = c.n_heads, Hkv = c.kv_heads(), D = c.head_dim(), R = c.lrkv_rank;
  const KvSource src = kv_source_of_layer(c, l);
  LayerShape s;
  if (c.lrkv()) {
    s.cache_width = add(2 * D, mul(2, H, R));
    s.proj = add(H * D, s.cache_width);
  } else if (src.kind == KvSource::Kind::own) {
    s.cache_width = 2 * Hkv * D;
    s.proj = add(H * D, s.cache_width);
  } else {
    s.proj = H * D;
  }
  s.own_kv_buffer = c.lrkv() || src.kind == KvSource::Kind::fused;
  s.dedicated_grad = src.kind == KvSource::Kind::own && has_consumers(c, l);
  return s;
}

// Positions the KV cache allocates per (layer, head): max_seq_len rounded up to whole blocks
// (model/kv_cache.h, KvCache::kBlock).
uint64_t cache_slots(const ModelConfig& c) {
  const uint64_t B = KvCache::kBlock;
  return (static_cast<uint64_t>(c.max_seq_len) + B - 1) / B * B;
}

int default_chunk(const ModelConfig& c, int chunk) {
  return chunk > 0 ? std::min(chunk, c.max_seq_len) : std::min(c.max_seq_len, 256);
}

}  // namespace

uint64_t parameter_count(const ModelConfig& cfg) {
  const ModelConfig c = resolved(cfg);
  const uint64_t C = c.d_model, V = c.vocab_size, D = c.head_dim(), H = c.n_heads,
                 Hkv = c.kv_heads(), F = c.ffn_dim(), R = c.lrkv_rank;
  // embed_tokens [V, C], model.norm [C], lm_head [V, C] when untied.
  uint64_t n = add(mul(V, C), C);
  if (!c.tie_embeddings) n = add(n, mul(V, C));
  for (int l = 0; l < c.n_layers; l++) {
    const KvSource src = kv_source_of_layer(c, l);
    // two norms [C], q_proj [HD, C], o_proj [C, HD], gate/up/down [F, C] each
    uint64_t layer = add(add(2 * C, mul(2, H * D, C)), mul(3, F, C));
    if (c.lrkv())  // k/v_shared [D, C], k/v_down [HR, C], k/v_up [H, D, R]
      layer = add(layer, add(mul(2, D, C), add(mul(2, H * R, C), mul(2, H * D, R))));
    else if (src.kind == KvSource::Kind::own)  // k_proj, v_proj [Hkv D, C]
      layer = add(layer, mul(2, Hkv * D, C));
    else if (src.kind == KvSource::Kind::fused)  // fuse_k_{first,last} [Hkv, D/2], fuse_v_* [Hkv, D]
      layer = add(layer, add(mul(2, Hkv, D / 2), mul(2, Hkv, D)));
    n = add(n, layer);
  }
  return n;
}

uint64_t gate_parameter_count(const ModelConfig& cfg) {
  const ModelConfig c = resolved(cfg);
  const uint64_t C = c.d_model, Hkv = c.kv_heads(), G = c.n_heads / c.kv_heads(), Dg = kGateDim,
                 S = kGateSinks;
  // q_proj [Hkv G d', C] + bias [Hkv G d'], k_proj [Hkv d', C], two norms [d'], sinks
  // [Hkv, S, d'], bias [Hkv, G]
  const uint64_t per = add(add(mul(Hkv * G * Dg, C + 1), mul(Hkv * Dg, C)), 2 * Dg + Hkv * S * Dg + Hkv * G);
  return mul(static_cast<uint64_t>(storage_layer_count(c)), per);
}

uint64_t transformer_activation_bytes(const ModelConfig& cfg, int64_t B, int64_t T, bool with_grads,
                                      Recompute recompute, bool attention_probs) {
  const ModelConfig c = resolved(cfg);
  const uint64_t N = mul(static_cast<uint64_t>(B), static_cast<uint64_t>(T)), C = c.d_model,
                 H = c.n_heads, Hkv = c.kv_heads(), D = c.head_dim(), F = c.ffn_dim(),
                 V = c.vocab_size, L = c.n_layers;
  const uint64_t nc = slot(mul(N, C)), kv = slot(mul(N, 2 * Hkv * D));
  // att: [B, H, T, T] probabilities or [B, H, T] statistics (Ops::attention_saved_floats)
  const uint64_t att = slot(attention_probs ? mul(static_cast<uint64_t>(B), H, static_cast<uint64_t>(T),
                                                  static_cast<uint64_t>(T))
                                            : mul(static_cast<uint64_t>(B), H, static_cast<uint64_t>(T)));
  const bool share_att = recompute != Recompute::none, block = recompute == Recompute::block;
  // What a block's forward writes besides qkv and att: res_mid, ln1, ln2 [N, C]; rstd1, rstd2
  // [N]; atty [N, HD]; gate_up [N, 2F]; swi [N, F] (kept per layer, or one set with block)
  const uint64_t block_rest = add(add(mul(3, nc), mul(2, slot(N))),
                                  add(slot(mul(N, H * D)), add(slot(mul(N, 2 * F)), slot(mul(N, F)))));
  // res[0..L] [N, C]
  uint64_t floats = mul(L + 1, nc);
  uint64_t max_proj = 0;
  bool any_own_kv = false;
  for (int l = 0; l < c.n_layers; l++) {
    const LayerShape s = layer_shape(c, l);
    uint64_t layer = 0;
    if (!block) layer = add(block_rest, s.own_kv_buffer ? kv : 0);  // + kv [N, 2 Hkv D] (fused, LRKV)
    if (!block || s.dedicated_grad) layer = add(layer, slot(mul(N, s.proj)));  // qkv [N, proj]
    if (!share_att) layer = add(layer, att);
    if (with_grads && s.dedicated_grad) layer = add(layer, slot(mul(N, s.proj)));  // dqkv_storage
    floats = add(floats, layer);
    max_proj = std::max(max_proj, s.proj);
    any_own_kv = any_own_kv || s.own_kv_buffer;
  }
  // the shared set: att (attention, block); the block's buffers, qkv [N, max proj], kv (block)
  if (share_att) floats = add(floats, att);
  if (block) floats = add(floats, add(add(block_rest, slot(mul(N, max_proj))), any_own_kv ? kv : 0));
  // lnf, tmp [N, C]; rstdf, losses [N]; loss [1]; logits [N, V]; RoPE cos, sin [max_seq_len, D/2]
  floats = add(floats, add(add(mul(2, nc), mul(2, slot(N))), slot(1)));
  floats = add(floats, add(slot(mul(N, V)), mul(2, slot(mul(static_cast<uint64_t>(c.max_seq_len), D / 2)))));
  if (with_grads) {
    // dres, dln [N, C]; dqkv [N, max proj]; dkv; datty [N, HD]; dgate_up [N, 2F]; dswi [N, F]
    floats = add(floats, add(mul(2, nc), slot(mul(N, max_proj))));
    if (any_own_kv) floats = add(floats, kv);
    floats = add(floats, add(slot(mul(N, H * D)), add(slot(mul(N, 2 * F)), slot(mul(N, F)))));
  }
  return add(mul(floats, sizeof(float)), mul(2, N, sizeof(int32_t)));  // + inputs, targets
}

uint64_t inference_cache_bytes(const ModelConfig& cfg) {
  const ModelConfig c = resolved(cfg);
  uint64_t per_pos = 0;
  for (int l = 0; l < c.n_layers; l++) per_pos = add(per_pos, layer_shape(c, l).cache_width);
  return mul(per_pos, cache_slots(c), sizeof(float));
}

uint64_t inference_working_bytes(const ModelConfig& cfg, int chunk) {
  const ModelConfig c = resolved(cfg);
  const uint64_t N = default_chunk(c, chunk), T = c.max_seq_len, C = c.d_model, H = c.n_heads,
                 D = c.head_dim(), F = c.ffn_dim(), V = c.vocab_size,
                 heads_read = c.lrkv() ? H : static_cast<uint64_t>(c.kv_heads());
  bool scratch = c.lrkv();
  uint64_t max_proj = 0;
  for (int l = 0; l < c.n_layers; l++) {
    const KvSource src = kv_source_of_layer(c, l);
    scratch = scratch || src.kind == KvSource::Kind::fused ||
              (src.kind == KvSource::Kind::reuse && src.k_layer != src.v_layer);
    max_proj = std::max(max_proj, layer_shape(c, l).proj);
  }
  // x, ln, tmp [N, C]; rstd [N]; qkv [N, max proj]; atty, one head's output [N, HD]; scores [T];
  // gate_up [N, 2F]; swi [N, F]; logits [N, V]; gathered or rebuilt K|V scratch
  // [heads read, T, 2D] (K and V from two layers, fused, LRKV); RoPE cos, sin [T, D/2]
  uint64_t floats = add(mul(3, slot(mul(N, C))), slot(N));
  floats = add(floats, add(slot(mul(N, max_proj)), mul(2, slot(mul(N, H * D)))));
  floats = add(floats, add(slot(T), add(slot(mul(N, 2 * F)), slot(mul(N, F)))));
  floats = add(floats, add(slot(mul(N, V)), mul(2, slot(mul(T, D / 2)))));
  if (scratch) floats = add(floats, slot(mul(heads_read, T, 2 * D)));
  // token ids [N] and visible positions [heads read, T] (int32, backend); host: one head's
  // positions and scores [T] and the keep flags (uint8 per layer, mask head and position)
  const uint64_t ids = add(mul(N, sizeof(int32_t)), mul(heads_read, T, sizeof(int32_t)));
  const uint64_t host = mul(2, T, sizeof(float));
  const uint64_t mask_heads = c.lrkv() ? 1 : c.kv_heads();
  const uint64_t keep = mul(static_cast<uint64_t>(c.n_layers), mask_heads, T);
  return add(add(mul(floats, sizeof(float)), ids), add(host, keep));
}

uint64_t gate_activation_bytes(const ModelConfig& cfg, int64_t max_tokens) {
  const ModelConfig c = resolved(cfg);
  const uint64_t N = static_cast<uint64_t>(max_tokens), Hkv = c.kv_heads(), G = c.n_heads / c.kv_heads(),
                 QW = Hkv * G * kGateDim, KW = Hkv * kGateDim;
  // q, qn, dqn, dq [N, QW]; k, kn, dkn, dk [N, KW]; qrstd [N, Hkv G]; krstd, score, dscore [N, Hkv]
  return mul(N, 4 * QW + 4 * KW + Hkv * G + 3 * Hkv, sizeof(float));
}

// ---- per command ------------------------------------------------------------------------------

uint64_t MemoryEstimate::total() const {
  return add(add(add(params, grads), add(optimizer, kv_cache)), add(activations, host_copies));
}

MemoryEstimate estimate_bench_memory(const ModelConfig& cfg, int64_t B, int64_t T) {
  const uint64_t P = mul(parameter_count(cfg), sizeof(float));
  MemoryEstimate e;
  e.what = "bench";
  e.params = P;
  e.grads = P;
  e.optimizer = mul(2, P);  // AdamW m, v
  e.optimizer_name = "AdamW";
  e.activations = transformer_activation_bytes(cfg, B, T, true);
  e.batch = B;
  e.seq = T;
  return e;
}

MemoryEstimate estimate_train_memory(const ModelConfig& cfg, int64_t B, int64_t T) {
  MemoryEstimate e = estimate_bench_memory(cfg, B, T);
  e.what = "train";
  e.host_copies = mul(3, e.params);  // a checkpoint write (or resume) holds params, m, v on the host
  return e;
}

MemoryEstimate estimate_gates_memory(const ModelConfig& cfg, int context, int prompt_tokens,
                                     bool adamw, bool with_cache) {
  const ModelConfig c = resolved(cfg);
  const uint64_t P = mul(parameter_count(c), sizeof(float)), Gp = mul(gate_parameter_count(c), sizeof(float));
  const uint64_t S = storage_layer_count(c), M = gate_decisions(c), ctx = static_cast<uint64_t>(context);
  const int64_t T = 2 * static_cast<int64_t>(context) + prompt_tokens;
  MemoryEstimate e;
  e.what = "gates";
  e.params = add(P, Gp);
  e.grads = Gp;
  e.optimizer = adamw ? mul(2, Gp) : Gp;
  e.optimizer_name = adamw ? "AdamW" : "SGD momentum";
  // frozen forward [1, T], gate arena [context], KVzip layer scores [M, context], cached hidden
  // states [S, context, C]
  e.activations = add(transformer_activation_bytes(c, 1, T, false), gate_activation_bytes(c, context));
  e.activations = add(e.activations, mul(M, ctx, sizeof(float)));
  const uint64_t hidden = with_cache ? mul(S, ctx, static_cast<uint64_t>(c.d_model), sizeof(float)) : 0;
  e.activations = add(e.activations, hidden);
  // host: the frozen weights, scores and targets [S, M, context], the cached hidden states read
  // back, and a gate checkpoint (params, two moments)
  e.host_copies = add(add(P, mul(2, S, M, ctx, sizeof(float))), add(hidden, mul(3, Gp)));
  e.batch = 1;
  e.seq = T;
  return e;
}

MemoryEstimate estimate_generate_memory(const ModelConfig& cfg) {
  const ModelConfig c = resolved(cfg);
  const uint64_t P = mul(parameter_count(c), sizeof(float));
  MemoryEstimate e;
  e.what = "generate";
  e.params = P;       // uploaded copy owned by the InferenceModel
  e.host_copies = P;  // the checkpoint's weights, read first
  e.kv_cache = inference_cache_bytes(c);
  e.activations = inference_working_bytes(c, 0);
  e.batch = 1;
  e.seq = default_chunk(c, 0);
  return e;
}

MemoryEstimate estimate_eval_memory(const ModelConfig& cfg, int oracle_T, int chunk, bool with_gates) {
  const ModelConfig c = resolved(cfg);
  const uint64_t P = mul(parameter_count(c), sizeof(float));
  const int n = default_chunk(c, chunk);
  MemoryEstimate e;
  e.what = "eval";
  e.params = P;
  e.host_copies = P;
  e.kv_cache = inference_cache_bytes(c);
  // the InferenceModel's chunk and, with the oracle (KVzip input of oracle_T = 2 P + prompt
  // tokens), the gate inputs it copies out [storage layers, P, C] (P <= oracle_T / 2)
  e.activations = inference_working_bytes(c, n);
  if (oracle_T > 0)
    e.activations = add(e.activations, mul(static_cast<uint64_t>(storage_layer_count(c)),
                                           static_cast<uint64_t>(oracle_T / 2), mul(c.d_model, sizeof(float))));
  if (with_gates) {
    const uint64_t Gp = mul(gate_parameter_count(c), sizeof(float));
    e.params = add(e.params, Gp);
    e.host_copies = add(e.host_copies, Gp);
    e.activations = add(e.activations, gate_activation_bytes(c, n));
  }
  // the host logits of one chunk (the tasks read them chunk by chunk)
  e.host_copies = add(e.host_copies, mul(static_cast<uint64_t>(n), static_cast<uint64_t>(c.vocab_size), sizeof(float)));
  e.batch = 1;
  e.seq = std::max(oracle_T, n);
  return e;
}

}  // namespace kvt

// model/transformer.cpp — LLaMA-style decoder: parameter table, init, forward and backward.
//
// One block (pre-norm), x = residual stream [N, C], N = B*T:
//   a = RMSNorm(x) ; [q|k|v] = a [Wq;Wk;Wv]^T ; q, k = RoPE(q, k) ; y = Attn(q, k, v)
//   m = x + y Wo^T
//   b = RMSNorm(m) ; [g|u] = b [Wg;Wu]^T ; x' = m + (silu(g) * u) Wd^T
// Wq, Wk, Wv are consecutive in the parameter table, so they are one [(H+2Hkv)D, C] matrix and
// one sgemm; likewise Wg, Wu as one [2F, C] matrix.
//
// Where K and V come from is the per-layer map of model/kv_sharing.h; the block above is the
// `own` case. The attention step of layer i, for each kind of source:
//   own (MHA/GQA):  [q|k|v] = a [Wq;Wk;Wv]^T, q, k = RoPE(q, k)             (as above)
//   own (LRKV):     [q|ks|vs|zk|zv] = a [Wq;Wk_sh;Wv_sh;Uk;Uv]^T, one sgemm;
//                   K_h = ks + zk_h B^K_h^T, V_h = vs + zv_h B^V_h^T; q, K = RoPE(q, K)
//   reuse:          q = RoPE(a Wq^T); K, V = post-RoPE K of layer k_layer, V of layer v_layer
//   fused:          q as reuse; K = a_first ⊙ K_first + a_last ⊙ K_last, V likewise (b weights)
// Backward runs from layer L-1 down, so every consumer of a storage layer finishes first and
// adds its dK/dV into that layer's own gradient buffer (dedicated per storage layer with
// consumers, zeroed at the start of backward); the storage layer's attention backward adds onto
// the sum and RoPE backward runs once, on the total.
//
// Recomputation (model/recompute.h): the per-layer activation pointers below may alias one shared
// buffer. attention: every layer's `att` is one buffer, refilled in backward by re-running that
// layer's attention_forward. block: only res[0..L] and the qkv of storage layers other layers
// read are per layer; everything else is one set of buffers, refilled in backward by re-running
// the block's forward from res[l]. The re-runs compute bitwise what the forward computed.
#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/common/rng.h"
#include "model/kv_sharing.h"

namespace kvt {

namespace {
std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + "."; }
}  // namespace

ParamTable build_param_table(const ModelConfig& cfg_in, bool decay_embeddings) {
  ModelConfig cfg = cfg_in;
  cfg.resolve();
  const int64_t C = cfg.d_model, V = cfg.vocab_size, D = cfg.head_dim(), H = cfg.n_heads,
                Hkv = cfg.kv_heads(), F = cfg.ffn_dim(), R = cfg.lrkv_rank;
  ParamTable t;
  t.add("model.embed_tokens.weight", {V, C}, decay_embeddings);
  for (int l = 0; l < cfg.n_layers; l++) {
    const std::string p = layer_prefix(l);
    const KvSource src = kv_source_of_layer(cfg, l);
    t.add(p + "input_layernorm.weight", {C}, false);
    t.add(p + "self_attn.q_proj.weight", {H * D, C}, true);
    if (cfg.lrkv()) {  // q, k_shared, v_shared, k_down, v_down: one [HD + 2D + 2HR, C] matrix
      t.add(p + "self_attn.k_shared.weight", {D, C}, true);
      t.add(p + "self_attn.v_shared.weight", {D, C}, true);
      t.add(p + "self_attn.k_down.weight", {H * R, C}, true);
      t.add(p + "self_attn.v_down.weight", {H * R, C}, true);
      t.add(p + "self_attn.k_up.weight", {H, D, R}, true);
      t.add(p + "self_attn.v_up.weight", {H, D, R}, true);
    } else if (src.kind == KvSource::Kind::own) {
      t.add(p + "self_attn.k_proj.weight", {Hkv * D, C}, true);
      t.add(p + "self_attn.v_proj.weight", {Hkv * D, C}, true);
    } else if (src.kind == KvSource::Kind::fused) {  // no weight decay on fusion weights
      t.add(p + "self_attn.fuse_k_first", {Hkv, D / 2}, false);
      t.add(p + "self_attn.fuse_k_last", {Hkv, D / 2}, false);
      t.add(p + "self_attn.fuse_v_first", {Hkv, D}, false);
      t.add(p + "self_attn.fuse_v_last", {Hkv, D}, false);
    }
    t.add(p + "self_attn.o_proj.weight", {C, H * D}, true);
    t.add(p + "post_attention_layernorm.weight", {C}, false);
    t.add(p + "mlp.gate_proj.weight", {F, C}, true);
    t.add(p + "mlp.up_proj.weight", {F, C}, true);
    t.add(p + "mlp.down_proj.weight", {C, F}, true);
  }
  t.add("model.norm.weight", {C}, false);
  if (!cfg.tie_embeddings) t.add("lm_head.weight", {V, C}, decay_embeddings);
  return t;
}

double train_flops_per_token(const ModelConfig& cfg_in, int T) {
  ModelConfig cfg = cfg_in;
  cfg.resolve();
  const double C = cfg.d_model, D = cfg.head_dim(), H = cfg.n_heads, Hkv = cfg.kv_heads(),
               F = cfg.ffn_dim(), V = cfg.vocab_size, L = cfg.n_layers, R = cfg.lrkv_rank;
  // Multiply-accumulates per token of each layer's matmuls. A reusing layer has only its q
  // projection (FusedKV's fusion is element-wise: not counted); LRKV adds its shared and down
  // projections and the expansion z_h B_h^T (H D R each for K and V).
  double n_matmul = V * C;
  for (int l = 0; l < cfg.n_layers; l++) {
    const KvSource src = kv_source_of_layer(cfg, l);
    double kv = 0;
    if (cfg.lrkv()) kv = 2 * C * D + 2 * C * H * R + 2 * H * D * R;
    else if (src.kind == KvSource::Kind::own) kv = C * 2 * Hkv * D;
    n_matmul += C * H * D + kv + H * D * C + 3 * C * F;
  }
  return 6.0 * n_matmul + 12.0 * L * H * D * T;
}

// How one layer's attention reads and writes its q, K, V (fixed at construction; row strides
// do not depend on the batch shape).
struct LayerAttn {
  KvSource src;
  int proj = 0;                       // columns of the input projection output qkv[l]
  const float* k = nullptr;           // post-RoPE K the attention reads, row stride ldk
  const float* v = nullptr;           // V, row stride ldv
  int ldk = 0, ldv = 0;
  float* dproj = nullptr;             // gradient of qkv[l]: dedicated or the shared scratch
  bool dproj_dedicated = false;       // storage layer with consumers: zeroed once per backward
  float* dk = nullptr;                // where this layer's attention backward adds dK (ldk)
  float* dv = nullptr;                // ... and dV (ldv)
};

struct Transformer::Acts {
  // forward, per layer
  std::vector<float*> res;            // L+1 residual streams [N, C]; res[0] = embeddings
  std::vector<float*> res_mid;        // [N, C] after attention
  std::vector<float*> ln1, ln2;       // [N, C]
  std::vector<float*> rstd1, rstd2;   // [N]
  std::vector<float*> qkv;            // [N, proj] input projection, q and own k after RoPE
  std::vector<float*> kv;             // [N, 2 Hkv D] K|V of fused and LRKV layers (else null)
  std::vector<float*> att;            // attention_saved_floats(B, H, T): [B, H, T, T] or [B, H, T]
  std::vector<float*> atty;           // [N, H D]
  std::vector<float*> gate_up;        // [N, 2F]
  std::vector<float*> swi;            // [N, F]
  float *lnf, *rstdf, *logits, *losses, *tmp;
  float* loss;                        // [1] sum of weight * mean loss (forward_train)
  // backward scratch, shared by all layers (dkv: fused and LRKV layers' dK|dV)
  float *dres, *dln, *dqkv, *dkv, *datty, *dgate_up, *dswi;
  std::vector<float*> dqkv_storage;   // per layer: dedicated dqkv of storage layers with consumers
  // tokens and RoPE tables in backend memory
  int32_t *inputs, *targets;
  float *rope_cos, *rope_sin;
  Buffer<float> arena;
  Buffer<int32_t> tokens;
  std::vector<LayerPlan> layers;
  std::vector<LayerAttn> attn;
  size_t wte, normf, head;
};

Transformer::Transformer(const ModelConfig& cfg, Ops& ops, int B, int T, bool with_grads,
                         bool decay_embeddings, Recompute recompute)
    : cfg_(cfg), ops_(ops), B_(B), T_(T), with_grads_(with_grads), recompute_(recompute) {
  cfg_.resolve();
  if (B < 1 || T < 1) throw std::invalid_argument("batch and sequence length must be >= 1");
  if (T > cfg_.max_seq_len)
    throw std::invalid_argument("sequence length " + std::to_string(T) + " exceeds model.max_seq_len " +
                                std::to_string(cfg_.max_seq_len));
  table_ = build_param_table(cfg_, decay_embeddings);
  params_ = Buffer<float>(ops_, table_.total());
  if (with_grads_) grads_ = Buffer<float>(ops_, table_.total());
  alloc_activations();
  upload_rope_tables(ops_, cfg_, acts_->rope_cos, acts_->rope_sin);
  ops_.set_weights(params_.data(), table_.total());  // bf16: GEMMs read its copy
}

// The registration must not outlive the buffer (a later allocation at the same address would
// read a stale copy); another model on the same ops registers itself again when it is built.
Transformer::~Transformer() { ops_.set_weights(nullptr, 0); }

void Transformer::alloc_activations() {
  acts_ = std::make_unique<Acts>();
  Acts& a = *acts_;
  const int64_t N = static_cast<int64_t>(B_) * T_, C = cfg_.d_model, L = cfg_.n_layers,
                H = cfg_.n_heads, Hkv = cfg_.kv_heads(), D = cfg_.head_dim(),
                F = cfg_.ffn_dim(), V = cfg_.vocab_size;
  const int64_t att = static_cast<int64_t>(ops_.attention_saved_floats(B_, static_cast<int>(H), T_));
  const int64_t half = D / 2;
  const bool share_att = recompute_ != Recompute::none, block = recompute_ == Recompute::block;

  // Columns of each layer's input projection, and which layers need K|V buffers of their own.
  a.layers = build_layer_plan(table_, cfg_);
  std::vector<int64_t> proj(L);
  std::vector<bool> own_kv(L), dedicated(L);
  int64_t max_proj = 0;
  bool any_own_kv = false;
  a.attn.resize(L);
  for (int l = 0; l < L; l++) {
    const KvSource src = a.layers[l].src;
    a.attn[l].src = src;
    proj[l] = a.layers[l].proj;
    own_kv[l] = cfg_.lrkv() || src.kind == KvSource::Kind::fused;
    any_own_kv = any_own_kv || own_kv[l];
    dedicated[l] = src.kind == KvSource::Kind::own && has_kv_consumers(cfg_, l);
    max_proj = std::max(max_proj, proj[l]);
  }

  // Lay out every activation in one arena: first count, then carve. Per-layer slots, then the
  // shared ones of the recompute mode (assigned to every layer after carving).
  Arena arena;
  auto take = [&](float*& dst, int64_t n) { arena.take(dst, n); };
  a.res.resize(L + 1);
  for (auto& p : a.res) take(p, N * C);
  a.res_mid.resize(L); a.ln1.resize(L); a.ln2.resize(L); a.rstd1.resize(L); a.rstd2.resize(L);
  a.qkv.assign(L, nullptr); a.kv.assign(L, nullptr); a.att.resize(L); a.atty.resize(L);
  a.gate_up.resize(L); a.swi.resize(L); a.dqkv_storage.assign(L, nullptr);
  for (int64_t l = 0; l < L; l++) {
    if (!block) {
      take(a.res_mid[l], N * C);
      take(a.ln1[l], N * C);
      take(a.ln2[l], N * C);
      take(a.rstd1[l], N);
      take(a.rstd2[l], N);
    }
    if (!block || dedicated[l]) take(a.qkv[l], N * proj[l]);  // block: the K/V others read
    if (!block && own_kv[l]) take(a.kv[l], N * 2 * Hkv * D);
    if (!share_att) take(a.att[l], att);
    if (!block) {
      take(a.atty[l], N * H * D);
      take(a.gate_up[l], N * 2 * F);
      take(a.swi[l], N * F);
    }
  }
  struct {
    float *res_mid, *ln1, *ln2, *rstd1, *rstd2, *qkv, *kv, *att, *atty, *gate_up, *swi;
  } sh{};
  if (share_att) take(sh.att, att);
  if (block) {
    take(sh.res_mid, N * C);
    take(sh.ln1, N * C);
    take(sh.ln2, N * C);
    take(sh.rstd1, N);
    take(sh.rstd2, N);
    take(sh.qkv, N * max_proj);
    if (any_own_kv) take(sh.kv, N * 2 * Hkv * D);
    take(sh.atty, N * H * D);
    take(sh.gate_up, N * 2 * F);
    take(sh.swi, N * F);
  }
  take(a.lnf, N * C);
  take(a.rstdf, N);
  take(a.logits, N * V);
  take(a.losses, N);
  take(a.loss, 1);
  take(a.tmp, N * C);
  take(a.rope_cos, static_cast<int64_t>(cfg_.max_seq_len) * half);
  take(a.rope_sin, static_cast<int64_t>(cfg_.max_seq_len) * half);
  a.dkv = nullptr;
  if (with_grads_) {
    take(a.dres, N * C);
    take(a.dln, N * C);
    take(a.dqkv, N * max_proj);
    if (any_own_kv) take(a.dkv, N * 2 * Hkv * D);
    take(a.datty, N * H * D);
    take(a.dgate_up, N * 2 * F);
    take(a.dswi, N * F);
    for (int64_t l = 0; l < L; l++)
      if (dedicated[l]) take(a.dqkv_storage[l], N * proj[l]);
  }
  a.arena = arena.carve(ops_);
  for (int64_t l = 0; l < L; l++) {
    if (share_att) a.att[l] = sh.att;
    if (!block) continue;
    a.res_mid[l] = sh.res_mid; a.ln1[l] = sh.ln1; a.ln2[l] = sh.ln2;
    a.rstd1[l] = sh.rstd1; a.rstd2[l] = sh.rstd2;
    if (!dedicated[l]) a.qkv[l] = sh.qkv;
    if (own_kv[l]) a.kv[l] = sh.kv;
    a.atty[l] = sh.atty; a.gate_up[l] = sh.gate_up; a.swi[l] = sh.swi;
  }
  a.tokens = Buffer<int32_t>(ops_, static_cast<size_t>(2 * N));
  a.inputs = a.tokens.data();
  a.targets = a.tokens.data() + N;

  // Where each layer's attention reads K/V and adds dK/dV (the sharing map made concrete).
  for (int l = 0; l < L; l++) {
    LayerAttn& la = a.attn[l];
    la.proj = static_cast<int>(proj[l]);
    la.dproj_dedicated = dedicated[l];
    la.dproj = dedicated[l] ? a.dqkv_storage[l] : a.dqkv;
  }
  for (int l = 0; l < L; l++) {
    LayerAttn& la = a.attn[l];
    if (own_kv[l]) {  // LRKV or fused: K|V [N, 2 Hkv D] of the layer's own
      la.k = a.kv[l];
      la.v = a.kv[l] + Hkv * D;
      la.ldk = la.ldv = static_cast<int>(2 * Hkv * D);
      la.dk = a.dkv;
      la.dv = a.dkv ? a.dkv + Hkv * D : nullptr;
    } else {  // own MHA/GQA projection, or another layer's (reuse): columns of its qkv
      const int kl = la.src.kind == KvSource::Kind::reuse ? la.src.k_layer : l;
      const int vl = la.src.kind == KvSource::Kind::reuse ? la.src.v_layer : l;
      la.k = a.qkv[kl] + H * D;
      la.v = a.qkv[vl] + (H + Hkv) * D;
      la.ldk = a.attn[kl].proj;
      la.ldv = a.attn[vl].proj;
      la.dk = with_grads_ ? a.attn[kl].dproj + H * D : nullptr;
      la.dv = with_grads_ ? a.attn[vl].dproj + (H + Hkv) * D : nullptr;
    }
  }

  // Parameter offsets of the embedding, final norm and head (the layers' are in the plan).
  a.wte = table_.find("model.embed_tokens.weight").offset;
  a.normf = table_.find("model.norm.weight").offset;
  a.head = cfg_.tie_embeddings ? a.wte : table_.find("lm_head.weight").offset;
}

size_t Transformer::activation_bytes() const {
  return acts_->arena.bytes() + acts_->tokens.bytes();
}

void Transformer::init_parameters(uint64_t seed) {
  Rng rng(derive_seed(seed, /*purpose: init*/ 1));
  std::vector<float> host(table_.total());
  const double std_proj = cfg_.init_std / std::sqrt(2.0 * cfg_.n_layers);
  const bool lite = cfg_.fusion_init == "lite";
  auto has = [](const std::string& name, const char* part) {
    return name.find(part) != std::string::npos;
  };
  for (const auto& e : table_.entries()) {
    float* p = host.data() + e.offset;
    if (has(e.name, "self_attn.fuse_")) {
      // FusedKV weights: N(0, 1), or lite: K from the last storage layer, V from the first.
      const bool one = has(e.name, "fuse_k_last") || has(e.name, "fuse_v_first");
      for (size_t i = 0; i < e.numel; i++)
        p[i] = lite ? (one ? 1.0f : 0.0f) : static_cast<float>(rng.normal());
      continue;
    }
    const bool is_norm = has(e.name, "norm");
    const bool is_out = has(e.name, "o_proj") || has(e.name, "down_proj");
    double sd = is_out ? std_proj : cfg_.init_std;
    // LRKV's B_h ~ N(0, (0.1 / sqrt(r))^2): the residual starts at ~0.1 of W_shared.
    if (has(e.name, "self_attn.k_up") || has(e.name, "self_attn.v_up"))
      sd = 0.1 / std::sqrt(static_cast<double>(cfg_.lrkv_rank));
    for (size_t i = 0; i < e.numel; i++) p[i] = is_norm ? 1.0f : static_cast<float>(sd * rng.normal());
  }
  params_from_host(host);
}

std::vector<float> Transformer::params_to_host() const {
  std::vector<float> h(table_.total());
  ops_.to_host(h.data(), params_.data(), params_.bytes());
  return h;
}

void Transformer::params_from_host(const std::vector<float>& host) {
  if (host.size() != table_.total())
    throw std::invalid_argument("parameter vector has " + std::to_string(host.size()) +
                                " values, the model needs " + std::to_string(table_.total()));
  ops_.to_device(params_.data(), host.data(), params_.bytes());
  ops_.refresh_weights();
}

void Transformer::weights_updated() { ops_.refresh_weights(); }

std::vector<float> Transformer::grads_to_host() const {
  if (!with_grads_) throw std::logic_error("model was built without gradients");
  std::vector<float> h(table_.total());
  ops_.to_host(h.data(), grads_.data(), grads_.bytes());
  return h;
}

void Transformer::zero_grads() {
  if (with_grads_) ops_.zero(grads_.data(), grads_.bytes());
}

void Transformer::check_shape(const int32_t* inputs, const int32_t* targets, int B, int T) const {
  if (B < 1 || B > B_ || T < 1 || T > T_)
    throw std::invalid_argument("forward shape [" + std::to_string(B) + ", " + std::to_string(T) +
                                "] exceeds the model's buffers [" + std::to_string(B_) + ", " +
                                std::to_string(T_) + "]");
  const int V = cfg_.vocab_size;
  const int64_t N = static_cast<int64_t>(B) * T;
  for (int64_t i = 0; i < N; i++)
    if (inputs[i] < 0 || inputs[i] >= V || (targets && (targets[i] < 0 || targets[i] >= V)))
      throw std::out_of_range("token id out of range [0, " + std::to_string(V) + ") at position " +
                              std::to_string(i));
}

// Layer l: res[l] -> res[l + 1] (full), or up to swi[l] (the re-run of recompute block).
void Transformer::block_forward(int l, int B, int T, bool full) {
  Acts& a = *acts_;
  const int64_t N = static_cast<int64_t>(B) * T;
  const int C = cfg_.d_model, H = cfg_.n_heads, Hkv = cfg_.kv_heads(), D = cfg_.head_dim(),
            R = cfg_.lrkv_rank, F = cfg_.ffn_dim();
  const float* P = params_.data();
  const LayerPlan& lp = a.layers[l];
  const LayerAttn& la = a.attn[l];
  const int PROJ = la.proj;
  float* qkv = a.qkv[l];
  ops_.rmsnorm_forward(a.ln1[l], a.rstd1[l], a.res[l], P + lp.ln1, N, C, cfg_.norm_eps);
  ops_.matmul_forward(qkv, a.ln1[l], P + lp.q, N, C, PROJ);
  ops_.rope_forward(qkv, PROJ, B, T, H, D, 0, a.rope_cos, a.rope_sin);
  if (cfg_.lrkv()) {
    // qkv = [q | ks | vs | zk | zv]; K|V = shared + per-head low rank, then RoPE on K.
    const float* ks = qkv + H * D;
    const float* zk = ks + 2 * D;
    ops_.lrkv_expand_forward(a.kv[l], 2 * H * D, ks, PROJ, zk, PROJ, P + lp.k_up, N, H, D, R);
    ops_.lrkv_expand_forward(a.kv[l] + H * D, 2 * H * D, ks + D, PROJ, zk + H * R, PROJ,
                             P + lp.v_up, N, H, D, R);
    ops_.rope_forward(a.kv[l], 2 * H * D, B, T, H, D, 0, a.rope_cos, a.rope_sin);
  } else if (la.src.kind == KvSource::Kind::own) {
    ops_.rope_forward(qkv + H * D, PROJ, B, T, Hkv, D, 0, a.rope_cos, a.rope_sin);
  } else if (la.src.kind == KvSource::Kind::fused) {
    // Post-RoPE K (pair-tied weights) and V of the first and last storage layers.
    const LayerAttn& f = a.attn[la.src.first()];
    const LayerAttn& g = a.attn[la.src.last()];
    const float* kf = a.qkv[la.src.first()] + H * D;
    const float* kl = a.qkv[la.src.last()] + H * D;
    ops_.kv_fuse_forward(a.kv[l], 2 * Hkv * D, kf, f.proj, kl, g.proj, P + lp.fuse_k_first,
                         P + lp.fuse_k_last, N, Hkv, D, true);
    ops_.kv_fuse_forward(a.kv[l] + Hkv * D, 2 * Hkv * D, kf + Hkv * D, f.proj, kl + Hkv * D,
                         g.proj, P + lp.fuse_v_first, P + lp.fuse_v_last, N, Hkv, D, false);
  }
  const AttnShape shape{B, T, H, Hkv, D, PROJ, la.ldk, la.ldv};
  ops_.attention_forward(a.atty[l], a.att[l], qkv, la.k, la.v, shape);
  ops_.matmul_forward(a.tmp, a.atty[l], P + lp.o, N, H * D, C);
  ops_.residual_forward(a.res_mid[l], a.res[l], a.tmp, N * C);
  ops_.rmsnorm_forward(a.ln2[l], a.rstd2[l], a.res_mid[l], P + lp.ln2, N, C, cfg_.norm_eps);
  ops_.matmul_forward(a.gate_up[l], a.ln2[l], P + lp.gate_up, N, C, 2 * F);
  ops_.swiglu_forward(a.swi[l], a.gate_up[l], N, F);
  if (!full) return;
  ops_.matmul_forward(a.tmp, a.swi[l], P + lp.down, N, F, C);
  ops_.residual_forward(a.res[l + 1], a.res_mid[l], a.tmp, N * C);
}

// Embedding, every block, final norm, LM head and (with targets) the per-token losses.
void Transformer::run_forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  check_shape(inputs, targets, B, T);
  Acts& a = *acts_;
  cur_B_ = B;
  cur_T_ = T;
  have_targets_ = targets != nullptr;
  const int64_t N = static_cast<int64_t>(B) * T;
  const int C = cfg_.d_model, V = cfg_.vocab_size, L = cfg_.n_layers;
  ops_.to_device_async(a.inputs, inputs, N * sizeof(int32_t));
  if (targets) ops_.to_device_async(a.targets, targets, N * sizeof(int32_t));
  const float* P = params_.data();
  ops_.embedding_forward(a.res[0], a.inputs, P + a.wte, N, C);
  for (int l = 0; l < L; l++) block_forward(l, B, T, true);
  ops_.rmsnorm_forward(a.lnf, a.rstdf, a.res[L], P + a.normf, N, C, cfg_.norm_eps);
  ops_.matmul_forward(a.logits, a.lnf, P + a.head, N, C, V);
  if (targets) ops_.cross_entropy_forward(a.losses, a.logits, a.targets, N, V);
}

float Transformer::forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  run_forward(inputs, targets, B, T);
  if (!targets) return 0.0f;
  const int64_t N = static_cast<int64_t>(B) * T;
  return static_cast<float>(ops_.sum(acts_->losses, N) / static_cast<double>(N));
}

// loss += weight * (1/N) sum_n losses[n], on the backend
void Transformer::forward_train(const int32_t* inputs, const int32_t* targets, int B, int T,
                                float weight) {
  if (!targets) throw std::invalid_argument("forward_train needs targets");
  run_forward(inputs, targets, B, T);
  const int64_t N = static_cast<int64_t>(B) * T;
  ops_.accumulate_sum(acts_->loss, acts_->losses, N,
                      static_cast<float>(static_cast<double>(weight) / static_cast<double>(N)));
}

float Transformer::take_loss() {
  float v = 0.0f;
  ops_.to_host(&v, acts_->loss, sizeof v);
  ops_.zero(acts_->loss, sizeof(float));
  return v;
}

const float* Transformer::attention_input(int layer) const {
  if (layer < 0 || layer >= cfg_.n_layers) throw std::out_of_range("layer " + std::to_string(layer) + " out of range");
  if (recompute_ == Recompute::block)
    throw std::logic_error("attention_input: recompute block keeps no per-layer activations "
                           "(build the model with recompute none or attention)");
  return acts_->ln1[layer];
}

const float* Transformer::attention_probs(int layer) const {
  if (layer < 0 || layer >= cfg_.n_layers) throw std::out_of_range("layer " + std::to_string(layer) + " out of range");
  if (recompute_ != Recompute::none)
    throw std::logic_error(std::string("attention_probs: recompute ") + recompute_name(recompute_) +
                           " keeps no per-layer attention probabilities (build the model with "
                           "recompute none)");
  if (!ops_.attention_saves_probs())
    throw std::logic_error("attention_probs: backend '" + ops_.name() + "' in precision " +
                           precision_name(ops_.precision()) +
                           " saves softmax statistics, not probabilities (use precision fp32)");
  return acts_->att[layer];
}

std::vector<float> Transformer::logits_to_host() const {
  const size_t n = static_cast<size_t>(cur_B_) * cur_T_ * cfg_.vocab_size;
  std::vector<float> h(n);
  ops_.to_host(h.data(), acts_->logits, n * sizeof(float));
  return h;
}

// input_layernorm is each layer's first tensor (build_param_table), the final norm follows them.
size_t Transformer::layer_begin(int l) const {
  if (l < 0 || l > cfg_.n_layers) throw std::out_of_range("layer_begin(" + std::to_string(l) + ")");
  return l == cfg_.n_layers ? acts_->normf : acts_->layers[static_cast<size_t>(l)].ln1;
}

void Transformer::backward(float loss_scale) {
  if (!with_grads_) throw std::logic_error("backward() on a model built without gradients");
  if (!have_targets_) throw std::logic_error("backward() needs a forward with targets");
  Acts& a = *acts_;
  const int B = cur_B_, T = cur_T_;
  const int64_t N = static_cast<int64_t>(B) * T;
  const int C = cfg_.d_model, H = cfg_.n_heads, Hkv = cfg_.kv_heads(), D = cfg_.head_dim(),
            R = cfg_.lrkv_rank, F = cfg_.ffn_dim(), V = cfg_.vocab_size, L = cfg_.n_layers;
  const float* P = params_.data();
  float* G = grads_.data();

  // dK/dV of storage layers that others read: consumers add into these before the layer's own
  // backward, so they start from zero in every backward.
  for (int l = 0; l < L; l++)
    if (a.attn[l].dproj_dedicated)
      ops_.zero(a.attn[l].dproj, N * a.attn[l].proj * sizeof(float));

  // loss = loss_scale * mean_n losses[n]; the logits buffer becomes dlogits in place.
  ops_.cross_entropy_backward(a.logits, a.logits, a.targets, N, V, loss_scale / static_cast<float>(N));
  ops_.matmul_backward(a.dln, G + a.head, a.logits, a.lnf, P + a.head, N, C, V, false);
  ops_.zero(a.dres, N * C * sizeof(float));
  ops_.rmsnorm_backward(a.dres, G + a.normf, a.dln, a.res[L], P + a.normf, a.rstdf, N, C);
  if (grad_ready_) grad_ready_(layer_begin(L), table_.total());

  for (int l = L - 1; l >= 0; l--) {
    const LayerPlan& lp = a.layers[l];
    const LayerAttn& la = a.attn[l];
    const int PROJ = la.proj;
    const float* qkv = a.qkv[l];
    float* dqkv = la.dproj;
    // The shared buffers still hold the last layer's forward; earlier layers re-run theirs.
    const bool rerun = l < L - 1;
    if (recompute_ == Recompute::block && rerun) block_forward(l, B, T, false);  // refill the set
    // MLP: x' = m + down(swiglu(gate_up(RMSNorm(m)))); dres holds dx' and becomes dm.
    ops_.matmul_backward(a.dswi, G + lp.down, a.dres, a.swi[l], P + lp.down, N, F, C, false);
    ops_.swiglu_backward(a.dgate_up, a.dswi, a.gate_up[l], N, F);
    ops_.matmul_backward(a.dln, G + lp.gate_up, a.dgate_up, a.ln2[l], P + lp.gate_up, N, C, 2 * F, false);
    ops_.rmsnorm_backward(a.dres, G + lp.ln2, a.dln, a.res_mid[l], P + lp.ln2, a.rstd2[l], N, C);
    // Attention: m = x + o(attn(q, K, V)); dres holds dm and becomes dx.
    ops_.matmul_backward(a.datty, G + lp.o, a.dres, a.atty[l], P + lp.o, N, H * D, C, false);
    if (!la.dproj_dedicated) ops_.zero(dqkv, N * PROJ * sizeof(float));  // dK, dV accumulate
    if (a.kv[l]) ops_.zero(a.dkv, N * 2 * Hkv * D * sizeof(float));
    const AttnShape shape{B, T, H, Hkv, D, PROJ, la.ldk, la.ldv};
    if (recompute_ == Recompute::attention && rerun)  // refill the shared att (atty: same bits)
      ops_.attention_forward(a.atty[l], a.att[l], qkv, la.k, la.v, shape);
    ops_.attention_backward(dqkv, la.dk, la.dv, a.datty, a.atty[l], a.att[l], qkv, la.k, la.v, shape);
    ops_.rope_backward(dqkv, PROJ, B, T, H, D, 0, a.rope_cos, a.rope_sin);
    if (cfg_.lrkv()) {
      // dK (after RoPE backward) and dV flow into ks, zk, B^K and vs, zv, B^V.
      ops_.rope_backward(a.dkv, 2 * H * D, B, T, H, D, 0, a.rope_cos, a.rope_sin);
      float* dks = dqkv + H * D;
      float* dzk = dks + 2 * D;
      const float* zk = qkv + H * D + 2 * D;
      ops_.lrkv_expand_backward(dks, PROJ, dzk, G + lp.k_up, a.dkv, 2 * H * D, zk, PROJ,
                                P + lp.k_up, N, H, D, R);
      ops_.lrkv_expand_backward(dks + D, PROJ, dzk + H * R, G + lp.v_up, a.dkv + H * D, 2 * H * D,
                                zk + H * R, PROJ, P + lp.v_up, N, H, D, R);
    } else if (la.src.kind == KvSource::Kind::own) {
      // dK here is the sum over this layer and all its consumers: RoPE backward once, on it.
      ops_.rope_backward(dqkv + H * D, PROJ, B, T, Hkv, D, 0, a.rope_cos, a.rope_sin);
    } else if (la.src.kind == KvSource::Kind::fused) {
      // Add this layer's dK, dV into the first and last storage layers' (post-RoPE) gradients.
      const int fi = la.src.first(), li = la.src.last();
      const int ldf = a.attn[fi].proj, ldl = a.attn[li].proj;
      float* dkf = a.attn[fi].dproj + H * D;
      float* dkl = a.attn[li].dproj + H * D;
      const float* kf = a.qkv[fi] + H * D;
      const float* kl = a.qkv[li] + H * D;
      ops_.kv_fuse_backward(dkf, dkl, G + lp.fuse_k_first, G + lp.fuse_k_last, a.dkv, 2 * Hkv * D,
                            kf, ldf, kl, ldl, P + lp.fuse_k_first, P + lp.fuse_k_last, N, Hkv, D,
                            true);
      ops_.kv_fuse_backward(dkf + Hkv * D, dkl + Hkv * D, G + lp.fuse_v_first, G + lp.fuse_v_last,
                            a.dkv + Hkv * D, 2 * Hkv * D, kf + Hkv * D, ldf, kl + Hkv * D, ldl,
                            P + lp.fuse_v_first, P + lp.fuse_v_last, N, Hkv, D, false);
    }
    ops_.matmul_backward(a.dln, G + lp.q, dqkv, a.ln1[l], P + lp.q, N, C, PROJ, false);
    ops_.rmsnorm_backward(a.dres, G + lp.ln1, a.dln, a.res[l], P + lp.ln1, a.rstd1[l], N, C);
    if (grad_ready_) grad_ready_(layer_begin(l), layer_begin(l + 1));
  }
  ops_.embedding_backward(G + a.wte, a.dres, a.inputs, N, C, V);
  if (grad_ready_) grad_ready_(0, layer_begin(0));
  have_targets_ = false;  // the logits now hold their gradient
}

}  // namespace kvt

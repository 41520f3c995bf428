// model/transformer.cpp — LLaMA-style decoder: parameter table, init, forward and backward.
//
// One block (pre-norm), x = residual stream [N, C], N = B*T:
//   a = RMSNorm(x) ; [q|k|v] = a [Wq;Wk;Wv]^T ; q, k = RoPE(q, k) ; y = Attn(q, k, v)
//   m = x + y Wo^T
//   b = RMSNorm(m) ; [g|u] = b [Wg;Wu]^T ; x' = m + (silu(g) * u) Wd^T
// Wq, Wk, Wv are consecutive in the parameter table, so they are one [(H+2Hkv)D, C] matrix and
// one sgemm; likewise Wg, Wu as one [2F, C] matrix.
#include "model/transformer.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/common/rng.h"

namespace kvt {

namespace {
std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + "."; }
}  // namespace

ParamTable build_param_table(const ModelConfig& cfg, bool decay_embeddings) {
  const int64_t C = cfg.d_model, V = cfg.vocab_size, D = cfg.head_dim(), H = cfg.n_heads,
                Hkv = cfg.kv_heads(), F = cfg.ffn_dim();
  ParamTable t;
  t.add("model.embed_tokens.weight", {V, C}, decay_embeddings);
  for (int l = 0; l < cfg.n_layers; l++) {
    const std::string p = layer_prefix(l);
    t.add(p + "input_layernorm.weight", {C}, false);
    t.add(p + "self_attn.q_proj.weight", {H * D, C}, true);
    t.add(p + "self_attn.k_proj.weight", {Hkv * D, C}, true);
    t.add(p + "self_attn.v_proj.weight", {Hkv * D, C}, true);
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

double train_flops_per_token(const ModelConfig& cfg, int T) {
  const double C = cfg.d_model, D = cfg.head_dim(), H = cfg.n_heads, Hkv = cfg.kv_heads(),
               F = cfg.ffn_dim(), V = cfg.vocab_size, L = cfg.n_layers;
  const double per_layer = C * (H + 2 * Hkv) * D + H * D * C + 3 * C * F;
  const double n_matmul = L * per_layer + V * C;
  return 6.0 * n_matmul + 12.0 * L * H * D * T;
}

// Offsets (in floats) of one layer's tensors in the parameter/gradient buffers.
struct LayerParams {
  size_t ln1, qkv, o, ln2, gate_up, down;
};

struct Transformer::Acts {
  // forward, per layer
  std::vector<float*> res;            // L+1 residual streams [N, C]; res[0] = embeddings
  std::vector<float*> res_mid;        // [N, C] after attention
  std::vector<float*> ln1, ln2;       // [N, C]
  std::vector<float*> rstd1, rstd2;   // [N]
  std::vector<float*> qkv;            // [N, (H+2Hkv)D], q and k after RoPE
  std::vector<float*> att;            // [B, H, T, T]
  std::vector<float*> atty;           // [N, H D]
  std::vector<float*> gate_up;        // [N, 2F]
  std::vector<float*> swi;            // [N, F]
  float *lnf, *rstdf, *logits, *losses, *tmp;
  // backward scratch, shared by all layers
  float *dres, *dln, *dqkv, *datty, *dgate_up, *dswi;
  // tokens and RoPE tables in backend memory
  int32_t *inputs, *targets;
  float *rope_cos, *rope_sin;
  Buffer<float> arena;
  Buffer<int32_t> tokens;
  std::vector<LayerParams> layers;
  size_t wte, normf, head;
};

Transformer::Transformer(const ModelConfig& cfg, Ops& ops, int B, int T, bool with_grads,
                         bool decay_embeddings)
    : cfg_(cfg), ops_(ops), B_(B), T_(T), with_grads_(with_grads) {
  cfg_.resolve();
  if (B < 1 || T < 1) throw std::invalid_argument("batch and sequence length must be >= 1");
  if (T > cfg_.max_seq_len)
    throw std::invalid_argument("sequence length " + std::to_string(T) + " exceeds model.max_seq_len " +
                                std::to_string(cfg_.max_seq_len));
  table_ = build_param_table(cfg_, decay_embeddings);
  params_ = Buffer<float>(ops_, table_.total());
  if (with_grads_) grads_ = Buffer<float>(ops_, table_.total());
  alloc_activations();
  build_rope_tables();
}

Transformer::~Transformer() = default;

void Transformer::alloc_activations() {
  acts_ = std::make_unique<Acts>();
  Acts& a = *acts_;
  const int64_t N = static_cast<int64_t>(B_) * T_, C = cfg_.d_model, L = cfg_.n_layers,
                H = cfg_.n_heads, D = cfg_.head_dim(), QKV = (H + 2 * cfg_.kv_heads()) * D,
                F = cfg_.ffn_dim(), V = cfg_.vocab_size, att = static_cast<int64_t>(B_) * H * T_ * T_;
  const int64_t half = D / 2;

  // Lay out every activation in one arena: first count, then carve.
  int64_t total = 0;
  auto reserve = [&](int64_t n) { int64_t o = total; total += (n + 15) / 16 * 16; return o; };
  struct Slot { float** dst; int64_t off; };
  std::vector<Slot> slots;
  auto take = [&](float*& dst, int64_t n) { slots.push_back({&dst, reserve(n)}); };
  a.res.resize(L + 1);
  for (auto& p : a.res) take(p, N * C);
  a.res_mid.resize(L); a.ln1.resize(L); a.ln2.resize(L); a.rstd1.resize(L); a.rstd2.resize(L);
  a.qkv.resize(L); a.att.resize(L); a.atty.resize(L); a.gate_up.resize(L); a.swi.resize(L);
  for (int64_t l = 0; l < L; l++) {
    take(a.res_mid[l], N * C);
    take(a.ln1[l], N * C);
    take(a.ln2[l], N * C);
    take(a.rstd1[l], N);
    take(a.rstd2[l], N);
    take(a.qkv[l], N * QKV);
    take(a.att[l], att);
    take(a.atty[l], N * H * D);
    take(a.gate_up[l], N * 2 * F);
    take(a.swi[l], N * F);
  }
  take(a.lnf, N * C);
  take(a.rstdf, N);
  take(a.logits, N * V);
  take(a.losses, N);
  take(a.tmp, N * C);
  take(a.rope_cos, static_cast<int64_t>(cfg_.max_seq_len) * half);
  take(a.rope_sin, static_cast<int64_t>(cfg_.max_seq_len) * half);
  if (with_grads_) {
    take(a.dres, N * C);
    take(a.dln, N * C);
    take(a.dqkv, N * QKV);
    take(a.datty, N * H * D);
    take(a.dgate_up, N * 2 * F);
    take(a.dswi, N * F);
  }
  a.arena = Buffer<float>(ops_, static_cast<size_t>(total));
  for (auto& s : slots) *s.dst = a.arena.data() + s.off;
  a.tokens = Buffer<int32_t>(ops_, static_cast<size_t>(2 * N));
  a.inputs = a.tokens.data();
  a.targets = a.tokens.data() + N;

  // Parameter offsets; q/k/v and gate/up are consecutive (checked, since fusion relies on it).
  a.wte = table_.find("model.embed_tokens.weight").offset;
  a.normf = table_.find("model.norm.weight").offset;
  a.head = cfg_.tie_embeddings ? a.wte : table_.find("lm_head.weight").offset;
  for (int l = 0; l < cfg_.n_layers; l++) {
    const std::string p = layer_prefix(l);
    LayerParams lp{};
    lp.ln1 = table_.find(p + "input_layernorm.weight").offset;
    lp.qkv = table_.find(p + "self_attn.q_proj.weight").offset;
    lp.o = table_.find(p + "self_attn.o_proj.weight").offset;
    lp.ln2 = table_.find(p + "post_attention_layernorm.weight").offset;
    lp.gate_up = table_.find(p + "mlp.gate_proj.weight").offset;
    lp.down = table_.find(p + "mlp.down_proj.weight").offset;
    if (table_.find(p + "self_attn.v_proj.weight").offset != lp.qkv + static_cast<size_t>(QKV - cfg_.kv_heads() * D) * C ||
        table_.find(p + "mlp.up_proj.weight").offset != lp.gate_up + static_cast<size_t>(F * C))
      throw std::logic_error("parameter table layout breaks the fused q/k/v or gate/up matrices");
    a.layers.push_back(lp);
  }
}

void Transformer::build_rope_tables() {
  const int half = cfg_.head_dim() / 2, P = cfg_.max_seq_len;
  std::vector<float> c(static_cast<size_t>(P) * half), s(c.size());
  for (int p = 0; p < P; p++)
    for (int j = 0; j < half; j++) {
      // angle = p * theta^(-2j/D), computed in double
      const double inv_freq = std::pow(static_cast<double>(cfg_.rope_theta), -2.0 * j / cfg_.head_dim());
      const double ang = p * inv_freq;
      c[static_cast<size_t>(p) * half + j] = static_cast<float>(std::cos(ang));
      s[static_cast<size_t>(p) * half + j] = static_cast<float>(std::sin(ang));
    }
  ops_.to_device(acts_->rope_cos, c.data(), c.size() * sizeof(float));
  ops_.to_device(acts_->rope_sin, s.data(), s.size() * sizeof(float));
}

size_t Transformer::activation_bytes() const {
  return acts_->arena.bytes() + acts_->tokens.bytes();
}

void Transformer::init_parameters(uint64_t seed) {
  Rng rng(derive_seed(seed, /*purpose: init*/ 1));
  std::vector<float> host(table_.total());
  const double std_proj = cfg_.init_std / std::sqrt(2.0 * cfg_.n_layers);
  for (const auto& e : table_.entries()) {
    float* p = host.data() + e.offset;
    const bool is_norm = e.name.find("norm") != std::string::npos;
    const bool is_out = e.name.find("o_proj") != std::string::npos ||
                        e.name.find("down_proj") != std::string::npos;
    const double sd = is_out ? std_proj : cfg_.init_std;
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
}

std::vector<float> Transformer::grads_to_host() const {
  if (!with_grads_) throw std::logic_error("model was built without gradients");
  std::vector<float> h(table_.total());
  ops_.to_host(h.data(), grads_.data(), grads_.bytes());
  return h;
}

void Transformer::zero_grads() {
  if (with_grads_) ops_.zero(grads_.data(), grads_.bytes());
}

float Transformer::forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  if (B < 1 || B > B_ || T < 1 || T > T_)
    throw std::invalid_argument("forward shape [" + std::to_string(B) + ", " + std::to_string(T) +
                                "] exceeds the model's buffers [" + std::to_string(B_) + ", " +
                                std::to_string(T_) + "]");
  Acts& a = *acts_;
  cur_B_ = B;
  cur_T_ = T;
  have_targets_ = targets != nullptr;
  const int64_t N = static_cast<int64_t>(B) * T;
  const int C = cfg_.d_model, H = cfg_.n_heads, Hkv = cfg_.kv_heads(), D = cfg_.head_dim(),
            QKV = (H + 2 * Hkv) * D, F = cfg_.ffn_dim(), V = cfg_.vocab_size;
  for (int64_t i = 0; i < N; i++)
    if (inputs[i] < 0 || inputs[i] >= V || (targets && (targets[i] < 0 || targets[i] >= V)))
      throw std::out_of_range("token id out of range [0, " + std::to_string(V) + ") at position " +
                              std::to_string(i));
  ops_.to_device(a.inputs, inputs, N * sizeof(int32_t));
  if (targets) ops_.to_device(a.targets, targets, N * sizeof(int32_t));
  const float* P = params_.data();
  const AttnShape shape{B, T, H, Hkv, D, QKV, QKV, QKV};

  ops_.embedding_forward(a.res[0], a.inputs, P + a.wte, N, C);
  for (int l = 0; l < cfg_.n_layers; l++) {
    const LayerParams& lp = a.layers[l];
    float* qkv = a.qkv[l];
    ops_.rmsnorm_forward(a.ln1[l], a.rstd1[l], a.res[l], P + lp.ln1, N, C, cfg_.norm_eps);
    ops_.matmul_forward(qkv, a.ln1[l], P + lp.qkv, N, C, QKV);
    ops_.rope_forward(qkv, QKV, B, T, H, D, 0, a.rope_cos, a.rope_sin);
    ops_.rope_forward(qkv + H * D, QKV, B, T, Hkv, D, 0, a.rope_cos, a.rope_sin);
    ops_.attention_forward(a.atty[l], a.att[l], qkv, qkv + H * D, qkv + (H + Hkv) * D, shape);
    ops_.matmul_forward(a.tmp, a.atty[l], P + lp.o, N, H * D, C);
    ops_.residual_forward(a.res_mid[l], a.res[l], a.tmp, N * C);
    ops_.rmsnorm_forward(a.ln2[l], a.rstd2[l], a.res_mid[l], P + lp.ln2, N, C, cfg_.norm_eps);
    ops_.matmul_forward(a.gate_up[l], a.ln2[l], P + lp.gate_up, N, C, 2 * F);
    ops_.swiglu_forward(a.swi[l], a.gate_up[l], N, F);
    ops_.matmul_forward(a.tmp, a.swi[l], P + lp.down, N, F, C);
    ops_.residual_forward(a.res[l + 1], a.res_mid[l], a.tmp, N * C);
  }
  const int L = cfg_.n_layers;
  ops_.rmsnorm_forward(a.lnf, a.rstdf, a.res[L], P + a.normf, N, C, cfg_.norm_eps);
  ops_.matmul_forward(a.logits, a.lnf, P + a.head, N, C, V);
  if (!targets) return 0.0f;
  ops_.cross_entropy_forward(a.losses, a.logits, a.targets, N, V);
  return static_cast<float>(ops_.sum(a.losses, N) / static_cast<double>(N));
}

std::vector<float> Transformer::logits_to_host() const {
  const size_t n = static_cast<size_t>(cur_B_) * cur_T_ * cfg_.vocab_size;
  std::vector<float> h(n);
  ops_.to_host(h.data(), acts_->logits, n * sizeof(float));
  return h;
}

void Transformer::backward(float loss_scale) {
  if (!with_grads_) throw std::logic_error("backward() on a model built without gradients");
  if (!have_targets_) throw std::logic_error("backward() needs a forward with targets");
  Acts& a = *acts_;
  const int B = cur_B_, T = cur_T_;
  const int64_t N = static_cast<int64_t>(B) * T;
  const int C = cfg_.d_model, H = cfg_.n_heads, Hkv = cfg_.kv_heads(), D = cfg_.head_dim(),
            QKV = (H + 2 * Hkv) * D, F = cfg_.ffn_dim(), V = cfg_.vocab_size, L = cfg_.n_layers;
  const float* P = params_.data();
  float* G = grads_.data();
  const AttnShape shape{B, T, H, Hkv, D, QKV, QKV, QKV};

  // loss = loss_scale * mean_n losses[n]; the logits buffer becomes dlogits in place.
  ops_.cross_entropy_backward(a.logits, a.logits, a.targets, N, V, loss_scale / static_cast<float>(N));
  ops_.matmul_backward(a.dln, G + a.head, a.logits, a.lnf, P + a.head, N, C, V, false);
  ops_.zero(a.dres, N * C * sizeof(float));
  ops_.rmsnorm_backward(a.dres, G + a.normf, a.dln, a.res[L], P + a.normf, a.rstdf, N, C);

  for (int l = L - 1; l >= 0; l--) {
    const LayerParams& lp = a.layers[l];
    const float* qkv = a.qkv[l];
    // MLP: x' = m + down(swiglu(gate_up(RMSNorm(m)))); dres holds dx' and becomes dm.
    ops_.matmul_backward(a.dswi, G + lp.down, a.dres, a.swi[l], P + lp.down, N, F, C, false);
    ops_.swiglu_backward(a.dgate_up, a.dswi, a.gate_up[l], N, F);
    ops_.matmul_backward(a.dln, G + lp.gate_up, a.dgate_up, a.ln2[l], P + lp.gate_up, N, C, 2 * F, false);
    ops_.rmsnorm_backward(a.dres, G + lp.ln2, a.dln, a.res_mid[l], P + lp.ln2, a.rstd2[l], N, C);
    // Attention: m = x + o(attn(RoPE(qkv(RMSNorm(x))))); dres holds dm and becomes dx.
    ops_.matmul_backward(a.datty, G + lp.o, a.dres, a.atty[l], P + lp.o, N, H * D, C, false);
    ops_.zero(a.dqkv, N * QKV * sizeof(float));  // dK, dV accumulate
    ops_.attention_backward(a.dqkv, a.dqkv + H * D, a.dqkv + (H + Hkv) * D, a.datty, a.att[l], qkv,
                            qkv + H * D, qkv + (H + Hkv) * D, shape);
    ops_.rope_backward(a.dqkv, QKV, B, T, H, D, 0, a.rope_cos, a.rope_sin);
    ops_.rope_backward(a.dqkv + H * D, QKV, B, T, Hkv, D, 0, a.rope_cos, a.rope_sin);
    ops_.matmul_backward(a.dln, G + lp.qkv, a.dqkv, a.ln1[l], P + lp.qkv, N, C, QKV, false);
    ops_.rmsnorm_backward(a.dres, G + lp.ln1, a.dln, a.res[l], P + lp.ln1, a.rstd1[l], N, C);
  }
  ops_.embedding_backward(G + a.wte, a.dres, a.inputs, N, C, V);
  have_targets_ = false;  // the logits now hold their gradient
}

}  // namespace kvt

// model/gates.cpp — the Fast KVzip gate: forward and hand-written backward over the op interface
// (matmul, bias_add, rmsnorm, gate_score), one storage layer at a time.
#include "model/gates.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/common/rng.h"
#include "model/kv_sharing.h"

namespace kvt {

namespace {
constexpr uint64_t kGateInitPurpose = 0x6761746573ull;  // "gates"
std::string gate_prefix(int layer) { return "gates." + std::to_string(layer) + "."; }
}  // namespace

std::vector<int> gate_layers(const ModelConfig& cfg) {
  std::vector<int> out;
  for (int l = 0; l < cfg.n_layers; l++)
    if (is_storage_layer(cfg, l)) out.push_back(l);
  return out;
}

int gate_decisions(const ModelConfig& cfg) { return cfg.lrkv() ? 1 : cfg.kv_heads(); }

ParamTable build_gate_param_table(const ModelConfig& cfg) {
  const int64_t C = cfg.d_model, Hkv = cfg.kv_heads(), G = cfg.n_heads / cfg.kv_heads(),
                Dg = kGateDim, S = kGateSinks;
  ParamTable t;
  for (int l : gate_layers(cfg)) {
    const std::string p = gate_prefix(l);
    t.add(p + "q_proj.weight", {Hkv * G * Dg, C}, true);
    t.add(p + "q_proj.bias", {Hkv * G * Dg}, false);
    t.add(p + "k_proj.weight", {Hkv * Dg, C}, true);
    t.add(p + "q_norm.weight", {Dg}, false);
    t.add(p + "k_norm.weight", {Dg}, false);
    t.add(p + "sinks", {Hkv, S, Dg}, false);
    t.add(p + "bias", {Hkv, G}, false);
  }
  return t;
}

std::vector<float> init_gate_parameters(const ModelConfig& cfg, uint64_t seed) {
  const ParamTable t = build_gate_param_table(cfg);
  std::vector<float> p(t.total(), 0.0f);
  const double bound = 1.0 / std::sqrt(static_cast<double>(cfg.d_model));
  for (size_t i = 0; i < t.entries().size(); i++) {
    const ParamInfo& e = t.at(i);
    const auto ends = [&](const char* s) {
      const std::string suf(s);
      return e.name.size() >= suf.size() && e.name.compare(e.name.size() - suf.size(), suf.size(), suf) == 0;
    };
    float* x = p.data() + e.offset;
    if (ends("proj.weight") || ends("proj.bias")) {
      Rng rng(derive_seed(seed, kGateInitPurpose, i));
      for (size_t j = 0; j < e.numel; j++) x[j] = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
    } else if (ends("norm.weight")) {
      std::fill(x, x + e.numel, 1.0f);
    }  // sinks and bias stay 0
  }
  return p;
}

double bce_loss(std::span<const float> score, std::span<const float> target,
                std::vector<float>* dscore) {
  if (score.size() != target.size()) throw std::invalid_argument("bce_loss: size mismatch");
  const double lo = 1e-7, hi = 1.0 - 1e-7, n = static_cast<double>(score.size());
  if (dscore) dscore->assign(score.size(), 0.0f);
  double sum = 0.0;
  for (size_t i = 0; i < score.size(); i++) {
    const double s = score[i], t = target[i], c = std::clamp(s, lo, hi);
    sum -= t * std::log(c) + (1.0 - t) * std::log(1.0 - c);
    // d/ds of -(t log s + (1-t) log(1-s)) = (s - t) / (s (1 - s))
    if (dscore && s > lo && s < hi) (*dscore)[i] = static_cast<float>((s - t) / (s * (1.0 - s)) / n);
  }
  return score.empty() ? 0.0 : sum / n;
}

// ---- GateModel ------------------------------------------------------------------------------

GateModel::GateModel(const ModelConfig& cfg, Ops& ops, int max_tokens, bool with_grads)
    : cfg_(cfg), ops_(ops), max_n_(max_tokens) {
  cfg_.resolve();
  if (max_tokens < 1) throw std::invalid_argument("GateModel: max_tokens must be >= 1");
  Hkv_ = cfg_.kv_heads();
  G_ = cfg_.n_heads / Hkv_;
  table_ = build_gate_param_table(cfg_);
  layers_ = gate_layers(cfg_);
  for (int l : layers_) {
    const std::string p = gate_prefix(l);
    offsets_.push_back({table_.find(p + "q_proj.weight").offset, table_.find(p + "q_proj.bias").offset,
                        table_.find(p + "k_proj.weight").offset, table_.find(p + "q_norm.weight").offset,
                        table_.find(p + "k_norm.weight").offset, table_.find(p + "sinks").offset,
                        table_.find(p + "bias").offset});
  }
  params_ = Buffer<float>(ops_, table_.total());
  if (with_grads) grads_ = Buffer<float>(ops_, table_.total());

  const int64_t N = max_n_, QW = static_cast<int64_t>(Hkv_) * G_ * kGateDim,
                KW = static_cast<int64_t>(Hkv_) * kGateDim;
  const int64_t sizes[] = {N * QW, N * QW, N * Hkv_ * G_, N * KW, N * KW, N * Hkv_,
                           N * Hkv_, N * Hkv_, N * QW, N * KW, N * QW, N * KW};
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  arena_ = Buffer<float>(ops_, static_cast<size_t>(total));
  float** slots[] = {&q_, &qn_, &qrstd_, &k_, &kn_, &krstd_, &score_, &dscore_, &dqn_, &dkn_, &dq_, &dk_};
  float* p = arena_.data();
  for (size_t i = 0; i < std::size(slots); i++) {
    *slots[i] = p;
    p += sizes[i];
  }
}

std::vector<float> GateModel::params_to_host() const {
  std::vector<float> h(table_.total());
  ops_.to_host(h.data(), params_.data(), params_.bytes());
  return h;
}

void GateModel::params_from_host(std::span<const float> host) {
  if (host.size() != table_.total())
    throw std::invalid_argument("gate parameters: expected " + std::to_string(table_.total()) +
                                " floats, got " + std::to_string(host.size()));
  ops_.to_device(params_.data(), host.data(), params_.bytes());
}

std::vector<float> GateModel::grads_to_host() const {
  if (!grads_.data()) throw std::logic_error("gate model was built without gradients");
  std::vector<float> h(table_.total());
  ops_.to_host(h.data(), grads_.data(), grads_.bytes());
  return h;
}

void GateModel::zero_grads() {
  if (grads_.data()) ops_.zero(grads_.data(), grads_.bytes());
}

const GateModel::Offsets& GateModel::offsets_of(int layer) const {
  for (size_t i = 0; i < layers_.size(); i++)
    if (layers_[i] == layer) return offsets_[i];
  throw std::out_of_range("layer " + std::to_string(layer) + " stores no KV cache: it has no gate");
}

std::vector<float> GateModel::forward(int layer, const float* h, int n) {
  if (n < 1 || n > max_n_)
    throw std::out_of_range("gate forward: " + std::to_string(n) + " tokens, capacity " +
                            std::to_string(max_n_));
  const Offsets& o = offsets_of(layer);
  const float* P = params_.data();
  const int C = cfg_.d_model, QW = Hkv_ * G_ * kGateDim, KW = Hkv_ * kGateDim;
  // q = RMSNorm(h W_q^T + c), k = RMSNorm(h W_k^T), per d'-vector
  ops_.matmul_forward(q_, h, P + o.wq, n, C, QW);
  ops_.bias_add_forward(q_, P + o.bq, n, QW);
  ops_.rmsnorm_forward(qn_, qrstd_, q_, P + o.qn, static_cast<int64_t>(n) * Hkv_ * G_, kGateDim, kGateNormEps);
  ops_.matmul_forward(k_, h, P + o.wk, n, C, KW);
  ops_.rmsnorm_forward(kn_, krstd_, k_, P + o.kn, static_cast<int64_t>(n) * Hkv_, kGateDim, kGateNormEps);
  ops_.gate_score_forward(score_, qn_, kn_, P + o.sinks, P + o.bias, n, Hkv_, G_, kGateDim, kGateSinks);
  h_ = h;
  last_layer_ = layer;
  last_n_ = n;
  head_scores_.resize(static_cast<size_t>(n) * Hkv_);
  ops_.to_host(head_scores_.data(), score_, head_scores_.size() * sizeof(float));
  if (!cfg_.lrkv()) return head_scores_;
  std::vector<float> out(n);  // LRKV: one score per token, the max over heads
  for (int i = 0; i < n; i++)
    out[i] = *std::max_element(head_scores_.begin() + static_cast<int64_t>(i) * Hkv_,
                               head_scores_.begin() + static_cast<int64_t>(i + 1) * Hkv_);
  return out;
}

void GateModel::backward(const std::vector<float>& dscore) {
  if (!grads_.data()) throw std::logic_error("gate backward on a model built without gradients");
  if (last_layer_ < 0) throw std::logic_error("gate backward without a forward");
  const int n = last_n_, M = gate_decisions(cfg_);
  if (dscore.size() != static_cast<size_t>(n) * M)
    throw std::invalid_argument("gate backward: dscore has " + std::to_string(dscore.size()) +
                                " values, expected " + std::to_string(static_cast<size_t>(n) * M));
  // Per-head score gradients; LRKV's max routes each token's gradient to its (first) argmax head.
  std::vector<float> dhead(static_cast<size_t>(n) * Hkv_, 0.0f);
  if (!cfg_.lrkv()) {
    dhead = dscore;
  } else {
    for (int i = 0; i < n; i++) {
      const auto row = head_scores_.begin() + static_cast<int64_t>(i) * Hkv_;
      dhead[static_cast<size_t>(i) * Hkv_ + (std::max_element(row, row + Hkv_) - row)] = dscore[i];
    }
  }
  ops_.to_device(dscore_, dhead.data(), dhead.size() * sizeof(float));

  const Offsets& o = offsets_of(last_layer_);
  const float* P = params_.data();
  float* Gr = grads_.data();
  const int C = cfg_.d_model, QW = Hkv_ * G_ * kGateDim, KW = Hkv_ * kGateDim;
  ops_.gate_score_backward(dqn_, dkn_, Gr + o.sinks, Gr + o.bias, dscore_, qn_, kn_, P + o.sinks,
                           P + o.bias, n, Hkv_, G_, kGateDim, kGateSinks);
  // rmsnorm_backward accumulates into dx: start from zero
  ops_.zero(dq_, static_cast<size_t>(n) * QW * sizeof(float));
  ops_.zero(dk_, static_cast<size_t>(n) * KW * sizeof(float));
  ops_.rmsnorm_backward(dq_, Gr + o.qn, dqn_, q_, P + o.qn, qrstd_, static_cast<int64_t>(n) * Hkv_ * G_, kGateDim);
  ops_.rmsnorm_backward(dk_, Gr + o.kn, dkn_, k_, P + o.kn, krstd_, static_cast<int64_t>(n) * Hkv_, kGateDim);
  ops_.bias_add_backward(Gr + o.bq, dq_, n, QW);
  // h is the frozen model's activation: no input gradient
  ops_.matmul_backward(nullptr, Gr + o.wq, dq_, h_, P + o.wq, n, C, QW, false);
  ops_.matmul_backward(nullptr, Gr + o.wk, dk_, h_, P + o.wk, n, C, KW, false);
}

}  // namespace kvt

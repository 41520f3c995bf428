// model/gates.h — Fast KVzip eviction gates (docs/design.md, "Fast KVzip gates"): a small scorer per storage layer
// that reads the normalised hidden state entering attention and predicts, per token and KV head,
// whether the frozen model will need that KV pair (its KVzip score, model/kvzip.h).
//
// Gate of storage layer l, with C = d_model, Hkv KV heads, G = H / Hkv, d' = 16, S = 16 sinks:
//   q = RMSNorm_{q_norm}(h W_q^T + c) viewed [Hkv, G, d']   (each d'-vector normalised, eps 1e-6)
//   k = RMSNorm_{k_norm}(h W_k^T)      viewed [Hkv, d']
//   l_g = q_g·k / sqrt(d') + b_g,  l_gs = q_g·K_s / sqrt(d')
//   score = mean_g 1 / (1 + sum_s exp(l_gs - l_g))             one score per token and KV head
// LRKV (one decision per token and layer): the layer's score is the max over its heads.
//
// Parameters (their own table, saved as gates.h5), for every storage layer l:
//   gates.<l>.q_proj.weight [Hkv G d', C]   gates.<l>.q_proj.bias [Hkv G d']
//   gates.<l>.k_proj.weight [Hkv d', C]     gates.<l>.q_norm.weight [d']   gates.<l>.k_norm.weight [d']
//   gates.<l>.sinks [Hkv, S, d']            gates.<l>.bias [Hkv, G]
// Init: W_q, c, W_k ~ U(-1/sqrt(C), 1/sqrt(C)) (PyTorch's nn.Linear), norms 1, sinks 0, bias 0.
// Weight decay (when the optimizer has any): the two projection matrices only.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/ops.h"
#include "model/config.h"
#include "model/params.h"

namespace kvt {

inline constexpr int kGateDim = 16;      // d'
inline constexpr int kGateSinks = 16;    // S
inline constexpr float kGateNormEps = 1e-6f;

// Storage layers in increasing order: the layers that have a gate (and a row of the targets).
std::vector<int> gate_layers(const ModelConfig& cfg);
// Decisions per token of a storage layer: H_kv, or 1 for LRKV.
int gate_decisions(const ModelConfig& cfg);

ParamTable build_gate_param_table(const ModelConfig& cfg);
// Deterministic init of a host buffer laid out by build_gate_param_table(cfg).
std::vector<float> init_gate_parameters(const ModelConfig& cfg, uint64_t seed);

// Binary cross-entropy of scores against targets, both [n] in (0,1) / [0,1]:
//   loss = -mean_i (t log s + (1 - t) log(1 - s)),  s clamped to [1e-7, 1 - 1e-7];
// dscore (when non-null, [n]) receives d loss / d s (0 where s was clamped).
double bce_loss(std::span<const float> score, std::span<const float> target,
                std::vector<float>* dscore);

// The gates of all storage layers on one backend: parameters, gradients (optional) and the
// activations of one layer's forward, reused layer after layer (forward(l) then backward(l)).
class GateModel {
 public:
  // max_tokens: the most tokens one forward sees.
  GateModel(const ModelConfig& cfg, Ops& ops, int max_tokens, bool with_grads);
  GateModel(const GateModel&) = delete;
  GateModel& operator=(const GateModel&) = delete;

  const ParamTable& params() const { return table_; }
  float* param_data() { return params_.data(); }
  float* grad_data() { return grads_.data(); }  // null without grads
  std::vector<float> params_to_host() const;
  void params_from_host(std::span<const float> host);
  std::vector<float> grads_to_host() const;
  void zero_grads();

  // Scores of storage layer `layer` for n tokens of h ([n, C], backend memory):
  // [n, gate_decisions] on the host (LRKV: max over the layer's heads).
  std::vector<float> forward(int layer, const float* h, int n);
  // Gradients of the last forward (same layer): dscore [n, gate_decisions] host; grads +=.
  void backward(const std::vector<float>& dscore);

 private:
  struct Offsets {
    size_t wq, bq, wk, qn, kn, sinks, bias;
  };
  const Offsets& offsets_of(int layer) const;

  ModelConfig cfg_;
  Ops& ops_;
  int max_n_;
  int Hkv_, G_;
  ParamTable table_;
  std::vector<int> layers_;
  std::vector<Offsets> offsets_;
  Buffer<float> params_, grads_;
  // one layer's activations: q pre-norm [n, Hkv G d'], q normed, k pre-norm, k normed, rstds,
  // per-head scores, and gradient scratch
  Buffer<float> arena_;
  float *q_, *qn_, *qrstd_, *k_, *kn_, *krstd_, *score_, *dscore_, *dqn_, *dkn_, *dq_, *dk_;
  const float* h_ = nullptr;
  int last_layer_ = -1, last_n_ = 0;
  std::vector<float> head_scores_;  // host copy of [n, Hkv] (the LRKV max needs the argmax)
};

}  // namespace kvt

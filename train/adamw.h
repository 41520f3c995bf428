// train/adamw.h — AdamW over the parameter table: two moment buffers with the table's layout,
// decoupled weight decay on the tensors the table marks (matrices), none on norms/embeddings.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"
#include "model/params.h"
#include "train/config.h"

namespace kvt {

class AdamW {
 public:
  AdamW(Ops& ops, const ParamTable& table, const TrainConfig& cfg);
  // One update of every tensor with the given lr; grads are multiplied by grad_scale first
  // (global-norm clipping). Increments the step counter t (bias correction uses t >= 1).
  void step(float* params, const float* grads, float lr, float grad_scale);

  int64_t t() const { return t_; }
  // Moments and step for checkpoints (host copies, laid out by the table).
  std::vector<float> m_to_host() const;
  std::vector<float> v_to_host() const;
  void load(const std::vector<float>& m, const std::vector<float>& v, int64_t t);

 private:
  Ops& ops_;
  const ParamTable& table_;
  TrainConfig cfg_;
  Buffer<float> m_, v_;
  int64_t t_ = 0;
};

}  // namespace kvt

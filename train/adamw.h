// train/adamw.h — AdamW over the parameter table: two moment buffers, decoupled weight decay on
// the tensors the table marks (matrices), none on norms/embeddings. Under ZeRO-1 the moments
// exist only for the ranges this rank owns (docs/parallel.md, "ZeRO-1").
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/ops.h"
#include "model/params.h"
#include "train/config.h"

namespace kvt {

// Floats [begin, end) of the table's layout, held at [local, local + end - begin) of the
// optimizer state and of the gradient step() is given.
struct OwnedRange {
  size_t begin = 0, end = 0, local = 0;
};

class AdamW {
 public:
  // Every tensor; the state (and step()'s gradient) laid out by the table.
  AdamW(Ops& ops, const ParamTable& table, const TrainConfig& cfg);
  // Only the owned ranges (ZeRO-1); state_size floats per moment. The ranges may cut tensors:
  // each element decays by its own tensor's flag (the per-element decay mask).
  AdamW(Ops& ops, const ParamTable& table, const TrainConfig& cfg, std::vector<OwnedRange> owned,
        size_t state_size);
  // One update of every owned element with the given lr; params in the table's layout, grads in
  // the state's layout, multiplied by grad_scale first (global-norm clipping). Increments the
  // step counter t (bias correction uses t >= 1).
  void step(float* params, const float* grads, float lr, float grad_scale);

  int64_t t() const { return t_; }
  // Moments for checkpoints: host copies of the state (the table's layout when not sharded).
  std::vector<float> m_to_host() const;
  std::vector<float> v_to_host() const;
  const float* m_data() const { return m_.data(); }
  const float* v_data() const { return v_.data(); }
  // m and v in the table's layout (a checkpoint of any world size); keeps the owned ranges.
  void load(const std::vector<float>& m, const std::vector<float>& v, int64_t t);

 private:
  // One adamw_update call: n floats at params + global, state + local, decay flag of its tensor.
  struct Segment {
    size_t global, local, n;
    bool decay;
  };
  Ops& ops_;
  const ParamTable& table_;
  TrainConfig cfg_;
  std::vector<OwnedRange> owned_;
  std::vector<Segment> segments_;
  Buffer<float> m_, v_;
  int64_t t_ = 0;
};

}  // namespace kvt

#include "train/adamw.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace kvt {

AdamW::AdamW(Ops& ops, const ParamTable& table, const TrainConfig& cfg)
    : AdamW(ops, table, cfg, {OwnedRange{0, table.total(), 0}}, table.total()) {}

AdamW::AdamW(Ops& ops, const ParamTable& table, const TrainConfig& cfg, std::vector<OwnedRange> owned,
             size_t state_size)
    : ops_(ops), table_(table), cfg_(cfg), owned_(std::move(owned)), m_(ops, state_size), v_(ops, state_size) {
  // Intersections of the owned ranges with the tensors: the decay flag is per tensor, so a range
  // that cuts tensors is updated piecewise (wd_i = weight_decay if element i's tensor decays).
  for (const OwnedRange& r : owned_) {
    if (r.end > table.total() || r.begin > r.end || r.local + (r.end - r.begin) > state_size)
      throw std::invalid_argument("AdamW: owned range [" + std::to_string(r.begin) + ", " +
                                  std::to_string(r.end) + ") at " + std::to_string(r.local) +
                                  " does not fit the table (" + std::to_string(table.total()) +
                                  ") or the state (" + std::to_string(state_size) + ")");
    for (const ParamInfo& e : table.entries()) {
      const size_t b = std::max(r.begin, e.offset), en = std::min(r.end, e.offset + e.numel);
      if (b < en) segments_.push_back({b, r.local + (b - r.begin), en - b, e.weight_decay});
    }
  }
}

void AdamW::step(float* params, const float* grads, float lr, float grad_scale) {
  t_++;
  for (const Segment& s : segments_) {
    const float wd = s.decay ? cfg_.weight_decay : 0.0f;
    ops_.adamw_update(params + s.global, grads + s.local, m_.data() + s.local, v_.data() + s.local,
                      static_cast<int64_t>(s.n), lr, cfg_.beta1, cfg_.beta2, cfg_.eps, wd, t_, grad_scale);
  }
}

std::vector<float> AdamW::m_to_host() const {
  std::vector<float> h(m_.size());
  ops_.to_host(h.data(), m_.data(), m_.bytes());
  return h;
}

std::vector<float> AdamW::v_to_host() const {
  std::vector<float> h(v_.size());
  ops_.to_host(h.data(), v_.data(), v_.bytes());
  return h;
}

void AdamW::load(const std::vector<float>& m, const std::vector<float>& v, int64_t t) {
  if (m.size() != table_.total() || v.size() != table_.total())
    throw std::invalid_argument("optimizer state has " + std::to_string(m.size()) +
                                " values, the model needs " + std::to_string(table_.total()));
  ops_.zero(m_.data(), m_.bytes());  // padding past the table stays zero
  ops_.zero(v_.data(), v_.bytes());
  for (const OwnedRange& r : owned_) {
    const size_t bytes = (r.end - r.begin) * sizeof(float);
    ops_.to_device(m_.data() + r.local, m.data() + r.begin, bytes);
    ops_.to_device(v_.data() + r.local, v.data() + r.begin, bytes);
  }
  t_ = t;
}

}  // namespace kvt

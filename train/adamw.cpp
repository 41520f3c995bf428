#include "train/adamw.h"

#include <stdexcept>
#include <string>

namespace kvt {

AdamW::AdamW(Ops& ops, const ParamTable& table, const TrainConfig& cfg)
    : ops_(ops), table_(table), cfg_(cfg), m_(ops, table.total()), v_(ops, table.total()) {}

void AdamW::step(float* params, const float* grads, float lr, float grad_scale) {
  t_++;
  for (const ParamInfo& e : table_.entries()) {
    const float wd = e.weight_decay ? cfg_.weight_decay : 0.0f;
    ops_.adamw_update(params + e.offset, grads + e.offset, m_.data() + e.offset,
                      v_.data() + e.offset, static_cast<int64_t>(e.numel), lr, cfg_.beta1,
                      cfg_.beta2, cfg_.eps, wd, t_, grad_scale);
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
  if (m.size() != m_.size() || v.size() != v_.size())
    throw std::invalid_argument("optimizer state has " + std::to_string(m.size()) +
                                " values, the model needs " + std::to_string(m_.size()));
  ops_.to_device(m_.data(), m.data(), m_.bytes());
  ops_.to_device(v_.data(), v.data(), v_.bytes());
  t_ = t;
}

}  // namespace kvt

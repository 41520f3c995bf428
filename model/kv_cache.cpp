// model/kv_cache.cpp — the per-(layer, head) block lists of model/kv_cache.h.
#include "model/kv_cache.h"

#include <algorithm>

namespace kvt {

KvCache::KvCache(Ops& ops, const ModelConfig& cfg, const std::vector<LayerPlan>& plan)
    : heads_(cfg.lrkv() ? 1 : cfg.kv_heads()),
      blocks_per_head_((cfg.max_seq_len + kBlock - 1) / kBlock) {
  const int L = static_cast<int>(plan.size());
  width_.assign(L, 0);
  first_block_.assign(L, 0);
  block_floats_.assign(L, 0);
  size_t floats = 0;
  for (int l = 0; l < L; l++) {
    if (!plan[l].stores()) continue;
    width_[l] = plan[l].kv_width / heads_;  // [K_g | V_g] per KV head, or the whole LRKV row
    block_floats_[l] = static_cast<size_t>(kBlock) * width_[l];
    first_block_[l] = floats;  // in floats: blocks of different layers differ in size
    floats += static_cast<size_t>(heads_) * blocks_per_head_ * block_floats_[l];
  }
  pool_ = Buffer<float>(ops, floats);
  keep_.assign(static_cast<size_t>(L) * heads_ * slots_per_head(), 1);
}

float* KvCache::entries(int layer, int head) const {
  return pool_.data() + first_block_[layer] +
         static_cast<size_t>(head) * blocks_per_head_ * block_floats_[layer];
}

std::vector<int> KvCache::block_table(int layer, int head) const {
  // Pool blocks are numbered in allocation order: storage layers, then heads, then blocks.
  int storing_before = 0;
  for (int l = 0; l < layer; l++) storing_before += width_[l] > 0;
  std::vector<int> t(blocks_per_head_);
  const int first = (storing_before * heads_ + head) * blocks_per_head_;
  for (int b = 0; b < blocks_per_head_; b++) t[b] = first + b;
  return t;
}

void KvCache::keep_range(int from, int to) {
  const size_t rows = keep_.size() / slots_per_head();
  for (size_t r = 0; r < rows; r++)
    std::fill(keep_.begin() + r * slots_per_head() + from, keep_.begin() + r * slots_per_head() + to,
              uint8_t{1});
}

size_t KvCache::kept_floats(int len) const {
  size_t floats = 0;
  for (size_t l = 0; l < width_.size(); l++) {
    if (width_[l] == 0) continue;
    for (int h = 0; h < heads_; h++)
      for (int p = 0; p < len; p++)
        floats += kept(static_cast<int>(l), h, p) ? static_cast<size_t>(width_[l]) : 0;
  }
  return floats;
}

}  // namespace kvt

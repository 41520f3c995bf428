// model/kv_cache.cpp — the per-(layer, head) entry lists of model/kv_cache.h.
#include "model/kv_cache.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace kvt {

namespace {
int whole_blocks(int rows) { return (rows + KvCache::kBlock - 1) / KvCache::kBlock * KvCache::kBlock; }
}  // namespace

KvCache::KvCache(Ops& ops, const ModelConfig& cfg, const std::vector<LayerPlan>& plan)
    : ops_(ops), heads_(cfg.lrkv() ? 1 : cfg.kv_heads()), T_(cfg.max_seq_len) {
  const int L = static_cast<int>(plan.size());
  width_.assign(L, 0);
  for (int l = 0; l < L; l++)
    if (plan[l].stores()) width_[l] = plan[l].kv_width / heads_;  // [K_g | V_g], or the LRKV row
  lists_.resize(static_cast<size_t>(L) * heads_);
  keep_.assign(static_cast<size_t>(L) * heads_ * T_, 1);
}

void KvCache::reallocate(int layer, List& l, const std::vector<int>& keep, int cap) {
  const int W = width_[layer];
  Buffer<float> rows;
  if (cap > 0) rows = Buffer<float>(ops_, static_cast<size_t>(cap) * W);
  alloc_bytes_ += rows.bytes();
  peak_bytes_ = std::max(peak_bytes_, alloc_bytes_);  // old and new exist together here
  std::vector<int32_t> pos;
  pos.reserve(keep.size());
  // copy runs of consecutive kept rows
  for (size_t i = 0; i < keep.size();) {
    size_t j = i + 1;
    while (j < keep.size() && keep[j] == keep[j - 1] + 1) j++;
    ops_.copy_rows(rows.data() + pos.size() * W, W, l.rows.data() + static_cast<size_t>(keep[i]) * W, W,
                   static_cast<int64_t>(j - i), W);
    for (size_t k = i; k < j; k++) pos.push_back(l.pos[keep[k]]);
    i = j;
  }
  alloc_bytes_ -= l.rows.bytes();
  l.rows = std::move(rows);
  l.pos = std::move(pos);
  l.cap = cap;
}

float* KvCache::append(int layer, int head, int p0, int n) {
  List& l = list(layer, head);
  if (!l.pos.empty() && p0 <= l.pos.back())
    throw std::logic_error("KvCache::append: position " + std::to_string(p0) + " is not after " +
                           std::to_string(l.pos.back()));
  const int have = static_cast<int>(l.pos.size());
  if (have + n > l.cap) {
    std::vector<int> all(have);
    for (int i = 0; i < have; i++) all[i] = i;
    reallocate(layer, l, all, whole_blocks(have + n));
  }
  for (int i = 0; i < n; i++) l.pos.push_back(p0 + i);
  return l.rows.data() + static_cast<size_t>(have) * width_[layer];
}

int64_t KvCache::compact() {
  int64_t dropped = 0;
  for (int layer = 0; layer < static_cast<int>(width_.size()); layer++) {
    if (width_[layer] == 0) continue;
    for (int h = 0; h < heads_; h++) {
      List& l = list(layer, h);
      std::vector<int> keep;
      for (int i = 0; i < static_cast<int>(l.pos.size()); i++)
        if (kept(layer, h, l.pos[i])) keep.push_back(i);
      const int cap = whole_blocks(static_cast<int>(keep.size()));
      if (keep.size() == l.pos.size() && cap == l.cap) continue;
      dropped += static_cast<int64_t>(l.pos.size() - keep.size());
      reallocate(layer, l, keep, cap);
    }
  }
  return dropped;
}

void KvCache::truncate(int len) {
  for (List& l : lists_)
    while (!l.pos.empty() && l.pos.back() >= len) l.pos.pop_back();  // the allocation stays
  keep_range(len, T_);
}

void KvCache::clear() {
  for (List& l : lists_) l = List{};
  alloc_bytes_ = peak_bytes_ = 0;
  std::fill(keep_.begin(), keep_.end(), uint8_t{1});
}

void KvCache::keep_range(int from, int to) {
  for (size_t r = 0; r < lists_.size(); r++)
    std::fill(keep_.begin() + r * T_ + from, keep_.begin() + r * T_ + to, uint8_t{1});
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

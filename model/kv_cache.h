// model/kv_cache.h — the KV cache of model/inference.h (docs/design.md, "Inference and the KV
// cache").
//
// Layout. Per storage layer l and cache head g (g < heads(): H_kv, or 1 for LRKV, whose shared
// part is one decision per token and layer) a list of entries in blocks of kBlock slots:
//   entry  = absolute position + one row of width(l) floats:
//            [K_g (D, post-RoPE) | V_g (D)]               MHA/GQA/MQA storage layer
//            [X W_sh^K | X W_sh^V | X U^K | X U^V]        LRKV (2 D + 2 H r, pre-RoPE)
//   block b of (l, g): kBlock consecutive entry rows; the block table of (l, g) maps its logical
//            blocks to pool blocks. Today every (l, g) owns blocks_per_head() consecutive pool
//            blocks (block table b -> first + b), so the slots of a head are one strided list
//            (row stride width(l), head stride slots_per_head() width(l)) that
//            Ops::attention_cache_forward reads directly.
// Slot i of every head holds position i (nothing is compacted yet) and a keep flag: the
// keep-mask of the InferenceModel is this flag. A compacting cache drops an entry by moving the
// later entries of its head down and shortening the list; the attention op already takes every
// slot's position, so readers need no change.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/ops.h"
#include "model/config.h"
#include "model/layer_plan.h"

namespace kvt {

class KvCache {
 public:
  static constexpr int kBlock = 64;

  KvCache(Ops& ops, const ModelConfig& cfg, const std::vector<LayerPlan>& plan);

  int heads() const { return heads_; }
  int slots_per_head() const { return blocks_per_head_ * kBlock; }
  int blocks_per_head() const { return blocks_per_head_; }
  int width(int layer) const { return width_[layer]; }  // 0: the layer stores nothing
  // Slot 0 of (layer, head); slot i lies width(layer) floats further (backend memory).
  float* entries(int layer, int head) const;
  int64_t head_stride(int layer) const {
    return static_cast<int64_t>(slots_per_head()) * width_[layer];
  }
  // Block table of (layer, head): pool block of each logical block.
  std::vector<int> block_table(int layer, int head) const;

  // Keep flags, one per (storage layer, head, slot = position).
  bool kept(int layer, int head, int pos) const { return keep_[flag(layer, head, pos)] != 0; }
  void set_kept(int layer, int head, int pos, bool keep) { keep_[flag(layer, head, pos)] = keep; }
  void keep_all() { std::fill(keep_.begin(), keep_.end(), uint8_t{1}); }
  void keep_range(int from, int to);  // every head's positions [from, to) kept again

  size_t capacity_bytes() const { return pool_.bytes(); }
  // Floats of the kept entries among positions [0, len), over every storage layer and head.
  size_t kept_floats(int len) const;

 private:
  size_t flag(int layer, int head, int pos) const {
    return (static_cast<size_t>(layer) * heads_ + head) * slots_per_head() + pos;
  }
  int heads_ = 0, blocks_per_head_ = 0;
  std::vector<int> width_;
  std::vector<size_t> first_block_;  // per layer: float offset of (layer, head 0)'s first block
  std::vector<size_t> block_floats_; // per layer: floats of one block, kBlock * width
  Buffer<float> pool_;
  std::vector<uint8_t> keep_;
};

}  // namespace kvt

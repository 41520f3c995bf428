// model/kv_cache.h — the compacting KV cache of model/inference.h (docs/design.md, "Inference and
// the KV cache").
//
// Layout. Per storage layer l and cache head g (g < heads(): H_kv, or 1 for LRKV, whose shared
// part is one decision per token and layer) one list of entries in its own allocation:
//   entry  = absolute position + one row of width(l) floats:
//            [K_g (D, post-RoPE) | V_g (D)]               MHA/GQA/MQA storage layer
//            [X W_sh^K | X W_sh^V | X U^K | X U^V]        LRKV (2 D + 2 H r, pre-RoPE)
//   rows   = count(l, g) entries in increasing position, row stride width(l), in an allocation of
//            whole blocks of kBlock rows: grown by blocks on append, reallocated to
//            ceil(count / kBlock) blocks by compact(), so every list holds only what it keeps
//            and budgets may differ across layers and heads.
// Keep flags, one per (storage layer, head, position), say what each list should hold: clearing
// one is the keep-mask (readers skip the entry); compact() then frees the entries whose flag is
// cleared. Readers take each row's position from positions(), so an evicted gap needs no
// change in the attention op.
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
  int max_positions() const { return T_; }
  int width(int layer) const { return width_[layer]; }  // 0: the layer stores nothing

  // The entries of (layer, head): count() rows of width(layer) floats (backend memory; valid
  // until the next append, compact, truncate or clear), row i at positions()[i].
  float* entries(int layer, int head) const { return list(layer, head).rows.data(); }
  int count(int layer, int head) const { return static_cast<int>(list(layer, head).pos.size()); }
  const std::vector<int32_t>& positions(int layer, int head) const { return list(layer, head).pos; }
  int allocated_rows(int layer, int head) const { return list(layer, head).cap; }
  // Room for n new entries at positions [p0, p0 + n) after the last one (p0 must exceed every
  // position held); returns the first new row, for the caller to fill.
  float* append(int layer, int head, int p0, int n);

  // Keep flags, one per (storage layer, head, position).
  bool kept(int layer, int head, int pos) const { return keep_[flag(layer, head, pos)] != 0; }
  void set_kept(int layer, int head, int pos, bool keep) { keep_[flag(layer, head, pos)] = keep; }
  void keep_range(int from, int to);  // every head's positions [from, to) kept again

  // Frees every entry whose flag is cleared; returns how many.
  int64_t compact();
  // Drops the entries at positions >= len and keeps positions [len, max_positions()) again.
  void truncate(int len);
  // Frees every list and keeps every position again.
  void clear();

  size_t capacity_bytes() const { return alloc_bytes_; }  // the lists' allocations now
  size_t peak_bytes() const { return peak_bytes_; }       // most at once since the last clear
  // Floats of the kept entries among positions [0, len), over every storage layer and head.
  size_t kept_floats(int len) const;

 private:
  struct List {
    Buffer<float> rows;
    std::vector<int32_t> pos;
    int cap = 0;  // rows allocated
  };
  const List& list(int layer, int head) const { return lists_[static_cast<size_t>(layer) * heads_ + head]; }
  List& list(int layer, int head) { return lists_[static_cast<size_t>(layer) * heads_ + head]; }
  size_t flag(int layer, int head, int pos) const {
    return (static_cast<size_t>(layer) * heads_ + head) * T_ + pos;
  }
  // Moves the rows `keep` (indices, increasing) of l into a new allocation of `cap` rows.
  void reallocate(int layer, List& l, const std::vector<int>& keep, int cap);

  Ops& ops_;
  int heads_ = 0, T_ = 0;
  std::vector<int> width_;
  std::vector<List> lists_;  // [layers, heads]
  std::vector<uint8_t> keep_;
  size_t alloc_bytes_ = 0, peak_bytes_ = 0;
};

}  // namespace kvt

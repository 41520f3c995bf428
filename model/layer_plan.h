// model/layer_plan.h — one description of every decoder layer, used by training
// (model/transformer.cpp) and inference (model/inference.cpp): the cross-layer sharing map of
// model/kv_sharing.h made concrete (docs/design.md, "Cross-layer KV sharing"), the parameter
// offsets, the projection widths, plus the two helpers both paths share: the RoPE tables and
// the carving of one arena buffer.
//
// Per layer l:
//   proj      columns of the input projection a [Wq; own K/V block]^T: H D + kv_width
//   kv_width  columns of the K/V block the layer computes from its own input (0: it reads
//             another layer's): 2 Hkv D (k_proj|v_proj), or LRKV's 2 D + 2 H r
//             (k_shared|v_shared|k_down|v_down)
//   src       where K and V come from: own, reuse {k_layer, v_layer}, fused {first, last}
//   reads()   the storage layers whose cached entries a read of layer l sees: itself (own),
//             {k_layer, v_layer} (reuse) or {first, last} (fused)
//   fuse_*    FusedKV weights, k_up/v_up LRKV's per-head B_h (offsets, 0 where absent)
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/ops.h"
#include "model/config.h"
#include "model/kv_sharing.h"
#include "model/params.h"

namespace kvt {

// Float offsets of one decoder layer's tensors in the parameter buffer, resolved from the table.
// A layer's input projection is one matrix: q_proj followed by its K/V block (kv_width rows);
// gate_proj and up_proj are one [2F, C] matrix. Both layouts are checked when resolved.
struct LayerParamOffsets {
  size_t ln1 = 0, q = 0, o = 0, ln2 = 0, gate_up = 0, down = 0;
  size_t k_up = 0, v_up = 0;                                                    // LRKV
  size_t fuse_k_first = 0, fuse_k_last = 0, fuse_v_first = 0, fuse_v_last = 0;  // FusedKV
  int kv_width = 0;
};
LayerParamOffsets layer_param_offsets(const ParamTable& table, const ModelConfig& cfg, int layer);

struct LayerPlan : LayerParamOffsets {
  int layer = 0;
  KvSource src;
  bool lrkv = false;
  int proj = 0;
  size_t kv = 0;  // offset of the K/V block of the input projection (right after q_proj)
  bool stores() const { return kv_width > 0; }
  bool fused() const { return src.kind == KvSource::Kind::fused; }
  bool reuses() const { return src.kind == KvSource::Kind::reuse; }
  // The storage layers whose K (index 0) and V (index 1) this layer reads (itself when it
  // stores; fused: first and last).
  std::array<int, 2> reads() const;
};

// The plan of every layer; cfg resolved, table = build_param_table(cfg).
std::vector<LayerPlan> build_layer_plan(const ParamTable& table, const ModelConfig& cfg);

// RoPE tables [max_seq_len, D/2] (ops.h, rope_forward): cos[p, j] = cos(p theta^(-2j/D)), the
// angle computed in double; written to backend memory cos, sin.
void upload_rope_tables(Ops& ops, const ModelConfig& cfg, float* cos, float* sin);

// Lays out many float arrays in one backend buffer: take() records where each goes (64-byte
// aligned), carve() allocates the buffer and sets every recorded pointer.
class Arena {
 public:
  void take(float*& dst, int64_t n);
  Buffer<float> carve(Ops& ops);

 private:
  struct Slot {
    float** dst;
    int64_t off;
  };
  std::vector<Slot> slots_;
  int64_t total_ = 0;
};

}  // namespace kvt

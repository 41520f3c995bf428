// kernels/common/kv_math.h — per-element math of the KV-lean attention ops (FusedKV fusion,
// LRKV expansion), shared by the CPU and CUDA backends (docs/design.md, "The op interface" and "The model family").
#pragma once

#include "kernels/common/math.h"

namespace kvt::math {

// Rows per partial sum in the fixed-order reductions over tokens (both backends).
constexpr int kKvRowsPerChunk = 64;

// Fusion weights per KV head: D/2 for pair-tied keys, D for values.
KVT_HD int kv_fuse_width(int D, bool pair_tied) { return pair_tied ? D / 2 : D; }

// The weight column of channel j: channels j and j + D/2 (a RoPE pair) share one when tied.
KVT_HD int kv_fuse_channel(int j, int D, bool pair_tied) {
  return pair_tied && j >= D / 2 ? j - D / 2 : j;
}

// One fused element: w_first x_first + w_last x_last.
KVT_HD float kv_fuse(float w_first, float x_first, float w_last, float x_last) {
  return w_first * x_first + w_last * x_last;
}

}  // namespace kvt::math

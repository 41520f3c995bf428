// model/kv_sharing.h — where each layer's K and V come from (the cross-layer sharing map of
// docs/design.md, "The model family"), and what the KV cache holds per token for a config.
//
// One map drives the forward/backward orchestration, the parameter table, init, FLOPs and cache
// accounting; no scheme has attention code of its own. With n = storage_layers, 0-indexed layers:
//
//   scheme        storage layers   K of a reusing layer i           V of a reusing layer i
//   none          all              own                              own
//   cla           even layers      K of i-1                         V of i-1
//   yoco          0..n-1           K of n-1                         V of n-1
//   fusedkv_lite  0..n-1           K of n-1                         V of 0
//   fusedkv       0..n-1           a_i0 K_0 + a_in K_{n-1}          b_i0 V_0 + b_in V_{n-1}
//
// K always means post-RoPE keys. LRKV (lrkv_rank > 0) changes how a layer computes its own K/V,
// not where they come from: every layer is `own`.
#pragma once

#include <array>

#include <cstdint>
#include <string>

#include "model/config.h"

namespace kvt {

struct KvSource {
  enum class Kind {
    own,    // the layer stores: K = RoPE(x W_k), V = x W_v (or the LRKV form)
    reuse,  // K is storage layer k_layer's K, V is storage layer v_layer's V
    fused,  // K = a_first ⊙ K_first + a_last ⊙ K_last, V likewise (fusedkv)
  };
  Kind kind = Kind::own;
  int k_layer = -1, v_layer = -1;  // reuse: source layers; fused: first = k_layer, last = v_layer
  int first() const { return k_layer; }
  int last() const { return v_layer; }
  // The storage layers whose cached entries a read of `layer` (the layer this describes) sees:
  // {layer, layer} (own), {k_layer, v_layer} (reuse) or {first, last} (fused).
  std::array<int, 2> reads(int layer) const {
    return kind == Kind::own ? std::array<int, 2>{layer, layer} : std::array<int, 2>{k_layer, v_layer};
  }
};

// The map; cfg must be resolved. Throws std::out_of_range for a layer outside [0, n_layers).
KvSource kv_source_of_layer(const ModelConfig& cfg, int layer);
inline bool is_storage_layer(const ModelConfig& cfg, int layer) {
  return kv_source_of_layer(cfg, layer).kind == KvSource::Kind::own;
}
// Layers that keep K/V in the cache (= n, ceil(L/2) for cla, L for none and LRKV).
int storage_layer_count(const ModelConfig& cfg);
// Whether some other layer reads this layer's K or V (its dK/dV then sum several consumers).
bool has_kv_consumers(const ModelConfig& cfg, int layer);

// KV-cache size per token (all layers): values, and bytes at fp32 and bf16.
//   none / GQA / MQA:        2 L H_kv d_h
//   cla, yoco, fusedkv(_lite): 2 n H_kv d_h   (n storage layers)
//   LRKV:                    2 L (d_h + H r)   (X W_shared^K, X W_shared^V and the per-head latents)
struct KvCacheSize {
  int64_t values = 0;
  int64_t bytes_fp32 = 0;
  int64_t bytes_bf16 = 0;
};
KvCacheSize kv_cache_per_token(const ModelConfig& cfg);

// One line for banners and `inspect`, e.g.
// "KV cache: fusedkv, 2 of 4 layers store K/V, 4 KV heads: 512 values/token = 2.00 KiB fp32,
//  1.00 KiB bf16 (50.0% of MHA)"
std::string kv_cache_summary(const ModelConfig& cfg);

}  // namespace kvt

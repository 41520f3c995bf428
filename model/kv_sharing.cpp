#include "model/kv_sharing.h"

#include <cstdio>
#include <stdexcept>

namespace kvt {

KvSource kv_source_of_layer(const ModelConfig& cfg, int layer) {
  const int L = cfg.n_layers, n = cfg.storage_layers;
  if (layer < 0 || layer >= L)
    throw std::out_of_range("layer " + std::to_string(layer) + " outside [0, " + std::to_string(L) +
                            ")");
  KvSource s;
  const std::string& scheme = cfg.kv_sharing;
  if (scheme == "none") return s;
  if (scheme == "cla") {
    if (layer % 2 == 0) return s;
    s.kind = KvSource::Kind::reuse;
    s.k_layer = s.v_layer = layer - 1;
    return s;
  }
  if (n < 1 || n > L)
    throw std::logic_error("kv_source_of_layer: storage_layers " + std::to_string(n) +
                           " not resolved for kv_sharing " + scheme);
  if (layer < n) return s;
  if (scheme == "yoco") {
    s.kind = KvSource::Kind::reuse;
    s.k_layer = s.v_layer = n - 1;
  } else if (scheme == "fusedkv_lite") {
    s.kind = KvSource::Kind::reuse;
    s.k_layer = n - 1;
    s.v_layer = 0;
  } else if (scheme == "fusedkv") {
    s.kind = KvSource::Kind::fused;
    s.k_layer = 0;      // first
    s.v_layer = n - 1;  // last
  } else {
    throw std::logic_error("kv_source_of_layer: unknown kv_sharing " + scheme);
  }
  return s;
}

int storage_layer_count(const ModelConfig& cfg) {
  int n = 0;
  for (int l = 0; l < cfg.n_layers; l++) n += is_storage_layer(cfg, l);
  return n;
}

bool has_kv_consumers(const ModelConfig& cfg, int layer) {
  for (int i = 0; i < cfg.n_layers; i++) {
    const KvSource s = kv_source_of_layer(cfg, i);
    if (s.kind != KvSource::Kind::own && (s.k_layer == layer || s.v_layer == layer)) return true;
  }
  return false;
}

KvCacheSize kv_cache_per_token(const ModelConfig& cfg) {
  const int64_t L = cfg.n_layers, H = cfg.n_heads, Hkv = cfg.kv_heads(), D = cfg.head_dim();
  KvCacheSize s;
  if (cfg.lrkv())
    s.values = 2 * L * (D + H * cfg.lrkv_rank);
  else
    s.values = 2 * static_cast<int64_t>(storage_layer_count(cfg)) * Hkv * D;
  s.bytes_fp32 = 4 * s.values;
  s.bytes_bf16 = 2 * s.values;
  return s;
}

std::string kv_cache_summary(const ModelConfig& cfg) {
  const KvCacheSize s = kv_cache_per_token(cfg);
  const int64_t mha = 2 * static_cast<int64_t>(cfg.n_layers) * cfg.n_heads * cfg.head_dim();
  std::string scheme;
  if (cfg.lrkv())
    scheme = "lrkv (rank " + std::to_string(cfg.lrkv_rank) + "), every layer stores K/V latents";
  else
    scheme = cfg.kv_sharing + ", " + std::to_string(storage_layer_count(cfg)) + " of " +
             std::to_string(cfg.n_layers) + " layers store K/V, " + std::to_string(cfg.kv_heads()) +
             " KV heads";
  char buf[256];
  std::snprintf(buf, sizeof buf,
                ": %lld values/token = %.2f KiB fp32, %.2f KiB bf16 (%.1f%% of MHA)",
                static_cast<long long>(s.values), s.bytes_fp32 / 1024.0, s.bytes_bf16 / 1024.0,
                100.0 * static_cast<double>(s.values) / static_cast<double>(mha));
  return "KV cache: " + scheme + buf;
}

}  // namespace kvt

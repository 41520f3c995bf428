// model/decode_eviction.cpp — buffered re-scoring and eviction while generating.
#include "model/decode_eviction.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>

#include "kernels/common/rng.h"

namespace kvt {

namespace {
constexpr uint64_t kDecodeRandomPurpose = 0x6465636f6465ull;  // "decode"
}

DecodeEvictor::DecodeEvictor(InferenceModel& model, Evictor& ev, GateModel* gates, int every)
    : m_(model), ev_(ev), gates_(gates), every_(every), start_(model.length()), rows_(0) {
  const EvictPolicy p = ev.options().policy;
  if (p != EvictPolicy::gates && p != EvictPolicy::streaming && p != EvictPolicy::random)
    throw std::invalid_argument("decode-time eviction scores new tokens with gates, streaming or "
                                "random, not " + to_string(p));
  if (p == EvictPolicy::gates && !gates) throw std::invalid_argument("decode-time eviction with gates needs gates");
  if (every < 1) throw std::invalid_argument("decode-time eviction: every must be >= 1");
  const ModelConfig& cfg = model.config();
  layers_ = gate_layers(cfg);
  storage_of_.assign(cfg.n_layers, -1);
  for (size_t i = 0; i < layers_.size(); i++) storage_of_[layers_[i]] = static_cast<int>(i);
  if (p != EvictPolicy::gates) return;
  reserve(every + model.max_chunk());
  const int C = cfg.d_model;
  m_.set_hidden_observer([this, C](int layer, const float* h, int pos0, int n) {
    reserve(pos0 - start_ + n);  // a prefill longer than a chunk between two steps
    float* dst = hidden_.data() + (static_cast<size_t>(storage_of_[layer]) * rows_ + (pos0 - start_)) * C;
    m_.ops().copy(dst, h, static_cast<size_t>(n) * C * sizeof(float));
  });
}

void DecodeEvictor::reserve(int rows) {
  if (rows <= rows_) return;
  const int grown = std::max(rows, 2 * rows_), S = static_cast<int>(layers_.size());
  const size_t C = static_cast<size_t>(m_.config().d_model);
  Buffer<float> b(m_.ops(), static_cast<size_t>(S) * grown * C);
  for (int si = 0; si < S && rows_ > 0; si++)
    m_.ops().copy(b.data() + si * grown * C, hidden_.data() + si * rows_ * C, rows_ * C * sizeof(float));
  hidden_ = std::move(b);
  rows_ = grown;
}

DecodeEvictor::~DecodeEvictor() {
  if (hidden_.size() > 0) m_.set_hidden_observer({});
}

int64_t DecodeEvictor::step() {
  const int len = m_.length(), n = len - start_;
  if (n < every_) return 0;
  const EvictionOptions& opt = ev_.options();
  const int M = m_.mask_heads(), S = static_cast<int>(layers_.size());
  const int slice = std::min(every_, m_.max_chunk());  // the gates see at most max_chunk tokens
  const auto t0 = std::chrono::steady_clock::now();
  for (int si = 0; si < S; si++) {
    const int layer = layers_[si];
    for (int i = 0; i < n; i += slice) {
      const int k = std::min(slice, n - i);
      std::vector<float> s;
      if (opt.policy == EvictPolicy::gates)
        s = gates_->forward(layer, hidden_.data() + (static_cast<size_t>(si) * rows_ + i) * m_.config().d_model, k);
      for (int m = 0; m < M; m++) {
        std::span<float> dst = ev_.scores(si, m);
        for (int j = 0; j < k; j++) {
          const int p = start_ + i + j;
          if (opt.policy == EvictPolicy::gates) dst[p] = s[static_cast<size_t>(j) * M + m];
          else if (opt.policy == EvictPolicy::streaming) dst[p] = static_cast<float>(p);
          else dst[p] = static_cast<float>(Rng(derive_seed(opt.seed, kDecodeRandomPurpose,
                                                           (static_cast<uint64_t>(si) * M + m) * m_.capacity() + p))
                                               .uniform());
        }
      }
    }
  }
  if (opt.policy == EvictPolicy::gates) gate_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  start_ = len;
  evictions_++;
  const int64_t evicted = ev_.evict(len);
  if (evicted > 0 && opt.compact) m_.compact();
  return evicted;
}

}  // namespace kvt

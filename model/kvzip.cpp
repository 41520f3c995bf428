// model/kvzip.cpp — KVzip scores from one teacher-forced forward of the frozen model.
#include "model/kvzip.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "model/gates.h"
#include "model/kv_sharing.h"

namespace kvt {

KvzipScorer::KvzipScorer(Transformer& model) : model_(model), storage_(gate_layers(model.config())) {}

void KvzipScorer::run(std::span<const int32_t> context, std::span<const int32_t> prompt) {
  const ModelConfig& cfg = model_.config();
  const int P = static_cast<int>(context.size()), Q = static_cast<int>(prompt.size());
  const int T = 2 * P + Q;
  if (P < 1) throw std::invalid_argument("KVzip scoring needs a context of at least 1 token");
  if (T > model_.max_seq())
    throw std::length_error("KVzip scoring: context " + std::to_string(P) + " + prompt " +
                            std::to_string(Q) + " + context " + std::to_string(P) + " = " +
                            std::to_string(T) + " tokens exceeds the model's capacity of " +
                            std::to_string(model_.max_seq()) + " (model.max_seq_len " +
                            std::to_string(cfg.max_seq_len) + ")");
  std::vector<int32_t> input;
  input.reserve(T);
  input.insert(input.end(), context.begin(), context.end());
  input.insert(input.end(), prompt.begin(), prompt.end());
  input.insert(input.end(), context.begin(), context.end());
  model_.forward(input.data(), nullptr, 1, T);

  // Per attending layer: max over the repeated copy's queries and each group's heads; then each
  // storage layer takes the max over every layer that reads its cache.
  const int M = gate_decisions(cfg), H = cfg.n_heads;
  Ops& ops = model_.ops();
  if (layer_score_.size() < static_cast<size_t>(M) * P) layer_score_ = Buffer<float>(ops, static_cast<size_t>(M) * P);
  std::vector<float> layer(static_cast<size_t>(M) * P);
  P_ = P;
  scores_.assign(storage_.size() * M * P, 0.0f);
  auto fold_into = [&](int storage_layer) {
    const auto it = std::find(storage_.begin(), storage_.end(), storage_layer);
    float* dst = scores_.data() + (it - storage_.begin()) * static_cast<size_t>(M) * P;
    for (size_t i = 0; i < layer.size(); i++) dst[i] = std::max(dst[i], layer[i]);
  };
  for (int l = 0; l < cfg.n_layers; l++) {
    ops.kvzip_score(layer_score_.data(), model_.attention_probs(l), 1, H, M, T, P + Q, T, P);
    ops.to_host(layer.data(), layer_score_.data(), layer.size() * sizeof(float));
    const KvSource src = kv_source_of_layer(cfg, l);
    if (src.kind == KvSource::Kind::own) {
      fold_into(l);
    } else {  // reuse: the K and V source layers; fused: first and last (maybe equal)
      fold_into(src.k_layer);
      if (src.v_layer != src.k_layer) fold_into(src.v_layer);
    }
  }
}

const float* KvzipScorer::hidden(int storage_index) const {
  if (storage_index < 0 || storage_index >= static_cast<int>(storage_.size()))
    throw std::out_of_range("storage index " + std::to_string(storage_index) + " out of range");
  return model_.attention_input(storage_[storage_index]);
}

}  // namespace kvt

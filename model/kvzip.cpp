// model/kvzip.cpp — KVzip scores from one teacher-forced prefill of the frozen model.
#include "model/kvzip.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "model/gates.h"
#include "model/kv_sharing.h"

namespace kvt {

KvzipScorer::KvzipScorer(InferenceModel& model)
    : model_(model), storage_(gate_layers(model.config())) {
  storage_of_.assign(model.config().n_layers, -1);
  for (size_t i = 0; i < storage_.size(); i++) storage_of_[storage_[i]] = static_cast<int>(i);
}

void KvzipScorer::run(std::span<const int32_t> context, std::span<const int32_t> prompt) {
  const ModelConfig& cfg = model_.config();
  const int P = static_cast<int>(context.size()), Q = static_cast<int>(prompt.size());
  const int T = 2 * P + Q, C = cfg.d_model, M = gate_decisions(cfg);
  if (P < 1) throw std::invalid_argument("KVzip scoring needs a context of at least 1 token");
  if (T > cfg.max_seq_len)
    throw std::length_error("KVzip scoring: context " + std::to_string(P) + " + prompt " +
                            std::to_string(Q) + " + context " + std::to_string(P) + " = " +
                            std::to_string(T) + " tokens exceeds model.max_seq_len " +
                            std::to_string(cfg.max_seq_len));
  std::vector<int32_t> input;
  input.reserve(T);
  input.insert(input.end(), context.begin(), context.end());
  input.insert(input.end(), prompt.begin(), prompt.end());
  input.insert(input.end(), context.begin(), context.end());

  Ops& ops = model_.ops();
  const size_t hidden_floats = storage_.size() * static_cast<size_t>(P) * C;
  if (hidden_.size() != hidden_floats) hidden_ = Buffer<float>(ops, hidden_floats);
  P_ = P;
  scores_.assign(storage_.size() * M * P, 0.0f);
  // Gate inputs: the rows of positions < P as each storage layer sees them.
  model_.set_hidden_observer([&](int layer, const float* h, int pos0, int n) {
    const int rows = std::min(n, P - pos0);
    if (rows <= 0) return;
    float* dst = hidden_.data() + (static_cast<size_t>(storage_of_[layer]) * P + pos0) * C;
    ops.copy(dst, h, static_cast<size_t>(rows) * C * sizeof(float));
  });
  // Targets: per reading layer and head, the max over the repeated copy's queries, folded into
  // every storage layer it reads (own: itself; reuse: its K and V layers; fused: both).
  model_.set_attention_probe({P + Q, T, false, [&](int layer, int head, const int32_t* pos,
                                                   const float* score, int n) {
    const int m = cfg.lrkv() ? 0 : head;  // LRKV: one decision per token, the max over heads
    for (int target : kv_source_of_layer(cfg, layer).reads(layer)) {
      float* dst = scores_.data() + (static_cast<size_t>(storage_of_[target]) * M + m) * P;
      for (int i = 0; i < n; i++)
        if (pos[i] >= 0 && pos[i] < P) dst[pos[i]] = std::max(dst[pos[i]], score[i]);
    }
  }});
  try {
    model_.reset();
    model_.prefill(input);
  } catch (...) {
    model_.set_hidden_observer(nullptr);
    model_.set_attention_probe({});
    throw;
  }
  model_.set_hidden_observer(nullptr);
  model_.set_attention_probe({});
}

const float* KvzipScorer::hidden(int storage_index) const {
  if (storage_index < 0 || storage_index >= static_cast<int>(storage_.size()))
    throw std::out_of_range("storage index " + std::to_string(storage_index) + " out of range");
  return hidden_.data() + static_cast<size_t>(storage_index) * P_ * model_.config().d_model;
}

}  // namespace kvt

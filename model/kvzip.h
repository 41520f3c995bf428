// model/kvzip.h — KVzip scores (docs/design.md, "Fast KVzip gates"): how much a frozen model needs each cached KV pair
// of a context, measured by making it reconstruct the context.
//
// Input [context (P tokens) ; repeat prompt ; the same context], teacher-forced, one forward.
// For every layer, KV head g and context position p < P: the largest attention probability that
// any query of the repeated copy (positions [P + prompt, 2P + prompt)) of any of the G query
// heads of g puts on p. A storage layer's score is the max over itself and every layer that reads
// its cache (a cla/yoco/fusedkv_lite reusing layer reads the layers its K and V come from, a
// fusedkv layer both fused layers). LRKV: one score per token and layer, the max over all heads.
//
// The same forward also yields the hidden states the gates read (positions < P see only the
// context: attention is causal), so gate training takes both from here.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/transformer.h"

namespace kvt {

class KvzipScorer {
 public:
  // model: frozen, built for B >= 1 and T >= 2 P + prompt length (with_grads may be false).
  explicit KvzipScorer(Transformer& model);

  // One forward over [context ; prompt ; context]. Throws std::length_error naming the lengths
  // when 2 P + prompt exceeds the model's sequence capacity.
  void run(std::span<const int32_t> context, std::span<const int32_t> prompt);

  int context_length() const { return P_; }
  // Scores of the last run, host [storage layers (gate_layers order), gate_decisions, P].
  const std::vector<float>& scores() const { return scores_; }
  // Hidden state entering storage layer gate_layers()[i]'s attention, rows 0..P-1 of [T, C]
  // (backend memory, valid until the next run).
  const float* hidden(int storage_index) const;

 private:
  Transformer& model_;
  std::vector<int> storage_;  // gate_layers(cfg)
  int P_ = 0;
  std::vector<float> scores_;
  Buffer<float> layer_score_;  // [Hg, P] of one layer, backend
};

}  // namespace kvt

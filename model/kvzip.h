// model/kvzip.h — KVzip scores (docs/design.md, "Fast KVzip gates"): how much a frozen model needs
// each cached KV pair of a context, measured by making it reconstruct the context.
//
// Input [context (P tokens) ; repeat prompt ; the same context], teacher-forced, one prefill of
// the inference path (model/inference.h). For every layer, KV head g and context position p < P:
// the largest attention probability that any query of the repeated copy (positions
// [P + prompt, 2P + prompt)) of any of the G query heads of g puts on p, reduced to the max as it
// is computed (InferenceModel's attention probe: no probability matrix is ever stored). A storage
// layer's score is the max over itself and every layer that reads its cache (a cla/yoco/
// fusedkv_lite reusing layer reads the layers its K and V come from, a fusedkv layer both fused
// layers). LRKV: one score per token and layer, the max over all heads.
//
// The same prefill also yields the hidden states the gates read (positions < P see only the
// context: attention is causal); they are copied out as they pass, so gate training takes both
// from here.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/inference.h"

namespace kvt {

class KvzipScorer {
 public:
  // model: the frozen model's inference path, max_seq_len >= 2 P + prompt length. run() resets
  // it and leaves its cache holding the KVzip input.
  explicit KvzipScorer(InferenceModel& model);

  // One prefill of [context ; prompt ; context]. Throws std::length_error naming the lengths when
  // 2 P + prompt exceeds model.max_seq_len.
  void run(std::span<const int32_t> context, std::span<const int32_t> prompt);

  int context_length() const { return P_; }
  // Scores of the last run, host [storage layers (gate_layers order), gate_decisions, P].
  const std::vector<float>& scores() const { return scores_; }
  // Hidden state entering storage layer gate_layers()[i]'s attention, rows 0..P-1 [P, C]
  // (backend memory, valid until the next run).
  const float* hidden(int storage_index) const;

 private:
  InferenceModel& model_;
  std::vector<int> storage_;      // gate_layers(cfg)
  std::vector<int> storage_of_;   // per layer: its index in storage_, or -1
  int P_ = 0;
  std::vector<float> scores_;
  Buffer<float> hidden_;  // [storage layers, P, C]
};

}  // namespace kvt

// train/gate_eval.h — held-out quality of Fast KVzip gates: loss, accuracy at a threshold and
// recall of the top entries, accumulated context by context.
#pragma once

#include <cstdint>
#include <span>

namespace kvt {

// Held-out quality of the gates on some contexts. An entry is one (storage layer, decision, context
// position); each context's entries are ranked together, as eviction ranks them.
struct GateEvalStats {
  double loss = 0;            // BCE summed over layers and decisions, mean over tokens and contexts
  double accuracy = 0;        // share of entries where (score >= thr) == (target >= thr)
  double recall = 0;          // mean over contexts: share of the true top-`recall_top` entries (by
                              // target) that are also in the gates' top (by score)
  double target_density = 0;  // share of entries with target >= thr (how sparse the targets are)
  double target_mean = 0;
  int64_t entries = 0;
  int contexts = 0;
};

// Accumulates GateEvalStats context by context. scores and targets: [entries] of one context, in
// the same order; layer_losses: its per-layer BCE sum (the loss is given, not recomputed).
class GateEvalAccumulator {
 public:
  GateEvalAccumulator(float threshold, float recall_top) : thr_(threshold), top_(recall_top) {}
  void add_context(std::span<const float> scores, std::span<const float> targets, double loss);
  GateEvalStats result() const;

 private:
  float thr_, top_;
  double loss_ = 0, recall_ = 0, target_sum_ = 0;
  int64_t agree_ = 0, dense_ = 0, entries_ = 0;
  int contexts_ = 0;
};

}  // namespace kvt

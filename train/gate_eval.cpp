// train/gate_eval.cpp — the gate eval accumulator (train/gate_eval.h).
#include "train/gate_eval.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvt {

void GateEvalAccumulator::add_context(std::span<const float> scores, std::span<const float> targets,
                                      double loss) {
  if (scores.size() != targets.size() || scores.empty())
    throw std::invalid_argument("gate eval: " + std::to_string(scores.size()) + " scores for " +
                                std::to_string(targets.size()) + " targets");
  const size_t n = scores.size();
  for (size_t i = 0; i < n; i++) {
    agree_ += (scores[i] >= thr_) == (targets[i] >= thr_);
    dense_ += targets[i] >= thr_;
    target_sum_ += targets[i];
  }
  // Top k by target and by score (ties: the lower index), then their overlap.
  const size_t k = std::max<size_t>(1, static_cast<size_t>(std::llround(top_ * static_cast<double>(n))));
  auto top_set = [&](std::span<const float> v) {
    std::vector<uint32_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0u);
    std::nth_element(idx.begin(), idx.begin() + static_cast<int64_t>(k) - 1, idx.end(),
                     [&](uint32_t a, uint32_t b) { return v[a] != v[b] ? v[a] > v[b] : a < b; });
    std::vector<uint8_t> in(n, 0);
    for (size_t i = 0; i < k; i++) in[idx[i]] = 1;
    return in;
  };
  const std::vector<uint8_t> truth = top_set(targets), pred = top_set(scores);
  size_t hit = 0;
  for (size_t i = 0; i < n; i++) hit += truth[i] && pred[i];
  recall_ += static_cast<double>(hit) / static_cast<double>(k);
  loss_ += loss;
  entries_ += static_cast<int64_t>(n);
  contexts_++;
}

GateEvalStats GateEvalAccumulator::result() const {
  GateEvalStats s;
  if (contexts_ == 0) return s;
  const double e = static_cast<double>(entries_);
  s.loss = loss_ / contexts_;
  s.accuracy = agree_ / e;
  s.recall = recall_ / contexts_;
  s.target_density = dense_ / e;
  s.target_mean = target_sum_ / e;
  s.entries = entries_;
  s.contexts = contexts_;
  return s;
}

}  // namespace kvt

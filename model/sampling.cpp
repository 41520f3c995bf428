#include "model/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvt {

void SamplingParams::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    throw std::invalid_argument("--temperature must be >= 0 (0 = greedy), got " +
                                std::to_string(temperature));
  if (top_k < 0) throw std::invalid_argument("--top-k must be >= 0 (0 = off), got " + std::to_string(top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f))
    throw std::invalid_argument("--top-p must be in (0, 1], got " + std::to_string(top_p));
}

int32_t argmax(std::span<const float> logits) {
  if (logits.empty()) throw std::invalid_argument("argmax of no logits");
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); i++)
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  return best;
}

int32_t sample_token(std::span<const float> logits, const SamplingParams& p, Rng& rng) {
  p.validate();
  if (p.temperature == 0.0f) return argmax(logits);
  const size_t V = logits.size();
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  // Most likely first; equal logits by lower id, so the candidate set is deterministic.
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  size_t keep = p.top_k > 0 ? std::min(V, static_cast<size_t>(p.top_k)) : V;
  std::vector<double> prob(keep);
  const double mx = logits[order[0]];
  double z = 0;
  for (size_t i = 0; i < keep; i++) z += prob[i] = std::exp((logits[order[i]] - mx) / p.temperature);
  if (p.top_p < 1.0f) {
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += prob[n++] / z;
      if (cum >= p.top_p) break;
    }
    keep = n;
    z = 0;
    for (size_t i = 0; i < keep; i++) z += prob[i];
  }
  const double u = rng.uniform() * z;
  double acc = 0;
  for (size_t i = 0; i < keep; i++) {
    acc += prob[i];
    if (u < acc) return order[i];
  }
  return order[keep - 1];  // u within rounding of z
}

}  // namespace kvt

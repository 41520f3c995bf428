// model/sampling.h — next-token choice from logits: greedy, or temperature with top-k / top-p
// (nucleus) truncation, drawn with the portable kvt::Rng so a seed reproduces a generation on
// every platform.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/common/rng.h"

namespace kvt {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax, lowest id on ties); > 0: sample softmax(l / T)
  int top_k = 0;             // > 0: only the k most likely tokens (ties broken by lower id)
  float top_p = 1.0f;        // (0, 1]: the smallest most-likely prefix whose mass reaches top_p
  // Throws std::invalid_argument naming the option (--temperature, --top-k, --top-p).
  void validate() const;
};

// Index of the largest logit (the lowest index among equal maxima).
int32_t argmax(std::span<const float> logits);

// Greedy when temperature == 0 (rng untouched); otherwise one rng.uniform() draw per call.
// Order of truncation: top-k, then top-p on the renormalised top-k distribution.
int32_t sample_token(std::span<const float> logits, const SamplingParams& p, Rng& rng);

}  // namespace kvt

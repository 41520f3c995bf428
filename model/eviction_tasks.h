// model/eviction_tasks.h — the tasks of the Fast KVzip study (docs/kvzip.md, "Tasks"), each run on
// a context compressed once before the task is seen (compress_context). Each starts from the cache
// holding the compressed context (length P) and leaves it so (truncate(P)), except free_copy, whose
// decode-time eviction may also evict context entries.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/decode_eviction.h"
#include "model/inference.h"

namespace kvt {

double token_nll(const float* logits, int V, int32_t target);  // -log softmax(logits)[target], in double
int32_t argmax_token(const float* logits, int V);               // the lowest id among the largest

struct Reconstruction {
  double nll = 0;       // mean over the P context tokens
  int copy_prefix = 0;  // context tokens before the first whose argmax differs (teacher-forced)
  double copy_accuracy = 0;  // share of context tokens that are the argmax (teacher-forced)
};
// Teacher-forced [prompt ; context[0 : P-1]] after the cache: the copy's loss and exact prefix.
Reconstruction reconstruct(InferenceModel& m, std::span<const int32_t> prompt,
                           std::span<const int32_t> context);

// Mean NLL of the continuation: its first token predicted by last_logits (the context's).
double continuation_nll(InferenceModel& m, std::span<const float> last_logits,
                        std::span<const int32_t> continuation);

// Greedy answer to a question appended after the cache: at most max_new tokens, stopping after
// any token of `stop`.
std::vector<int32_t> greedy_answer(InferenceModel& m, std::span<const int32_t> question, int max_new,
                                   std::span<const int32_t> stop);

// Scores of a generated copy against the text it should reproduce.
struct CopyScores {
  int copy_prefix = 0;      // generated tokens equal to the target's before the first difference
  double match_rate = 0;    // share of i < min(generated, target) with generated[i] == target[i]
  double lcs_rate = 0;      // longest common subsequence of the generated tokens and the target's
                            // first generated + 64 tokens, over the generated count (shift-tolerant)
};
CopyScores copy_scores(std::span<const int32_t> generated, std::span<const int32_t> target);

struct FreeCopy : CopyScores {
  std::vector<int32_t> tokens;  // the generated tokens
  double decode_seconds = 0, gate_seconds = 0;
  int evictions = 0;        // decode-time eviction rounds
};
// The repeat prompt and the context's first `primer` tokens (teacher-forced: the copy is started
// for the model), then `generate` greedy tokens (no stop), scored against context[primer:], with
// decode-time eviction when dec is given (built on this model and called after every forward).
FreeCopy free_copy(InferenceModel& m, std::span<const int32_t> prompt, std::span<const int32_t> context,
                   int generate, DecodeEvictor* dec, int primer = 0);

}  // namespace kvt

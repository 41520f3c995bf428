// model/eviction_tasks.cpp — reconstruction, continuation, greedy answers and free copy.
#include "model/eviction_tasks.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

namespace kvt {

double token_nll(const float* logits, int V, int32_t target) {
  double mx = logits[0];
  for (int i = 1; i < V; i++) mx = std::max(mx, static_cast<double>(logits[i]));
  double z = 0;
  for (int i = 0; i < V; i++) z += std::exp(logits[i] - mx);
  return std::log(z) + mx - logits[target];
}

int32_t argmax_token(const float* logits, int V) {
  return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
}

Reconstruction reconstruct(InferenceModel& m, std::span<const int32_t> prompt,
                           std::span<const int32_t> context) {
  const int P = static_cast<int>(context.size()), Q = static_cast<int>(prompt.size()),
            V = m.config().vocab_size, start = m.length();
  if (P < 1 || Q < 1) throw std::invalid_argument("reconstruction: empty context or prompt");
  std::vector<int32_t> in(prompt.begin(), prompt.end());
  in.insert(in.end(), context.begin(), context.end() - 1);
  Reconstruction r;
  bool copying = true;
  // logits row i predicts input i + 1: rows Q - 1 .. Q + P - 2 predict the context
  m.prefill_rows(in.data(), static_cast<int>(in.size()), [&](int first, const float* lg, int rows) {
    for (int i = 0; i < rows; i++) {
      const int c = first + i - (Q - 1);
      if (c < 0) continue;
      const float* row = lg + static_cast<size_t>(i) * V;
      r.nll += token_nll(row, V, context[c]);
      const bool right = argmax_token(row, V) == context[c];
      copying = copying && right;
      r.copy_prefix += copying;
      r.copy_accuracy += right;
    }
  });
  r.nll /= P;
  r.copy_accuracy /= P;
  m.truncate(start);
  return r;
}

double continuation_nll(InferenceModel& m, std::span<const float> last_logits,
                        std::span<const int32_t> continuation) {
  const int N = static_cast<int>(continuation.size()), V = m.config().vocab_size, start = m.length();
  if (N < 1) throw std::invalid_argument("continuation: no tokens");
  double nll = token_nll(last_logits.data(), V, continuation[0]);
  if (N > 1)
    m.prefill_rows(continuation.data(), N - 1, [&](int first, const float* lg, int rows) {
      for (int i = 0; i < rows; i++) nll += token_nll(lg + static_cast<size_t>(i) * V, V, continuation[first + i + 1]);
    });
  m.truncate(start);
  return nll / N;
}

std::vector<int32_t> greedy_answer(InferenceModel& m, std::span<const int32_t> question, int max_new,
                                   std::span<const int32_t> stop) {
  const int V = m.config().vocab_size, start = m.length();
  std::vector<int32_t> out;
  std::vector<float> lg = m.prefill(question);
  for (int i = 0; i < max_new && m.length() < m.capacity(); i++) {
    const int32_t t = argmax_token(lg.data(), V);
    out.push_back(t);
    if (std::find(stop.begin(), stop.end(), t) != stop.end() || i + 1 == max_new) break;
    lg = m.decode(t);
  }
  m.truncate(start);
  return out;
}

CopyScores copy_scores(std::span<const int32_t> gen, std::span<const int32_t> target) {
  const int G = static_cast<int>(gen.size()), T = static_cast<int>(target.size());
  CopyScores r;
  int matches = 0;
  bool copying = true;
  for (int i = 0; i < G; i++) {
    const bool same = i < T && gen[i] == target[i];
    copying = copying && same;
    r.copy_prefix += copying;
    matches += same;
  }
  r.match_rate = static_cast<double>(matches) / std::max(1, std::min(G, T));
  // LCS(gen, target[0 : G + 64]) by dynamic programming over two rows
  const int B = std::min(T, G + 64);
  std::vector<int> prev(B + 1, 0), cur(B + 1, 0);
  for (int32_t g : gen) {
    for (int j = 1; j <= B; j++) cur[j] = g == target[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  r.lcs_rate = static_cast<double>(prev[B]) / std::max(1, G);
  return r;
}

FreeCopy free_copy(InferenceModel& m, std::span<const int32_t> prompt, std::span<const int32_t> context,
                   int generate, DecodeEvictor* dec, int primer) {
  const int V = m.config().vocab_size;
  if (primer < 0 || primer >= static_cast<int>(context.size()))
    throw std::invalid_argument("free copy: primer " + std::to_string(primer) + " must be in [0, " +
                                std::to_string(context.size()) + ")");
  std::vector<int32_t> lead(prompt.begin(), prompt.end());
  lead.insert(lead.end(), context.begin(), context.begin() + primer);
  if (m.length() + static_cast<int64_t>(lead.size()) + generate > m.capacity())
    throw std::length_error("free copy: prompt + primer + " + std::to_string(generate) +
                            " generated tokens exceed model.max_seq_len " + std::to_string(m.capacity()));
  FreeCopy r;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<float> lg = m.prefill(lead);
  if (dec) dec->step();
  for (int i = 0; i < generate; i++) {
    r.tokens.push_back(argmax_token(lg.data(), V));
    if (i + 1 == generate) break;
    lg = m.decode(r.tokens.back());
    if (dec) dec->step();
  }
  r.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  static_cast<CopyScores&>(r) = copy_scores(r.tokens, context.subspan(static_cast<size_t>(primer)));
  if (dec) {
    r.gate_seconds = dec->gate_seconds();
    r.evictions = dec->evictions();
  }
  return r;
}

}  // namespace kvt

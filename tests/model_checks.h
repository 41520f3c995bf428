// tests/model_checks.h — whole-model checks and test data shared by the model, variant, trainer
// and MPI tests (header-only: every tests/test_*.cpp is its own program).
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <ostream>
#include <functional>
#include <string>
#include <vector>

#include "kernels/common/rng.h"
#include "model/transformer.h"

namespace kvt::testutil {

// One KV variant of a small test model: the sharing scheme and its shape.
struct KvVariant {
  const char* name;
  std::string scheme;
  int layers, kv_heads, storage, rank;
  friend void PrintTo(const KvVariant& v, std::ostream* os) { *os << v.name; }
};

// The eight variants the CUDA and recomputation tests run: MHA, GQA, MQA, CLA (odd L), YOCO,
// FusedKV-Lite, FusedKV (GQA), LRKV (4 query heads each).
inline const std::vector<KvVariant>& eight_variants() {
  static const std::vector<KvVariant> v = {
      {"mha", "none", 2, 4, 0, 0},          {"gqa", "none", 2, 2, 0, 0},
      {"mqa", "none", 2, 1, 0, 0},          {"cla", "cla", 3, 4, 0, 0},
      {"yoco", "yoco", 4, 4, 2, 0},         {"fusedkv_lite", "fusedkv_lite", 4, 4, 3, 0},
      {"fusedkv", "fusedkv", 4, 2, 2, 0},   {"lrkv", "none", 2, 4, 0, 2},
  };
  return v;
}

// A small model of variant v with 4 query heads; init_std 0.2 puts the attention far from
// uniform and the logits at magnitude ~1.
inline ModelConfig small_variant_config(const KvVariant& v, int vocab, int d_model, int d_ff,
                                        int max_seq_len) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.d_model = d_model;
  c.n_layers = v.layers;
  c.n_heads = 4;
  c.n_kv_heads = v.kv_heads;
  c.d_ff = d_ff;
  c.max_seq_len = max_seq_len;
  c.init_std = 0.2f;
  c.kv_sharing = v.scheme;
  c.storage_layers = v.storage;
  c.lrkv_rank = v.rank;
  c.resolve();
  return c;
}

inline std::vector<int32_t> random_tokens(size_t n, int V, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(r.below(V));
  return t;
}

// A second-order Markov "language" over V symbols: x_t = (x_{t-1} + 3 x_{t-2} + 1) mod V with
// probability 0.9, else uniform. A bigram model cannot see x_{t-2}, so its entropy stays high;
// a transformer that learns the rule goes well below it.
inline std::vector<uint32_t> markov2_corpus(size_t n, int V, uint64_t seed) {
  Rng r(seed);
  std::vector<uint32_t> t(n);
  t[0] = 1;
  t[1] = 2;
  for (size_t i = 2; i < n; i++)
    t[i] = r.uniform() < 0.9 ? (t[i - 1] + 3 * t[i - 2] + 1) % V : static_cast<uint32_t>(r.below(V));
  return t;
}

// Runs the kvtrain binary (KVT_BINARY, one OpenMP thread) with `args`; stdout and stderr together.
struct CmdResult {
  int rc = -1;
  std::string out;
};
// `env` is prepended to the command line ("NAME=value ...", each followed by a space).
inline CmdResult run_kvtrain_env(const std::string& env, const std::string& args) {
  const std::string cmd = "OMP_NUM_THREADS=1 " + env + KVT_BINARY + " " + args + " 2>&1";
  CmdResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}
inline CmdResult run_kvtrain(const std::string& args) { return run_kvtrain_env("", args); }

// A small English-like text: `lines` lines of 12 words drawn from 16, for tokenizer training
// and end-to-end CLI tests.
inline void write_word_text(const std::string& path, int lines, uint64_t seed) {
  std::ofstream t(path);
  const char* words[] = {"the", "lord", "said", "unto", "moses", "and", "his", "people",
                         "went", "into", "land", "of", "light", "water", "earth", "day"};
  Rng r(seed);
  for (int line = 0; line < lines; line++) {
    for (int w = 0; w < 12; w++) t << (w ? " " : "") << words[r.below(16)];
    t << ".\n";
  }
}

// For every named tensor W of `table` and a random direction U (unit norm over that tensor):
//   (L(W + hU) - L(W - hU)) / 2h  ==  <dL/dW, U>
// with p0 the parameters, grads dL/dp laid out by the table and loss_at(p) the loss at p.
// A directional derivative sums over all elements of the tensor, so its float32 error is small
// and any wrong index in a backward (which changes many elements) shows up as a large error.
// Tolerance: 2% relative, with a floor of 2e-4 absolute for tensors whose directional derivative
// is tiny (float32 loss noise / 2h is about 1e-4).
inline void expect_directional_derivatives(const ParamTable& table, const std::vector<float>& p0,
                                           const std::vector<float>& grads,
                                           const std::function<double(const std::vector<float>&)>& loss_at,
                                           double h, const std::string& label) {
  Rng rng(99);
  for (const ParamInfo& e : table.entries()) {
    std::vector<double> u(e.numel);
    double nrm = 0;
    for (auto& x : u) {
      x = rng.normal();
      nrm += x * x;
    }
    nrm = std::sqrt(nrm);
    double analytic = 0;
    for (size_t i = 0; i < e.numel; i++) {
      u[i] /= nrm;
      analytic += grads[e.offset + i] * u[i];
    }
    auto shifted = [&](double s) {
      std::vector<float> p = p0;
      for (size_t i = 0; i < e.numel; i++) p[e.offset + i] = static_cast<float>(p0[e.offset + i] + s * u[i]);
      return loss_at(p);
    };
    const double numeric = (shifted(h) - shifted(-h)) / (2 * h);
    EXPECT_NEAR(analytic, numeric, 2e-4 + 0.02 * std::fabs(numeric))
        << label << ": " << e.name << " analytic " << analytic << " numeric " << numeric;
  }
}

// expect_directional_derivatives for every tensor of a model of config cfg (random weights,
// random tokens, B = 2, T = 7).
inline void expect_directional_grads_match(const ModelConfig& cfg, const std::string& label) {
  auto ops = make_ops("cpu");
  const int B = 2, T = 7;
  Transformer model(cfg, *ops, B, T, true);
  model.init_parameters(11);
  const auto inputs = random_tokens(B * T, cfg.vocab_size, 1);
  const auto targets = random_tokens(B * T, cfg.vocab_size, 2);
  model.zero_grads();
  model.forward(inputs.data(), targets.data(), B, T);
  model.backward(1.0f);
  expect_directional_derivatives(
      model.params(), model.params_to_host(), model.grads_to_host(),
      [&](const std::vector<float>& p) {
        model.params_from_host(p);
        return static_cast<double>(model.forward(inputs.data(), targets.data(), B, T));
      },
      2e-3, label);
}

// Changing token t+1 leaves the logits at positions <= t bitwise unchanged (and some later one
// changes, so the check saw something).
inline void expect_causal_bitwise(const ModelConfig& cfg, const std::string& label) {
  auto ops = make_ops("cpu");
  const int B = 2, T = 12, t = 5;
  Transformer model(cfg, *ops, B, T, false);
  model.init_parameters(3);
  auto tokens = random_tokens(B * T, cfg.vocab_size, 4);
  model.forward(tokens.data(), nullptr, B, T);
  const auto before = model.logits_to_host();
  for (int b = 0; b < B; b++) tokens[b * T + t + 1] = (tokens[b * T + t + 1] + 7) % cfg.vocab_size;
  model.forward(tokens.data(), nullptr, B, T);
  const auto after = model.logits_to_host();
  const int V = cfg.vocab_size;
  bool later_changed = false;
  for (int b = 0; b < B; b++)
    for (int s = 0; s < T; s++)
      for (int v = 0; v < V; v++) {
        const size_t i = (static_cast<size_t>(b) * T + s) * V + v;
        if (s <= t) ASSERT_EQ(before[i], after[i]) << label << ": logit at b=" << b << " s=" << s << " moved";
        else later_changed |= before[i] != after[i];
      }
  EXPECT_TRUE(later_changed) << label << ": changing a token changed no later logit";
}

}  // namespace kvt::testutil

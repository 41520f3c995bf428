// Whole-model tests on the CPU backend: finite-difference gradient checks for MHA, GQA and MQA
// (tied and untied), causality, bitwise determinism, and gradient accumulation vs a doubled batch.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/common/rng.h"
#include "model/transformer.h"

namespace kvt {
namespace {

ModelConfig tiny_config(int n_heads, int n_kv_heads, bool tied) {
  ModelConfig c;
  c.vocab_size = 53;
  c.d_model = 24;
  c.n_layers = 2;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.d_ff = 40;
  c.max_seq_len = 16;
  c.tie_embeddings = tied;
  c.init_std = 0.2f;  // larger than training's 0.02 so every path carries signal
  c.resolve();
  return c;
}

std::vector<int32_t> random_tokens(size_t n, int V, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(r.below(V));
  return t;
}

struct GradCase {
  const char* name;
  int heads, kv_heads;
  bool tied;
};

class ModelGrad : public ::testing::TestWithParam<GradCase> {};

// For every named tensor W and a random direction U (unit norm over that tensor):
//   (L(W + hU) - L(W - hU)) / 2h  ==  <dL/dW, U>
// A directional derivative sums over all elements of the tensor, so its float32 error is small
// and any wrong index in a backward (which changes many elements) shows up as a large error.
TEST_P(ModelGrad, DirectionalFiniteDifferencesPerTensor) {
  const GradCase gc = GetParam();
  auto ops = make_ops("cpu");
  const int B = 2, T = 7;
  ModelConfig cfg = tiny_config(gc.heads, gc.kv_heads, gc.tied);
  Transformer model(cfg, *ops, B, T, true);
  model.init_parameters(11);
  const auto inputs = random_tokens(B * T, cfg.vocab_size, 1);
  const auto targets = random_tokens(B * T, cfg.vocab_size, 2);

  model.zero_grads();
  model.forward(inputs.data(), targets.data(), B, T);
  model.backward(1.0f);
  const std::vector<float> grads = model.grads_to_host();
  const std::vector<float> p0 = model.params_to_host();

  Rng rng(99);
  const double h = 2e-3;
  for (const ParamInfo& e : model.params().entries()) {
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
    auto loss_at = [&](double s) {
      std::vector<float> p = p0;
      for (size_t i = 0; i < e.numel; i++) p[e.offset + i] = static_cast<float>(p0[e.offset + i] + s * u[i]);
      model.params_from_host(p);
      return static_cast<double>(model.forward(inputs.data(), targets.data(), B, T));
    };
    const double numeric = (loss_at(h) - loss_at(-h)) / (2 * h);
    // Tolerance: 2% relative, with a floor of 2e-4 absolute for tensors whose directional
    // derivative is tiny (float32 loss noise / 2h is about 1e-4).
    EXPECT_NEAR(analytic, numeric, 2e-4 + 0.02 * std::fabs(numeric))
        << gc.name << ": " << e.name << " analytic " << analytic << " numeric " << numeric;
  }
  model.params_from_host(p0);
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelGrad,
                         ::testing::Values(GradCase{"MHA_tied", 4, 4, true},
                                           GradCase{"MHA_untied", 4, 4, false},
                                           GradCase{"GQA", 4, 2, true},
                                           GradCase{"MQA", 4, 1, false}),
                         [](const auto& info) { return std::string(info.param.name); });

// Changing token t+1 leaves the logits at positions <= t bitwise unchanged.
TEST(Model, CausalityIsBitwise) {
  auto ops = make_ops("cpu");
  const int B = 2, T = 12, t = 5;
  ModelConfig cfg = tiny_config(4, 2, true);
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
        if (s <= t) ASSERT_EQ(before[i], after[i]) << "logit at b=" << b << " s=" << s << " moved";
        else later_changed |= before[i] != after[i];
      }
  EXPECT_TRUE(later_changed) << "changing a token changed no later logit: the test saw nothing";
}

// Two models with the same seed, fed the same batches, end with bitwise equal gradients.
TEST(Model, DeterministicForSameSeed) {
  auto ops = make_ops("cpu");
  const int B = 3, T = 9;
  ModelConfig cfg = tiny_config(4, 2, false);
  std::vector<std::vector<float>> out;
  for (int run = 0; run < 2; run++) {
    Transformer model(cfg, *ops, B, T, true);
    model.init_parameters(5);
    model.zero_grads();
    for (int m = 0; m < 2; m++) {
      const auto x = random_tokens(B * T, cfg.vocab_size, 10 + m);
      const auto y = random_tokens(B * T, cfg.vocab_size, 20 + m);
      model.forward(x.data(), y.data(), B, T);
      model.backward(0.5f);
    }
    out.push_back(model.grads_to_host());
    out.push_back(model.params_to_host());
  }
  EXPECT_EQ(out[0], out[2]);
  EXPECT_EQ(out[1], out[3]);
}

// Gradient accumulation: two micro-batches of B with loss scale 1/2 equal one batch of 2B.
TEST(Model, AccumulationMatchesDoubledBatch) {
  auto ops = make_ops("cpu");
  const int B = 2, T = 8;
  ModelConfig cfg = tiny_config(4, 1, true);
  const auto x = random_tokens(2 * B * T, cfg.vocab_size, 31);
  const auto y = random_tokens(2 * B * T, cfg.vocab_size, 32);

  Transformer big(cfg, *ops, 2 * B, T, true);
  big.init_parameters(8);
  big.zero_grads();
  const float loss_big = big.forward(x.data(), y.data(), 2 * B, T);
  big.backward(1.0f);
  const auto g_big = big.grads_to_host();

  Transformer small(cfg, *ops, B, T, true);
  small.init_parameters(8);
  small.zero_grads();
  float loss_acc = 0;
  for (int m = 0; m < 2; m++) {
    loss_acc += 0.5f * small.forward(x.data() + m * B * T, y.data() + m * B * T, B, T);
    small.backward(0.5f);
  }
  const auto g_acc = small.grads_to_host();
  EXPECT_NEAR(loss_big, loss_acc, 1e-6 * std::fabs(loss_big));
  double max_err = 0, max_g = 0;
  for (size_t i = 0; i < g_big.size(); i++) {
    max_err = std::max(max_err, static_cast<double>(std::fabs(g_big[i] - g_acc[i])));
    max_g = std::max(max_g, static_cast<double>(std::fabs(g_big[i])));
  }
  EXPECT_LT(max_err, 1e-6 * max_g) << "max |g_big - g_acc| " << max_err << " of max |g| " << max_g;
}

TEST(Model, RejectsOutOfRangeTokensAndShapes) {
  auto ops = make_ops("cpu");
  ModelConfig cfg = tiny_config(4, 4, true);
  Transformer model(cfg, *ops, 1, 4, false);
  std::vector<int32_t> x = {1, 2, 3, cfg.vocab_size};
  EXPECT_THROW(model.forward(x.data(), nullptr, 1, 4), std::out_of_range);
  EXPECT_THROW(model.forward(x.data(), nullptr, 2, 4), std::invalid_argument);
  EXPECT_THROW(Transformer(cfg, *ops, 1, cfg.max_seq_len + 1, false), std::invalid_argument);
}

// Parameter count of the baseline, computed by hand for the tiny config:
// embed 53*24 = 1272; per layer: 2 norms 48, q 24*24 = 576, k,v 2*(12*24) = 576 (GQA kv=2 of
// head_dim 6), o 576, gate/up/down 3*40*24 = 2880 -> 4656; 2 layers 9312; final norm 24.
TEST(Model, ParameterCountByHand) {
  ModelConfig cfg = tiny_config(4, 2, true);
  EXPECT_EQ(build_param_table(cfg).total(), size_t{1272 + 9312 + 24});
  cfg.tie_embeddings = false;
  EXPECT_EQ(build_param_table(cfg).total(), size_t{1272 + 9312 + 24 + 1272});
}

}  // namespace
}  // namespace kvt

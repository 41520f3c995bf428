// Whole-model tests on the CPU backend: finite-difference gradient checks for MHA, GQA and MQA
// (tied and untied), causality, bitwise determinism, and gradient accumulation vs a doubled batch.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model/transformer.h"
#include "model_checks.h"

namespace kvt {
namespace {

using namespace kvt::testutil;

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

struct GradCase {
  const char* name;
  int heads, kv_heads;
  bool tied;
};

class ModelGrad : public ::testing::TestWithParam<GradCase> {};

TEST_P(ModelGrad, DirectionalFiniteDifferencesPerTensor) {
  const GradCase gc = GetParam();
  expect_directional_grads_match(tiny_config(gc.heads, gc.kv_heads, gc.tied), gc.name);
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelGrad,
                         ::testing::Values(GradCase{"MHA_tied", 4, 4, true},
                                           GradCase{"MHA_untied", 4, 4, false},
                                           GradCase{"GQA", 4, 2, true},
                                           GradCase{"MQA", 4, 1, false}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Model, CausalityIsBitwise) { expect_causal_bitwise(tiny_config(4, 2, true), "GQA"); }

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

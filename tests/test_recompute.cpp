// tests/test_recompute.cpp — activation recomputation (model/recompute.h) on the CPU backend:
//  * for every model variant, loss and gradients with recompute attention and block are bitwise
//    those of none over two micro-steps of accumulation (of different shapes), in fp32 and in the
//    bf16 emulation; the grad-ready ranges come in the same order; activation_bytes() decreases;
//  * forward_train / take_loss accumulate weight * mean loss on the backend;
//  * the accessors of per-layer activations refuse the modes that do not keep them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "model/transformer.h"
#include "model_checks.h"

namespace kvt {
namespace {

using Variant = testutil::KvVariant;
using testutil::random_tokens;

const std::vector<Variant>& variants() { return testutil::eight_variants(); }

// V 61, d 32, 4 heads of 8, F 48, max_seq_len 80.
ModelConfig config_of(const Variant& v) { return testutil::small_variant_config(v, 61, 32, 48, 80); }

struct Outcome {
  std::vector<float> losses;                     // forward()'s, per micro-step
  float taken = 0;                               // take_loss() after forward_train
  std::vector<float> grads;
  std::vector<std::pair<size_t, size_t>> ready;  // grad-ready ranges, in call order
  size_t activation_bytes = 0;
};

// Two micro-steps of accumulation, [2, 67] (two attention row tiles) then [1, 40], with loss
// scale 1/2; then the same two forwards through forward_train with weight 1/2 (no backward).
Outcome run(const ModelConfig& cfg, Recompute r, Precision p) {
  auto ops = make_ops("cpu");
  ops->set_precision(p);
  Transformer m(cfg, *ops, 2, 67, true, false, r);
  m.init_parameters(7);
  Outcome o;
  m.set_grad_ready([&](size_t b, size_t e) { o.ready.emplace_back(b, e); });
  m.zero_grads();
  const std::pair<int, int> shapes[] = {{2, 67}, {1, 40}};
  for (int step = 0; step < 2; step++) {
    const auto [B, T] = shapes[step];
    const auto in = random_tokens(B * T, cfg.vocab_size, 10 + step);
    const auto tg = random_tokens(B * T, cfg.vocab_size, 20 + step);
    o.losses.push_back(m.forward(in.data(), tg.data(), B, T));
    m.backward(0.5f);
  }
  o.grads = m.grads_to_host();
  for (int step = 0; step < 2; step++) {
    const auto [B, T] = shapes[step];
    const auto in = random_tokens(B * T, cfg.vocab_size, 10 + step);
    const auto tg = random_tokens(B * T, cfg.vocab_size, 20 + step);
    m.forward_train(in.data(), tg.data(), B, T, 0.5f);
  }
  o.taken = m.take_loss();
  o.activation_bytes = m.activation_bytes();
  return o;
}

// Bitwise: the same float bits (not merely ==, which would let -0 pass for +0).
void expect_bitwise(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < a.size(); i++)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0 && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " values differ, first at " << first << " ("
                     << a[first] << " vs " << b[first] << ")";
}

class Recomputation : public testing::TestWithParam<Variant> {};

void check_modes_equal(const Variant& v, Precision p) {
  const ModelConfig cfg = config_of(v);
  const Outcome none = run(cfg, Recompute::none, p);
  // The check sees something: gradients are not all zero, the losses are finite.
  double g2 = 0;
  for (float g : none.grads) g2 += static_cast<double>(g) * g;
  ASSERT_GT(g2, 0.0);
  ASSERT_TRUE(std::isfinite(none.losses[0]) && std::isfinite(none.losses[1]));
  size_t prev_bytes = none.activation_bytes;
  for (Recompute r : {Recompute::attention, Recompute::block}) {
    SCOPED_TRACE(recompute_name(r));
    const Outcome o = run(cfg, r, p);
    expect_bitwise(o.losses, none.losses, "losses");
    expect_bitwise(o.grads, none.grads, "gradients");
    expect_bitwise({o.taken}, {none.taken}, "take_loss");
    EXPECT_EQ(o.ready, none.ready);
    EXPECT_LT(o.activation_bytes, prev_bytes);  // none > attention > block
    prev_bytes = o.activation_bytes;
  }
}

TEST_P(Recomputation, LossAndGradientsBitwiseEqualNoneInFp32) { check_modes_equal(GetParam(), Precision::fp32); }

TEST_P(Recomputation, LossAndGradientsBitwiseEqualNoneInBf16Emulation) {
  check_modes_equal(GetParam(), Precision::bf16);
}

INSTANTIATE_TEST_SUITE_P(AllVariants, Recomputation, testing::ValuesIn(variants()),
                         [](const testing::TestParamInfo<Variant>& i) { return std::string(i.param.name); });

TEST(ForwardTrain, AccumulatesWeightedMeanLossAndTakeResets) {
  const ModelConfig cfg = config_of(variants()[0]);
  auto ops = make_ops("cpu");
  Transformer m(cfg, *ops, 2, 16, true);
  m.init_parameters(3);
  const auto in1 = random_tokens(32, cfg.vocab_size, 1), tg1 = random_tokens(32, cfg.vocab_size, 2);
  const auto in2 = random_tokens(16, cfg.vocab_size, 3), tg2 = random_tokens(16, cfg.vocab_size, 4);
  const double l1 = m.forward(in1.data(), tg1.data(), 2, 16);
  const double l2 = m.forward(in2.data(), tg2.data(), 1, 16);
  ASSERT_GT(std::fabs(l1 - l2), 1e-4);  // two different losses, so the weights matter
  m.forward_train(in1.data(), tg1.data(), 2, 16, 0.25f);
  m.forward_train(in2.data(), tg2.data(), 1, 16, 0.75f);
  const double expected = 0.25 * l1 + 0.75 * l2;
  EXPECT_NEAR(m.take_loss(), expected, 1e-6 * std::fabs(expected));
  // take_loss zeroed the accumulator: one more micro-step reads only itself.
  m.forward_train(in2.data(), tg2.data(), 1, 16, 1.0f);
  EXPECT_NEAR(m.take_loss(), l2, 1e-6 * std::fabs(l2));
  EXPECT_EQ(m.take_loss(), 0.0f);
  // backward after forward_train is the backward of forward(): the same gradients.
  m.zero_grads();
  m.forward_train(in1.data(), tg1.data(), 2, 16, 1.0f);
  m.backward(1.0f);
  const auto g_train = m.grads_to_host();
  m.zero_grads();
  m.forward(in1.data(), tg1.data(), 2, 16);
  m.backward(1.0f);
  expect_bitwise(g_train, m.grads_to_host(), "gradients after forward_train vs forward");
  EXPECT_THROW(m.forward_train(in1.data(), nullptr, 2, 16, 1.0f), std::invalid_argument);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(RecomputeAccessors, RefuseActivationsTheModeDoesNotKeep) {
  const ModelConfig cfg = config_of(variants()[0]);
  auto ops = make_ops("cpu");
  Transformer none(cfg, *ops, 1, 8, true);
  EXPECT_NE(none.attention_probs(0), nullptr);
  EXPECT_NE(none.attention_input(0), nullptr);
  Transformer att(cfg, *ops, 1, 8, true, false, Recompute::attention);
  EXPECT_NE(att.attention_input(1), nullptr);
  const std::string e = error_of([&] { att.attention_probs(0); });
  EXPECT_NE(e.find("recompute attention"), std::string::npos) << e;
  Transformer block(cfg, *ops, 1, 8, true, false, Recompute::block);
  EXPECT_NE(error_of([&] { block.attention_probs(1); }).find("recompute block"), std::string::npos);
  const std::string e2 = error_of([&] { block.attention_input(0); });
  EXPECT_NE(e2.find("recompute block"), std::string::npos) << e2;
  EXPECT_EQ(block.recompute(), Recompute::block);
}

}  // namespace
}  // namespace kvt

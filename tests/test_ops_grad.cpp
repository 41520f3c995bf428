// tests/test_ops_grad.cpp — grad mode of the op harness (tests/op_cases.h) on the CPU backend:
// every op's forward vs a double-precision reference, its backward vs central finite
// differences, its += / = gradient convention, bitwise determinism; then op-specific
// properties (causality, softmax rows, log-sum-exp, AdamW by hand, double accumulation).
#include <cmath>
#include <vector>

#include "op_cases.h"

namespace kvt::optest {
namespace {

Ops& cpu() {
  static std::unique_ptr<Ops> ops = make_ops("cpu");
  return *ops;
}

// ---- every case -----------------------------------------------------------------------------
class ops_forward : public testing::TestWithParam<CaseParam> {};

TEST_P(ops_forward, matches_double_reference) { check_forward_reference(cpu(), *GetParam()); }
TEST_P(ops_forward, is_bitwise_deterministic) { check_deterministic(cpu(), *GetParam()); }
TEST_P(ops_forward, leaves_inputs_unchanged) { check_inputs_unchanged(cpu(), *GetParam()); }

INSTANTIATE_TEST_SUITE_P(ops, ops_forward, testing::ValuesIn(small_cases()), case_name);

// ---- every case with a backward ---------------------------------------------------------------
class ops_backward : public testing::TestWithParam<CaseParam> {};

TEST_P(ops_backward, matches_finite_differences) { check_finite_differences(cpu(), *GetParam()); }
TEST_P(ops_backward, follows_accumulate_overwrite_convention) {
  check_grad_conventions(cpu(), *GetParam());
}

INSTANTIATE_TEST_SUITE_P(ops, ops_backward, testing::ValuesIn(with_backward(small_cases())), case_name);

// ---- attention: softmax rows, causal mask, causality, batch independence ----------------------
TEST(ops_attention, rows_are_causal_softmax) {
  AttentionCase c("gqa", 2, 6, 4, 2, 5, true, 301);
  RunResult r = run_case(cpu(), c, {.backward_calls = 0});
  const auto& att = r.outputs[1];
  const int B = c.s.B, H = c.s.H, T = c.s.T;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) {
        const float* row = &att[((static_cast<size_t>(b) * H + h) * T + t) * T];
        double sum = 0;
        for (int s = 0; s <= t; ++s) {
          EXPECT_GT(row[s], 0.0f) << "b " << b << " h " << h << " t " << t << " s " << s;
          sum += row[s];
        }
        EXPECT_NEAR(sum, 1.0, 1e-6) << "b " << b << " h " << h << " t " << t;
        for (int s = t + 1; s < T; ++s)
          EXPECT_EQ(row[s], 0.0f) << "future position b " << b << " h " << h << " t " << t << " s " << s;
      }
}

TEST(ops_attention, output_at_t_ignores_later_positions_and_other_sequences) {
  const AttentionCase base("gqa", 2, 6, 4, 2, 5, true, 302);
  const RunResult r0 = run_case(cpu(), base, {.backward_calls = 0});
  const int T = base.s.T, HD = base.s.H * base.s.D, ld = base.s.ldk;
  // Change k and v (all KV heads) of sequence 0 at position s; rows t < s of sequence 0 and all
  // of sequence 1 must not change by a single bit, row s must change.
  for (int s = 1; s < T; ++s) {
    AttentionCase c = base;
    auto& x = c.inputs[0].values;
    for (size_t col = c.k_off; col < c.v_off + static_cast<size_t>(c.s.Hkv) * c.s.D; ++col)
      x[static_cast<size_t>(s) * ld + col] += 0.75f;
    const RunResult r = run_case(cpu(), c, {.backward_calls = 0});
    const auto& o0 = r0.outputs[0];
    const auto& o = r.outputs[0];
    for (int t = 0; t < 2 * T; ++t) {
      const bool may_change = t >= s && t < T;
      const std::vector<float> a(o.begin() + t * HD, o.begin() + (t + 1) * HD);
      const std::vector<float> b(o0.begin() + t * HD, o0.begin() + (t + 1) * HD);
      if (!may_change) {
        expect_bitwise_equal("out row " + std::to_string(t) + " after changing k/v at " + std::to_string(s), a, b);
      } else if (t == s) {
        EXPECT_NE(a, b) << "out row " << t << " did not react to its own k/v";
      }
    }
  }
}

// ---- cross-entropy: log V for uniform logits; gradient rows sum to zero -----------------------
TEST(ops_cross_entropy, uniform_logits_give_log_vocab) {
  const int64_t N = 3;
  const int V = 50;
  Buffer<float> logits(cpu(), N * V), losses(cpu(), N), dlogits(cpu(), N * V);
  std::vector<float> h(N * V, 4.25f);
  upload(cpu(), logits, h);
  std::vector<int32_t> tgt = {0, 17, V - 1};
  Buffer<int32_t> targets(cpu(), N);
  cpu().to_device(targets.data(), tgt.data(), N * sizeof(int32_t));
  cpu().cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V);
  cpu().cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), N, V, 2.0f);
  const auto l = download(cpu(), losses), g = download(cpu(), dlogits);
  for (int64_t n = 0; n < N; ++n) {
    EXPECT_NEAR(l[n], std::log(50.0), 1e-6);
    for (int j = 0; j < V; ++j)
      EXPECT_NEAR(g[n * V + j], 2.0 * (1.0 / V - (j == tgt[n] ? 1.0 : 0.0)), 1e-7);
  }
}

TEST(ops_cross_entropy, gradient_rows_sum_to_zero) {
  const CrossEntropyCase c("ce", 6, 11, 0.37f, false, 303);
  const RunResult r = run_case(cpu(), c);
  for (int64_t n = 0; n < c.N; ++n) {
    double sum = 0;
    for (int j = 0; j < c.V; ++j) sum += r.grads[0][n * c.V + j];
    EXPECT_NEAR(sum, 0.0, 1e-6) << "row " << n;
  }
}

// ---- AdamW: by hand at t = 1, and three chained steps vs a double simulation ------------------
TEST(ops_adamw, first_step_by_hand) {
  // t = 1: m = (1-b1) g, v = (1-b2) g^2, so m/(1-b1) = g and sqrt(v/(1-b2)) = |g|:
  // p1 = p0 - lr (g/(|g| + eps) + wd p0). With p0 = 1, g = 0.5 * grad_scale 2 = 1, lr 0.1,
  // wd 0.1: p1 = 1 - 0.1 (1/(1+1e-8) + 0.1) = 0.89 (to 1e-9); p0 = -2, g = -0.25*2 = -0.5:
  // p1 = -2 - 0.1 (-1 + 0.1 * -2) = -1.88.
  std::vector<float> p = {1.0f, -2.0f}, g = {0.5f, -0.25f};
  Buffer<float> P(cpu(), 2), Gr(cpu(), 2), M(cpu(), 2), Vv(cpu(), 2);
  upload(cpu(), P, p);
  upload(cpu(), Gr, g);
  cpu().adamw_update(P.data(), Gr.data(), M.data(), Vv.data(), 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.1f, 1, 2.0f);
  const auto p1 = download(cpu(), P), m1 = download(cpu(), M), v1 = download(cpu(), Vv);
  EXPECT_NEAR(p1[0], 0.89, 1e-6);
  EXPECT_NEAR(p1[1], -1.88, 1e-6);
  EXPECT_NEAR(m1[0], 0.1, 1e-7);    // (1 - 0.9) * 1
  EXPECT_NEAR(m1[1], -0.05, 1e-7);  // (1 - 0.9) * -0.5
  EXPECT_NEAR(v1[0], 1e-3, 1e-7);    // (1 - 0.999) * 1, with 1 - 0.999f rounded in float
  EXPECT_NEAR(v1[1], 2.5e-4, 3e-8);
}

TEST(ops_adamw, three_steps_match_double_formula) {
  const int64_t n = 5;
  const double lr = 0.02, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  Rng rng(304);
  std::vector<float> p0 = normal_values(rng, n);
  Buffer<float> P(cpu(), n), Gr(cpu(), n), M(cpu(), n), Vv(cpu(), n);
  upload(cpu(), P, p0);
  std::vector<double> p(p0.begin(), p0.end()), m(n, 0.0), v(n, 0.0);
  for (int t = 1; t <= 3; ++t) {
    std::vector<float> g = normal_values(rng, n);
    upload(cpu(), Gr, g);
    cpu().adamw_update(P.data(), Gr.data(), M.data(), Vv.data(), n, static_cast<float>(lr),
                       static_cast<float>(b1), static_cast<float>(b2), static_cast<float>(eps),
                       static_cast<float>(wd), t, 1.0f);
    for (int64_t i = 0; i < n; ++i) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * p[i]);
    }
    const auto pg = download(cpu(), P), mg = download(cpu(), M), vg = download(cpu(), Vv);
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_NEAR(pg[i], p[i], 1e-6) << "t " << t << " i " << i;
      EXPECT_NEAR(mg[i], m[i], 1e-6) << "t " << t << " i " << i;
      EXPECT_NEAR(vg[i], v[i], 1e-6) << "t " << t << " i " << i;
    }
  }
}

// ---- reductions accumulate in double -----------------------------------------------------------
TEST(ops_reductions, small_exact_values) {
  Buffer<float> x(cpu(), 3);
  upload(cpu(), x, {1.0f, -2.0f, 3.5f});
  EXPECT_EQ(cpu().sum(x.data(), 3), 2.5);
  EXPECT_EQ(cpu().sum_squares(x.data(), 3), 17.25);
}

TEST(ops_reductions, accumulate_in_double_not_float) {
  // 2^24 followed by 1000 ones: a float accumulator stays at 2^24, a double one is exact.
  std::vector<float> h(1001, 1.0f);
  h[0] = 16777216.0f;
  Buffer<float> x(cpu(), h.size());
  upload(cpu(), x, h);
  EXPECT_EQ(cpu().sum(x.data(), static_cast<int64_t>(h.size())), 16777216.0 + 1000.0);
  EXPECT_EQ(cpu().sum_squares(x.data(), static_cast<int64_t>(h.size())), 16777216.0 * 16777216.0 + 1000.0);
}

// ---- RoPE: position is absolute (pos0 shifts the rotation exactly) ------------------------------
TEST(ops_rope, pos0_is_an_absolute_position) {
  // Tokens 3..5 of a sequence rotated from pos0 = 0 equal the same vectors rotated as tokens
  // 0..2 from pos0 = 3 (same table entries, same formula: bitwise).
  const RopeCase full("full", 1, 6, 2, 8, 0, 0, 0, 305);
  RopeCase tail("tail", 1, 3, 2, 8, 0, 0, 3, 305);
  const size_t row = static_cast<size_t>(full.ld);
  tail.inputs[0].values.assign(full.inputs[0].values.begin() + 3 * row, full.inputs[0].values.end());
  tail.inputs[1].values = full.inputs[1].values;  // tables of max_pos = 9 rows
  tail.inputs[2].values = full.inputs[2].values;
  const RunResult a = run_case(cpu(), full, {.backward_calls = 0});
  const RunResult b = run_case(cpu(), tail, {.backward_calls = 0});
  expect_bitwise_equal("rows 3..5", std::vector<float>(a.outputs[0].begin() + 3 * row, a.outputs[0].end()),
                       b.outputs[0]);
  // and the rotation is not the identity there
  EXPECT_NE(b.outputs[0], tail.inputs[0].values);
}

}  // namespace
}  // namespace kvt::optest

// tests/test_cuda_model.cpp — the whole model on the CUDA backend against the CPU backend, for
// MHA, GQA, MQA, CLA, YOCO, FusedKV, FusedKV-Lite and LRKV (docs/design.md, "Tests"):
//  * training: three steps of forward + backward + SGD with momentum from the same seeded
//    parameters and batches; the losses of every step agree to 1e-5 relative, the parameters
//    after the steps to 1e-5 absolute (|p| ~ 0.2; fp32 everywhere, cuBLAS without TF32, so the
//    backends differ by summation order only, ~1e-7 relative per op);
//  * inference: prefill of 12 tokens (all logits, in chunks of 5) then 4 decode steps with
//    InferenceModel on each backend from the same host parameters; logits (|logits| ~ 1) agree
//    to 1e-4 absolute, and a keep-mask set on both gives the same logits too.
//  * bf16 training: the same three steps with both backends in Precision::bf16 (the CUDA side on
//    cuBLASLt bf16 GEMMs and cuDNN flash attention, the CPU side emulating the roundings); the
//    bf16 weight copy is refreshed after every update. cuDNN also rounds the attention
//    probabilities to bf16, which the emulation does not, so losses agree to 1e-2 relative and
//    parameters to 5e-3 absolute.
// Without a usable GPU every test is skipped, saying why (as tests/test_ops_cuda.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "model/inference.h"
#include "model/kv_sharing.h"
#include "model/transformer.h"
#include "model_checks.h"

namespace kvt {
namespace {

using Variant = testutil::KvVariant;
using testutil::random_tokens;

const std::vector<Variant>& variants() { return testutil::eight_variants(); }

ModelConfig config_of(const Variant& v) { return testutil::small_variant_config(v, 61, 32, 48, 80); }

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); i++)
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

class CudaModel : public testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "no usable CUDA device: " << why;
    cpu_ = make_ops("cpu");
    cuda_ = make_ops("cuda");
  }
  std::unique_ptr<Ops> cpu_, cuda_;
};

// Losses of `steps` SGD steps and the parameters after them.
struct Trajectory {
  std::vector<float> losses, params;
};
Trajectory train(Ops& ops, const ModelConfig& cfg, int steps) {
  const int B = 2, T = 16;
  Transformer m(cfg, ops, B, T, /*with_grads=*/true);
  m.init_parameters(42);
  const size_t n = m.params().total();
  ops.set_weights(m.param_data(), n);  // the bf16 copy (a no-op in fp32)
  ops.refresh_weights();
  Buffer<float> momentum(ops, n);
  Trajectory r;
  for (int s = 0; s < steps; s++) {
    const std::vector<int32_t> x = random_tokens(B * T, cfg.vocab_size, 100 + s);
    const std::vector<int32_t> y = random_tokens(B * T, cfg.vocab_size, 200 + s);
    m.zero_grads();
    r.losses.push_back(m.forward(x.data(), y.data(), B, T));
    m.backward(1.0f);
    ops.sgd_update(m.param_data(), m.grad_data(), momentum.data(), static_cast<int64_t>(n), 0.1f,
                   0.9f, 0.01f, 1.0f);
    ops.refresh_weights();
  }
  r.params = m.params_to_host();
  return r;
}

TEST_P(CudaModel, TrainingStepsMatchCpu) {
  const ModelConfig cfg = config_of(GetParam());
  const Trajectory want = train(*cpu_, cfg, 3), got = train(*cuda_, cfg, 3);
  ASSERT_EQ(got.losses.size(), want.losses.size());
  for (size_t s = 0; s < want.losses.size(); s++)
    EXPECT_NEAR(got.losses[s], want.losses[s], 1e-5 * std::fabs(want.losses[s])) << "step " << s;
  EXPECT_LE(max_abs_diff(got.params, want.params), 1e-5);
}

TEST_P(CudaModel, Bf16TrainingStepsMatchCpuEmulation) {
  const ModelConfig cfg = config_of(GetParam());
  auto cpu = make_ops("cpu"), gpu = make_ops("cuda");
  cpu->set_precision(Precision::bf16);
  gpu->set_precision(Precision::bf16);
  const Trajectory want = train(*cpu, cfg, 3), got = train(*gpu, cfg, 3);
  ASSERT_EQ(got.losses.size(), want.losses.size());
  for (size_t s = 0; s < want.losses.size(); s++)
    EXPECT_NEAR(got.losses[s], want.losses[s], 1e-2 * std::fabs(want.losses[s])) << "step " << s;
  EXPECT_LE(max_abs_diff(got.params, want.params), 5e-3);
}

// Logits of prefill (all positions, chunks of 5) then 4 decode steps; with `mask`, some
// positions of the first storage layer are evicted before the decode steps.
std::vector<float> infer(Ops& ops, const ModelConfig& cfg, const std::vector<float>& params,
                         bool mask) {
  InferenceModel inf(cfg, ops, params, InferenceOptions{5});
  const std::vector<int32_t> t = random_tokens(16, cfg.vocab_size, 7);
  std::vector<float> out = inf.prefill(t.data(), 12, true);
  if (mask)
    for (int p : {1, 4, 5, 9})
      for (int h = 0; h < inf.mask_heads(); h += 2) inf.set_keep(0, h, p, false);
  for (int i = 12; i < 16; i++) {
    const std::vector<float> lg = inf.decode(t[i]);
    out.insert(out.end(), lg.begin(), lg.end());
  }
  return out;
}

TEST_P(CudaModel, PrefillAndDecodeLogitsMatchCpu) {
  const ModelConfig cfg = config_of(GetParam());
  Transformer m(cfg, *cpu_, 1, 1, false);
  m.init_parameters(9);
  const std::vector<float> params = m.params_to_host();
  for (bool mask : {false, true}) {
    SCOPED_TRACE(mask ? "with a keep-mask" : "everything kept");
    const std::vector<float> want = infer(*cpu_, cfg, params, mask);
    const std::vector<float> got = infer(*cuda_, cfg, params, mask);
    ASSERT_EQ(want.size(), static_cast<size_t>(16) * cfg.vocab_size);
    EXPECT_LE(max_abs_diff(got, want), 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(variants, CudaModel, testing::ValuesIn(variants()),
                         [](const testing::TestParamInfo<Variant>& i) { return i.param.name; });

}  // namespace
}  // namespace kvt

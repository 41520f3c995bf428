// tests/test_gpu_memory.cpp — the per-rank GPU memory estimate of `kvtrain inspect --config`
// (model/gpu_memory.h): each part follows its formula and reacts to precision, ZeRO stage, world
// size and recomputation as the design says; the activations are the Transformer's own count.
#include <gtest/gtest.h>

#include <filesystem>

#include "model/gpu_memory.h"
#include "model/memory_estimate.h"
#include "train/config.h"

namespace {

using kvt::GpuTrainSetting;
using kvt::Precision;
using kvt::Recompute;

kvt::ModelConfig gpt124m() {
  return kvt::load_run_config((std::filesystem::path(KVT_SOURCE_DIR) / "configs" / "gpt124m.yaml").string())
      .model;
}

TEST(GpuMemory, Fp32IsMasterGradsAdamAndActivations) {
  const kvt::ModelConfig m = gpt124m();
  const uint64_t P = kvt::parameter_count(m);
  const auto e = kvt::estimate_gpu_train_memory(m, 16, 1024, GpuTrainSetting{});
  EXPECT_EQ(e.params, 4 * P);
  EXPECT_EQ(e.grads, 4 * P);
  EXPECT_EQ(e.optimizer, 8 * P);
  EXPECT_EQ(e.weight_copy, 0u);
  EXPECT_EQ(e.gemm_scratch + e.attention_scratch + e.zero_buffers, 0u);
  EXPECT_EQ(e.activations, kvt::transformer_activation_bytes(m, 16, 1024, true));
  // The probabilities alone: 12 layers x B16 x H12 x 1024 x 1024 floats = 9.66 GB.
  EXPECT_GT(e.activations, uint64_t{12} * 16 * 12 * 1024 * 1024 * 4);
  EXPECT_EQ(e.total(), e.params + e.grads + e.optimizer + e.activations + e.gemm_workspace);
}

TEST(GpuMemory, Bf16AddsTheWeightCopyAndDropsTheProbabilities) {
  const kvt::ModelConfig m = gpt124m();
  const uint64_t P = kvt::parameter_count(m);
  GpuTrainSetting s;
  s.precision = Precision::bf16;
  const auto e = kvt::estimate_gpu_train_memory(m, 16, 1024, s);
  const auto f = kvt::estimate_gpu_train_memory(m, 16, 1024, GpuTrainSetting{});
  EXPECT_EQ(e.weight_copy, 2 * P);
  EXPECT_EQ(e.activations, kvt::transformer_activation_bytes(m, 16, 1024, true, Recompute::none, false));
  // flash keeps one statistic per row and head instead of a row of T probabilities
  EXPECT_LT(e.activations + uint64_t{9} * 1000 * 1000 * 1000, f.activations);
  EXPECT_GT(e.gemm_scratch, 2u * 16 * 1024 * 50304);  // the LM head's dlogits in bf16
  EXPECT_GT(e.attention_scratch, 0u);
}

TEST(GpuMemory, ZeroOneShardsTheOptimizerOverTheWorld) {
  const kvt::ModelConfig m = gpt124m();
  const uint64_t P = kvt::parameter_count(m);
  GpuTrainSetting s;
  s.zero = 1;
  s.world = 1;
  const auto one = kvt::estimate_gpu_train_memory(m, 2, 1024, s);
  s.world = 8;
  const auto eight = kvt::estimate_gpu_train_memory(m, 2, 1024, s);
  // one rank owns everything (plus at most a float of padding per bucket)
  EXPECT_GE(one.optimizer, 8 * P);
  EXPECT_LT(one.optimizer, 8 * P + 8 * 64);
  // eight ranks: each owns an eighth
  EXPECT_GE(eight.optimizer, 8 * P / 8);
  EXPECT_LT(eight.optimizer, 8 * P / 8 + 8 * 64);
  EXPECT_GT(eight.zero_buffers, 4 * P / 8);
  EXPECT_LT(eight.total(), one.total());
  // plain data parallelism does not depend on the world size
  s.zero = 0;
  EXPECT_EQ(kvt::estimate_gpu_train_memory(m, 2, 1024, s).total(),
            kvt::estimate_gpu_train_memory(m, 2, 1024, GpuTrainSetting{}).total());
}

TEST(GpuMemory, RecomputationShrinksActivations) {
  const kvt::ModelConfig m = gpt124m();
  GpuTrainSetting s;
  const uint64_t none = kvt::estimate_gpu_train_memory(m, 16, 1024, s).activations;
  s.recompute = Recompute::attention;
  const uint64_t attn = kvt::estimate_gpu_train_memory(m, 16, 1024, s).activations;
  s.recompute = Recompute::block;
  const uint64_t block = kvt::estimate_gpu_train_memory(m, 16, 1024, s).activations;
  EXPECT_LT(attn, none);
  EXPECT_LT(block, attn);
  EXPECT_EQ(attn, kvt::transformer_activation_bytes(m, 16, 1024, true, Recompute::attention, true));
  EXPECT_EQ(block, kvt::transformer_activation_bytes(m, 16, 1024, true, Recompute::block, true));
}

}  // namespace

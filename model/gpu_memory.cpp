// model/gpu_memory.cpp — the per-rank GPU memory of training, by kind (model/gpu_memory.h).
#include "model/gpu_memory.h"

#include <algorithm>
#include <cstdio>

#include "model/memory_estimate.h"

namespace kvt {

namespace {
std::string mib(uint64_t bytes) {
  const double m = static_cast<double>(bytes) / 1048576.0;
  char buf[32];
  if (m >= 1024) std::snprintf(buf, sizeof buf, "%.2f GiB", m / 1024);
  else std::snprintf(buf, sizeof buf, "%.0f MiB", m);
  return buf;
}
}  // namespace

// The cuBLASLt workspace the CUDA backend allocates (kernels/cuda, docs/gpu_kernels.md).
constexpr uint64_t kGemmWorkspaceBytes = uint64_t{32} << 20;

uint64_t GpuMemoryEstimate::total() const {
  return params + weight_copy + grads + optimizer + zero_buffers + activations + gemm_scratch +
         attention_scratch + gemm_workspace;
}

GpuMemoryEstimate estimate_gpu_train_memory(const ModelConfig& cfg_in, int64_t B, int64_t T,
                                            const GpuTrainSetting& s) {
  ModelConfig cfg = cfg_in;
  cfg.resolve();
  const uint64_t P = parameter_count(cfg), W = static_cast<uint64_t>(std::max(1, s.world));
  const uint64_t N = static_cast<uint64_t>(B) * static_cast<uint64_t>(T);
  const uint64_t C = cfg.d_model, H = cfg.n_heads, Hkv = cfg.kv_heads(), D = cfg.head_dim(),
                 F = cfg.ffn_dim(), V = cfg.vocab_size;
  const bool bf16 = s.precision == Precision::bf16;
  GpuMemoryEstimate e;
  e.params = 4 * P;
  e.weight_copy = bf16 ? 2 * P : 0;
  e.grads = 4 * P;
  if (s.zero == 1) {
    // Buckets of ~bucket_mb, each split in W slices of ceil(len / W): at most one float of
    // padding per bucket and rank.
    const uint64_t bucket = s.bucket_mb > 0 ? std::max<uint64_t>(1, static_cast<uint64_t>(s.bucket_mb * 1e6 / 4)) : P;
    const uint64_t buckets = (P + bucket - 1) / bucket;
    const uint64_t slice = (P + W - 1) / W + buckets;
    e.optimizer = 8 * slice;
    e.zero_buffers = 4 * slice + 4 * (std::min(bucket, P) + W);
  } else {
    e.optimizer = 8 * P;
  }
  e.activations = transformer_activation_bytes(cfg, B, T, /*with_grads*/ true, s.recompute,
                                               /*attention_probs*/ !bf16);
  if (bf16) {
    // The widest GEMM's input and output gradient in bf16: the LM head (C -> V) or the MLP's
    // gate/up projection (C -> 2F).
    const uint64_t widest = std::max({C + V, C + 2 * F, F + C});
    e.gemm_scratch = 2 * N * widest;
    // q, o, dq, do [N, H D] and k, v, dk, dv [N, Hkv D] in bf16, and the deterministic
    // backward's workspace, about B H T T bf16 values (docs/gpu_kernels.md)
    e.attention_scratch = 2 * N * (4 * H * D + 4 * Hkv * D) +
                          2 * static_cast<uint64_t>(B) * H * static_cast<uint64_t>(T) * static_cast<uint64_t>(T);
  }
  e.gemm_workspace = kGemmWorkspaceBytes;
  e.not_counted = "the CUDA context (~0.5 GiB), NCCL's buffers, allocator slack";
  return e;
}

std::string gpu_memory_breakdown(const GpuMemoryEstimate& e) {
  std::string out = mib(e.total()) + " =";
  auto part = [&](const char* name, uint64_t bytes) {
    if (bytes > 0) out += (out.back() == '=' ? " " : ", ") + std::string(name) + " " + mib(bytes);
  };
  part("params", e.params);
  part("bf16 weights", e.weight_copy);
  part("grads", e.grads);
  part("AdamW", e.optimizer);
  part("ZeRO-1 buffers", e.zero_buffers);
  part("activations", e.activations);
  part("bf16 GEMM scratch", e.gemm_scratch);
  part("flash attention scratch", e.attention_scratch);
  part("cuBLASLt workspace", e.gemm_workspace);
  return out;
}

}  // namespace kvt

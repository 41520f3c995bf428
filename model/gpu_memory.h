// model/gpu_memory.h — the GPU memory one rank of `kvtrain train --set train.backend=cuda` needs,
// counted from the config (what `kvtrain inspect --config` prints; docs/gpu.md, "Memory").
// Device buffers only, by kind; what is not counted (the CUDA context, NCCL's and cuDNN's own
// workspaces, allocator slack) is named in `not_counted`.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/ops.h"
#include "model/config.h"
#include "model/recompute.h"

namespace kvt {

struct GpuTrainSetting {
  Precision precision = Precision::fp32;
  int zero = 0;          // 0 | 1 (train.zero)
  int world = 1;         // ranks
  Recompute recompute = Recompute::none;
  double bucket_mb = 25;  // train.bucket_mb (0 = one reduction)
};

struct GpuMemoryEstimate {
  uint64_t params = 0;       // fp32 master parameters, 4 P
  uint64_t weight_copy = 0;  // bf16 copy of the weights, 2 P (bf16 only)
  uint64_t grads = 0;        // fp32 gradients, 4 P
  uint64_t optimizer = 0;    // AdamW m and v: 8 P, or 8 x this rank's slices with ZeRO-1
  uint64_t zero_buffers = 0; // ZeRO-1: the reduced gradient slices and the padded bucket staging
  uint64_t activations = 0;  // the Transformer's activation arena (transformer_activation_bytes)
  uint64_t gemm_scratch = 0; // bf16 copies of the largest GEMM's x and dout (bf16 only)
  uint64_t attention_scratch = 0;  // flash attention's packed bf16 q, k, v, o, dq, dk, dv and
                                   // its deterministic backward's workspace
  uint64_t gemm_workspace = 0;     // cuBLASLt's workspace
  std::string not_counted;

  uint64_t total() const;
};

// B sequences of T tokens per rank and micro-step.
GpuMemoryEstimate estimate_gpu_train_memory(const ModelConfig& cfg, int64_t B, int64_t T,
                                            const GpuTrainSetting& s);

// "17.2 GiB = params 471 MiB, bf16 weights 236 MiB, ..." (the total, then the non-zero parts).
std::string gpu_memory_breakdown(const GpuMemoryEstimate& e);

}  // namespace kvt

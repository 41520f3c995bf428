// kernels/cuda/sdpa.h — flash attention of the bf16 mode through cuDNN's fused SDPA (the
// cudnn-frontend graph API), causal, GQA, scale 1/sqrt(D). Same math as Ops::attention_forward /
// attention_backward (kernels/ops.h) with the bf16 roundings of Precision::bf16:
//   forward:  q, k, v -> bf16 (packed scratch [B, T, heads, D]); O = softmax(q k^T / sqrt(D)) v
//             in bf16; out = float(O); stats[b, h, t] = logsumexp_s of the row's scaled logits
//             (fp32, cuDNN's "Stats", [B, H, T]) in place of the probabilities.
//   backward: q, k, v, out, dout -> bf16; dQ, dK, dV (bf16) from cuDNN; dq = float(dQ)
//             (overwritten, stride ldq); dk += float(dK), dv += float(dV) (strides ldk, ldv).
// Each (B, T, H, Hkv, D) builds its forward and backward graph once and caches it. The backward
// graph asks for cuDNN's deterministic algorithm (set_deterministic_algorithm: the dP-workspace
// path, no atomics on dQ), so runs are bitwise repeatable. A shape no engine supports (e.g. D not
// a multiple of 8, D > 256 on sm_90 or > 128 on sm_80) throws one line naming the shape and
// cuDNN's message.
#pragma once

#include <cuda_runtime.h>

#include <memory>

#include "kernels/ops.h"

namespace kvt::cuda {

class FlashAttention {
 public:
  explicit FlashAttention(cudaStream_t stream);
  ~FlashAttention();
  FlashAttention(const FlashAttention&) = delete;
  FlashAttention& operator=(const FlashAttention&) = delete;

  // stats: B*H*T floats
  void forward(float* out, float* stats, const float* q, const float* k, const float* v,
               const AttnShape& s);
  void backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                const float* stats, const float* q, const float* k, const float* v,
                const AttnShape& s);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvt::cuda

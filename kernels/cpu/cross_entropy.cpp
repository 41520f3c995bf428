// Fused softmax cross-entropy, forward and backward (AVX-512 / AVX2 variants:
// kernels/cpu/isa_dispatch.h).
#include <cmath>

#include "kernels/common/math.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa_dispatch.h"
#include "kernels/cpu/rowops.h"

namespace kvt {

namespace {

// losses[n] = log sum_j exp(logits[n,j]) - logits[n, targets[n]]
KVT_ISA_VARIANTS(ce_forward, (float* losses, const float* logits, const int32_t* targets,
                              int64_t N, int V), {
  KVT_OMP_FOR
  for (int64_t n = 0; n < N; n++) {
    const float* x = logits + n * V;
    const float mx = cpu::row_max(x, V);
    const float sum = cpu::row_sum_exp(x, V, mx, nullptr);
    losses[n] = std::log(sum) + mx - x[targets[n]];
  }
})

// dlogits = (softmax(logits) - onehot(target)) * dloss. The row's e^(x_j - max) are stored in
// dlogits while they are summed (row_sum_exp reads x_j before it writes d_j, so dlogits may
// alias logits), then scaled in place: one exponential per element.
KVT_ISA_VARIANTS(ce_backward, (float* dlogits, const float* logits, const int32_t* targets,
                               int64_t N, int V, float dloss), {
  KVT_OMP_FOR
  for (int64_t n = 0; n < N; n++) {
    const float* x = logits + n * V;
    float* d = dlogits + n * V;
    const float mx = cpu::row_max(x, V);
    const float inv = 1.0f / cpu::row_sum_exp(x, V, mx, d);
    const int tgt = targets[n];
    for (int j = 0; j < V; j++) d[j] = (d[j] * inv - (j == tgt ? 1.0f : 0.0f)) * dloss;
  }
})

}  // namespace

void CpuOps::cross_entropy_forward(float* losses, const float* logits, const int32_t* targets,
                                   int64_t N, int V) {
  KVT_ISA_CALL(ce_forward, losses, logits, targets, N, V);
}

void CpuOps::cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                                    int64_t N, int V, float dloss) {
  KVT_ISA_CALL(ce_backward, dlogits, logits, targets, N, V, dloss);
}

}  // namespace kvt

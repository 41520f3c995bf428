// Fused softmax cross-entropy, forward and backward.
#include <cmath>

#include "kernels/common/math.h"
#include "kernels/cpu/rowops.h"

#include "kernels/cpu/cpu_ops.h"

namespace kvt {

namespace {
// max and sum_j exp(x_j - max) of one row
inline void row_stats(const float* x, int V, float* mx, float* sum) {
  *mx = cpu::row_max(x, V);
  *sum = cpu::row_sum_exp(x, V, *mx, nullptr);
}
}  // namespace

// losses[n] = log sum_j exp(logits[n,j]) - logits[n, targets[n]]
void CpuOps::cross_entropy_forward(float* losses, const float* logits, const int32_t* targets,
                                   int64_t N, int V) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* x = logits + n * V;
    float mx, sum;
    row_stats(x, V, &mx, &sum);
    losses[n] = std::log(sum) + mx - x[targets[n]];
  }
}

// dlogits = (softmax(logits) - onehot(target)) * dloss; row statistics are taken before the
// row is written, so dlogits may alias logits.
void CpuOps::cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                                    int64_t N, int V, float dloss) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* x = logits + n * V;
    float* d = dlogits + n * V;
    float mx, sum;
    row_stats(x, V, &mx, &sum);
    const float inv = 1.0f / sum;
    const int tgt = targets[n];
    for (int j = 0; j < V; j++) {
      const float p = math::exp_fast(x[j] - mx) * inv;
      d[j] = (p - (j == tgt ? 1.0f : 0.0f)) * dloss;
    }
  }
}

}  // namespace kvt

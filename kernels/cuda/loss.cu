// kernels/cuda/loss.cu — fused softmax cross-entropy, one block per row of V logits.
//   forward:  losses[n] = logsumexp(logits[n,:]) - logits[n, targets[n]]
//   backward: dlogits[n,:] = (softmax(logits[n,:]) - onehot(targets[n])) dloss
// logsumexp is two-pass (max, then sum of exp(l - max)) with block reductions in a fixed order;
// the exponentials are math::softmax_weight, as on the CPU.
// The backward reads the whole row before any thread writes it, so dlogits may alias logits.
// A target outside [0, V) gives a NaN loss (and no one-hot term), never an out-of-bounds read.
#include "kernels/common/math.h"
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

constexpr int kLossBlock = 512;

// Returns (max, sum_c exp(l[c] - max)) of one row to every thread of the block.
__device__ void row_logsumexp_parts(const float* l, int V, float* red, float* mx, float* se) {
  float m = -INFINITY;
  for (int c = threadIdx.x; c < V; c += blockDim.x) m = fmaxf(m, l[c]);
  m = block_max(m, red);
  float s = 0.0f;
  for (int c = threadIdx.x; c < V; c += blockDim.x) s += math::softmax_weight(l[c], m);  // the CPU's formula
  s = block_sum(s, red);
  *mx = m;
  *se = s;
}

__global__ void cross_entropy_forward_kernel(float* losses, const float* logits,
                                             const int32_t* targets, int64_t N, int V) {
  __shared__ float red[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* l = logits + n * V;
    float m, s;
    row_logsumexp_parts(l, V, red, &m, &s);
    if (threadIdx.x == 0) {
      const int t = targets[n];
      losses[n] = (t >= 0 && t < V) ? logf(s) + m - l[t] : NAN;
    }
  }
}

__global__ void cross_entropy_backward_kernel(float* dlogits, const float* logits,
                                              const int32_t* targets, int64_t N, int V,
                                              float dloss) {
  __shared__ float red[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* l = logits + n * V;
    float m, s;
    row_logsumexp_parts(l, V, red, &m, &s);  // ends with __syncthreads: all reads done
    const int t = targets[n];
    const float inv = 1.0f / s;
    float* d = dlogits + n * V;
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
      const float p = math::softmax_weight(l[c], m) * inv;
      d[c] = (p - (c == t ? 1.0f : 0.0f)) * dloss;
    }
  }
}

unsigned row_grid(int64_t N) { return static_cast<unsigned>(N < kMaxGrid ? N : kMaxGrid); }

}  // namespace

void cross_entropy_forward(cudaStream_t stream, float* losses, const float* logits,
                           const int32_t* targets, int64_t N, int V) {
  if (N <= 0 || V <= 0) return;
  cross_entropy_forward_kernel<<<row_grid(N), kLossBlock, 0, stream>>>(losses, logits, targets,
                                                                       N, V);
  CUDA_CHECK_LAUNCH();
}

void cross_entropy_backward(cudaStream_t stream, float* dlogits, const float* logits,
                            const int32_t* targets, int64_t N, int V, float dloss) {
  if (N <= 0 || V <= 0) return;
  cross_entropy_backward_kernel<<<row_grid(N), kLossBlock, 0, stream>>>(dlogits, logits, targets,
                                                                        N, V, dloss);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvt::cuda

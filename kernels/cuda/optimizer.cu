// kernels/cuda/optimizer.cu — SGD with momentum (math::sgd_element) and AdamW (PyTorch
// semantics, decoupled weight decay), one thread per element through math::adamw_element; the bias corrections bc1 = 1 - beta1^t and
// bc2 = 1 - beta2^t come from the host (computed in double, as on the CPU).
//   g = grad grad_scale;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr ( (m/bc1) / (sqrt(v/bc2) + eps) + wd p )
#include "kernels/common/math.h"
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

__global__ void adamw_kernel(float* p, const float* grad, float* m, float* v, int64_t n, float lr,
                             float beta1, float beta2, float eps, float wd, float bc1, float bc2,
                             float grad_scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    math::adamw_element(p + i, grad[i] * grad_scale, m + i, v + i, lr, beta1, beta2, eps, wd, bc1,
                        bc2);
  }
}

__global__ void sgd_kernel(float* p, const float* grad, float* buf, int64_t n, float lr,
                           float momentum, float wd, float grad_scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    math::sgd_element(p + i, grad[i] * grad_scale, buf + i, lr, momentum, wd);
  }
}

}  // namespace

void sgd_update(cudaStream_t stream, float* p, const float* grad, float* buf, int64_t n, float lr,
                float momentum, float weight_decay, float grad_scale) {
  if (n <= 0) return;
  sgd_kernel<<<grid_for(n), kBlock, 0, stream>>>(p, grad, buf, n, lr, momentum, weight_decay,
                                                 grad_scale);
  CUDA_CHECK_LAUNCH();
}

void adamw_update(cudaStream_t stream, float* p, const float* grad, float* m, float* v, int64_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, float bc1,
                  float bc2, float grad_scale) {
  if (n <= 0) return;
  adamw_kernel<<<grid_for(n), kBlock, 0, stream>>>(p, grad, m, v, n, lr, beta1, beta2, eps,
                                                   weight_decay, bc1, bc2, grad_scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvt::cuda

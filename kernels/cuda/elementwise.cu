// kernels/cuda/elementwise.cu — element-wise ops, one grid-stride thread per element.
//   swiglu:   out[n,f] = silu(gate[n,f]) up[n,f], gate_up[n] = [gate (F) | up (F)]
//             dgate = dout up silu'(gate), dup = dout silu(gate)     (dgate_up overwritten)
//   residual: out = a + b;  da += dout, db += dout (da may alias dout: then it already holds
//             the gradient and is left as is)
//   scale:    x *= s
#include "kernels/common/math.h"
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

#define KVT_GRID_STRIDE(i, n)                                                   \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

__global__ void swiglu_forward_kernel(float* out, const float* gate_up, int64_t N, int F) {
  KVT_GRID_STRIDE(i, N * F) {
    const int64_t n = i / F, f = i - n * F;
    const float* row = gate_up + n * 2 * F;
    out[i] = math::swiglu(row[f], row[F + f]);
  }
}

__global__ void swiglu_backward_kernel(float* dgate_up, const float* dout, const float* gate_up,
                                       int64_t N, int F) {
  KVT_GRID_STRIDE(i, N * F) {
    const int64_t n = i / F, f = i - n * F;
    const float* row = gate_up + n * 2 * F;
    float dg, du;
    math::swiglu_grad(row[f], row[F + f], dout[i], &dg, &du);
    float* drow = dgate_up + n * 2 * F;
    drow[f] = dg;
    drow[F + f] = du;
  }
}

__global__ void residual_forward_kernel(float* out, const float* a, const float* b, int64_t n) {
  KVT_GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

__global__ void residual_backward_kernel(float* da, float* db, const float* dout, int64_t n) {
  KVT_GRID_STRIDE(i, n) {
    const float g = dout[i];
    if (da) da[i] += g;
    if (db) db[i] += g;
  }
}

__global__ void scale_kernel(float* x, float s, int64_t n) {
  KVT_GRID_STRIDE(i, n) x[i] *= s;
}

#undef KVT_GRID_STRIDE

}  // namespace

void swiglu_forward(cudaStream_t stream, float* out, const float* gate_up, int64_t N, int F) {
  if (N <= 0 || F <= 0) return;
  swiglu_forward_kernel<<<grid_for(N * F), kBlock, 0, stream>>>(out, gate_up, N, F);
  CUDA_CHECK_LAUNCH();
}

void swiglu_backward(cudaStream_t stream, float* dgate_up, const float* dout,
                     const float* gate_up, int64_t N, int F) {
  if (N <= 0 || F <= 0) return;
  swiglu_backward_kernel<<<grid_for(N * F), kBlock, 0, stream>>>(dgate_up, dout, gate_up, N, F);
  CUDA_CHECK_LAUNCH();
}

void residual_forward(cudaStream_t stream, float* out, const float* a, const float* b, int64_t n) {
  if (n <= 0) return;
  residual_forward_kernel<<<grid_for(n), kBlock, 0, stream>>>(out, a, b, n);
  CUDA_CHECK_LAUNCH();
}

void residual_backward(cudaStream_t stream, float* da, float* db, const float* dout, int64_t n) {
  if (da == dout) da = nullptr;  // already holds dout (ops.h); db is always accumulated
  if (n <= 0 || (!da && !db)) return;
  residual_backward_kernel<<<grid_for(n), kBlock, 0, stream>>>(da, db, dout, n);
  CUDA_CHECK_LAUNCH();
}

void scale(cudaStream_t stream, float* x, float s, int64_t n) {
  if (n <= 0) return;
  scale_kernel<<<grid_for(n), kBlock, 0, stream>>>(x, s, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvt::cuda

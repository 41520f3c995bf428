// kernels/cuda/norm.cu — RMSNorm.
//   forward:  rstd[n] = 1 / sqrt(mean_c x[n,c]^2 + eps);  out[n,c] = x[n,c] rstd[n] w[c]
//   backward: dx[n,:] += rstd (w dout - xhat mean_c(w dout xhat)),  xhat = x rstd
//             dw[c]   += sum_n dout[n,c] xhat[n,c]
// One block per row for the row reductions. dw is deterministic without atomics: block b of a
// fixed-size grid owns rows b, b + grid, ... and its own row of a [grid, C] partial buffer
// (each thread its own channels); a second kernel adds the partials to dw in increasing b.
#include "kernels/common/math.h"
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

constexpr int kNormBlock = 256;
constexpr int kDwPartials = 256;  // rows of the dw partial buffer (fixed: deterministic)

__global__ void rmsnorm_forward_kernel(float* out, float* rstd, const float* x, const float* w,
                                       int64_t N, int C, float eps) {
  __shared__ float red[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* xr = x + n * C;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
    ss = block_sum(ss, red);
    const float r = math::rms_rstd(ss / C, eps);
    if (threadIdx.x == 0) rstd[n] = r;
    float* outr = out + n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) outr[c] = xr[c] * r * w[c];
  }
}

// dx for rows n = blockIdx.x + k gridDim.x; dw partials into part[blockIdx.x, :] (overwritten).
__global__ void rmsnorm_backward_kernel(float* dx, float* part, const float* dout, const float* x,
                                        const float* w, const float* rstd, int64_t N, int C) {
  __shared__ float red[32];
  float* prow = part ? part + int64_t(blockIdx.x) * C : nullptr;  // null: dw not wanted
  if (prow)
    for (int c = threadIdx.x; c < C; c += blockDim.x) prow[c] = 0.0f;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* xr = x + n * C;
    const float* dr = dout + n * C;
    const float r = rstd[n];
    float dot = 0.0f;  // sum_c w dout xhat
    for (int c = threadIdx.x; c < C; c += blockDim.x) dot += w[c] * dr[c] * (xr[c] * r);
    const float mean = block_sum(dot, red) / C;
    float* dxr = dx + n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float xhat = xr[c] * r;
      dxr[c] += r * (w[c] * dr[c] - xhat * mean);
      if (prow) prow[c] += dr[c] * xhat;  // this thread owns channel c of its partial row
    }
  }
}

__global__ void sum_partials_kernel(float* dw, const float* part, int rows, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.0f;
  for (int b = 0; b < rows; ++b) acc += part[int64_t(b) * C + c];
  dw[c] += acc;
}

}  // namespace

void rmsnorm_forward(cudaStream_t stream, float* out, float* rstd, const float* x, const float* w,
                     int64_t N, int C, float eps) {
  if (N <= 0 || C <= 0) return;
  const unsigned grid = static_cast<unsigned>(N < kMaxGrid ? N : kMaxGrid);
  rmsnorm_forward_kernel<<<grid, kNormBlock, 0, stream>>>(out, rstd, x, w, N, C, eps);
  CUDA_CHECK_LAUNCH();
}

void rmsnorm_backward(cudaStream_t stream, Scratch& scratch, float* dx, float* dw,
                      const float* dout, const float* x, const float* w, const float* rstd,
                      int64_t N, int C) {
  if (N <= 0 || C <= 0) return;
  const int rows = static_cast<int>(N < kDwPartials ? N : kDwPartials);
  float* part =
      dw ? static_cast<float*>(scratch.get(sizeof(float) * size_t(rows) * C, stream)) : nullptr;
  rmsnorm_backward_kernel<<<rows, kNormBlock, 0, stream>>>(dx, part, dout, x, w, rstd, N, C);
  CUDA_CHECK_LAUNCH();
  if (!dw) return;
  sum_partials_kernel<<<(C + kBlock - 1) / kBlock, kBlock, 0, stream>>>(dw, part, rows, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvt::cuda

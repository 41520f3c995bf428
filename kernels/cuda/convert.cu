// kernels/cuda/convert.cu — fp32 <-> bf16 conversions of the bf16 mode (GEMM inputs, the weight
// copy, flash attention's q/k/v/out/dq/dk/dv). bf16 is stored as uint16_t bits and rounded with
// math::to_bf16 (nearest, ties to even: the bits of __float2bfloat16_rn and of the CPU's emulation).
//   to_bf16:        dst[i] = bf16(src[i])
//   rows_to_bf16:   dst[r*cols + c] = bf16(src[r*lds + c])          (strided rows -> packed)
//   rows_from_bf16: dst[r*ldd + c] (= or +=) float(src[r*cols + c]) (packed -> strided rows)
// One grid-stride thread per element: every output element has one writer (no atomics).
#include "kernels/common/math.h"
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

__global__ void to_bf16_kernel(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = math::to_bf16(src[i]);
}

__global__ void rows_to_bf16_kernel(uint16_t* dst, const float* src, int64_t lds, int64_t rows,
                                    int cols) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    dst[i] = math::to_bf16(src[r * lds + c]);
  }
}

__global__ void rows_from_bf16_kernel(float* dst, int64_t ldd, const uint16_t* src, int64_t rows,
                                      int cols, bool accumulate) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    const float v = math::from_bf16(src[i]);
    float* d = dst + r * ldd + c;
    *d = accumulate ? *d + v : v;
  }
}

}  // namespace

void to_bf16(cudaStream_t stream, uint16_t* dst, const float* src, int64_t n) {
  if (n <= 0) return;
  to_bf16_kernel<<<grid_for(n), kBlock, 0, stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

void rows_to_bf16(cudaStream_t stream, uint16_t* dst, const float* src, int64_t lds, int64_t rows,
                  int cols) {
  if (rows <= 0 || cols <= 0) return;
  rows_to_bf16_kernel<<<grid_for(rows * cols), kBlock, 0, stream>>>(dst, src, lds, rows, cols);
  CUDA_CHECK_LAUNCH();
}

void rows_from_bf16(cudaStream_t stream, float* dst, int64_t ldd, const uint16_t* src,
                    int64_t rows, int cols, bool accumulate) {
  if (rows <= 0 || cols <= 0) return;
  rows_from_bf16_kernel<<<grid_for(rows * cols), kBlock, 0, stream>>>(dst, ldd, src, rows, cols,
                                                                      accumulate);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvt::cuda

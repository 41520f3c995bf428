// kernels/cuda/reduce.cu — sum_i x[i] and sum_i x[i]^2 in double, in a fixed order:
// pass 1: a fixed grid of kParts blocks; thread j of block b adds elements b*kBlock + j + k*stride
//         (stride = kParts*kBlock) in increasing k, then the block sums its threads (tree);
// pass 2: one block sums the kParts partials (tree). The grid never depends on the device, so the
// result is bitwise repeatable. The double is copied back to the host (waits for the stream).
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

constexpr int kParts = 1024;

__global__ void partial_sum_kernel(double* part, const float* x, int64_t n, bool square) {
  __shared__ double red[32];
  double acc = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const double v = x[i];
    acc += square ? v * v : v;
  }
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

__global__ void final_sum_kernel(double* out, const double* part, int parts) {
  __shared__ double red[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < parts; i += blockDim.x) acc += part[i];
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) *out = acc;
}

// acc[0] += (float)(scale * total): stays on the device (the step's loss, read once per step).
__global__ void accumulate_kernel(float* acc, const double* total, float scale) {
  acc[0] += static_cast<float>(static_cast<double>(scale) * *total);
}

}  // namespace

double reduce_sum(cudaStream_t stream, Scratch& scratch, const float* x, int64_t n, bool square) {
  if (n <= 0) return 0.0;
  auto* part = static_cast<double*>(scratch.get(sizeof(double) * (kParts + 1), stream));
  partial_sum_kernel<<<kParts, kBlock, 0, stream>>>(part, x, n, square);
  CUDA_CHECK_LAUNCH();
  final_sum_kernel<<<1, kBlock, 0, stream>>>(part + kParts, part, kParts);
  CUDA_CHECK_LAUNCH();
  double result = 0.0;
  CUDA_CHECK(cudaMemcpyAsync(&result, part + kParts, sizeof(double), cudaMemcpyDeviceToHost,
                             stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return result;
}

void accumulate_sum(cudaStream_t stream, Scratch& scratch, float* acc, const float* x, int64_t n,
                    float scale) {
  if (n <= 0) return;
  auto* part = static_cast<double*>(scratch.get(sizeof(double) * (kParts + 1), stream));
  partial_sum_kernel<<<kParts, kBlock, 0, stream>>>(part, x, n, false);
  CUDA_CHECK_LAUNCH();
  final_sum_kernel<<<1, kBlock, 0, stream>>>(part + kParts, part, kParts);
  CUDA_CHECK_LAUNCH();
  accumulate_kernel<<<1, 1, 0, stream>>>(acc, part + kParts, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvt::cuda

// kernels/cuda/rope.cu — RoPE, rotate-half pairing (j with j + D/2), in place on x viewed
// [B, T, nh, D] with row stride ld; token t sits at position pos0 + t; cos/sin are [max_pos, D/2].
//   forward:  (x[j], x[j+D/2]) rotated by +angle      (math::rope_rotate with sin)
//   backward: the same rotation by -angle (the rotation is orthogonal), i.e. sin negated.
// One thread per rotation pair.
#include "kernels/common/math.h"
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

__global__ void rope_kernel(float* x, int ld, int B, int T, int nh, int D, int pos0,
                            const float* cos, const float* sin, float sin_sign) {
  const int half = D / 2;
  const int64_t total = int64_t(B) * T * nh * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int j = static_cast<int>(i % half);
    int64_t r = i / half;
    const int h = static_cast<int>(r % nh);
    r /= nh;  // r = b * T + t
    const int t = static_cast<int>(r % T);
    float* xp = x + r * ld + int64_t(h) * D;
    const int64_t p = int64_t(pos0 + t) * half + j;
    math::rope_rotate(xp + j, xp + j + half, cos[p], sin_sign * sin[p]);
  }
}

}  // namespace

void rope_rotate(cudaStream_t stream, float* x, int ld, int B, int T, int nh, int D, int pos0,
                 const float* cos, const float* sin, float sin_sign) {
  const int64_t total = int64_t(B) * T * nh * (D / 2);
  if (total <= 0) return;
  rope_kernel<<<grid_for(total), kBlock, 0, stream>>>(x, ld, B, T, nh, D, pos0, cos, sin,
                                                      sin_sign);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvt::cuda

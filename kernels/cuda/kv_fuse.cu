// kernels/cuda/kv_fuse.cu — FusedKV fusion of two storage layers' K or V (ops.h, docs/design.md, "The model family"):
//   out[n,h,j] = w_first[h,c] first[n,h,j] + w_last[h,c] last[n,h,j],  c = c(j) (pair-tied keys)
//   dfirst += w_first dout;  dlast += w_last dout              (one thread per element)
//   dw_first[h,c] += sum_n sum_{j->c} dout first;  dw_last likewise
// The weight gradients are deterministic: one thread per (row chunk, weight) sums its chunk's
// rows in order into scratch, then one thread per weight adds the chunks in order. No atomics.
#include "kernels/common/kv_math.h"
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

__global__ void kv_fuse_forward_kernel(float* out, int ldo, const float* first, int ld_first,
                                       const float* last, int ld_last, const float* w_first,
                                       const float* w_last, int64_t N, int Hkv, int D,
                                       bool tied) {
  const int64_t HD = static_cast<int64_t>(Hkv) * D;
  const int W = math::kv_fuse_width(D, tied);
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < N * HD;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = e / HD;
    const int i = static_cast<int>(e - n * HD), h = i / D, j = i - h * D;
    const int c = h * W + math::kv_fuse_channel(j, D, tied);
    out[n * ldo + i] =
        math::kv_fuse(w_first[c], first[n * ld_first + i], w_last[c], last[n * ld_last + i]);
  }
}

__global__ void kv_fuse_dx_kernel(float* dfirst, int ld_first, float* dlast, int ld_last,
                                  const float* dout, int ldo, const float* w_first,
                                  const float* w_last, int64_t N, int Hkv, int D, bool tied) {
  const int64_t HD = static_cast<int64_t>(Hkv) * D;
  const int W = math::kv_fuse_width(D, tied);
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < N * HD;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = e / HD;
    const int i = static_cast<int>(e - n * HD), h = i / D, j = i - h * D;
    const int c = h * W + math::kv_fuse_channel(j, D, tied);
    const float g = dout[n * ldo + i];
    dfirst[n * ld_first + i] += w_first[c] * g;
    dlast[n * ld_last + i] += w_last[c] * g;
  }
}

// partial[chunk][0 | 1][h, c]: thread per (chunk, which, h, c).
__global__ void kv_fuse_dw_partial_kernel(float* partial, const float* dout, int ldo,
                                          const float* first, int ld_first, const float* last,
                                          int ld_last, int64_t N, int Hkv, int D, bool tied,
                                          int64_t nchunks) {
  const int W = math::kv_fuse_width(D, tied);
  const int64_t HW = static_cast<int64_t>(Hkv) * W, total = nchunks * 2 * HW;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ch = e / (2 * HW);
    const int64_t rest = e - ch * 2 * HW;
    const bool is_last = rest >= HW;
    const int hc = static_cast<int>(is_last ? rest - HW : rest), h = hc / W, c = hc - h * W;
    const float* x = is_last ? last : first;
    const int ldx = is_last ? ld_last : ld_first;
    const int64_t n0 = ch * math::kKvRowsPerChunk;
    const int64_t n1 = n0 + math::kKvRowsPerChunk < N ? n0 + math::kKvRowsPerChunk : N;
    float acc = 0.0f;
    for (int64_t n = n0; n < n1; n++) {
      const int i = h * D + c;
      acc += dout[n * ldo + i] * x[n * ldx + i];
      if (tied) acc += dout[n * ldo + i + D / 2] * x[n * ldx + i + D / 2];
    }
    partial[e] = acc;
  }
}

__global__ void kv_fuse_dw_combine_kernel(float* dw_first, float* dw_last, const float* partial,
                                          int64_t HW, int64_t nchunks) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < 2 * HW;
       e += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int64_t ch = 0; ch < nchunks; ch++) acc += partial[ch * 2 * HW + e];
    if (e < HW) dw_first[e] += acc;
    else dw_last[e - HW] += acc;
  }
}

}  // namespace

void kv_fuse_forward(cudaStream_t stream, float* out, int ldo, const float* first, int ld_first,
                     const float* last, int ld_last, const float* w_first, const float* w_last,
                     int64_t N, int Hkv, int D, bool pair_tied) {
  const int64_t n = N * Hkv * D;
  if (n <= 0) return;
  kv_fuse_forward_kernel<<<grid_for(n), kBlock, 0, stream>>>(out, ldo, first, ld_first, last,
                                                             ld_last, w_first, w_last, N, Hkv, D,
                                                             pair_tied);
  CUDA_CHECK_LAUNCH();
}

void kv_fuse_backward(cudaStream_t stream, Scratch& scratch, float* dfirst, float* dlast,
                      float* dw_first, float* dw_last, const float* dout, int ldo,
                      const float* first, int ld_first, const float* last, int ld_last,
                      const float* w_first, const float* w_last, int64_t N, int Hkv, int D,
                      bool pair_tied) {
  const int64_t n = N * Hkv * D;
  if (n <= 0) return;
  kv_fuse_dx_kernel<<<grid_for(n), kBlock, 0, stream>>>(dfirst, ld_first, dlast, ld_last, dout,
                                                        ldo, w_first, w_last, N, Hkv, D,
                                                        pair_tied);
  CUDA_CHECK_LAUNCH();
  const int64_t HW = static_cast<int64_t>(Hkv) * math::kv_fuse_width(D, pair_tied);
  const int64_t nchunks = (N + math::kKvRowsPerChunk - 1) / math::kKvRowsPerChunk;
  float* partial = static_cast<float*>(scratch.get(nchunks * 2 * HW * sizeof(float), stream));
  kv_fuse_dw_partial_kernel<<<grid_for(nchunks * 2 * HW), kBlock, 0, stream>>>(
      partial, dout, ldo, first, ld_first, last, ld_last, N, Hkv, D, pair_tied, nchunks);
  CUDA_CHECK_LAUNCH();
  kv_fuse_dw_combine_kernel<<<grid_for(2 * HW), kBlock, 0, stream>>>(dw_first, dw_last, partial,
                                                                     HW, nchunks);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvt::cuda

// kernels/cuda/lrkv.cu — LRKV expansion of shared + per-head low-rank keys or values (ops.h,
// docs/design.md, "The model family"):
//   out[n,h,d] = shared[n,d] + sum_r lat[n,h,r] up[h,d,r]        (thread per (n, h, d))
//   dshared[n,d] += sum_h dout[n,h,d]                              (thread per (n, d))
//   dlat[n,h,r] += sum_d dout[n,h,d] up[h,d,r]                      (thread per (n, h, r))
//   dup[h,d,r] += sum_n dout[n,h,d] lat[n,h,r]: one thread per (row chunk, h, d, r) sums its
//   chunk in order into scratch, then one thread per (h, d, r) adds the chunks in order.
#include "kernels/common/kv_math.h"
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

#define KVT_GRID_STRIDE(i, n)                                                   \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

__global__ void lrkv_forward_kernel(float* out, int ldo, const float* shared, int lds,
                                    const float* lat, int ldl, const float* up, int64_t N, int H,
                                    int D, int R) {
  const int64_t HD = static_cast<int64_t>(H) * D;
  KVT_GRID_STRIDE(e, N * HD) {
    const int64_t n = e / HD;
    const int i = static_cast<int>(e - n * HD), h = i / D, d = i - h * D;
    const float* z = lat + n * ldl + static_cast<int64_t>(h) * R;
    const float* b = up + (static_cast<int64_t>(h) * D + d) * R;
    float acc = 0.0f;
    for (int r = 0; r < R; r++) acc += z[r] * b[r];
    out[n * ldo + i] = shared[n * lds + d] + acc;
  }
}

__global__ void lrkv_dshared_kernel(float* dshared, int lds, const float* dout, int ldo,
                                    int64_t N, int H, int D) {
  KVT_GRID_STRIDE(e, N * D) {
    const int64_t n = e / D;
    const int d = static_cast<int>(e - n * D);
    float acc = 0.0f;
    for (int h = 0; h < H; h++) acc += dout[n * ldo + h * D + d];
    dshared[n * lds + d] += acc;
  }
}

__global__ void lrkv_dlat_kernel(float* dlat, int ldl, const float* dout, int ldo,
                                 const float* up, int64_t N, int H, int D, int R) {
  const int64_t HR = static_cast<int64_t>(H) * R;
  KVT_GRID_STRIDE(e, N * HR) {
    const int64_t n = e / HR;
    const int i = static_cast<int>(e - n * HR), h = i / R, r = i - h * R;
    const float* g = dout + n * ldo + static_cast<int64_t>(h) * D;
    const float* b = up + static_cast<int64_t>(h) * D * R + r;
    float acc = 0.0f;
    for (int d = 0; d < D; d++) acc += g[d] * b[static_cast<int64_t>(d) * R];
    dlat[n * ldl + i] += acc;
  }
}

__global__ void lrkv_dup_partial_kernel(float* partial, const float* dout, int ldo,
                                        const float* lat, int ldl, int64_t N, int H, int D, int R,
                                        int64_t nchunks) {
  const int64_t HDR = static_cast<int64_t>(H) * D * R;
  KVT_GRID_STRIDE(e, nchunks * HDR) {
    const int64_t ch = e / HDR;
    const int64_t i = e - ch * HDR;
    const int h = static_cast<int>(i / (static_cast<int64_t>(D) * R));
    const int rest = static_cast<int>(i - static_cast<int64_t>(h) * D * R), d = rest / R,
              r = rest - d * R;
    const int64_t n0 = ch * math::kKvRowsPerChunk;
    const int64_t n1 = n0 + math::kKvRowsPerChunk < N ? n0 + math::kKvRowsPerChunk : N;
    float acc = 0.0f;
    for (int64_t n = n0; n < n1; n++)
      acc += dout[n * ldo + h * D + d] * lat[n * ldl + static_cast<int64_t>(h) * R + r];
    partial[e] = acc;
  }
}

__global__ void lrkv_dup_combine_kernel(float* dup, const float* partial, int64_t HDR,
                                        int64_t nchunks) {
  KVT_GRID_STRIDE(e, HDR) {
    float acc = 0.0f;
    for (int64_t ch = 0; ch < nchunks; ch++) acc += partial[ch * HDR + e];
    dup[e] += acc;
  }
}

#undef KVT_GRID_STRIDE

}  // namespace

void lrkv_expand_forward(cudaStream_t stream, float* out, int ldo, const float* shared, int lds,
                         const float* lat, int ldl, const float* up, int64_t N, int H, int D,
                         int R) {
  const int64_t n = N * H * D;
  if (n <= 0) return;
  lrkv_forward_kernel<<<grid_for(n), kBlock, 0, stream>>>(out, ldo, shared, lds, lat, ldl, up, N,
                                                          H, D, R);
  CUDA_CHECK_LAUNCH();
}

void lrkv_expand_backward(cudaStream_t stream, Scratch& scratch, float* dshared, int lds,
                          float* dlat, float* dup, const float* dout, int ldo, const float* lat,
                          int ldl, const float* up, int64_t N, int H, int D, int R) {
  if (N <= 0 || H <= 0 || D <= 0 || R <= 0) return;
  lrkv_dshared_kernel<<<grid_for(N * D), kBlock, 0, stream>>>(dshared, lds, dout, ldo, N, H, D);
  CUDA_CHECK_LAUNCH();
  lrkv_dlat_kernel<<<grid_for(N * H * R), kBlock, 0, stream>>>(dlat, ldl, dout, ldo, up, N, H, D,
                                                               R);
  CUDA_CHECK_LAUNCH();
  const int64_t HDR = static_cast<int64_t>(H) * D * R;
  const int64_t nchunks = (N + math::kKvRowsPerChunk - 1) / math::kKvRowsPerChunk;
  float* partial = static_cast<float*>(scratch.get(nchunks * HDR * sizeof(float), stream));
  lrkv_dup_partial_kernel<<<grid_for(nchunks * HDR), kBlock, 0, stream>>>(partial, dout, ldo,
                                                                          lat, ldl, N, H, D, R,
                                                                          nchunks);
  CUDA_CHECK_LAUNCH();
  lrkv_dup_combine_kernel<<<grid_for(HDR), kBlock, 0, stream>>>(dup, partial, HDR, nchunks);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvt::cuda

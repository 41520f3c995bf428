// LRKV: per-head keys or values as a shared projection plus a per-head low-rank term, forward and
// backward (ops.h).
#include <vector>

#include "kernels/common/kv_math.h"
#include "kernels/cpu/cpu_ops.h"

namespace kvt {

// out[n,h,d] = shared[n,d] + sum_r lat[n,h,r] up[h,d,r]
void CpuOps::lrkv_expand_forward(float* out, int ldo, const float* shared, int lds,
                                 const float* lat, int ldl, const float* up, int64_t N, int H,
                                 int D, int R) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* s = shared + n * lds;
    float* o = out + n * ldo;
    for (int h = 0; h < H; h++) {
      const float* z = lat + n * ldl + static_cast<int64_t>(h) * R;
      const float* b = up + static_cast<int64_t>(h) * D * R;
      for (int d = 0; d < D; d++) {
        float acc = 0.0f;
        for (int r = 0; r < R; r++) acc += z[r] * b[d * R + r];
        o[h * D + d] = s[d] + acc;
      }
    }
  }
}

// dshared[n,d] += sum_h dout[n,h,d] (h increasing); dlat[n,h,r] += sum_d dout[n,h,d] up[h,d,r];
// dup[h,d,r] += sum_n dout[n,h,d] lat[n,h,r] (chunks of kKvRowsPerChunk rows, combined in order).
void CpuOps::lrkv_expand_backward(float* dshared, int lds, float* dlat, float* dup,
                                  const float* dout, int ldo, const float* lat, int ldl,
                                  const float* up, int64_t N, int H, int D, int R) {
  const int64_t HDR = static_cast<int64_t>(H) * D * R;
  const int64_t rows = math::kKvRowsPerChunk, nchunks = (N + rows - 1) / rows;
  std::vector<float> partial(static_cast<size_t>(nchunks * HDR), 0.0f);
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < nchunks; ch++) {
    float* p = partial.data() + ch * HDR;
    const int64_t n1 = (ch + 1) * rows < N ? (ch + 1) * rows : N;
    for (int64_t n = ch * rows; n < n1; n++) {
      const float* g = dout + n * ldo;
      const float* z = lat + n * ldl;
      float* ds = dshared + n * lds;
      float* dz = dlat + n * ldl;
      for (int d = 0; d < D; d++) {
        float acc = 0.0f;
        for (int h = 0; h < H; h++) acc += g[h * D + d];
        ds[d] += acc;
      }
      for (int h = 0; h < H; h++) {
        const float* b = up + static_cast<int64_t>(h) * D * R;
        for (int r = 0; r < R; r++) {
          float acc = 0.0f;
          for (int d = 0; d < D; d++) acc += g[h * D + d] * b[d * R + r];
          dz[h * R + r] += acc;
        }
        float* ph = p + static_cast<int64_t>(h) * D * R;
        for (int d = 0; d < D; d++) {
          const float gd = g[h * D + d];
          for (int r = 0; r < R; r++) ph[d * R + r] += gd * z[h * R + r];
        }
      }
    }
  }
  for (int64_t ch = 0; ch < nchunks; ch++)
    for (int64_t i = 0; i < HDR; i++) dup[i] += partial[ch * HDR + i];
}

}  // namespace kvt

// FusedKV: a reusing layer's K (pair-tied weights) or V (free weights) as the weighted sum of two
// storage layers' K or V, forward and backward (ops.h).
#include <vector>

#include "kernels/common/kv_math.h"
#include "kernels/cpu/cpu_ops.h"

namespace kvt {

// out[n,h,j] = w_first[h,c(j)] first[n,h,j] + w_last[h,c(j)] last[n,h,j]
void CpuOps::kv_fuse_forward(float* out, int ldo, const float* first, int ld_first,
                             const float* last, int ld_last, const float* w_first,
                             const float* w_last, int64_t N, int Hkv, int D, bool pair_tied) {
  const int W = math::kv_fuse_width(D, pair_tied);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* f = first + n * ld_first;
    const float* l = last + n * ld_last;
    float* o = out + n * ldo;
    for (int h = 0; h < Hkv; h++)
      for (int j = 0; j < D; j++) {
        const int c = h * W + math::kv_fuse_channel(j, D, pair_tied);
        const int i = h * D + j;
        o[i] = math::kv_fuse(w_first[c], f[i], w_last[c], l[i]);
      }
  }
}

// dfirst += w_first dout; dlast += w_last dout; dw_* += sum over tokens (fixed chunks of
// kKvRowsPerChunk rows, chunks combined in order) and over the channels that share a weight.
void CpuOps::kv_fuse_backward(float* dfirst, float* dlast, float* dw_first, float* dw_last,
                              const float* dout, int ldo, const float* first, int ld_first,
                              const float* last, int ld_last, const float* w_first,
                              const float* w_last, int64_t N, int Hkv, int D, bool pair_tied) {
  const int W = math::kv_fuse_width(D, pair_tied);
  const int64_t HW = static_cast<int64_t>(Hkv) * W;
  const int64_t rows = math::kKvRowsPerChunk, nchunks = (N + rows - 1) / rows;
  std::vector<float> partial(static_cast<size_t>(nchunks * 2 * HW), 0.0f);  // [chunk][first|last][h,c]
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < nchunks; ch++) {
    float* pf = partial.data() + ch * 2 * HW;
    float* pl = pf + HW;
    const int64_t n1 = (ch + 1) * rows < N ? (ch + 1) * rows : N;
    for (int64_t n = ch * rows; n < n1; n++) {
      const float* g = dout + n * ldo;
      const float* f = first + n * ld_first;
      const float* l = last + n * ld_last;
      float* df = dfirst + n * ld_first;
      float* dl = dlast + n * ld_last;
      for (int h = 0; h < Hkv; h++)
        for (int j = 0; j < D; j++) {
          const int c = h * W + math::kv_fuse_channel(j, D, pair_tied);
          const int i = h * D + j;
          df[i] += w_first[c] * g[i];
          dl[i] += w_last[c] * g[i];
          pf[c] += g[i] * f[i];
          pl[c] += g[i] * l[i];
        }
    }
  }
  for (int64_t ch = 0; ch < nchunks; ch++)
    for (int64_t c = 0; c < HW; c++) {
      dw_first[c] += partial[ch * 2 * HW + c];
      dw_last[c] += partial[ch * 2 * HW + HW + c];
    }
}

}  // namespace kvt

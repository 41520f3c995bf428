// RMSNorm, forward and backward.
#include <vector>

#include "kernels/common/math.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/rowops.h"

namespace kvt {

// rstd[n] = 1/sqrt(mean_c x^2 + eps);  out = x * rstd * w
void CpuOps::rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N,
                             int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* xr = x + n * C;
    const float r = math::rms_rstd(cpu::row_dot(xr, xr, C) / C, eps);
    rstd[n] = r;
    float* o = out + n * C;
    for (int c = 0; c < C; c++) o[c] = xr[c] * r * w[c];
  }
}

// xhat = x * rstd, g = dout * w:
//   dx += rstd * (g - xhat * mean_c(g * xhat))
//   dw += sum_n dout * xhat     (rows summed in fixed chunks of kRows, chunks in order)
void CpuOps::rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x,
                              const float* w, const float* rstd, int64_t N, int C) {
  constexpr int64_t kRows = 32;
  const int64_t nchunks = (N + kRows - 1) / kRows;
  std::vector<float> partial(static_cast<size_t>(nchunks) * C, 0.0f);
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < nchunks; ch++) {
    float* pw = partial.data() + ch * C;
    const int64_t n1 = (ch + 1) * kRows < N ? (ch + 1) * kRows : N;
    for (int64_t n = ch * kRows; n < n1; n++) {
      const float* xr = x + n * C;
      const float* g = dout + n * C;
      const float r = rstd[n];
      float dot = 0.0f;  // sum_c (g*w) * xhat
      for (int c = 0; c < C; c++) dot += g[c] * w[c] * xr[c] * r;
      const float mean = dot / C;
      float* d = dx + n * C;
      for (int c = 0; c < C; c++) {
        const float xhat = xr[c] * r;
        d[c] += r * (g[c] * w[c] - xhat * mean);
        pw[c] += g[c] * xhat;
      }
    }
  }
  for (int64_t ch = 0; ch < nchunks; ch++)
    for (int c = 0; c < C; c++) dw[c] += partial[ch * C + c];
}

}  // namespace kvt

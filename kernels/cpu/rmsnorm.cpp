// RMSNorm, forward and backward (AVX-512 / AVX2 variants: kernels/cpu/isa_dispatch.h).
#include <vector>

#include "kernels/common/math.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa_dispatch.h"
#include "kernels/cpu/rowops.h"

namespace kvt {

namespace {

// rstd[n] = 1/sqrt(mean_c x^2 + eps);  out = x * rstd * w
KVT_ISA_VARIANTS(rms_fwd, (float* out, float* rstd, const float* x, const float* w, int64_t N,
                           int C, float eps), {
  KVT_OMP_FOR
  for (int64_t n = 0; n < N; n++) {
    const float* xr = x + n * C;
    const float r = math::rms_rstd(cpu::row_dot(xr, xr, C) / C, eps);
    rstd[n] = r;
    float* o = out + n * C;
    for (int c = 0; c < C; c++) o[c] = xr[c] * r * w[c];
  }
})

// Rows [n0, n1) of the backward; pw accumulates their dw.
KVT_ALWAYS_INLINE void rms_bwd_rows(float* dx, float* pw, const float* dout, const float* x,
                                    const float* w, const float* rstd, int64_t n0, int64_t n1,
                                    int C) {
  for (int64_t n = n0; n < n1; n++) {
    const float* xr = x + n * C;
    const float* g = dout + n * C;
    const float r = rstd[n];
    // sum_c (g*w) * xhat in the 8 fixed lanes of rowops.h: one float chain does not vectorise.
    cpu::f32x8 s = {0, 0, 0, 0, 0, 0, 0, 0};
    int c = 0;
    for (; c + 8 <= C; c += 8) s += cpu::load8(g + c) * cpu::load8(w + c) * cpu::load8(xr + c) * r;
    float dot = cpu::lanes_total(s);
    for (; c < C; c++) dot += g[c] * w[c] * xr[c] * r;
    const float mean = dot / C;
    float* d = dx + n * C;
    for (c = 0; c < C; c++) {
      const float xhat = xr[c] * r;
      d[c] += r * (g[c] * w[c] - xhat * mean);
      pw[c] += g[c] * xhat;
    }
  }
}

// Per-chunk partial dw: rows in chunks of kRows, partial[ch * C + c].
constexpr int64_t kRows = 32;
KVT_ISA_VARIANTS(rms_bwd, (float* dx, float* partial, const float* dout, const float* x,
                           const float* w, const float* rstd, int64_t N, int C), {
  const int64_t nchunks = (N + kRows - 1) / kRows;
  KVT_OMP_FOR
  for (int64_t ch = 0; ch < nchunks; ch++) {
    const int64_t n1 = (ch + 1) * kRows < N ? (ch + 1) * kRows : N;
    rms_bwd_rows(dx, partial + ch * C, dout, x, w, rstd, ch * kRows, n1, C);
  }
})

}  // namespace

void CpuOps::rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N,
                             int C, float eps) {
  KVT_ISA_CALL(rms_fwd, out, rstd, x, w, N, C, eps);
}

// xhat = x * rstd, g = dout * w:
//   dx += rstd * (g - xhat * mean_c(g * xhat))
//   dw += sum_n dout * xhat     (rows summed in fixed chunks of kRows, chunks in order)
void CpuOps::rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x,
                              const float* w, const float* rstd, int64_t N, int C) {
  const int64_t nchunks = (N + kRows - 1) / kRows;
  std::vector<float> partial(static_cast<size_t>(nchunks) * C, 0.0f);
  KVT_ISA_CALL(rms_bwd, dx, partial.data(), dout, x, w, rstd, N, C);
  for (int64_t ch = 0; ch < nchunks; ch++)
    for (int c = 0; c < C; c++) dw[c] += partial[ch * C + c];
}

}  // namespace kvt

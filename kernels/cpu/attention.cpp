// Causal self-attention with grouped KV heads, forward and backward.
// Per (b, h): S = Q K^T / sqrt(D) (sgemm), causal softmax row by row, O = P V (sgemm).
// BLAS calls run inside the OpenMP loop; the OpenMP build of OpenBLAS runs them single-threaded.

#include <cmath>
#include <vector>

#include "kernels/common/math.h"
#include "kernels/cpu/rowops.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/gemm.h"

namespace kvt {

namespace {
struct Heads {  // pointers to the [T, D] blocks of one (b, h) pair, rows strided
  const AttnShape& s;
  int64_t q_off(int b, int h) const { return static_cast<int64_t>(b) * s.T * s.ldq + h * s.D; }
  int64_t k_off(int b, int g) const { return static_cast<int64_t>(b) * s.T * s.ldk + g * s.D; }
  int64_t v_off(int b, int g) const { return static_cast<int64_t>(b) * s.T * s.ldv + g * s.D; }
  int64_t o_off(int b, int h) const {
    return static_cast<int64_t>(b) * s.T * s.H * s.D + h * s.D;
  }
  int64_t att_off(int b, int h) const { return (static_cast<int64_t>(b) * s.H + h) * s.T * s.T; }
};
}  // namespace

// att[b,h,t,:] = softmax_{s<=t}(q_t · k_s / sqrt(D)), zero for s > t;  out[b,t,h] = att · v
void CpuOps::attention_forward(float* out, float* att, const float* q, const float* k,
                               const float* v, const AttnShape& s) {
  const Heads hd{s};
  const int G = s.H / s.Hkv, T = s.T, D = s.D, ldo = s.H * s.D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < s.B; b++)
    for (int h = 0; h < s.H; h++) {
      const int g = h / G;
      float* P = att + hd.att_off(b, h);
      cpu::sgemm(false, true, T, T, D, scale, q + hd.q_off(b, h),
                  s.ldq, k + hd.k_off(b, g), s.ldk, 0.0f, P, T);
      for (int t = 0; t < T; t++) {
        float* row = P + static_cast<int64_t>(t) * T;
        const float mx = cpu::row_max(row, t + 1);
        const float inv = 1.0f / cpu::row_sum_exp(row, t + 1, mx, row);
        for (int j = 0; j <= t; j++) row[j] *= inv;
        for (int j = t + 1; j < T; j++) row[j] = 0.0f;
      }
      cpu::sgemm(false, false, T, D, T, 1.0f, P, T,
                  v + hd.v_off(b, g), s.ldv, 0.0f, out + hd.o_off(b, h), ldo);
    }
}

// Per (b, KV head g), over its G query heads in increasing h (so dk, dv sum in a fixed order):
//   dP = dO V^T;  dV += P^T dO;  dS = P ⊙ (dP - rowsum(P ⊙ dP));
//   dQ = dS K / sqrt(D);  dK += dS^T Q / sqrt(D)
void CpuOps::attention_backward(float* dq, float* dk, float* dv, const float* dout,
                                const float* att, const float* q, const float* k, const float* v,
                                const AttnShape& s) {
  const Heads hd{s};
  const int G = s.H / s.Hkv, T = s.T, D = s.D, ldo = s.H * s.D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel
  {
    std::vector<float> dS(static_cast<size_t>(T) * T);
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < s.B; b++)
      for (int g = 0; g < s.Hkv; g++) {
        for (int h = g * G; h < (g + 1) * G; h++) {
          const float* P = att + hd.att_off(b, h);
          const float* dO = dout + hd.o_off(b, h);
          cpu::sgemm(false, true, T, T, D, 1.0f, dO, ldo,
                      v + hd.v_off(b, g), s.ldv, 0.0f, dS.data(), T);
          cpu::sgemm(true, false, T, D, T, 1.0f, P, T, dO, ldo, 1.0f,
                      dv + hd.v_off(b, g), s.ldv);
          for (int t = 0; t < T; t++) {
            const float* p = P + static_cast<int64_t>(t) * T;
            float* d = dS.data() + static_cast<int64_t>(t) * T;
            const float dot = cpu::row_dot(p, d, t + 1);
            for (int j = 0; j <= t; j++) d[j] = p[j] * (d[j] - dot);
            for (int j = t + 1; j < T; j++) d[j] = 0.0f;
          }
          cpu::sgemm(false, false, T, D, T, scale, dS.data(), T,
                      k + hd.k_off(b, g), s.ldk, 0.0f, dq + hd.q_off(b, h), s.ldq);
          cpu::sgemm(true, false, T, D, T, scale, dS.data(), T,
                      q + hd.q_off(b, h), s.ldq, 1.0f, dk + hd.k_off(b, g), s.ldk);
        }
      }
  }
}

}  // namespace kvt

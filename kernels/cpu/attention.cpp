// Causal self-attention with grouped KV heads, forward and backward.
// Per (b, h), in tiles of kRowTile query rows [r0, r1): row t attends to keys s <= t < r1, so a
// tile needs only the key columns [0, r1); with k = T / kRowTile tiles the GEMMs do (k + 1) / 2k
// of the FLOPs of full T x T GEMMs (5/8 at T 256):
//   S[r0:r1, 0:r1] = Q[r0:r1] K[0:r1]^T / sqrt(D) (sgemm), causal softmax row by row,
//   O[r0:r1] = P[r0:r1, 0:r1] V[0:r1] (sgemm).
// att keeps the full [T, T] of each (b, h), zero above the diagonal (other code reads it).
// sgemm calls run inside the OpenMP loop over heads, so each runs on the calling thread only.

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/common/math.h"
#include "kernels/cpu/rowops.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/isa_dispatch.h"

namespace kvt {

namespace {
constexpr int kRowTile = 64;  // query rows per tile; measured, docs/design.md, "Performance"

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

// Rows t in [r0, r1) of one tile, row stride T (P points at row r0). Per-tile kernels in both
// ISAs (kernels/cpu/isa_dispatch.h); each thread calls them inside the loop over heads.
// P[t, s] = softmax_{s<=t} S[t, s], 0 for s > t (in place)
KVT_ISA_VARIANTS(softmax_tile, (float* P, int T, int r0, int r1), {
  for (int t = r0; t < r1; t++) {
    float* row = P + static_cast<int64_t>(t - r0) * T;
    const float mx = cpu::row_max(row, t + 1);
    const float inv = 1.0f / cpu::row_sum_exp(row, t + 1, mx, row);
    for (int j = 0; j <= t; j++) row[j] *= inv;
    for (int j = t + 1; j < T; j++) row[j] = 0.0f;
  }
})

// dS[t, s] = P[t, s] (dP[t, s] - sum_j P[t, j] dP[t, j]) for s <= t, 0 for t < s < r1 (dP in
// place in d)
KVT_ISA_VARIANTS(softmax_backward_tile, (const float* P, float* d, int T, int r0, int r1), {
  for (int t = r0; t < r1; t++) {
    const float* p = P + static_cast<int64_t>(t - r0) * T;
    float* dr = d + static_cast<int64_t>(t - r0) * T;
    const float dot = cpu::row_dot(p, dr, t + 1);
    for (int j = 0; j <= t; j++) dr[j] = p[j] * (dr[j] - dot);
    for (int j = t + 1; j < r1; j++) dr[j] = 0.0f;
  }
})

// att[b,h,t,:] = softmax_{s<=t}(q_t · k_s / sqrt(D)), zero for s > t;  out[b,t,h] = att · v
void attention_forward_fp32(float* out, float* att, const float* q, const float* k,
                            const float* v, const AttnShape& s) {
  const Heads hd{s};
  const int G = s.H / s.Hkv, T = s.T, D = s.D, ldo = s.H * s.D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < s.B; b++)
    for (int h = 0; h < s.H; h++) {
      const int g = h / G;
      const float* Q = q + hd.q_off(b, h);
      const float* K = k + hd.k_off(b, g);
      const float* V = v + hd.v_off(b, g);
      float* O = out + hd.o_off(b, h);
      for (int r0 = 0; r0 < T; r0 += kRowTile) {
        const int r1 = std::min(r0 + kRowTile, T), n = r1 - r0;
        float* P = att + hd.att_off(b, h) + static_cast<int64_t>(r0) * T;  // rows r0 .. r1-1
        // S[r0:r1, 0:r1] = Q[r0:r1] K[0:r1]^T / sqrt(D)
        cpu::sgemm(false, true, n, r1, D, scale, Q + static_cast<int64_t>(r0) * s.ldq, s.ldq,
                   K, s.ldk, 0.0f, P, T);
        KVT_ISA_CALL(softmax_tile, P, T, r0, r1);  // P = causal softmax of S, rows r0 .. r1-1
        // O[r0:r1] = P[r0:r1, 0:r1] V[0:r1]
        cpu::sgemm(false, false, n, D, r1, 1.0f, P, T, V, s.ldv, 0.0f,
                   O + static_cast<int64_t>(r0) * ldo, ldo);
      }
    }
}

// Per (b, KV head g), over its G query heads in increasing h, each in row tiles [r0, r1) in
// increasing r0 (so dk, dv sum in a fixed order); P, dP, dS are zero above the diagonal:
//   dP[r0:r1, 0:r1] = dO[r0:r1] V[0:r1]^T;  dV[0:r1] += P[r0:r1, 0:r1]^T dO[r0:r1]
//   dS = P ⊙ (dP - rowsum(P ⊙ dP))
//   dQ[r0:r1] = dS[r0:r1, 0:r1] K[0:r1] / sqrt(D);  dK[0:r1] += dS[r0:r1, 0:r1]^T Q[r0:r1] / sqrt(D)
void attention_backward_fp32(float* dq, float* dk, float* dv, const float* dout,
                             const float* att, const float* q, const float* k, const float* v,
                             const AttnShape& s) {
  const Heads hd{s};
  const int G = s.H / s.Hkv, T = s.T, D = s.D, ldo = s.H * s.D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel
  {
    std::vector<float> dS(static_cast<size_t>(std::min(kRowTile, T)) * T);  // one row tile
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < s.B; b++)
      for (int g = 0; g < s.Hkv; g++) {
        const float* K = k + hd.k_off(b, g);
        const float* V = v + hd.v_off(b, g);
        float* dK = dk + hd.k_off(b, g);
        float* dV = dv + hd.v_off(b, g);
        for (int h = g * G; h < (g + 1) * G; h++) {
          const float* Q = q + hd.q_off(b, h);
          const float* dO = dout + hd.o_off(b, h);
          float* dQ = dq + hd.q_off(b, h);
          for (int r0 = 0; r0 < T; r0 += kRowTile) {
            const int r1 = std::min(r0 + kRowTile, T), n = r1 - r0;
            const float* P = att + hd.att_off(b, h) + static_cast<int64_t>(r0) * T;
            const float* dOt = dO + static_cast<int64_t>(r0) * ldo;
            const float* Qt = Q + static_cast<int64_t>(r0) * s.ldq;
            float* d = dS.data();  // [n, r1], row stride T
            cpu::sgemm(false, true, n, r1, D, 1.0f, dOt, ldo, V, s.ldv, 0.0f, d, T);
            cpu::sgemm(true, false, r1, D, n, 1.0f, P, T, dOt, ldo, 1.0f, dV, s.ldv);
            KVT_ISA_CALL(softmax_backward_tile, P, d, T, r0, r1);  // dP -> dS
            cpu::sgemm(false, false, n, D, r1, scale, d, T, K, s.ldk, 0.0f,
                       dQ + static_cast<int64_t>(r0) * s.ldq, s.ldq);
            cpu::sgemm(true, false, r1, D, n, scale, d, T, Qt, s.ldq, 1.0f, dK, s.ldk);
          }
        }
      }
  }
}

}  // namespace

// bf16 (kernels/cpu/precision.h): flash attention's arithmetic on the GPU reads bf16 q, k, v and
// writes bf16 out; its backward reads bf16 dout and writes bf16 dq, dk, dv to scratch, which are
// then added. Here: the fp32 kernels on rounded copies, outputs rounded. fp32_tf32: fp32.
void CpuOps::attention_forward(float* out, float* att, const float* q, const float* k,
                               const float* v, const AttnShape& s) {
  if (precision() != Precision::bf16) return attention_forward_fp32(out, att, q, k, v, s);
  const int64_t N = static_cast<int64_t>(s.B) * s.T;
  const int HD = s.H * s.D, KD = s.Hkv * s.D;
  const AttnShape r{s.B, s.T, s.H, s.Hkv, s.D, HD, KD, KD};  // contiguous rounded copies
  attention_forward_fp32(out, att, cpu::round_rows(scratch_.q, q, N, HD, s.ldq, precision()),
                         cpu::round_rows(scratch_.k, k, N, KD, s.ldk, precision()),
                         cpu::round_rows(scratch_.v, v, N, KD, s.ldv, precision()), r);
  for (int64_t i = 0; i < N * HD; i++) out[i] = math::round_bf16(out[i]);  // out = bf16(O)
}

// bf16: dq = bf16(dQ) (=), dk += bf16(dK), dv += bf16(dV), with dQ, dK, dV the fp32 kernel's on
// bf16 q, k, v, dout.
void CpuOps::attention_backward(float* dq, float* dk, float* dv, const float* dout,
                                const float* /*out*/, const float* att, const float* q,
                                const float* k, const float* v, const AttnShape& s) {
  if (precision() != Precision::bf16) return attention_backward_fp32(dq, dk, dv, dout, att, q, k, v, s);
  const int64_t N = static_cast<int64_t>(s.B) * s.T;
  const int HD = s.H * s.D, KD = s.Hkv * s.D;
  const AttnShape r{s.B, s.T, s.H, s.Hkv, s.D, HD, KD, KD};
  scratch_.dq.resize(static_cast<size_t>(N) * HD);
  scratch_.dk.assign(static_cast<size_t>(N) * KD, 0.0f);
  scratch_.dv.assign(static_cast<size_t>(N) * KD, 0.0f);
  attention_backward_fp32(scratch_.dq.data(), scratch_.dk.data(), scratch_.dv.data(),
                          cpu::round_rows(scratch_.o, dout, N, HD, HD, precision()), att,
                          cpu::round_rows(scratch_.q, q, N, HD, s.ldq, precision()),
                          cpu::round_rows(scratch_.k, k, N, KD, s.ldk, precision()),
                          cpu::round_rows(scratch_.v, v, N, KD, s.ldv, precision()), r);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    for (int c = 0; c < HD; c++) dq[n * s.ldq + c] = math::round_bf16(scratch_.dq[n * HD + c]);
    for (int c = 0; c < KD; c++) {
      dk[n * s.ldk + c] += math::round_bf16(scratch_.dk[n * KD + c]);
      dv[n * s.ldv + c] += math::round_bf16(scratch_.dv[n * KD + c]);
    }
  }
}

}  // namespace kvt

// kernels/common/gate_math.h — per-element math of the Fast KVzip gate ops (docs/design.md, "Fast KVzip gates", ops.h),
// shared by the CPU and CUDA backends so both evaluate the same formulas.
//
// For one token, KV head h and query group member g (q_g, k, sinks_s are Dg-vectors):
//   l_g = q_g·k / sqrt(Dg) + bias[h,g],   l_gs = q_g·sinks_s / sqrt(Dg)
//   p_g = e^(l_g - m) / Z,   P_gs = e^(l_gs - m) / Z,   Z = e^(l_g - m) + sum_s e^(l_gs - m)
// with m the largest of the S+1 logits, so every exponent is <= 0 (no overflow, no inf * 0).
#pragma once

#include "kernels/common/math.h"

namespace kvt::math {

// Rows per partial sum in the fixed-order reductions over tokens (both backends).
constexpr int kGateRowsPerChunk = 64;

// 1 / sqrt(Dg), the logit scale.
KVT_HD float gate_scale(int Dg) { return 1.0f / sqrtf(static_cast<float>(Dg)); }

// a·b over n elements, summed in increasing index.
KVT_HD float gate_dot(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

// The softmax of one (token, head, g) over its S+1 logits.
struct GateProbs {
  float p;      // p_g, the entry of the token's own logit
  float rest;   // 1 - p_g = sum_s P_gs (summed from the sink terms: accurate when p_g ~ 1)
  float m;      // the largest logit
  float inv_z;  // 1 / Z
};

// qg, k: [Dg]; sinks_h: the head's sink keys [S, Dg]; bias: bias[h, g]; scale = gate_scale(Dg).
KVT_HD GateProbs gate_probs(const float* qg, const float* k, const float* sinks_h, float bias,
                            int Dg, int S, float scale) {
  const float lg = gate_dot(qg, k, Dg) * scale + bias;
  float m = lg;
  for (int s = 0; s < S; s++) {
    const float ls = gate_dot(qg, sinks_h + s * Dg, Dg) * scale;
    m = ls > m ? ls : m;
  }
  float es = 0.0f;
  for (int s = 0; s < S; s++) es += exp_fast(gate_dot(qg, sinks_h + s * Dg, Dg) * scale - m);
  const float eg = exp_fast(lg - m);
  const float inv_z = 1.0f / (eg + es);
  return {eg * inv_z, es * inv_z, m, inv_z};
}

// P_gs, the softmax entry of sink s (sink = sinks_h + s * Dg), from gate_probs' result.
KVT_HD float gate_sink_prob(const GateProbs& pr, const float* qg, const float* sink, int Dg,
                            float scale) {
  return exp_fast(gate_dot(qg, sink, Dg) * scale - pr.m) * pr.inv_z;
}

// score[n, h] = mean_g p_g, summed in increasing g. q_nh: [G, Dg]; bias_h: [G].
KVT_HD float gate_score(const float* q_nh, const float* k, const float* sinks_h,
                        const float* bias_h, int G, int Dg, int S) {
  const float scale = gate_scale(Dg);
  float acc = 0.0f;
  for (int g = 0; g < G; g++) acc += gate_probs(q_nh + g * Dg, k, sinks_h, bias_h[g], Dg, S, scale).p;
  return acc / static_cast<float>(G);
}

// Logit gradients from dscore_g = dscore / G:  dl_g = dscore_g p_g (1 - p_g)
KVT_HD float gate_dlogit(float dscore_g, const GateProbs& pr) { return dscore_g * pr.p * pr.rest; }
//                                              dl_gs = -dscore_g p_g P_gs
KVT_HD float gate_dlogit_sink(float dscore_g, const GateProbs& pr, float psink) {
  return -(dscore_g * pr.p * psink);
}

// The S+1 logit gradients of one (token, head, g): dl[0] = dl_g, dl[1 + s] = dl_gs.
KVT_HD void gate_dlogits(float* dl, float dscore_g, const float* qg, const float* k,
                         const float* sinks_h, float bias, int Dg, int S, float scale) {
  const GateProbs pr = gate_probs(qg, k, sinks_h, bias, Dg, S, scale);
  dl[0] = gate_dlogit(dscore_g, pr);
  for (int s = 0; s < S; s++)
    dl[1 + s] = gate_dlogit_sink(dscore_g, pr, gate_sink_prob(pr, qg, sinks_h + s * Dg, Dg, scale));
}

// dq_g[d] = (dl_g k[d] + sum_s dl_gs sinks_h[s, d]) scale, summed in increasing s.
// dls: [S]; sinks_hd = sinks_h + d (stride Dg between sinks).
KVT_HD float gate_dq(float dlg, const float* dls, float kd, const float* sinks_hd, int Dg, int S,
                     float scale) {
  float acc = dlg * kd;
  for (int s = 0; s < S; s++) acc += dls[s] * sinks_hd[s * Dg];
  return acc * scale;
}

// sum_g dl[g * dl_stride] q_hd[g * Dg], in increasing g (q_hd = the head's q + d). Times scale, it
// is dk[d] (dl = the dl_g) and one token's term of dsinks[h, s, d] (dl = the dl_gs).
KVT_HD float gate_sum_over_g(const float* dl, int dl_stride, const float* q_hd, int G, int Dg) {
  float acc = 0.0f;
  for (int g = 0; g < G; g++) acc += dl[g * dl_stride] * q_hd[g * Dg];
  return acc;
}

// KVzip score of position p: max of att[b, h, t, p] (att [B, H, T, T]) over h in [h0, h1) and
// t in [t0, t1); 0 when the range is empty.
KVT_HD float kvzip_max(const float* att, int b, int H, int T, int h0, int h1, int t0, int t1,
                       int p) {
  if (h0 >= h1 || t0 >= t1) return 0.0f;
  const int64_t TT = int64_t(T) * T;
  const float* a = att + (int64_t(b) * H) * TT + p;
  float m = a[h0 * TT + int64_t(t0) * T];
  for (int h = h0; h < h1; h++)
    for (int t = t0; t < t1; t++) {
      const float v = a[h * TT + int64_t(t) * T];
      m = v > m ? v : m;
    }
  return m;
}

}  // namespace kvt::math

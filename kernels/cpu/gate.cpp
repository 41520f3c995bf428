// Fast KVzip gate ops (ops.h, docs/design.md, "Fast KVzip gates"): the bias of the gate query projection, the gate
// score (a softmax of each token's logit against S sink logits, averaged over the G query heads
// of a KV head) forward and backward, and the KVzip target score (max attention probability).
// Sums over tokens run in fixed chunks of kGateRowsPerChunk rows, chunks combined in order, so
// the parameter gradients do not depend on the thread count.
#include <vector>

#include "kernels/common/gate_math.h"
#include "kernels/cpu/cpu_ops.h"

namespace kvt {

namespace {

int64_t gate_chunks(int64_t N) {
  return (N + math::kGateRowsPerChunk - 1) / math::kGateRowsPerChunk;
}

// dst[e] += sum over chunks (in order) of partial[ch * stride + e], e in [0, n).
void add_chunk_partials(float* dst, const float* partial, int64_t nchunks,
                        int64_t stride, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t e = 0; e < n; e++) {
    float acc = 0.0f;
    for (int64_t ch = 0; ch < nchunks; ch++) acc += partial[ch * stride + e];
    dst[e] += acc;
  }
}

}  // namespace

// x[n, c] += bias[c]
void CpuOps::bias_add_forward(float* x, const float* bias, int64_t N, int C) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    float* row = x + n * C;
    for (int c = 0; c < C; c++) row[c] += bias[c];
  }
}

// dbias[c] += sum_n dout[n, c]
void CpuOps::bias_add_backward(float* dbias, const float* dout, int64_t N, int C) {
  const int64_t rows = math::kGateRowsPerChunk, nchunks = gate_chunks(N);
  std::vector<float> partial(static_cast<size_t>(nchunks * C), 0.0f);  // [chunk][c]
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < nchunks; ch++) {
    float* pc = partial.data() + ch * C;
    const int64_t n1 = (ch + 1) * rows < N ? (ch + 1) * rows : N;
    for (int64_t n = ch * rows; n < n1; n++)
      for (int c = 0; c < C; c++) pc[c] += dout[n * C + c];
  }
  add_chunk_partials(dbias, partial.data(), nchunks, C, C);
}

// score[n, h] = mean_g p_g
void CpuOps::gate_score_forward(float* score, const float* q, const float* k, const float* sinks,
                                const float* bias, int64_t N, int Hkv, int G, int Dg, int S) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++)
    for (int h = 0; h < Hkv; h++) {
      const int64_t nh = n * Hkv + h;
      score[nh] = math::gate_score(q + nh * G * Dg, k + nh * Dg, sinks + int64_t(h) * S * Dg,
                                   bias + int64_t(h) * G, G, Dg, S);
    }
}

// Per token and head: the logit gradients dl [G][S+1] (gate_dlogits), then dq, dk (overwritten)
// and the token's terms of dsinks, dbias into its chunk's partial sums.
void CpuOps::gate_score_backward(float* dq, float* dk, float* dsinks, float* dbias,
                                 const float* dscore, const float* q, const float* k,
                                 const float* sinks, const float* bias, int64_t N, int Hkv, int G,
                                 int Dg, int S) {
  const float scale = math::gate_scale(Dg);
  const int L = S + 1;  // logits per (token, head, g)
  const int64_t SD = int64_t(Hkv) * S * Dg, HG = int64_t(Hkv) * G, P = SD + HG;
  const int64_t rows = math::kGateRowsPerChunk, nchunks = gate_chunks(N);
  std::vector<float> partial(static_cast<size_t>(nchunks * P), 0.0f);  // [chunk][sinks | bias]
#pragma omp parallel
  {
    std::vector<float> dl(static_cast<size_t>(G) * L);
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < nchunks; ch++) {
      float* ps = partial.data() + ch * P;
      float* pb = ps + SD;
      const int64_t n1 = (ch + 1) * rows < N ? (ch + 1) * rows : N;
      for (int64_t n = ch * rows; n < n1; n++)
        for (int h = 0; h < Hkv; h++) {
          const int64_t nh = n * Hkv + h;
          const float* qh = q + nh * G * Dg;
          const float* kh = k + nh * Dg;
          const float* sh = sinks + int64_t(h) * S * Dg;
          const float dscore_g = dscore[nh] / static_cast<float>(G);
          for (int g = 0; g < G; g++)
            math::gate_dlogits(dl.data() + g * L, dscore_g, qh + g * Dg, kh, sh, bias[h * G + g],
                               Dg, S, scale);
          float* dqh = dq + nh * G * Dg;
          for (int g = 0; g < G; g++)
            for (int d = 0; d < Dg; d++)
              dqh[g * Dg + d] =
                  math::gate_dq(dl[g * L], dl.data() + g * L + 1, kh[d], sh + d, Dg, S, scale);
          for (int d = 0; d < Dg; d++)
            dk[nh * Dg + d] = math::gate_sum_over_g(dl.data(), L, qh + d, G, Dg) * scale;
          for (int s = 0; s < S; s++)
            for (int d = 0; d < Dg; d++)
              ps[(int64_t(h) * S + s) * Dg + d] +=
                  math::gate_sum_over_g(dl.data() + 1 + s, L, qh + d, G, Dg) * scale;
          for (int g = 0; g < G; g++) pb[h * G + g] += dl[g * L];
        }
    }
  }
  add_chunk_partials(dsinks, partial.data(), nchunks, P, SD);
  add_chunk_partials(dbias, partial.data() + SD, nchunks, P, HG);
}

// out[b, g, p] = max over t in [t0, t1) and the H/Hg heads of group g of att[b, h, t, p]
void CpuOps::kvzip_score(float* out, const float* att, int B, int H, int Hg, int T, int t0,
                         int t1, int P) {
  const int hpg = H / Hg;
  const int64_t total = int64_t(B) * Hg * P;
#pragma omp parallel for schedule(static)
  for (int64_t e = 0; e < total; e++) {
    const int64_t bg = e / P;
    const int p = static_cast<int>(e - bg * P), g = static_cast<int>(bg % Hg);
    const int b = static_cast<int>(bg / Hg);
    out[e] = math::kvzip_max(att, b, H, T, g * hpg, (g + 1) * hpg, t0, t1, p);
  }
}

}  // namespace kvt

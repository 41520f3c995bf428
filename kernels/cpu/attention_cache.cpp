// Attention of new queries over a KV cache (ops.h, attention_cache_forward).
// Per KV head g the G query heads x n queries are stacked as the rows of one matrix Q_g
// [M = n G, D] (row t G + j is query t of head g G + j), and, per tile of at most kRows rows:
//   S = Q_g K_g^T / sqrt(D)        one sgemm over the slots of g     [rows, S]
//   P = softmax over the slots with 0 <= pos <= p0 + t (others 0)    (math::softmax_weight)
//   O = P V_g                      one sgemm                         [rows, D]
// Tiles run in parallel (OpenMP, static schedule); BLAS runs single-threaded inside, every sum is
// in a fixed order, so the result does not depend on the thread count.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/common/math.h"
#include "kernels/cpu/cpu_ops.h"

namespace kvt {

namespace {
constexpr int kRows = 256;  // rows of Q_g per tile: bounds the [rows, S] score block

// Softmax of one score row in place over the slots visible at position p; returns false (and
// zeroes the row) when no slot is visible.
bool masked_softmax(float* row, const int32_t* pos, int S, int p) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < S; i++)
    if (pos[i] >= 0 && pos[i] <= p) mx = std::max(mx, row[i]);
  if (mx == -std::numeric_limits<float>::infinity()) {
    std::fill(row, row + S, 0.0f);
    return false;
  }
  float sum = 0.0f;
  for (int i = 0; i < S; i++) {
    const bool vis = pos[i] >= 0 && pos[i] <= p;
    row[i] = vis ? math::softmax_weight(row[i], mx) : 0.0f;
    sum += row[i];
  }
  const float inv = 1.0f / sum;
  for (int i = 0; i < S; i++) row[i] *= inv;
  return true;
}
}  // namespace

void CpuOps::attention_cache_forward(float* out, const float* q, const float* k, const float* v,
                                     const int32_t* pos, const CacheAttnShape& s) {
  const int G = s.H / s.Hkv, D = s.D, S = s.S, M = s.n * G, HD = s.H * s.D;
  const int tiles = (M + kRows - 1) / kRows, tile_rows = std::min(kRows, M);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  if (s.n == 0) return;
  if (S == 0) {
    std::memset(out, 0, static_cast<size_t>(s.n) * HD * sizeof(float));
    return;
  }
#pragma omp parallel
  {
    std::vector<float> qg(static_cast<size_t>(tile_rows) * D), og(qg.size()),
        sc(static_cast<size_t>(tile_rows) * S);
#pragma omp for collapse(2) schedule(static)
    for (int g = 0; g < s.Hkv; g++)
      for (int tile = 0; tile < tiles; tile++) {
        const int r0 = tile * kRows, rows = std::min(kRows, M - r0);
        const float* kg = k + g * s.head_stride;
        const float* vg = v + g * s.head_stride;
        const int32_t* pg = pos + static_cast<int64_t>(g) * S;
        for (int r = 0; r < rows; r++) {
          const int t = (r0 + r) / G, h = g * G + (r0 + r) % G;
          std::memcpy(qg.data() + static_cast<size_t>(r) * D,
                      q + static_cast<int64_t>(t) * s.ldq + static_cast<int64_t>(h) * D,
                      D * sizeof(float));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, S, D, scale, qg.data(), D, kg,
                    s.ld, 0.0f, sc.data(), S);
        for (int r = 0; r < rows; r++)
          masked_softmax(sc.data() + static_cast<size_t>(r) * S, pg, S, s.p0 + (r0 + r) / G);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, D, S, 1.0f, sc.data(), S, vg,
                    s.ld, 0.0f, og.data(), D);
        for (int r = 0; r < rows; r++) {
          const int t = (r0 + r) / G, h = g * G + (r0 + r) % G;
          std::memcpy(out + static_cast<int64_t>(t) * HD + static_cast<int64_t>(h) * D,
                      og.data() + static_cast<size_t>(r) * D, D * sizeof(float));
        }
      }
  }
}

}  // namespace kvt

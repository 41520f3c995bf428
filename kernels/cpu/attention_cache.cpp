// Attention of new queries over a KV cache (ops.h, attention_cache_forward).
// Per KV head g the G query heads x n queries are stacked as the rows of one matrix Q_g
// [M = n G, D] (row t G + j is query t of head g G + j), and, per tile of at most kRows rows:
//   S = Q_g K_g^T / sqrt(D)        one sgemm over the slots of g     [rows, S]
//   W = e^(S - rowmax) over the slots with 0 <= pos <= p0 + t (others 0)  (math::softmax_weight)
//   O = (W V_g) / rowsum(W)        one sgemm, then each row scaled   [rows, D]
// Row max and sum run in kLanes partial lanes combined in a fixed order (vectorised, and the
// same for every thread count).
// Tiles run in parallel (OpenMP, static schedule); BLAS runs single-threaded inside, every sum is
// in a fixed order, so the result does not depend on the thread count.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/common/math.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/gemm.h"

namespace kvt {

namespace {
constexpr int kRows = 64;   // rows of Q_g per tile: the [rows, S] score block stays in L2
constexpr int kLanes = 16;  // independent partial max / sum lanes (vectorised, fixed order)

// Softmax weights of one score row in place over the slots visible at position p (0 <= pos <= p),
// 0 elsewhere; returns 1 / (sum of the weights), or 0 when no slot is visible (the row is then
// all 0). The caller scales the row's output by it instead of normalising the S weights.
float masked_softmax_weights(float* row, const int32_t* pos, int S, int p) {
  const float ninf = -std::numeric_limits<float>::infinity();
  auto visible = [&](int i) { return (pos[i] >= 0) & (pos[i] <= p); };  // no branch: vectorises
  float lane[kLanes];
  std::fill(lane, lane + kLanes, ninf);
  int i = 0;
  for (; i + kLanes <= S; i += kLanes)
    for (int j = 0; j < kLanes; j++) {
      const float x = visible(i + j) ? row[i + j] : ninf;
      lane[j] = x > lane[j] ? x : lane[j];
    }
  float mx = ninf;
  for (; i < S; i++) mx = visible(i) && row[i] > mx ? row[i] : mx;
  for (int j = 0; j < kLanes; j++) mx = lane[j] > mx ? lane[j] : mx;
  if (mx == ninf) {
    std::fill(row, row + S, 0.0f);
    return 0.0f;
  }
  for (int k = 0; k < S; k++) {  // e^ of every slot, then the mask: a loop without branches
    const float w = math::softmax_weight(row[k], mx);
    row[k] = visible(k) ? w : 0.0f;
  }
  std::fill(lane, lane + kLanes, 0.0f);
  for (i = 0; i + kLanes <= S; i += kLanes)
    for (int j = 0; j < kLanes; j++) lane[j] += row[i + j];
  float sum = 0.0f;
  for (int j = 0; j < kLanes; j++) sum += lane[j];
  for (; i < S; i++) sum += row[i];
  return 1.0f / sum;
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
        sc(static_cast<size_t>(tile_rows) * S), inv(tile_rows);
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
        cpu::sgemm(false, true, rows, S, D, scale, qg.data(), D, kg,
                    s.ld, 0.0f, sc.data(), S);
        for (int r = 0; r < rows; r++)
          inv[r] = masked_softmax_weights(sc.data() + static_cast<size_t>(r) * S, pg, S,
                                          s.p0 + (r0 + r) / G);
        cpu::sgemm(false, false, rows, D, S, 1.0f, sc.data(), S, vg,
                    s.ld, 0.0f, og.data(), D);
        for (int r = 0; r < rows; r++) {
          const int t = (r0 + r) / G, h = g * G + (r0 + r) % G;
          float* o = out + static_cast<int64_t>(t) * HD + static_cast<int64_t>(h) * D;
          const float* src = og.data() + static_cast<size_t>(r) * D;
          for (int d = 0; d < D; d++) o[d] = src[d] * inv[r];
        }
      }
  }
}

}  // namespace kvt

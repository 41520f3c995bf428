// Attention of new queries over a KV cache (ops.h, attention_cache_forward).
// Per KV head g the G query heads x n queries are stacked as the rows of one matrix Q_g
// [M = n G, D] (row t G + j is query t of head g G + j), and, per tile of at most kRows rows and
// per block of at most kSlots cache slots (so the score block and the slots' K and V stay in L2),
// with the online softmax (running max m and sum l per row):
//   S = Q_g K_b^T / sqrt(D)                  one sgemm over the block's slots      [rows, B]
//   m' = max(m, max of S over the slots with 0 <= pos <= p0 + t), a = e^(m - m')
//   W = e^(S - m') over those slots (others 0),  l = a l + rowsum(W)
//   O = a O + W V_b                          one sgemm (O scaled first)           [rows, D]
// and at the end O / l. With S <= kSlots (one block) this is the plain softmax. Row max and sum
// run in kLanes partial lanes combined in a fixed order (vectorised, and the same for every
// thread count).
// Tiles run in parallel (OpenMP, static schedule); BLAS runs single-threaded inside, every sum is
// in a fixed order, so the result does not depend on the thread count.
//
// attention_cache_score, per tile of rows (query t in [t0, t1) of head h, t-major) over all S
// slots at once: S = Q_g K^T / sqrt(D) (one sgemm), the row's softmax over its visible slots,
// reduced per slot into the tile's partial (max or sum over its rows, in row order); the tiles'
// partials are then combined in tile order.

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
constexpr int kRows = 64;     // rows of Q_g per tile
constexpr int kSlots = 1024;  // cache slots per block: [rows, kSlots] scores, K and V of the block in L2
constexpr int kLanes = 16;    // independent partial max / sum lanes (vectorised, fixed order)

// The largest score of one row over the slots visible at position p (0 <= pos <= p); -inf when
// none is. pos == nullptr: every slot is visible (the block lies wholly in the row's past).
float masked_max(const float* row, const int32_t* pos, int n, int p) {
  const float ninf = -std::numeric_limits<float>::infinity();
  auto visible = [&](int i) { return !pos || ((pos[i] >= 0) & (pos[i] <= p)); };
  float lane[kLanes];
  std::fill(lane, lane + kLanes, ninf);
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; j++) {
      const float x = visible(i + j) ? row[i + j] : ninf;
      lane[j] = x > lane[j] ? x : lane[j];
    }
  float mx = ninf;
  for (; i < n; i++) mx = visible(i) && row[i] > mx ? row[i] : mx;
  for (int j = 0; j < kLanes; j++) mx = lane[j] > mx ? lane[j] : mx;
  return mx;
}

// The row's softmax weights e^(x - mx) in place over the visible slots, 0 elsewhere (mx finite);
// returns their sum.
float masked_weights(float* row, const int32_t* pos, int n, int p, float mx) {
  if (pos) {
    for (int k = 0; k < n; k++) {  // e^ of every slot, then the mask: a loop without branches
      const float w = math::softmax_weight(row[k], mx);
      row[k] = (pos[k] >= 0) & (pos[k] <= p) ? w : 0.0f;
    }
  } else {
    for (int k = 0; k < n; k++) row[k] = math::softmax_weight(row[k], mx);
  }
  float lane[kLanes];
  std::fill(lane, lane + kLanes, 0.0f);
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; j++) lane[j] += row[i + j];
  float sum = 0.0f;
  for (int j = 0; j < kLanes; j++) sum += lane[j];
  for (; i < n; i++) sum += row[i];
  return sum;
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
  const int block = std::min(kSlots, S);
  const float ninf = -std::numeric_limits<float>::infinity();
#pragma omp parallel
  {
    std::vector<float> qg(static_cast<size_t>(tile_rows) * D), og(qg.size()),
        sc(static_cast<size_t>(tile_rows) * block), mx(tile_rows), sum(tile_rows);
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
        std::fill(mx.begin(), mx.end(), ninf);
        std::fill(sum.begin(), sum.end(), 0.0f);
        for (int b0 = 0; b0 < S; b0 += block) {
          const int nb = std::min(block, S - b0);
          // A block whose slots all hold positions in [0, p] of the tile's first (earliest) row is
          // visible to every row: no mask to apply (prefill's past).
          int lo = std::numeric_limits<int>::max(), hi = -1;
          for (int i = 0; i < nb; i++) {
            lo = std::min(lo, pg[b0 + i]);
            hi = std::max(hi, pg[b0 + i]);
          }
          const int32_t* mask = lo >= 0 && hi <= s.p0 + r0 / G ? nullptr : pg + b0;
          cpu::sgemm(false, true, rows, nb, D, scale, qg.data(), D, kg + static_cast<int64_t>(b0) * s.ld, s.ld,
                     0.0f, sc.data(), nb);
          for (int r = 0; r < rows; r++) {
            float* row = sc.data() + static_cast<size_t>(r) * nb;
            const int p = s.p0 + (r0 + r) / G;
            const float m_blk = masked_max(row, mask, nb, p);
            const float m_new = m_blk > mx[r] ? m_blk : mx[r];
            if (m_new == ninf) {  // nothing visible yet: the row's weights are all 0
              std::fill(row, row + nb, 0.0f);
              continue;
            }
            const float a = mx[r] == ninf ? 0.0f : math::softmax_weight(mx[r], m_new);
            sum[r] = a * sum[r] + masked_weights(row, mask, nb, p, m_new);
            mx[r] = m_new;
            if (b0 > 0 && a != 1.0f)
              for (int d = 0; d < D; d++) og[static_cast<size_t>(r) * D + d] *= a;
          }
          cpu::sgemm(false, false, rows, D, nb, 1.0f, sc.data(), nb, vg + static_cast<int64_t>(b0) * s.ld, s.ld,
                     b0 == 0 ? 0.0f : 1.0f, og.data(), D);
        }
        for (int r = 0; r < rows; r++) {
          const int t = (r0 + r) / G, h = g * G + (r0 + r) % G;
          float* o = out + static_cast<int64_t>(t) * HD + static_cast<int64_t>(h) * D;
          const float* src = og.data() + static_cast<size_t>(r) * D;
          const float inv = sum[r] > 0.0f ? 1.0f / sum[r] : 0.0f;
          for (int d = 0; d < D; d++) o[d] = src[d] * inv;
        }
      }
  }
}

void CpuOps::attention_cache_score(float* out, const float* q, const float* k, const int32_t* pos,
                                   const CacheAttnShape& s, int t0, int t1, bool sum) {
  const int G = s.H / s.Hkv, D = s.D, S = s.S;
  std::fill(out, out + static_cast<int64_t>(s.Hkv) * S, 0.0f);
  t0 = std::max(t0, 0), t1 = std::min(t1, s.n);
  if (t0 >= t1 || S == 0) return;
  const int M = (t1 - t0) * G, tiles = (M + kRows - 1) / kRows, tile_rows = std::min(kRows, M);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> part(static_cast<size_t>(s.Hkv) * tiles * S, 0.0f);  // [Hkv, tiles, S]
#pragma omp parallel
  {
    std::vector<float> qg(static_cast<size_t>(tile_rows) * D), sc(static_cast<size_t>(tile_rows) * S);
#pragma omp for collapse(2) schedule(static)
    for (int g = 0; g < s.Hkv; g++)
      for (int tile = 0; tile < tiles; tile++) {
        const int r0 = tile * kRows, rows = std::min(kRows, M - r0);
        const int32_t* pg = pos + static_cast<int64_t>(g) * S;
        for (int r = 0; r < rows; r++) {
          const int t = t0 + (r0 + r) / G, h = g * G + (r0 + r) % G;
          std::memcpy(qg.data() + static_cast<size_t>(r) * D,
                      q + static_cast<int64_t>(t) * s.ldq + static_cast<int64_t>(h) * D, D * sizeof(float));
        }
        cpu::sgemm(false, true, rows, S, D, scale, qg.data(), D, k + g * s.head_stride, s.ld, 0.0f,
                   sc.data(), S);
        float* pt = part.data() + (static_cast<size_t>(g) * tiles + tile) * S;
        for (int r = 0; r < rows; r++) {
          float* row = sc.data() + static_cast<size_t>(r) * S;
          const int p = s.p0 + t0 + (r0 + r) / G;
          const float mx = masked_max(row, pg, S, p);
          if (mx == ninf) continue;  // the query sees nothing
          const float inv = 1.0f / masked_weights(row, pg, S, p, mx);
          if (sum)
            for (int i = 0; i < S; i++) pt[i] += row[i] * inv;
          else
            for (int i = 0; i < S; i++) pt[i] = std::max(pt[i], row[i] * inv);
        }
      }
  }
  for (int g = 0; g < s.Hkv; g++) {
    float* o = out + static_cast<int64_t>(g) * S;
    for (int tile = 0; tile < tiles; tile++) {
      const float* pt = part.data() + (static_cast<size_t>(g) * tiles + tile) * S;
      if (sum)
        for (int i = 0; i < S; i++) o[i] += pt[i];
      else
        for (int i = 0; i < S; i++) o[i] = std::max(o[i], pt[i]);
    }
  }
}

}  // namespace kvt

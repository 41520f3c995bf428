// Attention probabilities over a KV cache reduced per slot (ops.h, attention_cache_score).
// Plain loops for now (a faster blocked version replaces this).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace kvt {

void CpuOps::attention_cache_score(float* out, const float* q, const float* k, const int32_t* pos,
                                   const CacheAttnShape& s, int t0, int t1, bool sum) {
  const int G = s.H / s.Hkv, D = s.D, S = s.S;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel for schedule(static)
  for (int g = 0; g < s.Hkv; g++) {
    float* o = out + static_cast<int64_t>(g) * S;
    std::fill(o, o + S, 0.0f);
    const float* kg = k + g * s.head_stride;
    const int32_t* pg = pos + static_cast<int64_t>(g) * S;
    std::vector<float> l(S);
    for (int t = std::max(t0, 0); t < std::min(t1, s.n); t++)
      for (int h = g * G; h < (g + 1) * G; h++) {
        const float* qt = q + static_cast<int64_t>(t) * s.ldq + static_cast<int64_t>(h) * D;
        const int p = s.p0 + t;
        float mx = -std::numeric_limits<float>::infinity();
        for (int i = 0; i < S; i++) {
          if (pg[i] < 0 || pg[i] > p) continue;
          float d = 0;
          for (int j = 0; j < D; j++) d += qt[j] * kg[static_cast<int64_t>(i) * s.ld + j];
          l[i] = d * scale;
          mx = std::max(mx, l[i]);
        }
        if (mx == -std::numeric_limits<float>::infinity()) continue;
        float z = 0;
        for (int i = 0; i < S; i++)
          if (pg[i] >= 0 && pg[i] <= p) z += std::exp(l[i] - mx);
        for (int i = 0; i < S; i++) {
          if (pg[i] < 0 || pg[i] > p) continue;
          const float pr = std::exp(l[i] - mx) / z;
          o[i] = sum ? o[i] + pr : std::max(o[i], pr);
        }
      }
  }
}

}  // namespace kvt

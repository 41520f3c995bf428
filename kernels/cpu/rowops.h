// kernels/cpu/rowops.h — row reductions written with 8 fixed lanes combined in a fixed order:
// they vectorise (a plain float `s += ...` loop does not, without reassociation) and give the same
// result whatever the thread count.
#pragma once

#include "kernels/common/math.h"

namespace kvt::cpu {

// The 8 lanes as one GCC/Clang vector: `m = c > m ? c : m` compiles to a vector max, where the
// same loop over a float[8] stays scalar (GCC 12). Lane l sees the same values in the same order.
typedef float f8 __attribute__((vector_size(32)));

inline float row_max(const float* x, int n) {
  const float first = x[0];
  f8 m = {first, first, first, first, first, first, first, first};
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    f8 c;
    __builtin_memcpy(&c, x + j, sizeof c);
    m = c > m ? c : m;
  }
  float r = first;
  for (int l = 0; l < 8; l++) r = m[l] > r ? m[l] : r;
  for (; j < n; j++) r = x[j] > r ? x[j] : r;
  return r;
}

// sum_j e^(x_j - shift); with out != nullptr also stores each e^(x_j - shift) in out (may alias x).
inline float row_sum_exp(const float* x, int n, float shift, float* out) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; l++) {
      const float e = math::softmax_weight(x[j + l], shift);
      if (out) out[j + l] = e;
      s[l] += e;
    }
  float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; j < n; j++) {
    const float e = math::softmax_weight(x[j], shift);
    if (out) out[j] = e;
    r += e;
  }
  return r;
}

// sum_j a_j b_j
inline float row_dot(const float* a, const float* b, int n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; l++) s[l] += a[j + l] * b[j + l];
  float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; j < n; j++) r += a[j] * b[j];
  return r;
}

}  // namespace kvt::cpu

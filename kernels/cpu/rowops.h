// kernels/cpu/rowops.h — row reductions with 8 fixed lanes (one 8-float vector) combined in a
// fixed order: they vectorise (a plain float `s += ...` loop does not, without reassociation)
// and give the same result whatever the thread count. They are KVT_ALWAYS_INLINE: called from a
// KVT_ISA_VARIANTS kernel (kernels/cpu/isa_dispatch.h) they are compiled for its ISA, and both
// ISAs give bitwise the same result: the lanes are an explicit 8-float vector (GCC vector
// extension), so no vectoriser may pick a different reduction shape, and the kernels build with
// -ffp-contract=off, so no multiply-add is fused in one ISA and not the other.
// row_sum_exp takes 16 elements a step and adds them to the lanes in two halves, in element
// order: the arithmetic of 8 a step, but the exponentials fill one 16-float AVX-512 vector.
#pragma once

#include "kernels/common/math.h"
#include "kernels/cpu/isa_dispatch.h"

namespace kvt::cpu {

typedef float f32x8 __attribute__((vector_size(32)));

KVT_ALWAYS_INLINE f32x8 load8(const float* p) {
  f32x8 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

// ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
KVT_ALWAYS_INLINE float lanes_total(f32x8 s) {
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

KVT_ALWAYS_INLINE float row_max(const float* x, int n) {
  const float first = x[0];
  f32x8 m = {first, first, first, first, first, first, first, first};
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const f32x8 v = load8(x + j);
    m = v > m ? v : m;
  }
  float r = first;
  for (int l = 0; l < 8; l++) r = m[l] > r ? m[l] : r;
  for (; j < n; j++) r = x[j] > r ? x[j] : r;
  return r;
}

// sum_j e^(x_j - shift); with out != nullptr also stores each e^(x_j - shift) in out (may alias x).
KVT_ALWAYS_INLINE float row_sum_exp(const float* x, int n, float shift, float* out) {
  f32x8 s = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    float e[16];
    for (int l = 0; l < 16; l++) e[l] = math::softmax_weight(x[j + l], shift);
    if (out) __builtin_memcpy(out + j, e, sizeof e);
    s += load8(e);
    s += load8(e + 8);
  }
  for (; j + 8 <= n; j += 8) {
    float e[8];
    for (int l = 0; l < 8; l++) e[l] = math::softmax_weight(x[j + l], shift);
    if (out) __builtin_memcpy(out + j, e, sizeof e);
    s += load8(e);
  }
  float r = lanes_total(s);
  for (; j < n; j++) {
    const float e = math::softmax_weight(x[j], shift);
    if (out) out[j] = e;
    r += e;
  }
  return r;
}

// sum_j a_j b_j
KVT_ALWAYS_INLINE float row_dot(const float* a, const float* b, int n) {
  f32x8 s = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= n; j += 8) s += load8(a + j) * load8(b + j);
  float r = lanes_total(s);
  for (; j < n; j++) r += a[j] * b[j];
  return r;
}

}  // namespace kvt::cpu

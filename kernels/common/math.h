// kernels/common/math.h — per-element math shared by the CPU and CUDA backends, so the CPU
// tests exercise exactly the formulas the GPU runs (docs/design.md, "The op interface").
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define KVT_HD __host__ __device__ __forceinline__
#else
#define KVT_HD inline
#endif

namespace kvt::math {

// e^x for float, branch-free so compilers vectorise loops over it (libm's expf does not).
// x = n ln2 + r with |r| <= ln2/2 (+ rounding) (ln2 split in two for exactness); e^r by the Cephes expf
// polynomial (about 1 ulp); 2^n built in the exponent bits. x is clamped to [-87.3, 88.7], so the
// result is always a normal float (e^-87.3 ~ 1.2e-38 stands in for 0).
KVT_HD float exp_fast(float x) {
  x = x < -87.3f ? -87.3f : x;  // compares, not fminf/fmaxf: those stay libm calls
  x = x > 88.7f ? 88.7f : x;
  // n = round(x / ln2): adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
#if defined(__CUDA_ARCH__)
  scale = __int_as_float(bits);
#else
  __builtin_memcpy(&scale, &bits, sizeof scale);
#endif
  return p * scale;
}

// The softmax weight of a logit x in a row whose largest logit is mx: e^(x - mx) in (0, 1].
// Every softmax of the attention family (CPU and CUDA attention, attention over the KV cache)
// goes through this one helper.
KVT_HD float softmax_weight(float x, float mx) { return exp_fast(x - mx); }

// sigmoid(a) = 1 / (1 + e^-a)
KVT_HD float sigmoid(float a) { return 1.0f / (1.0f + exp_fast(-a)); }

// silu(a) = a * sigmoid(a)
KVT_HD float silu(float a) { return a * sigmoid(a); }

// d silu / da = s (1 + a (1 - s)),  s = sigmoid(a)
KVT_HD float silu_grad(float a) {
  float s = sigmoid(a);
  return s * (1.0f + a * (1.0f - s));
}

// SwiGLU forward for one element: silu(gate) * up
KVT_HD float swiglu(float gate, float up) { return silu(gate) * up; }

// SwiGLU backward for one element: (dgate, dup)
KVT_HD void swiglu_grad(float gate, float up, float dout, float* dgate, float* dup) {
  *dgate = dout * up * silu_grad(gate);
  *dup = dout * silu(gate);
}

// RMSNorm: rstd = 1 / sqrt(mean_sq + eps)
KVT_HD float rms_rstd(float mean_sq, float eps) { return 1.0f / sqrtf(mean_sq + eps); }

// RoPE on one rotate-half pair (x1 = x[j], x2 = x[j + D/2]) by angle with (c, s) = (cos, sin);
// the backward is the same rotation with s negated.
KVT_HD void rope_rotate(float* x1, float* x2, float c, float s) {
  float a = *x1, b = *x2;
  *x1 = a * c - b * s;
  *x2 = b * c + a * s;
}

// One AdamW element (PyTorch AdamW semantics, decoupled weight decay).
// bc1 = 1 - beta1^t, bc2 = 1 - beta2^t.
KVT_HD void adamw_element(float* p, float g, float* m, float* v, float lr, float beta1, float beta2,
                          float eps, float wd, float bc1, float bc2) {
  float mi = beta1 * *m + (1.0f - beta1) * g;
  float vi = beta2 * *v + (1.0f - beta2) * g * g;
  *m = mi;
  *v = vi;
  float mhat = mi / bc1, vhat = vi / bc2;
  *p -= lr * (mhat / (sqrtf(vhat) + eps) + wd * *p);
}

// One SGD-with-momentum element (PyTorch SGD, dampening 0): g = grad + wd p; buf = mu buf + g;
// p -= lr buf.
KVT_HD void sgd_element(float* p, float g, float* buf, float lr, float momentum, float wd) {
  const float b = momentum * *buf + (g + wd * *p);
  *buf = b;
  *p -= lr * b;
}

// bfloat16: the upper 16 bits of a float. float -> bf16 rounds to nearest, ties to even (NaN
// stays a quiet NaN); bf16 -> float is exact. The same bits as CUDA's __float2bfloat16_rn, so the
// CPU's bf16 emulation and the GPU round identically (the gate trainer's context cache uses it too).
KVT_HD uint32_t float_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}
KVT_HD float bits_float(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}
KVT_HD uint16_t to_bf16(float x) {
  uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
KVT_HD float from_bf16(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }
// x rounded to the nearest bf16 value, kept as a float
KVT_HD float round_bf16(float x) { return from_bf16(to_bf16(x)); }
// x rounded to TF32 (10 explicit mantissa bits, nearest, ties to even), kept as a float: what
// tensor cores read in TF32 mode (cuBLAS's rounding of the inputs is not documented bit for bit,
// so the CPU emulation of fp32_tf32 is a tolerance reference, not a bitwise one).
KVT_HD float round_tf32(float x) {
  uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) >= 0x7f800000u) return x;  // inf, NaN
  u += 0xfffu + ((u >> 13) & 1u);
  return bits_float(u & 0xffffe000u);
}

}  // namespace kvt::math

// kernels/common/math.h — per-element math shared by the CPU and CUDA backends, so the CPU
// tests exercise exactly the formulas the GPU runs (DESIGN.md §2).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define KVT_HD __host__ __device__ __forceinline__
#else
#define KVT_HD inline
#endif

namespace kvt::math {

// sigmoid(a) = 1 / (1 + e^-a)
KVT_HD float sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }

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

}  // namespace kvt::math

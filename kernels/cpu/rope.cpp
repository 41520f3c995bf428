// Rotary position embedding (rotate-half pairing), forward and backward (AVX-512 / AVX2
// variants: kernels/cpu/isa_dispatch.h).
#include "kernels/common/math.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa_dispatch.h"

namespace kvt {

namespace {
// Rotates every (j, j + D/2) pair of x [B, T, nh, D] (row stride ld) by +angle or -angle.
KVT_ISA_VARIANTS(rope_apply, (float* x, int ld, int B, int T, int nh, int D, int pos0,
                              const float* cos, const float* sin, float sign), {
  const int half = D / 2;
  _Pragma("omp parallel for collapse(2) schedule(static)")
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      float* row = x + (static_cast<int64_t>(b) * T + t) * ld;
      const float* c = cos + static_cast<int64_t>(pos0 + t) * half;
      const float* s = sin + static_cast<int64_t>(pos0 + t) * half;
      for (int h = 0; h < nh; h++) {
        float* xh = row + h * D;
        for (int j = 0; j < half; j++) math::rope_rotate(&xh[j], &xh[j + half], c[j], sign * s[j]);
      }
    }
})
}  // namespace

void CpuOps::rope_forward(float* x, int ld, int B, int T, int nh, int D, int pos0,
                          const float* cos, const float* sin) {
  KVT_ISA_CALL(rope_apply, x, ld, B, T, nh, D, pos0, cos, sin, 1.0f);
}

// The rotation R is orthogonal, so dx = R^T dout: rotate by the negative angle.
void CpuOps::rope_backward(float* dx, int ld, int B, int T, int nh, int D, int pos0,
                           const float* cos, const float* sin) {
  KVT_ISA_CALL(rope_apply, dx, ld, B, T, nh, D, pos0, cos, sin, -1.0f);
}

}  // namespace kvt

// Residual add, forward and backward (AVX-512 / AVX2 variants: kernels/cpu/isa_dispatch.h).
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa_dispatch.h"

namespace kvt {

namespace {

KVT_ISA_VARIANTS(residual_fwd, (float* out, const float* a, const float* b, int64_t n), {
  KVT_OMP_FOR
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
})

KVT_ISA_VARIANTS(residual_bwd, (float* da, float* db, const float* dout, int64_t n), {
  KVT_OMP_FOR
  for (int64_t i = 0; i < n; i++) {
    const float g = dout[i];
    if (da && da != dout) da[i] += g;
    if (db) db[i] += g;
  }
})

}  // namespace

// out = a + b
void CpuOps::residual_forward(float* out, const float* a, const float* b, int64_t n) {
  KVT_ISA_CALL(residual_fwd, out, a, b, n);
}

// da += dout; db += dout  (da == dout means the gradient already flows through in place)
void CpuOps::residual_backward(float* da, float* db, const float* dout, int64_t n) {
  KVT_ISA_CALL(residual_bwd, da, db, dout, n);
}

}  // namespace kvt

// Residual add, forward and backward.
#include "kernels/cpu/cpu_ops.h"

namespace kvt {

// out = a + b
void CpuOps::residual_forward(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// da += dout; db += dout  (da == dout means the gradient already flows through in place)
void CpuOps::residual_backward(float* da, float* db, const float* dout, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) {
    const float g = dout[i];
    if (da && da != dout) da[i] += g;
    if (db) db[i] += g;
  }
}

}  // namespace kvt

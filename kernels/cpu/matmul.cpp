// Matmul (no bias) through BLAS sgemm; weights stored [out, in].
#include <cblas.h>

#include "kernels/cpu/cpu_ops.h"

namespace kvt {

// out[N, OC] = x[N, IC] · W[OC, IC]^T
void CpuOps::matmul_forward(float* out, const float* x, const float* w, int64_t N, int IC,
                            int OC) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(N), OC, IC, 1.0f, x, IC,
              w, IC, 0.0f, out, OC);
}

// dx[N, IC] (= or +=) dout[N, OC] · W[OC, IC];  dW[OC, IC] += dout^T · x
void CpuOps::matmul_backward(float* dx, float* dw, const float* dout, const float* x,
                             const float* w, int64_t N, int IC, int OC, bool accumulate_dx) {
  if (dx)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(N), IC, OC, 1.0f,
                dout, OC, w, IC, accumulate_dx ? 1.0f : 0.0f, dx, IC);
  if (dw)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, static_cast<int>(N), 1.0f, dout,
                OC, x, IC, 1.0f, dw, IC);
}

}  // namespace kvt

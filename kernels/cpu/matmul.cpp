// Matmul (no bias) through BLAS sgemm; weights stored [out, in].
// In bf16 / fp32_tf32 (kernels/cpu/precision.h) the sgemm reads rounded inputs: x and dout
// rounded into scratch, the weight from the bf16 copy (or rounded on the fly); fp32 accumulation
// and fp32 outputs, as cuBLAS with bf16 / TF32 inputs and an fp32 compute type.

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/gemm.h"

namespace kvt {

// out[N, OC] = x[N, IC] · W[OC, IC]^T
void CpuOps::matmul_forward(float* out, const float* x, const float* w, int64_t N, int IC,
                            int OC) {
  if (precision() != Precision::fp32) {
    x = cpu::round_flat(scratch_.x, x, N * IC, precision());
    w = weights_.view(w, static_cast<size_t>(OC) * IC, scratch_.w);
  }
  cpu::sgemm(false, true, static_cast<int>(N), OC, IC, 1.0f, x, IC,
              w, IC, 0.0f, out, OC);
}

// dx[N, IC] (= or +=) dout[N, OC] · W[OC, IC];  dW[OC, IC] += dout^T · x
void CpuOps::matmul_backward(float* dx, float* dw, const float* dout, const float* x,
                             const float* w, int64_t N, int IC, int OC, bool accumulate_dx) {
  if (precision() != Precision::fp32) {
    dout = cpu::round_flat(scratch_.d, dout, N * OC, precision());
    if (dx) w = weights_.view(w, static_cast<size_t>(OC) * IC, scratch_.w);
    if (dw) x = cpu::round_flat(scratch_.x, x, N * IC, precision());
  }
  if (dx)
    cpu::sgemm(false, false, static_cast<int>(N), IC, OC, 1.0f,
                dout, OC, w, IC, accumulate_dx ? 1.0f : 0.0f, dx, IC);
  if (dw)
    cpu::sgemm(true, false, OC, IC, static_cast<int>(N), 1.0f, dout,
                OC, x, IC, 1.0f, dw, IC);
}

}  // namespace kvt

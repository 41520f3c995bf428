// SwiGLU on the fused [gate | up] rows, forward and backward (AVX-512 / AVX2 variants:
// kernels/cpu/isa_dispatch.h).
#include "kernels/common/math.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa_dispatch.h"

namespace kvt {

namespace {

// out[n, f] = silu(gate[n, f]) * up[n, f]
KVT_ISA_VARIANTS(swiglu_fwd, (float* out, const float* gate_up, int64_t N, int F), {
  KVT_OMP_FOR
  for (int64_t n = 0; n < N; n++) {
    const float* gr = gate_up + n * 2 * F;
    float* o = out + n * F;
    for (int f = 0; f < F; f++) o[f] = math::swiglu(gr[f], gr[F + f]);
  }
})

// dgate = dout * up * silu'(gate);  dup = dout * silu(gate)
KVT_ISA_VARIANTS(swiglu_bwd, (float* dgate_up, const float* dout, const float* gate_up,
                              int64_t N, int F), {
  KVT_OMP_FOR
  for (int64_t n = 0; n < N; n++) {
    const float* gr = gate_up + n * 2 * F;
    const float* d = dout + n * F;
    float* dg = dgate_up + n * 2 * F;
    for (int f = 0; f < F; f++) math::swiglu_grad(gr[f], gr[F + f], d[f], &dg[f], &dg[F + f]);
  }
})

}  // namespace

void CpuOps::swiglu_forward(float* out, const float* gate_up, int64_t N, int F) {
  KVT_ISA_CALL(swiglu_fwd, out, gate_up, N, F);
}

void CpuOps::swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N,
                             int F) {
  KVT_ISA_CALL(swiglu_bwd, dgate_up, dout, gate_up, N, F);
}

}  // namespace kvt

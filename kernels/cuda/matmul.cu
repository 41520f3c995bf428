// kernels/cuda/matmul.cu — matmul through cuBLASLt (column-major): a row-major [R, K] matrix
// is the column-major [K, R] one, so each row-major product is computed transposed.
// With Wc = W as column-major [IC, OC], xc = x as [IC, N], dc = dout as [OC, N]:
//   forward:  out[N,OC] = x[N,IC] W[OC,IC]^T    <=>  out^T[OC,N] = Wc^T xc    (T, N) m=OC n=N  k=IC
//   backward: dx[N,IC] (= or +=) dout[N,OC] W   <=>  dx^T[IC,N]  = Wc dc      (N, N) m=IC n=N  k=OC
//             dW[OC,IC] += dout^T x             <=>  dW^T[IC,OC] += xc dc^T   (N, T) m=IC n=OC k=N
// Precision (kernels/ops.h): fp32 is CUBLAS_COMPUTE_32F (no TF32: agrees with the CPU's BLAS
// within fp32 rounding); fp32_tf32 is CUBLAS_COMPUTE_32F_FAST_TF32 on the fp32 operands; bf16
// converts x and dout to bf16 in scratch (math::to_bf16), reads W from the bf16 copy of the
// master weights (converting it when it lies outside the registered range), accumulates in fp32
// and writes fp32 (dW accumulated with beta = 1 in fp32).
#include "kernels/cuda/matmul.h"

#include <string>

#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {

void Matmul::set_precision(Precision p) {
  precision_ = p;
  if (p == Precision::bf16 && base_ && !copy_.get()) set_weights(base_, n_);
}

void Matmul::set_weights(const float* base, size_t n) {
  base_ = base;
  n_ = n;
  if (precision_ != Precision::bf16) return;
  if (copy_.bytes() < n * sizeof(uint16_t)) {
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // earlier GEMMs may still read the old copy
    copy_ = DeviceMemory(n * sizeof(uint16_t));
  }
  refresh_weights();
}

void Matmul::refresh_weights() {
  if (precision_ != Precision::bf16 || !base_ || !copy_.get()) return;
  to_bf16(stream_, static_cast<uint16_t*>(copy_.get()), base_, static_cast<int64_t>(n_));
}

const void* Matmul::operand(const float* p, size_t count, Scratch& scratch, bool is_weight) {
  if (precision_ != Precision::bf16) return p;
  if (is_weight && copy_.get() && p >= base_ && p + count <= base_ + n_)
    return static_cast<const uint16_t*>(copy_.get()) + (p - base_);
  auto* dst = static_cast<uint16_t*>(scratch.get(count * sizeof(uint16_t), stream_));
  to_bf16(stream_, dst, p, static_cast<int64_t>(count));
  return dst;
}

void Matmul::forward(float* out, const float* x, const float* w, int64_t N, int IC, int OC) {
  if (N <= 0 || OC <= 0) return;
  const int n = to_int(N, "matmul N");
  GemmArgs g;
  g.trans_a = true;
  g.m = OC, g.n = n, g.k = IC;
  g.a = operand(w, size_t(OC) * IC, w_bf16_, true), g.lda = IC;
  g.b = operand(x, size_t(n) * IC, x_bf16_, false), g.ldb = IC;
  g.d = out, g.ldd = OC;
  lt_.run(precision_, g);
}

void Matmul::backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      int64_t N, int IC, int OC, bool accumulate_dx) {
  if (N <= 0 || IC <= 0 || OC <= 0 || (!dx && !dw)) return;
  const int n = to_int(N, "matmul N");
  const void* d = operand(dout, size_t(n) * OC, d_bf16_, false);
  if (dx) {
    GemmArgs g;
    g.m = IC, g.n = n, g.k = OC;
    g.a = operand(w, size_t(OC) * IC, w_bf16_, true), g.lda = IC;
    g.b = d, g.ldb = OC;
    g.d = dx, g.ldd = IC;
    g.beta = accumulate_dx ? 1.0f : 0.0f;
    lt_.run(precision_, g);
  }
  if (dw) {
    GemmArgs g;
    g.trans_b = true;
    g.m = IC, g.n = OC, g.k = n;
    g.a = operand(x, size_t(n) * IC, x_bf16_, false), g.lda = IC;
    g.b = d, g.ldb = OC;
    g.d = dw, g.ldd = IC;
    g.beta = 1.0f;
    lt_.run(precision_, g);
  }
}

}  // namespace kvt::cuda

// kernels/cuda/matmul.cu — matmul through cuBLAS sgemm (column-major): a row-major [R, K] matrix
// is the column-major [K, R] one, so each row-major product is computed transposed.
// With Wc = W as column-major [IC, OC], xc = x as [IC, N], dc = dout as [OC, N]:
//   forward:  out[N,OC] = x[N,IC] W[OC,IC]^T    <=>  out^T[OC,N] = Wc^T xc      sgemm(T, N)
//   backward: dx[N,IC] (= or +=) dout[N,OC] W   <=>  dx^T[IC,N]  = Wc dc        sgemm(N, N)
//             dW[OC,IC] += dout^T x             <=>  dW^T[IC,OC] += xc dc^T     sgemm(N, T)
// The handle runs in CUBLAS_DEFAULT_MATH (set in cuda_ops.cu): fp32 FMA, no TF32, so results
// agree with the CPU's BLAS within fp32 rounding; cuBLAS is run-to-run deterministic on a given
// GPU and stream.
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {

void matmul_forward(cublasHandle_t h, float* out, const float* x, const float* w, int64_t N,
                    int IC, int OC) {
  if (N <= 0 || OC <= 0) return;
  const int n = to_int(N, "matmul N");
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, n, IC, &one, w, IC, x, IC, &zero, out,
                           OC));
}

void matmul_backward(cublasHandle_t h, float* dx, float* dw, const float* dout, const float* x,
                     const float* w, int64_t N, int IC, int OC, bool accumulate_dx) {
  if (N <= 0 || IC <= 0 || OC <= 0) return;
  const int n = to_int(N, "matmul N");
  const float one = 1.0f, zero = 0.0f;
  if (dx) {
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, IC, n, OC, &one, w, IC, dout, OC,
                             accumulate_dx ? &one : &zero, dx, IC));
  }
  if (dw) {
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, n, &one, x, IC, dout, OC, &one,
                             dw, IC));
  }
}

}  // namespace kvt::cuda

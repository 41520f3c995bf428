// kernels/cuda/lt_gemm.h — one column-major matmul through cuBLASLt, with the matmul
// descriptor, the matrix layouts and the heuristic's algorithm cached per shape:
//   D[m, n] = op(A)[m, k] op(B)[k, n] + beta D      (beta 0: overwrite, 1: accumulate; D fp32)
// By Precision (kernels/ops.h):
//   fp32       A, B fp32, CUBLAS_COMPUTE_32F            (plain fp32 FMA: the reference, no TF32)
//   fp32_tf32  A, B fp32, CUBLAS_COMPUTE_32F_FAST_TF32  (inputs rounded to TF32 by the tensor cores)
//   bf16       A, B bf16 (uint16_t bits), CUBLAS_COMPUTE_32F (fp32 accumulation)
// The algorithm of a shape is chosen once (the heuristic's first result for the fixed workspace
// and the pointers' alignments) and reused, so a shape always runs the same kernel: cuBLAS is
// bitwise repeatable for a fixed algorithm on one GPU model.
#pragma once

#include <cuda_runtime.h>

#include <memory>

#include "kernels/ops.h"

namespace kvt::cuda {

struct GemmArgs {
  bool trans_a = false, trans_b = false;  // op(X) = X^T when set
  int m = 0, n = 0, k = 0;
  const void* a = nullptr;  // stored [trans_a ? k : m, trans_a ? m : k], column-major, ld lda
  int lda = 0;
  const void* b = nullptr;  // stored [trans_b ? n : k, trans_b ? k : n], column-major, ld ldb
  int ldb = 0;
  float* d = nullptr;  // [m, n] column-major, ld ldd, fp32
  int ldd = 0;
  float beta = 0.0f;
};

class LtGemm {
 public:
  explicit LtGemm(cudaStream_t stream);  // creates the cuBLASLt handle and the workspace
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;
  // Enqueues D = op(A) op(B) + beta D on the stream; throws one line naming the shape when
  // cuBLASLt has no algorithm for it or the call fails.
  void run(Precision type, const GemmArgs& g);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvt::cuda

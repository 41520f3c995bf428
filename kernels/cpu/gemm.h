// kernels/cpu/gemm.h — the one GEMM every CPU op calls, and what runs it.
// The library behind it is chosen at build time (CMake KVT_BLAS: onednn, the default, or
// openblas); docs/design.md, "Performance" says why. Each library lives in its own
// gemm_<library>.cpp and only that file includes the library's header.
#pragma once

#include <string>

namespace kvt::cpu {

// C[M, N] = alpha · op(A) · op(B) + beta · C, row-major; op(X) = X^T when trans_x.
// A is [M, K] (or [K, M] transposed) with row stride lda, B is [K, N] (or [N, K]) with ldb.
// Called inside an OpenMP region it runs on the calling thread only; outside, on all threads
// of omp_get_max_threads(). For fixed shapes and thread count the result is bitwise repeatable.
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

// What runs the GEMM: {"oneDNN", "2.6.3", "JIT kernels for avx512_core", false} or
// {"OpenBLAS", "0.3.21", "kernel Prescott", true}.
struct BlasInfo {
  std::string library, version, kernel;
  bool generic = false;  // a kernel below the CPU's vector ISA (e.g. SSE on an AVX2 machine)
  std::string describe() const;  // "oneDNN 2.6.3, JIT kernels for avx512_core"
};
BlasInfo blas_info();

}  // namespace kvt::cpu

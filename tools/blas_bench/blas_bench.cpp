// blas_bench — sgemm GFLOP/s of one BLAS library on the shapes kvtrain's step runs, for the
// library comparison of docs/results.md ("CPU GEMM libraries"). Built and run by
// tools/blas_compare.sh once per library (-DUSE_DNNL, -DUSE_MKL, or plain CBLAS).
// Each shape: the best of 6 timed calls after one untimed, on N(0,1)-like data.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <vector>
#if defined(USE_DNNL)
#include <oneapi/dnnl/dnnl.h>
#elif defined(USE_MKL)
#include <mkl.h>
#else
#include <cblas.h>
#endif

static void gemm(bool ta, bool tb, int M, int N, int K, const float* A, int lda, const float* B,
                 int ldb, float* C, int ldc) {
#if defined(USE_DNNL)
  dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
#else
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
#endif
}

struct Shape {
  const char* name;
  bool ta, tb;
  int M, N, K;
  bool per_thread;  // many single-threaded calls inside an OpenMP loop (attention's pattern)
};

int main() {
#if defined(USE_MKL)
  mkl_cbwr_set(MKL_CBWR_AUTO);  // conditional numerical reproducibility, as a trainer needs
#endif
  const Shape shapes[] = {
      {"square 2048", false, false, 2048, 2048, 2048, false},
      {"tiny x W^T 2048x384x128", false, true, 2048, 384, 128, false},
      {"tiny head 2048x4096x128", false, true, 2048, 4096, 128, false},
      {"tiny dW 4096x128x2048 (T N)", true, false, 4096, 128, 2048, false},
      {"25m qkv 2048x1536x512", false, true, 2048, 1536, 512, false},
      {"25m head 2048x8192x512", false, true, 2048, 8192, 512, false},
      {"25m dW 1376x512x2048 (T N)", true, false, 1376, 512, 2048, false},
      {"25m dx 2048x512x1376", false, false, 2048, 512, 1376, false},
      {"attention 256x256x64, per thread", false, true, 256, 256, 64, true},
      {"decode 1x8192x512", false, true, 1, 8192, 512, false},
  };
  std::printf("| shape | GFLOP/s |\n|---|---:|\n");
  for (const Shape& s : shapes) {
    const int calls = s.per_thread ? 64 : 1;
    const size_t a = static_cast<size_t>(s.M) * s.K, b = static_cast<size_t>(s.K) * s.N,
                 c = static_cast<size_t>(s.M) * s.N;
    std::vector<float> A(a * calls), B(b), C(c * calls);
    for (size_t i = 0; i < A.size(); i++) A[i] = static_cast<float>((i * 7919) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < B.size(); i++) B[i] = static_cast<float>((i * 104729) % 1000) * 1e-3f - 0.5f;
    const int lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
    double best = 1e30;
    for (int r = 0; r < 7; r++) {
      const auto t0 = std::chrono::steady_clock::now();
      if (s.per_thread) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < calls; i++)
          gemm(s.ta, s.tb, s.M, s.N, s.K, A.data() + a * i, lda, B.data(), ldb, C.data() + c * i,
               s.N);
      } else {
        gemm(s.ta, s.tb, s.M, s.N, s.K, A.data(), lda, B.data(), ldb, C.data(), s.N);
      }
      const double dt =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r > 0 && dt < best) best = dt;
    }
    std::printf("| %s | %.1f |\n", s.name, 2.0 * s.M * s.N * s.K * calls / best * 1e-9);
  }
}

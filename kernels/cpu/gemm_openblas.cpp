// GEMM through OpenBLAS (its OpenMP build, so a call inside a parallel region runs on the
// calling thread). OpenBLAS picks its kernel from the CPU model, which an old release may not
// know (it then runs SSE kernels), and every OpenBLAS obeys OPENBLAS_CORETYPE: blas_info()
// reports the kernel it actually chose.
#include <cblas.h>

#include <string>

#include "kernels/cpu/cpu_info.h"
#include "kernels/cpu/gemm.h"

extern "C" char* openblas_get_corename(void);
extern "C" char* openblas_get_config(void);

namespace kvt::cpu {

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

BlasInfo blas_info() {
  const std::string core = openblas_get_corename();
  std::string config = openblas_get_config();  // "OpenBLAS 0.3.21 DYNAMIC_ARCH ..."
  std::string version = config.rfind("OpenBLAS ", 0) == 0 ? config.substr(9) : config;
  version = version.substr(0, version.find(' '));
  BlasInfo b{"OpenBLAS", version, "kernel " + core};
  // Kernels with AVX2 FMA (and AVX-512 for the last four); any other core name is an SSE-era
  // or generic kernel.
  const bool avx2 = core == "Haswell" || core == "Zen" || core == "SkylakeX" ||
                    core == "Cooperlake" || core == "SapphireRapids";
  const bool avx512 = core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids";
  const CpuFeatures f = cpu_features();
  b.generic = (f.avx2 && !avx2) || (f.avx512 && !avx512);
  return b;
}

}  // namespace kvt::cpu

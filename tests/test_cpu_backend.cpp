// The CPU backend's foundations: the one GEMM (kernels/cpu/gemm.h) against a naive triple loop,
// its repeatability, what blas_info() and the CLI report about the library and kernel, the
// warning for a generic kernel, and the KVT_CPU_ISA switch.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstdlib>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/common/rng.h"
#include "kernels/cpu/cpu_info.h"
#include "kernels/cpu/gemm.h"
#include "tests/model_checks.h"

namespace kvt {
namespace {

using testutil::CmdResult;
using testutil::run_kvtrain;
using testutil::run_kvtrain_env;

struct GemmCase {
  bool ta, tb;
  int M, N, K;
  float alpha, beta;
};

std::vector<float> randn(size_t n, uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(r.normal());
  return v;
}

// C = alpha op(A) op(B) + beta C in double, A/B/C row-major with padded leading dimensions.
void naive_gemm(const GemmCase& c, const float* A, int lda, const float* B, int ldb, float* C,
                int ldc) {
  for (int i = 0; i < c.M; i++)
    for (int j = 0; j < c.N; j++) {
      double s = 0;
      for (int k = 0; k < c.K; k++) {
        const double a = c.ta ? A[k * lda + i] : A[i * lda + k];
        const double b = c.tb ? B[j * ldb + k] : B[k * ldb + j];
        s += a * b;
      }
      C[i * ldc + j] = static_cast<float>(c.alpha * s + c.beta * C[i * ldc + j]);
    }
}

TEST(gemm, matches_naive_for_every_transpose_and_padded_strides) {
  const GemmCase cases[] = {{false, false, 37, 29, 53, 1.0f, 0.0f},
                            {false, true, 64, 96, 32, 0.5f, 1.0f},
                            {true, false, 17, 130, 71, 1.0f, 1.0f},
                            {true, true, 5, 3, 300, -2.0f, 0.25f},
                            {false, true, 1, 513, 128, 1.0f, 0.0f},   // decode-like: one row
                            {true, false, 256, 300, 320, 0.5f, 1.0f},  // large A^T B (weight
                            {true, true, 200, 260, 330, 1.0f, 0.0f}};  // gradients)
  uint64_t seed = 1;
  for (const GemmCase& c : cases) {
    const int ar = c.ta ? c.K : c.M, ac = c.ta ? c.M : c.K;
    const int br = c.tb ? c.N : c.K, bc = c.tb ? c.K : c.N;
    const int lda = ac + 3, ldb = bc + 5, ldc = c.N + 2;
    const auto A = randn(static_cast<size_t>(ar) * lda, seed++);
    const auto B = randn(static_cast<size_t>(br) * ldb, seed++);
    auto C = randn(static_cast<size_t>(c.M) * ldc, seed++), Cref = C;
    cpu::sgemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, C.data(),
               ldc);
    naive_gemm(c, A.data(), lda, B.data(), ldb, Cref.data(), ldc);
    for (int i = 0; i < c.M; i++)
      for (int j = 0; j < ldc; j++) {
        const size_t at = static_cast<size_t>(i) * ldc + j;
        if (j >= c.N) {  // padding beyond N is never written
          EXPECT_EQ(C[at], Cref[at]);
          continue;
        }
        ASSERT_NEAR(C[at], Cref[at], 1e-4 * std::sqrt(c.K) * (1 + std::abs(Cref[at])))
            << "ta " << c.ta << " tb " << c.tb << " M " << c.M << " at " << i << "," << j;
      }
  }
}

// Bitwise: the same call twice, the same data at other addresses (alignment), and calls made
// from inside an OpenMP region (each then runs on its own thread) agree with one another.
TEST(gemm, is_bitwise_repeatable_across_calls_alignment_and_parallel_regions) {
  const int M = 300, N = 257, K = 190;
  const auto A = randn(static_cast<size_t>(M) * K, 7), B = randn(static_cast<size_t>(N) * K, 8);
  std::vector<float> C1(static_cast<size_t>(M) * N), C2(C1.size());
  cpu::sgemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C1.data(), N);
  cpu::sgemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C2.data(), N);
  EXPECT_EQ(0, std::memcmp(C1.data(), C2.data(), C1.size() * sizeof(float)));
  std::vector<float> A3(A.size() + 3), B3(B.size() + 1), C3(C1.size() + 5);
  std::memcpy(A3.data() + 3, A.data(), A.size() * sizeof(float));
  std::memcpy(B3.data() + 1, B.data(), B.size() * sizeof(float));
  cpu::sgemm(false, true, M, N, K, 1.0f, A3.data() + 3, K, B3.data() + 1, K, 0.0f, C3.data() + 5,
             N);
  EXPECT_EQ(0, std::memcmp(C1.data(), C3.data() + 5, C1.size() * sizeof(float)));
  // Inside a parallel region: 4 independent products, each compared with the same product
  // computed alone on one thread.
  std::vector<std::vector<float>> par(4, std::vector<float>(static_cast<size_t>(64) * N));
#pragma omp parallel for num_threads(2)
  for (int i = 0; i < 4; i++)
    cpu::sgemm(false, true, 64, N, K, 1.0f, A.data() + static_cast<size_t>(i) * 64 * K, K,
               B.data(), K, 0.0f, par[i].data(), N);
  omp_set_num_threads(1);
  for (int i = 0; i < 4; i++) {
    std::vector<float> one(par[i].size());
    cpu::sgemm(false, true, 64, N, K, 1.0f, A.data() + static_cast<size_t>(i) * 64 * K, K,
               B.data(), K, 0.0f, one.data(), N);
    EXPECT_EQ(0, std::memcmp(one.data(), par[i].data(), one.size() * sizeof(float))) << i;
  }
  omp_set_num_threads(2);
  // A large A^T B (the weight gradients' form): repeatable too, also at other addresses.
  const int Mt = 384, Nt = 256, Kt = 1024;
  const auto At = randn(static_cast<size_t>(Kt) * Mt, 9), Bt = randn(static_cast<size_t>(Kt) * Nt, 10);
  std::vector<float> T1(static_cast<size_t>(Mt) * Nt, 1.0f), T2 = T1, T3(T1.size() + 3, 1.0f);
  std::vector<float> At3(At.size() + 1);
  std::memcpy(At3.data() + 1, At.data(), At.size() * sizeof(float));
  cpu::sgemm(true, false, Mt, Nt, Kt, 1.0f, At.data(), Mt, Bt.data(), Nt, 1.0f, T1.data(), Nt);
  cpu::sgemm(true, false, Mt, Nt, Kt, 1.0f, At.data(), Mt, Bt.data(), Nt, 1.0f, T2.data(), Nt);
  cpu::sgemm(true, false, Mt, Nt, Kt, 1.0f, At3.data() + 1, Mt, Bt.data(), Nt, 1.0f,
             T3.data() + 3, Nt);
  EXPECT_EQ(0, std::memcmp(T1.data(), T2.data(), T1.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(T1.data(), T3.data() + 3, T1.size() * sizeof(float)));
}

TEST(blas_info, names_the_library_version_and_a_kernel_fit_for_this_cpu) {
  const cpu::BlasInfo b = cpu::blas_info();
  EXPECT_TRUE(b.library == "oneDNN" || b.library == "OpenBLAS") << b.library;
  EXPECT_FALSE(b.version.empty());
  EXPECT_FALSE(b.kernel.empty());
  EXPECT_NE(b.describe().find(b.version), std::string::npos);
  // Nothing in the environment limits the library: it must then use the CPU's vector ISA.
  // (OPENBLAS_CORETYPE may be set on some machines; it limits only OpenBLAS.)
  const bool limited = std::getenv("ONEDNN_MAX_CPU_ISA") || std::getenv("DNNL_MAX_CPU_ISA") ||
                       (b.library == "OpenBLAS" && std::getenv("OPENBLAS_CORETYPE"));
  if (!limited) {
    EXPECT_FALSE(b.generic) << b.describe() << " on " << cpu::cpu_description();
  }
  const cpu::CpuFeatures f = cpu::cpu_features();
  EXPECT_TRUE(f.avx2) << "the build's baseline is x86-64-v3 (AVX2 + FMA)";
  EXPECT_EQ(std::string(cpu::kernel_isa()), f.avx512 && !std::getenv("KVT_CPU_ISA") ? "avx512"
                                                                                   : "avx2");
}

// The CLI names the CPU, the library and its kernel, and warns when the kernel is generic. The
// generic kernel is forced the way a user's environment would force it.
const std::string kBench = std::string("bench --config ") + KVT_SOURCE_DIR +
                           "/configs/tiny.yaml --set train.seq_len=16 --set train.batch_size=2 "
                           "--steps 1 --warmup 0";

TEST(cli, bench_names_cpu_blas_and_kernel_without_a_warning) {
  const CmdResult r = run_kvtrain(kBench);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("cpu: " + cpu::cpu_description()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| BLAS " + cpu::blas_info().describe()), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("warning: the BLAS kernel"), std::string::npos) << r.out;
}

TEST(cli, bench_warns_when_the_blas_kernel_is_generic) {
  const bool openblas = cpu::blas_info().library == "OpenBLAS";
  const std::string force = openblas ? "OPENBLAS_CORETYPE=Prescott " : "ONEDNN_MAX_CPU_ISA=SSE41 ";
  const CmdResult r = run_kvtrain_env(force, kBench);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find(openblas ? "kernel Prescott" : "JIT kernels for sse41"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("warning: the BLAS kernel"), std::string::npos) << r.out;
}

TEST(cli, kvt_cpu_isa_forces_avx2_and_rejects_unknown_values) {
  CmdResult r = run_kvtrain_env("KVT_CPU_ISA=avx2 ", kBench);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("own kernels avx2"), std::string::npos) << r.out;
  r = run_kvtrain_env("KVT_CPU_ISA=sse9 ", kBench);
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("KVT_CPU_ISA='sse9' is not one of avx2, avx512"), std::string::npos)
      << r.out;
  if (!cpu::cpu_features().avx512) {  // asking for what the CPU lacks is an error, not a crash
    r = run_kvtrain_env("KVT_CPU_ISA=avx512 ", kBench);
    EXPECT_NE(r.rc, 0);
    EXPECT_NE(r.out.find("this CPU has no AVX-512"), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace kvt

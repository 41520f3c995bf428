// kernels/cuda/lt_gemm.cpp — cuBLASLt matmuls (see lt_gemm.h). Every cuBLASLt object is held
// by a unique_ptr with its destroy function; plans live as long as the LtGemm.
#include "kernels/cuda/lt_gemm.h"

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>

#include "kernels/cuda/common.cuh"

namespace kvt::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // cuBLAS's recommendation for Hopper

template <typename H, cublasStatus_t (*Destroy)(H)>
struct LtDeleter {
  void operator()(H h) const { Destroy(h); }
};
using DescPtr = std::unique_ptr<std::remove_pointer_t<cublasLtMatmulDesc_t>,
                                LtDeleter<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>>;
using LayoutPtr = std::unique_ptr<std::remove_pointer_t<cublasLtMatrixLayout_t>,
                                  LtDeleter<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>>;
using PrefPtr =
    std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>,
                    LtDeleter<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>>;

// The largest power of two (<= 256) dividing the address: what the heuristic may assume.
uint32_t alignment(const void* p) {
  const auto u = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && (u & (a - 1)) != 0) a >>= 1;
  return a;
}

LayoutPtr layout(cudaDataType_t type, int rows, int cols, int ld) {
  cublasLtMatrixLayout_t l = nullptr;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, rows, cols, ld));
  return LayoutPtr(l);
}

}  // namespace

struct LtGemm::Impl {
  struct Plan {
    DescPtr desc;
    LayoutPtr a, b, d;  // C is D (in place)
    cublasLtMatmulAlgo_t algo{};
    size_t workspace = 0;
  };
  // (type, trans_a, trans_b, m, n, k, lda, ldb, ldd, alignments of A, B, D)
  using Key =
      std::tuple<int, bool, bool, int, int, int, int, int, int, uint32_t, uint32_t, uint32_t>;

  cudaStream_t stream = nullptr;
  cublasLtHandle_t handle = nullptr;
  DeviceMemory workspace;
  std::map<Key, Plan> plans;

  const Plan& plan(Precision type, const GemmArgs& g);
};

LtGemm::LtGemm(cudaStream_t stream) : impl_(std::make_unique<Impl>()) {
  impl_->stream = stream;
  CUBLAS_CHECK(cublasLtCreate(&impl_->handle));
  try {
    impl_->workspace = DeviceMemory(kWorkspaceBytes);
  } catch (...) {
    cublasLtDestroy(impl_->handle);
    throw;
  }
}

LtGemm::~LtGemm() {
  impl_->plans.clear();
  cublasLtDestroy(impl_->handle);
}

const LtGemm::Impl::Plan& LtGemm::Impl::plan(Precision type, const GemmArgs& g) {
  const Key key{
      static_cast<int>(type), g.trans_a,      g.trans_b,     g.m, g.n, g.k, g.lda, g.ldb, g.ldd,
      alignment(g.a),         alignment(g.b), alignment(g.d)};
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;

  const cublasComputeType_t compute =
      type == Precision::fp32_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cudaDataType_t in = type == Precision::bf16 ? CUDA_R_16BF : CUDA_R_32F;
  Plan p;
  cublasLtMatmulDesc_t desc = nullptr;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F));
  p.desc.reset(desc);
  const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  p.a = g.trans_a ? layout(in, g.k, g.m, g.lda) : layout(in, g.m, g.k, g.lda);
  p.b = g.trans_b ? layout(in, g.n, g.k, g.ldb) : layout(in, g.k, g.n, g.ldb);
  p.d = layout(CUDA_R_32F, g.m, g.n, g.ldd);

  cublasLtMatmulPreference_t pref_raw = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref_raw));
  PrefPtr pref(pref_raw);
  const uint64_t ws = workspace.bytes();
  const uint32_t al_a = std::get<9>(key), al_b = std::get<10>(key), al_d = std::get<11>(key);
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref_raw, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref_raw, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref_raw, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref_raw, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof al_d));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref_raw, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof al_d));

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      handle, desc, p.a.get(), p.b.get(), p.d.get(), p.d.get(), pref_raw, 1, &result, &found);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0 || result.state != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(
        std::string("matmul (cuBLASLt, ") + precision_name(type) + "): no algorithm for m=" +
        std::to_string(g.m) + " n=" + std::to_string(g.n) + " k=" + std::to_string(g.k) + " (op " +
        (g.trans_a ? "T" : "N") + (g.trans_b ? "T" : "N") + ", ld " + std::to_string(g.lda) + "/" +
        std::to_string(g.ldb) + "/" + std::to_string(g.ldd) + ", alignment " +
        std::to_string(al_a) + "/" + std::to_string(al_b) + "/" + std::to_string(al_d) +
        " bytes): " + cublas_status_string(st != CUBLAS_STATUS_SUCCESS ? st : result.state));
  p.algo = result.algo;
  p.workspace = result.workspaceSize;
  return plans.emplace(key, std::move(p)).first->second;
}

void LtGemm::run(Precision type, const GemmArgs& g) {
  if (g.m <= 0 || g.n <= 0) return;
  if (g.k <= 0) {  // empty product: D = beta D
    if (g.beta == 0.0f)
      CUDA_CHECK(cudaMemset2DAsync(g.d, sizeof(float) * g.ldd, 0, sizeof(float) * g.m, g.n,
                                   impl_->stream));
    return;
  }
  const Impl::Plan& p = impl_->plan(type, g);
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasLtMatmul(impl_->handle, p.desc.get(), &alpha, g.a, p.a.get(), g.b, p.b.get(),
                              &g.beta, g.d, p.d.get(), g.d, p.d.get(), &p.algo,
                              impl_->workspace.get(), p.workspace, impl_->stream));
}

}  // namespace kvt::cuda

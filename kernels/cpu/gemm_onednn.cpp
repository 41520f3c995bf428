// GEMM through oneDNN's dnnl_sgemm: it picks its JIT kernel from the CPU's feature flags
// (AVX2, AVX-512, AMX) on Intel and AMD alike, and no environment setting of another library
// (OPENBLAS_CORETYPE) reaches it. Its OpenMP build runs a call made inside a parallel region on
// the calling thread.
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>

#include <stdexcept>
#include <string>

#include "kernels/cpu/cpu_info.h"
#include "kernels/cpu/gemm.h"

namespace kvt::cpu {

namespace {
// Products below this many multiply-adds run on the calling thread: waking the other OpenMP
// threads costs more than they save (decode's [1, 128] x [128, 384] products of the tiny model took
// 3.9 ms a token on 2 threads, 2.7 with OpenBLAS, which has such a cut-off of its own).
constexpr double kSerialMacs = 1 << 20;
}  // namespace

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  auto call = [&] {
    return dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                      beta, C, ldc);
  };
  dnnl_status_t st;
  if (!omp_in_parallel() && static_cast<double>(M) * N * K < kSerialMacs) {
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);  // oneDNN sizes its team with omp_get_max_threads()
    st = call();
    omp_set_num_threads(threads);
  } else {
    st = call();
  }
  if (st != dnnl_success)  // only for arguments no op passes (a bug, not bad input)
    throw std::logic_error("dnnl_sgemm failed with status " + std::to_string(st) + " for M=" +
                           std::to_string(M) + " N=" + std::to_string(N) + " K=" +
                           std::to_string(K));
}

namespace {
const char* isa_name(dnnl_cpu_isa_t isa) {
  switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "no JIT (reference C++)";
  }
}
}  // namespace

BlasInfo blas_info() {
  const dnnl_version_t* v = dnnl_version();
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  BlasInfo b{"oneDNN",
             std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
                 std::to_string(v->patch),
             "JIT kernels for " + std::string(isa_name(isa))};
  // avx2 and avx512 ISAs share the bit 0x7 (oneDNN's ISA values are nested masks).
  const bool wide = (static_cast<unsigned>(isa) & dnnl_cpu_isa_avx2) == dnnl_cpu_isa_avx2;
  const bool avx512 = (static_cast<unsigned>(isa) & dnnl_cpu_isa_avx512_core) ==
                      dnnl_cpu_isa_avx512_core;
  const CpuFeatures f = cpu_features();
  b.generic = (f.avx2 && !wide) || (f.avx512 && !avx512);
  return b;
}

}  // namespace kvt::cpu

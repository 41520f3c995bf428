#include "tools/machine_info.h"

#include <ostream>

#include "kernels/cpu/cpu_info.h"
#include "kernels/cpu/gemm.h"

namespace kvt::cli {

MachineInfo machine_info() {
  const cpu::BlasInfo b = cpu::blas_info();
  return {cpu::cpu_description(), b.describe(), cpu::kernel_isa(), b.generic};
}

std::string machine_line(const MachineInfo& m) {
  return "cpu: " + m.cpu + " | BLAS " + m.blas + " | own kernels " + m.kernel_isa;
}

bool warn_generic_blas(const MachineInfo& m, std::ostream& err) {
  if (!m.generic_blas) return false;
  const cpu::CpuFeatures f = cpu::cpu_features();
  const bool openblas = m.blas.rfind("OpenBLAS", 0) == 0;
  err << "warning: the BLAS kernel (" << m.blas << ") does not use this CPU's "
      << (f.avx512 ? "AVX-512" : "AVX2") << ": matrix products, most of a step, run at a fraction "
      << "of the machine's speed ("
      << (openblas ? "OpenBLAS did not recognise this CPU or OPENBLAS_CORETYPE forces an old "
                     "kernel; build with KVT_BLAS=onednn"
                   : "ONEDNN_MAX_CPU_ISA or DNNL_MAX_CPU_ISA limits it")
      << ")\n";
  return true;
}

}  // namespace kvt::cli

// tools/machine_info.h — what a run's numbers were measured on: the CPU, the GEMM library and
// its kernel, the ISA of the project's own kernels. Printed by `kvtrain train` and `kvtrain
// bench`, and stored in bench's JSON.
#pragma once

#include <iosfwd>
#include <string>

namespace kvt::cli {

struct MachineInfo {
  std::string cpu;         // "Intel(R) Xeon(R) Processor (family 6, model 207), 2 cores"
  std::string blas;        // "oneDNN 2.6.3, kernel avx512_core_amx JIT"
  std::string kernel_isa;  // "avx512" | "avx2": the project's own kernels
  bool generic_blas = false;
};
MachineInfo machine_info();

// "cpu: <cpu> | BLAS <blas> | own kernels <isa>"
std::string machine_line(const MachineInfo& m);

// When the GEMM kernel is below the CPU's vector ISA: a warning line (to `err`) saying so and what
// it costs. Returns whether it warned.
bool warn_generic_blas(const MachineInfo& m, std::ostream& err);

}  // namespace kvt::cli

// kernels/cpu/cpu_info.h — the CPU kvtrain runs on: its model name and the vector ISA its
// kernels may use (the runtime dispatch of docs/design.md, "Performance").
#pragma once

#include <string>

namespace kvt::cpu {

struct CpuFeatures {
  bool avx2 = false;    // AVX2 + FMA (x86-64-v3, the build's baseline)
  bool avx512 = false;  // AVX-512 F, BW, DQ, VL (x86-64-v4)
};
CpuFeatures cpu_features();

// "Intel(R) Xeon(R) Processor (model 207), 2 cores" style: the model name from /proc/cpuinfo
// (or CPUID's brand string), the family/model numbers and the online core count.
std::string cpu_description();

// The ISA the project's own kernels run with: "avx512" or "avx2" (KVT_CPU_ISA=avx2 forces the
// AVX2 path on an AVX-512 machine; any other value is an error naming it).
const char* kernel_isa();
bool use_avx512();

}  // namespace kvt::cpu

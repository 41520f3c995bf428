// CPU identification and the AVX-512 / AVX2 choice of the project's own kernels.
#include "kernels/cpu/cpu_info.h"

#include "kernels/cpu/gemm.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

namespace kvt::cpu {

CpuFeatures cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
  return f;
}

std::string cpu_description() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, name, family, model;
  auto value = [](const std::string& l) {
    const auto c = l.find(':');
    return c == std::string::npos ? std::string() : l.substr(l.find_first_not_of(" \t", c + 1));
  };
  while (std::getline(in, line) && (name.empty() || family.empty() || model.empty())) {
    if (line.rfind("model name", 0) == 0) name = value(line);
    else if (line.rfind("cpu family", 0) == 0) family = value(line);
    else if (line.rfind("model", 0) == 0 && line.rfind("model name", 0) != 0) model = value(line);
  }
  if (name.empty()) name = "unknown CPU";
  std::string d = name;
  if (!family.empty() && !model.empty()) d += " (family " + family + ", model " + model + ")";
  return d + ", " + std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " cores";
}

namespace {
bool choose_avx512() {
  const char* force = std::getenv("KVT_CPU_ISA");
  const bool can = cpu_features().avx512;
  if (!force || !*force) return can;
  const std::string f = force;
  if (f == "avx2") return false;
  if (f == "avx512") {
    if (!can) throw std::runtime_error("KVT_CPU_ISA=avx512, but this CPU has no AVX-512");
    return true;
  }
  throw std::runtime_error("KVT_CPU_ISA='" + f + "' is not one of avx2, avx512");
}
}  // namespace

bool use_avx512() {
  static const bool v = choose_avx512();
  return v;
}

const char* kernel_isa() { return use_avx512() ? "avx512" : "avx2"; }

std::string BlasInfo::describe() const { return library + " " + version + ", " + kernel; }

}  // namespace kvt::cpu

// kernels/ops.cpp — backend factory.
#include "kernels/ops.h"

#include <stdexcept>

#include "kernels/cpu/cpu_info.h"

namespace kvt {

std::unique_ptr<Ops> make_cpu_ops();
#ifdef KVT_WITH_CUDA
std::unique_ptr<Ops> make_cuda_ops();  // kernels/cuda; throws when no device is usable
bool cuda_device_usable(std::string* why);
#endif

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::fp32_tf32: return "fp32_tf32";
    case Precision::bf16: return "bf16";
  }
  return "?";
}

Precision parse_precision(const std::string& name) {
  for (Precision p : {Precision::fp32, Precision::fp32_tf32, Precision::bf16})
    if (name == precision_name(p)) return p;
  throw std::invalid_argument("unknown precision '" + name + "' (expected fp32, fp32_tf32 or bf16)");
}

void Ops::set_precision(Precision p) {
  if (p != Precision::fp32)
    throw std::invalid_argument("backend '" + name() + "' has no " + precision_name(p) + " mode");
}

bool cuda_available(std::string* why) {
#ifdef KVT_WITH_CUDA
  return cuda_device_usable(why);
#else
  if (why) *why = "kvtrain was built without the CUDA backend (no nvcc at configure time)";
  return false;
#endif
}

std::unique_ptr<Ops> make_ops(const std::string& backend) {
  if (backend == "cpu") {
    cpu::use_avx512();  // reads KVT_CPU_ISA once, here, so a bad value fails before any op runs
    return make_cpu_ops();
  }
  if (backend == "cuda") {
#ifdef KVT_WITH_CUDA
    std::string why;
    if (!cuda_device_usable(&why)) throw std::runtime_error("backend 'cuda': " + why);
    return make_cuda_ops();
#else
    throw std::runtime_error("backend 'cuda': kvtrain was built without the CUDA backend");
#endif
  }
  throw std::runtime_error("unknown backend '" + backend + "' (expected cpu or cuda)");
}

}  // namespace kvt

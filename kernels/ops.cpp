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

// Host memory for the CPU backend: 64-byte aligned, zero-initialised.
#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/cpu/cpu_ops.h"

namespace kvt {

std::unique_ptr<Ops> make_cpu_ops() { return std::make_unique<CpuOps>(); }

void* CpuOps::alloc(size_t bytes) {
  if (bytes == 0) bytes = 64;
  void* p = nullptr;
  if (posix_memalign(&p, 64, bytes) != 0) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return p;
}
void CpuOps::release(void* p) noexcept { std::free(p); }
void CpuOps::to_device(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuOps::to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuOps::copy(void* dst, const void* src, size_t bytes) { std::memmove(dst, src, bytes); }
void CpuOps::zero(void* p, size_t bytes) { std::memset(p, 0, bytes); }
void CpuOps::copy_rows(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
                       int cols) {
  for (int64_t r = 0; r < rows; r++)
    std::memmove(dst + r * ldd, src + r * lds, static_cast<size_t>(cols) * sizeof(float));
}

}  // namespace kvt

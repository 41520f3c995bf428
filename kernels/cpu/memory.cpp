// Host memory for the CPU backend: 64-byte aligned, zero-initialised.
#include <cstdlib>
#include <cstring>
#include <new>

#include <omp.h>

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
// Large buffers (gradients) are cleared by all threads, each a contiguous slice: one thread's
// memset does not reach the memory bandwidth of the machine.
void CpuOps::zero(void* p, size_t bytes) {
  constexpr size_t kParallel = size_t(1) << 20, kAlign = 4096;
  if (bytes < kParallel) {
    std::memset(p, 0, bytes);
    return;
  }
#pragma omp parallel
  {
    const size_t nt = static_cast<size_t>(omp_get_num_threads());
    const size_t t = static_cast<size_t>(omp_get_thread_num());
    const size_t per = (bytes / nt + kAlign - 1) / kAlign * kAlign;
    const size_t b0 = t * per < bytes ? t * per : bytes;
    const size_t b1 = b0 + per < bytes ? b0 + per : bytes;
    std::memset(static_cast<char*>(p) + b0, 0, b1 - b0);
  }
}
void CpuOps::copy_rows(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
                       int cols) {
  for (int64_t r = 0; r < rows; r++)
    std::memmove(dst + r * ldd, src + r * lds, static_cast<size_t>(cols) * sizeof(float));
}

}  // namespace kvt

// kernels/cuda/staging.cpp — the ring of page-locked staging buffers (see staging.h).
#include "kernels/cuda/staging.h"

#include <cstring>

#include "kernels/cuda/common.cuh"

namespace kvt::cuda {

StagingRing::Slot::Slot() { CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming)); }

StagingRing::Slot::~Slot() {
  if (done_) {
    cudaEventSynchronize(done_);  // the copy from host_ must finish before it is freed
    cudaEventDestroy(done_);
  }
  if (host_) cudaFreeHost(host_);
}

StagingRing::Slot::Slot(Slot&& o) noexcept : host_(o.host_), bytes_(o.bytes_), done_(o.done_) {
  o.host_ = nullptr;
  o.bytes_ = 0;
  o.done_ = nullptr;
}

void* StagingRing::Slot::reserve(size_t bytes) {
  CUDA_CHECK(cudaEventSynchronize(done_));  // an event never recorded counts as complete
  if (bytes > bytes_) {
    if (host_) CUDA_CHECK(cudaFreeHost(host_));
    host_ = nullptr;
    bytes_ = 0;
    size_t cap = size_t(1) << 16;
    while (cap < bytes) cap <<= 1;
    CUDA_CHECK(cudaHostAlloc(&host_, cap, cudaHostAllocDefault));
    bytes_ = cap;
  }
  return host_;
}

StagingRing::StagingRing(cudaStream_t stream, int slots) : stream_(stream) {
  slots_.reserve(static_cast<size_t>(slots));
  for (int i = 0; i < slots; ++i) slots_.emplace_back();
}

StagingRing::~StagingRing() = default;

void StagingRing::upload(void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  Slot& slot = slots_[next_];
  next_ = (next_ + 1) % slots_.size();
  void* staged = slot.reserve(bytes);
  std::memcpy(staged, host_src, bytes);
  CUDA_CHECK(cudaMemcpyAsync(dst, staged, bytes, cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaEventRecord(slot.done(), stream_));
}

}  // namespace kvt::cuda

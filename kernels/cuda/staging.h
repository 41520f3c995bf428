// kernels/cuda/staging.h — host-to-device copies that return at once (Ops::to_device_async):
// the bytes are copied into one of a ring of page-locked buffers, then cudaMemcpyAsync'd from it
// on the stream, and an event recorded after the copy. A buffer is reused only once its event has
// completed (cudaEventSynchronize), so the caller's host buffer is free on return and the copy
// overlaps the compute queued before it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

namespace kvt::cuda {

class StagingRing {
 public:
  StagingRing(cudaStream_t stream, int slots);
  ~StagingRing();
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;
  void upload(void* dst, const void* host_src, size_t bytes);

 private:
  // One page-locked buffer and the event of its latest copy (RAII, move-only).
  class Slot {
   public:
    Slot();
    ~Slot();
    Slot(Slot&& o) noexcept;
    Slot& operator=(Slot&&) = delete;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    void* reserve(size_t bytes);  // waits for the previous copy, grows the buffer
    cudaEvent_t done() const { return done_; }

   private:
    void* host_ = nullptr;
    size_t bytes_ = 0;
    cudaEvent_t done_ = nullptr;
  };

  cudaStream_t stream_;
  std::vector<Slot> slots_;
  size_t next_ = 0;
};

}  // namespace kvt::cuda

// dist/cuda/nccl_communicator.h — the Communicator of the CUDA backend (docs/nccl.md): a
// non-blocking NCCL communicator over all ranks, one GPU per rank, whose every call and wait is
// polled under a timeout by a CollectiveGuard (dist/comm_guard.h). Compiled only when CUDA is
// found (CMake adds it to kvt_dist then); include it only under KVT_WITH_CUDA.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "dist/comm_guard.h"
#include "dist/dist.h"

namespace kvt {

// cudaSetDevice(choose_device(...)) from the GPUs this rank sees; returns the device.
int select_gpu(const DistContext& ctx);

class NcclCommunicator final : public Communicator, private GuardedComm {
 public:
  // Selects the GPU, then rank 0 creates the ncclUniqueId and `host` (MPI) broadcasts it; every
  // rank joins with ncclCommInitRankConfig (blocking = 0), polled under options.timeout_s.
  // Device buffers go through NCCL on a communication stream of its own; host buffers through
  // `host`. An NCCL error or timeout aborts the communicator, then the job (options.abort).
  NcclCommunicator(const DistContext& ctx, std::unique_ptr<Communicator> host, const CommOptions& options);
  // Finalizes and destroys an idle communicator; aborts one with a collective in flight.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return host_->rank(); }
  int world() const override { return host_->world(); }
  // Device buf: start + wait_all (ncclAvg: sum / world, in place). Host buf: MPI.
  void allreduce_mean(float* buf, size_t n) override;
  void broadcast(void* buf, size_t bytes, int root) override;
  void barrier() override { host_->barrier(); }
  int max_flag(int flag) override { return host_->max_flag(flag); }
  void start_allreduce_mean(float* buf, size_t n) override;
  void start_reduce_scatter_mean(float* recv, const float* send, size_t shard) override;
  void start_all_gather(float* recv, const float* send, size_t shard) override;
  // Polls the end-of-work event and the async error under the timeout, then makes the compute
  // stream wait for the communication stream.
  void wait_all() override;
  void attach_compute(void* stream) override { compute_ = static_cast<cudaStream_t>(stream); }
  bool device_collectives() const override { return true; }
  double sum_double(double x) override { return host_->sum_double(x); }

  cudaStream_t stream() const { return stream_.get(); }

 private:
  // GuardedComm: what the guard polls and ends.
  Poll work_done() override;
  Poll async_error() override;
  Poll finalize() override;
  void destroy() noexcept override;
  void abort_comm() noexcept override;

  // The communication stream waits for the compute work submitted so far.
  void after_compute();
  // Enqueues one NCCL call (its result) with the guard, after the compute work.
  void enqueued(const char* what, ncclResult_t rc);

  struct StreamDeleter {
    void operator()(cudaStream_t s) const noexcept { cudaStreamDestroy(s); }
  };
  struct EventDeleter {
    void operator()(cudaEvent_t e) const noexcept { cudaEventDestroy(e); }
  };

  std::unique_ptr<Communicator> host_;
  SystemGuardEnv env_;
  std::unique_ptr<CUstream_st, StreamDeleter> stream_;
  std::unique_ptr<CUevent_st, EventDeleter> ready_;  // recorded on the compute stream
  std::unique_ptr<CUevent_st, EventDeleter> done_;   // recorded on the communication stream
  ncclComm_t comm_ = nullptr;  // owned: the destructor's guard_.close() destroys or aborts it
  cudaStream_t compute_ = nullptr;  // attach_compute(); null = the legacy default stream
  bool host_pending_ = false;       // host-buffer collectives started on host_
  CollectiveGuard guard_;           // last: it uses the members above
};

}  // namespace kvt

// dist/cuda/nccl_communicator.h — the Communicator of the CUDA backend (docs/design.md, "Distribution"): NCCL over
// all ranks, one GPU per rank. Compiled only when CUDA is found (CMake adds this folder to
// kvt_dist then); include it only under KVT_WITH_CUDA.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>

#include "dist/dist.h"

namespace kvt {

// cudaSetDevice(local_rank); throws naming the rank when this node has too few GPUs.
void select_gpu_of_local_rank(const DistContext& ctx);

class NcclCommunicator final : public Communicator {
 public:
  // Selects GPU local_rank, then rank 0 creates the ncclUniqueId and `host` (MPI) broadcasts it;
  // every rank joins with ncclCommInitRank. Collectives on device buffers run on `stream`
  // (created and owned when null) and are waited for before returning; host buffers go through
  // `host`.
  NcclCommunicator(const DistContext& ctx, std::unique_ptr<Communicator> host,
                   cudaStream_t stream = nullptr);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return host_->rank(); }
  int world() const override { return host_->world(); }
  // Device buf: ncclAllReduce with ncclAvg (sum / world, in place). Host buf: MPI.
  void allreduce_mean(float* buf, size_t n) override;
  void broadcast(void* buf, size_t bytes, int root) override;
  void barrier() override { host_->barrier(); }
  int max_flag(int flag) override { return host_->max_flag(flag); }
  void start_allreduce_mean(float* buf, size_t n) override;
  void start_reduce_scatter_mean(float* recv, const float* send, size_t shard) override;
  void start_all_gather(float* recv, const float* send, size_t shard) override;
  void wait_all() override;
  double sum_double(double x) override { return host_->sum_double(x); }

  cudaStream_t stream() const { return stream_; }

 private:
  struct CommDeleter {
    void operator()(ncclComm* c) const noexcept;
  };
  std::unique_ptr<Communicator> host_;
  std::unique_ptr<ncclComm, CommDeleter> comm_;
  cudaStream_t stream_ = nullptr;
  bool owns_stream_ = false;
};

}  // namespace kvt

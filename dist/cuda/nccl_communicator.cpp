#include "dist/cuda/nccl_communicator.h"

#include <stdexcept>
#include <string>

namespace kvt {

namespace {
void cuda_check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(rc));
}
void nccl_check(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) throw std::runtime_error(std::string(what) + ": " + ncclGetErrorString(rc));
}

// Device (or managed) memory goes through NCCL; anything else is a host buffer.
bool is_device_pointer(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error of an unknown pointer
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}
}  // namespace

void select_gpu_of_local_rank(const DistContext& ctx) {
  int n = 0;
  cuda_check(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  if (ctx.local_rank() >= n)
    throw std::runtime_error("rank " + std::to_string(ctx.rank()) + " has local rank " +
                             std::to_string(ctx.local_rank()) + " but this node has " +
                             std::to_string(n) + " GPU(s): start one rank per GPU");
  cuda_check(cudaSetDevice(ctx.local_rank()), "cudaSetDevice");
}

void NcclCommunicator::CommDeleter::operator()(ncclComm* c) const noexcept { ncclCommDestroy(c); }

NcclCommunicator::NcclCommunicator(const DistContext& ctx, std::unique_ptr<Communicator> host,
                                   cudaStream_t stream)
    : host_(std::move(host)), stream_(stream) {
  select_gpu_of_local_rank(ctx);
  ncclUniqueId id{};
  if (host_->rank() == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  host_->broadcast(&id, sizeof id, 0);
  ncclComm_t c = nullptr;
  nccl_check(ncclCommInitRank(&c, host_->world(), id, host_->rank()), "ncclCommInitRank");
  comm_.reset(c);
  if (!stream_) {
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    owns_stream_ = true;
  }
}

NcclCommunicator::~NcclCommunicator() {
  if (stream_) cudaStreamSynchronize(stream_);
  comm_.reset();  // before the stream it used
  if (owns_stream_) cudaStreamDestroy(stream_);
}

void NcclCommunicator::allreduce_mean(float* buf, size_t n) {
  if (!is_device_pointer(buf)) return host_->allreduce_mean(buf, n);
  nccl_check(ncclAllReduce(buf, buf, n, ncclFloat32, ncclAvg, comm_.get(), stream_), "ncclAllReduce");
  cuda_check(cudaStreamSynchronize(stream_), "ncclAllReduce (stream)");
}

void NcclCommunicator::broadcast(void* buf, size_t bytes, int root) {
  if (!is_device_pointer(buf)) return host_->broadcast(buf, bytes, root);
  nccl_check(ncclBroadcast(buf, buf, bytes, ncclUint8, root, comm_.get(), stream_), "ncclBroadcast");
  cuda_check(cudaStreamSynchronize(stream_), "ncclBroadcast (stream)");
}

// Blocking for now: the non-blocking, polled version replaces these.
void NcclCommunicator::start_allreduce_mean(float* buf, size_t n) { allreduce_mean(buf, n); }

void NcclCommunicator::start_reduce_scatter_mean(float* recv, const float* send, size_t shard) {
  nccl_check(ncclReduceScatter(send, recv, shard, ncclFloat32, ncclAvg, comm_.get(), stream_),
             "ncclReduceScatter");
  cuda_check(cudaStreamSynchronize(stream_), "ncclReduceScatter (stream)");
}

void NcclCommunicator::start_all_gather(float* recv, const float* send, size_t shard) {
  nccl_check(ncclAllGather(send, recv, shard, ncclFloat32, comm_.get(), stream_), "ncclAllGather");
  cuda_check(cudaStreamSynchronize(stream_), "ncclAllGather (stream)");
}

void NcclCommunicator::wait_all() {}

}  // namespace kvt

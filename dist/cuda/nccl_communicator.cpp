#include "dist/cuda/nccl_communicator.h"

#include <cstdio>
#include <stdexcept>
#include <string>

#include "dist/device_choice.h"

namespace kvt {

namespace {
void cuda_check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(rc));
}

Poll cuda_poll(cudaError_t rc) {
  if (rc == cudaSuccess) return Poll::ok();
  return Poll::error(std::string(cudaGetErrorName(rc)) + ": " + cudaGetErrorString(rc));
}

// ncclSuccess -> ok, ncclInProgress -> pending, anything else -> the error and NCCL's last words.
Poll nccl_poll(ncclResult_t rc, ncclComm_t comm) {
  if (rc == ncclSuccess) return Poll::ok();
  if (rc == ncclInProgress) return Poll::pending();
  std::string why = ncclGetErrorString(rc);
  const char* last = ncclGetLastError(comm);
  if (last && *last) why += std::string(" (") + last + ")";
  return Poll::error(why);
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

cudaEvent_t new_event() {
  cudaEvent_t e = nullptr;
  cuda_check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
  return e;
}
}  // namespace

int select_gpu(const DistContext& ctx) {
  int visible = 0;
  cuda_check(cudaGetDeviceCount(&visible), "cudaGetDeviceCount");
  const int device = choose_device(ctx.rank(), ctx.local_rank(), ctx.local_size(), visible);
  cuda_check(cudaSetDevice(device), "cudaSetDevice");
  return device;
}

NcclCommunicator::NcclCommunicator(const DistContext& ctx, std::unique_ptr<Communicator> host,
                                   const CommOptions& options)
    : host_(std::move(host)), env_(options.abort), guard_(*this, env_, options.timeout_s) {
  if (!options.abort) throw std::invalid_argument("NcclCommunicator: no abort function");
  select_gpu(ctx);
  cudaStream_t s = nullptr;
  cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  stream_.reset(s);
  ready_.reset(new_event());
  done_.reset(new_event());
  ncclUniqueId id{};
  if (host_->rank() == 0) {
    const ncclResult_t rc = ncclGetUniqueId(&id);
    if (rc != ncclSuccess) throw std::runtime_error(std::string("ncclGetUniqueId: ") + ncclGetErrorString(rc));
  }
  host_->broadcast(&id, sizeof id, 0);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every call may answer ncclInProgress; the guard polls it
  const ncclResult_t rc = ncclCommInitRankConfig(&comm_, host_->world(), id, host_->rank(), &config);
  guard_.settle("ncclCommInitRankConfig", nccl_poll(rc, comm_));
}

NcclCommunicator::~NcclCommunicator() {
  // Never a stream synchronize or a destroy with NCCL work in flight: that may wait forever.
  if (guard_.close() == CollectiveGuard::Closed::aborted)
    std::fprintf(stderr, "kvtrain: rank %d: NCCL communicator aborted at teardown (collective in flight or "
                 "finalize failed)\n", host_->rank());
}

// ---- GuardedComm ------------------------------------------------------------------------------

Poll NcclCommunicator::work_done() {
  const cudaError_t rc = cudaEventQuery(done_.get());
  if (rc == cudaErrorNotReady) return Poll::pending();
  Poll p = cuda_poll(rc);
  if (p.state == Poll::State::error) p.message = "cudaEventQuery: " + p.message;
  return p;
}

Poll NcclCommunicator::async_error() {
  if (!comm_) return Poll::ok();
  ncclResult_t state = ncclSuccess;
  const ncclResult_t rc = ncclCommGetAsyncError(comm_, &state);
  if (rc != ncclSuccess) return Poll::error(std::string("ncclCommGetAsyncError: ") + ncclGetErrorString(rc));
  return nccl_poll(state, comm_);
}

Poll NcclCommunicator::finalize() { return comm_ ? nccl_poll(ncclCommFinalize(comm_), comm_) : Poll::ok(); }

void NcclCommunicator::destroy() noexcept {
  if (comm_) ncclCommDestroy(comm_);
  comm_ = nullptr;
}

void NcclCommunicator::abort_comm() noexcept {
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
}

// ---- collectives ------------------------------------------------------------------------------

void NcclCommunicator::after_compute() {
  guard_.settle("cudaEventRecord (compute stream)", cuda_poll(cudaEventRecord(ready_.get(), compute_)));
  guard_.settle("cudaStreamWaitEvent (communication stream)",
                cuda_poll(cudaStreamWaitEvent(stream_.get(), ready_.get(), 0)));
}

void NcclCommunicator::enqueued(const char* what, ncclResult_t rc) { guard_.enqueue(what, nccl_poll(rc, comm_)); }

void NcclCommunicator::start_allreduce_mean(float* buf, size_t n) {
  if (!is_device_pointer(buf)) {
    host_pending_ = true;
    return host_->start_allreduce_mean(buf, n);
  }
  after_compute();
  enqueued("ncclAllReduce", ncclAllReduce(buf, buf, n, ncclFloat32, ncclAvg, comm_, stream_.get()));
}

void NcclCommunicator::start_reduce_scatter_mean(float* recv, const float* send, size_t shard) {
  if (!is_device_pointer(send)) {
    host_pending_ = true;
    return host_->start_reduce_scatter_mean(recv, send, shard);
  }
  after_compute();
  enqueued("ncclReduceScatter",
           ncclReduceScatter(send, recv, shard, ncclFloat32, ncclAvg, comm_, stream_.get()));
}

void NcclCommunicator::start_all_gather(float* recv, const float* send, size_t shard) {
  if (!is_device_pointer(send)) {
    host_pending_ = true;
    return host_->start_all_gather(recv, send, shard);
  }
  after_compute();
  enqueued("ncclAllGather", ncclAllGather(send, recv, shard, ncclFloat32, comm_, stream_.get()));
}

void NcclCommunicator::wait_all() {
  if (host_pending_) {
    host_pending_ = false;
    host_->wait_all();
  }
  if (guard_.idle()) return;
  guard_.settle("cudaEventRecord (communication stream)", cuda_poll(cudaEventRecord(done_.get(), stream_.get())));
  guard_.wait();
  // The host saw the event complete; the stream wait states the order for the compute stream.
  guard_.settle("cudaStreamWaitEvent (compute stream)", cuda_poll(cudaStreamWaitEvent(compute_, done_.get(), 0)));
}

void NcclCommunicator::allreduce_mean(float* buf, size_t n) {
  if (!is_device_pointer(buf)) return host_->allreduce_mean(buf, n);
  start_allreduce_mean(buf, n);
  wait_all();
}

void NcclCommunicator::broadcast(void* buf, size_t bytes, int root) {
  if (!is_device_pointer(buf)) return host_->broadcast(buf, bytes, root);
  after_compute();
  enqueued("ncclBroadcast", ncclBroadcast(buf, buf, bytes, ncclUint8, root, comm_, stream_.get()));
  wait_all();
}

}  // namespace kvt

// dist/dist.h — rank/world bootstrap and the Communicator (docs/design.md, "Distribution").
// Under mpirun (or srun) MPI is initialised and every process learns its rank, world size and
// local rank; started directly, kvtrain is one rank and never touches MPI.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace kvt {

// RAII: MPI_Init_thread on construction when launched by an MPI launcher, MPI_Finalize on
// destruction. One per process, created first thing in main().
class DistContext {
 public:
  DistContext(int* argc, char*** argv);
  ~DistContext();
  DistContext(const DistContext&) = delete;
  DistContext& operator=(const DistContext&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  bool uses_mpi() const { return mpi_; }
  // Ends every rank of the job (MPI_Abort) — for an error caught on one rank when world > 1, so
  // the others do not wait forever in a collective. Without MPI it just exits.
  [[noreturn]] void abort(int code) const;

  // True when this process was started by mpirun/srun (reads the launchers' environment).
  static bool launched_by_mpi();

 private:
  bool mpi_ = false;
  int rank_ = 0, world_ = 1, local_rank_ = 0, local_size_ = 1;
};

// Collectives over all ranks. Every call is blocking: it returns when the result is in `buf`.
// The MPI implementation works on host memory (CPU backend). The NCCL implementation (CUDA
// builds, dist/cuda/) takes device buffers for allreduce_mean and broadcast (the caller has
// finished writing them, e.g. after Ops::synchronize) and sends host buffers — the loss, flags,
// bootstrap broadcasts — over MPI, so the trainer calls both the same way.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // buf[i] = mean over ranks of buf[i]
  virtual void allreduce_mean(float* buf, size_t n) = 0;
  // bytes from root's buf into every rank's buf
  virtual void broadcast(void* buf, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // max over ranks of a flag (e.g. "stop requested")
  virtual int max_flag(int flag) = 0;

  // ---- asynchronous collectives (bucketed gradient reduction, ZeRO-1) ----------------------
  // Started in call order and complete after wait_all(); the buffers must stay untouched until
  // then. NCCL runs them on its communication stream, after the compute work submitted so far
  // to the stream given to attach_compute(); MPI runs them as non-blocking MPI collectives.
  // in place: buf[i] = mean over ranks of buf[i]
  virtual void start_allreduce_mean(float* buf, size_t n) = 0;
  // send [world * shard]; recv [shard] = mean over ranks of send[rank*shard : (rank+1)*shard]
  // (recv must not overlap send)
  virtual void start_reduce_scatter_mean(float* recv, const float* send, size_t shard) = 0;
  // send [shard]; recv [world * shard], recv[r*shard : (r+1)*shard] = rank r's send
  // (send may be recv + rank*shard: in place)
  virtual void start_all_gather(float* recv, const float* send, size_t shard) = 0;
  // Waits for every started collective. NCCL: polls them together with the communicator's
  // asynchronous error under the configured timeout; on an error or the timeout it aborts the
  // communicator and the job with the message (docs/design.md, "Distribution").
  virtual void wait_all() = 0;
  // The compute backend's native stream (Ops::native_stream()); a no-op for host communicators.
  virtual void attach_compute(void* stream) { (void)stream; }
  // Whether the collectives work on backend (device) buffers: NCCL's do, even on one rank; the
  // host communicator's are the identity on one rank.
  virtual bool device_collectives() const { return false; }
  // Sum over ranks of a host double (the ZeRO-1 gradient norm: the shards' squared norms).
  virtual double sum_double(double x) = 0;
};

// MPI_COMM_WORLD on host buffers; with world 1 (no MPI) every collective is the identity.
std::unique_ptr<Communicator> make_host_communicator(const DistContext& ctx);

// Options of the device communicator (NCCL); host communicators ignore them.
struct CommOptions {
  // A collective (or NCCL init) still running after this long aborts the job (train.comm_timeout_s).
  double timeout_s = 600.0;
  // Ends the job with a one-line message after an NCCL error or timeout. Empty: print it as
  // "kvtrain: error[ on rank R]: ..." and DistContext::abort(1).
  std::function<void(const std::string&)> abort;
};

// The communicator for a compute backend: "cpu" -> make_host_communicator; "cuda" -> NCCL over
// all ranks, one GPU per rank (dist/device_choice.h; it calls cudaSetDevice, so call this before
// creating the CUDA Ops), or the host communicator when world is 1 unless KVT_FORCE_NCCL=1.
// Throws for "cuda" in a build without CUDA.
std::unique_ptr<Communicator> make_communicator(const DistContext& ctx, const std::string& backend,
                                                const CommOptions& options = {});

}  // namespace kvt

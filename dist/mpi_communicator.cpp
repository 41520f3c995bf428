// dist/mpi_communicator.cpp — the host Communicator: MPI_COMM_WORLD on host buffers (the CPU
// backend's), the identity when the world is one process.
#include <mpi.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "dist/dist.h"
#include "dist/mpi_check.h"

namespace kvt {

namespace {
class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(int rank, int world, bool mpi) : rank_(rank), world_(world), mpi_(mpi) {}
  int rank() const override { return rank_; }
  int world() const override { return world_; }

  void allreduce_mean(float* buf, size_t n) override {
    if (world_ == 1) return;
    // MPI counts are int: reduce in slices.
    for (size_t off = 0; off < n; off += kSlice) {
      const int cnt = slice(n, off);
      mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
                "MPI_Allreduce");
    }
    const float inv = 1.0f / static_cast<float>(world_);
    for (size_t i = 0; i < n; i++) buf[i] *= inv;
  }
  void broadcast(void* buf, size_t bytes, int root) override {
    if (world_ == 1) return;
    char* p = static_cast<char*>(buf);
    for (size_t off = 0; off < bytes; off += kSlice) {
      const int cnt = slice(bytes, off);
      mpi_check(MPI_Bcast(p + off, cnt, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
  }
  void barrier() override {
    if (world_ > 1) mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
  }
  int max_flag(int flag) override {
    if (world_ == 1) return flag;
    int out = 0;
    mpi_check(MPI_Allreduce(&flag, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce");
    return out;
  }

  // Non-blocking MPI collectives, sliced (MPI counts are int); the mean's 1/world is applied in
  // wait_all(), after the sums arrive, as allreduce_mean applies it (the same rounding). A
  // completed request becomes MPI_REQUEST_NULL, whose MPI_Wait returns at once.
  void start_allreduce_mean(float* buf, size_t n) override {
    if (world_ == 1) return;
    for (size_t off = 0; off < n; off += kSlice) {
      const int cnt = slice(n, off);
      pending_.push_back({MPI_REQUEST_NULL, buf + off, static_cast<size_t>(cnt)});
      mpi_check(MPI_Iallreduce(MPI_IN_PLACE, buf + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                               &pending_.back().req),
                "MPI_Iallreduce");
    }
    progress();
  }
  void start_reduce_scatter_mean(float* recv, const float* send, size_t shard) override {
    if (world_ == 1) {
      if (recv != send) std::memcpy(recv, send, shard * sizeof(float));
      return;
    }
    if (shard > kSlice) throw std::runtime_error("reduce-scatter shard of " + std::to_string(shard) + " floats exceeds 2^30");
    pending_.push_back({MPI_REQUEST_NULL, recv, shard});
    mpi_check(MPI_Ireduce_scatter_block(send, recv, static_cast<int>(shard), MPI_FLOAT, MPI_SUM,
                                        MPI_COMM_WORLD, &pending_.back().req),
              "MPI_Ireduce_scatter_block");
    progress();
  }
  void start_all_gather(float* recv, const float* send, size_t shard) override {
    const float* mine = recv + static_cast<size_t>(rank_) * shard;
    if (world_ == 1) {
      if (send != mine) std::memcpy(recv, send, shard * sizeof(float));
      return;
    }
    if (shard > kSlice) throw std::runtime_error("all-gather shard of " + std::to_string(shard) + " floats exceeds 2^30");
    pending_.push_back({MPI_REQUEST_NULL, nullptr, 0});
    mpi_check(MPI_Iallgather(send == mine ? MPI_IN_PLACE : send, static_cast<int>(shard), MPI_FLOAT,
                             recv, static_cast<int>(shard), MPI_FLOAT, MPI_COMM_WORLD,
                             &pending_.back().req),
              "MPI_Iallgather");
    progress();
  }
  void wait_all() override {
    // Taken out first: a failed wait leaves nothing behind to be waited on (or scaled) twice.
    std::vector<Pending> done;
    done.swap(pending_);
    const float inv = 1.0f / static_cast<float>(world_);
    for (Pending& p : done) {
      mpi_check(MPI_Wait(&p.req, MPI_STATUS_IGNORE), "MPI_Wait");
      for (size_t i = 0; i < p.n; i++) p.mean[i] *= inv;
    }
  }
  double sum_double(double x) override {
    if (world_ == 1) return x;
    double out = 0.0;
    mpi_check(MPI_Allreduce(&x, &out, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
    return out;
  }

 private:
  // OpenMPI advances non-blocking collectives only inside MPI calls: testing the oldest pending
  // ones at every start lets earlier buckets move while the backward computes the next.
  void progress() {
    for (Pending& p : pending_) {
      int flag = 0;
      mpi_check(MPI_Test(&p.req, &flag, MPI_STATUS_IGNORE), "MPI_Test");
      if (!flag) return;
    }
  }
  static constexpr size_t kSlice = size_t{1} << 30;
  static int slice(size_t n, size_t off) { return static_cast<int>(n - off < kSlice ? n - off : kSlice); }
  // A started collective; wait_all() scales mean[0, n) by 1/world once it is complete.
  struct Pending {
    MPI_Request req;
    float* mean;
    size_t n;
  };
  int rank_, world_;
  bool mpi_;
  std::vector<Pending> pending_;
};
}  // namespace

std::unique_ptr<Communicator> make_host_communicator(const DistContext& ctx) {
  return std::make_unique<MpiCommunicator>(ctx.rank(), ctx.world(), ctx.uses_mpi());
}

}  // namespace kvt

#include "dist/dist.h"

#include <mpi.h>

#ifdef KVT_WITH_CUDA
#include "dist/cuda/nccl_communicator.h"
#endif

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace kvt {

namespace {
void mpi_check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw std::runtime_error(std::string(what) + ": " + std::string(msg, len));
  }
}
}  // namespace

bool DistContext::launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

DistContext::DistContext(int* argc, char*** argv) {
  if (!launched_by_mpi()) return;
  int provided = 0;
  mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  mpi_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &local_rank_);
  MPI_Comm_size(local, &local_size_);
  MPI_Comm_free(&local);
}

DistContext::~DistContext() {
  if (mpi_) MPI_Finalize();
}

void DistContext::abort(int code) const {
  if (mpi_ && world_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

namespace {
class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(int rank, int world, bool mpi) : rank_(rank), world_(world), mpi_(mpi) {}
  int rank() const override { return rank_; }
  int world() const override { return world_; }

  void allreduce_mean(float* buf, size_t n) override {
    if (world_ == 1) return;
    // MPI counts are int: reduce in slices.
    constexpr size_t kSlice = size_t{1} << 30;
    for (size_t off = 0; off < n; off += kSlice) {
      const int cnt = static_cast<int>(n - off < kSlice ? n - off : kSlice);
      mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
                "MPI_Allreduce");
    }
    const float inv = 1.0f / static_cast<float>(world_);
    for (size_t i = 0; i < n; i++) buf[i] *= inv;
  }
  void broadcast(void* buf, size_t bytes, int root) override {
    if (world_ == 1) return;
    constexpr size_t kSlice = size_t{1} << 30;
    char* p = static_cast<char*>(buf);
    for (size_t off = 0; off < bytes; off += kSlice) {
      const int cnt = static_cast<int>(bytes - off < kSlice ? bytes - off : kSlice);
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

 private:
  int rank_, world_;
  bool mpi_;
};
}  // namespace

std::unique_ptr<Communicator> make_host_communicator(const DistContext& ctx) {
  return std::make_unique<MpiCommunicator>(ctx.rank(), ctx.world(), ctx.uses_mpi());
}

std::unique_ptr<Communicator> make_communicator(const DistContext& ctx, const std::string& backend) {
  if (backend == "cpu") return make_host_communicator(ctx);
  if (backend == "cuda") {
#ifdef KVT_WITH_CUDA
    if (ctx.world() == 1) {
      select_gpu_of_local_rank(ctx);
      return make_host_communicator(ctx);
    }
    return std::make_unique<NcclCommunicator>(ctx, make_host_communicator(ctx));
#else
    throw std::runtime_error("backend 'cuda': kvtrain was built without the CUDA backend (no NCCL)");
#endif
  }
  throw std::runtime_error("unknown backend '" + backend + "' (expected cpu or cuda)");
}

}  // namespace kvt

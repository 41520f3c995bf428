#include "dist/dist.h"

#include <mpi.h>

#include "dist/mpi_check.h"

#include "dist/device_choice.h"

#ifdef KVT_WITH_CUDA
#include "dist/cuda/nccl_communicator.h"
#endif

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace kvt {

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

std::unique_ptr<Communicator> make_communicator(const DistContext& ctx, const std::string& backend,
                                                const CommOptions& options) {
  if (backend == "cpu") return make_host_communicator(ctx);
  if (backend == "cuda") {
#ifdef KVT_WITH_CUDA
    if (!use_nccl(ctx.world(), force_nccl(std::getenv("KVT_FORCE_NCCL")))) {
      select_gpu(ctx);
      return make_host_communicator(ctx);
    }
    CommOptions o = options;
    // An NCCL error or timeout: one line naming the rank (as tools/main.cpp prints), then the job ends.
    if (!o.abort)
      o.abort = [&ctx](const std::string& message) {
        std::fprintf(stderr, "kvtrain: error%s: %s\n",
                     ctx.world() > 1 ? (" on rank " + std::to_string(ctx.rank())).c_str() : "", message.c_str());
        std::fflush(stderr);
        ctx.abort(1);
      };
    return std::make_unique<NcclCommunicator>(ctx, make_host_communicator(ctx), o);
#else
    (void)options;
    throw std::runtime_error("backend 'cuda': kvtrain was built without the CUDA backend (no NCCL)");
#endif
  }
  throw std::runtime_error("unknown backend '" + backend + "' (expected cpu or cuda)");
}

}  // namespace kvt

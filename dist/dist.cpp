#include "dist/dist.h"

#include <mpi.h>

#include "dist/mpi_check.h"

#ifdef KVT_WITH_CUDA
#include "dist/cuda/nccl_communicator.h"
#endif

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

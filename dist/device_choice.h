// dist/device_choice.h — which GPU a rank uses and whether backend "cuda" talks NCCL
// (docs/nccl.md). Pure functions of what the rank sees, so they are tested on CPU.
#pragma once

#include <string>

namespace kvt {

// The CUDA device of a rank that sees `visible` GPUs: its local rank when it sees several and
// they are enough for every rank of the node (visible >= local_size), device 0 when it sees
// exactly one (e.g. Slurm --gpus-per-task=1 gives every rank its own). Otherwise throws naming
// the rank, the local rank and the visible count.
int choose_device(int rank, int local_rank, int local_size, int visible);

// KVT_FORCE_NCCL: unset, "" or "0" -> false, "1" -> true; anything else throws naming it.
bool force_nccl(const char* env_value);

// Backend "cuda" uses NCCL with several ranks, or at world 1 when forced (a 1-rank NCCL check).
inline bool use_nccl(int world, bool forced) { return world > 1 || forced; }

}  // namespace kvt

#include "dist/device_choice.h"

#include <stdexcept>
#include <string>

namespace kvt {

int choose_device(int rank, int local_rank, int local_size, int visible) {
  const std::string who = "rank " + std::to_string(rank) + " (local rank " + std::to_string(local_rank) +
                          " of " + std::to_string(local_size) + " on its node) sees " +
                          std::to_string(visible) + " GPU(s)";
  if (local_rank < 0 || local_rank >= local_size) throw std::invalid_argument(who + ": invalid local rank");
  if (visible == 1) return 0;
  if (visible > 1 && visible >= local_size) return local_rank;
  if (visible < 1) throw std::runtime_error(who + ": no GPU to run backend cuda on");
  throw std::runtime_error(who + ": start at most " + std::to_string(visible) +
                           " ranks per node, or give each rank one GPU (srun --gpus-per-task=1)");
}

bool force_nccl(const char* env_value) {
  const std::string v = env_value ? env_value : "";
  if (v.empty() || v == "0") return false;
  if (v == "1") return true;
  throw std::runtime_error("KVT_FORCE_NCCL='" + v + "': expected 0 or 1");
}

}  // namespace kvt

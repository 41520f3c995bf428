// train/schedule.h — learning-rate schedule: linear warm-up, then cosine decay to a floor.
#pragma once

#include <cstdint>

#include "train/config.h"

namespace kvt {

// lr of optimizer step `step` (0-based):
//   step < W:      lr * (step + 1) / W
//   otherwise:     lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2,  p = (step - W) / max(1, S - W - 1)
// with W = warmup_steps, S = steps, lr_min = lr * min_lr_ratio.
double lr_at(int64_t step, const TrainConfig& t);

}  // namespace kvt

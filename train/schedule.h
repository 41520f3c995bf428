// train/schedule.h — learning-rate schedules: the trainer's (linear warm-up, then cosine decay to
// a floor) and the gate trainer's.
#pragma once

#include <cstdint>
#include <string>

#include "train/config.h"

namespace kvt {

// lr of optimizer step `step` (0-based):
//   step < W:      lr * (step + 1) / W
//   otherwise:     lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2,  p = (step - W) / max(1, S - W - 1)
// with W = warmup_steps, S = steps, lr_min = lr * min_lr_ratio.
double lr_at(int64_t step, const TrainConfig& t);

// Multiplier of gates.lr at 0-based step s of S. "kvzip" (the reference recipe, docs/design.md, "Fast KVzip gates"),
// with t = s + 1: min(1, 0.01 t) while t <= 0.01 S, 1 while t <= 0.5 S, 0.5 while t <= 0.75 S,
// then 0.25. "constant": 1.
double gate_lr_factor(int64_t step, int64_t steps, const std::string& schedule);

}  // namespace kvt

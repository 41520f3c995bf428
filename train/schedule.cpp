#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace kvt {

double lr_at(int64_t step, const TrainConfig& t) {
  const double peak = t.lr, floor = t.lr * static_cast<double>(t.min_lr_ratio);
  if (step < t.warmup_steps) return peak * static_cast<double>(step + 1) / t.warmup_steps;
  const double span = static_cast<double>(std::max<int64_t>(1, t.steps - t.warmup_steps - 1));
  const double p = std::min(1.0, static_cast<double>(step - t.warmup_steps) / span);
  return floor + (peak - floor) * 0.5 * (1.0 + std::cos(M_PI * p));
}

double gate_lr_factor(int64_t step, int64_t steps, const std::string& schedule) {
  if (schedule == "constant") return 1.0;
  const double t = static_cast<double>(step + 1), S = static_cast<double>(steps);
  if (t <= 0.01 * S) return std::min(1.0, 0.01 * t);
  if (t <= 0.5 * S) return 1.0;
  if (t <= 0.75 * S) return 0.5;
  return 0.25;
}

}  // namespace kvt

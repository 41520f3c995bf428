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

}  // namespace kvt

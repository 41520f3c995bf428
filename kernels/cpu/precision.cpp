// The CPU's bf16 / TF32 input rounding (kernels/cpu/precision.h) and CpuOps' precision state.
#include "kernels/cpu/precision.h"

#include <cstdint>

#include "kernels/common/math.h"
#include "kernels/cpu/cpu_ops.h"

namespace kvt {
namespace cpu {

float round_input(float x, Precision p) {
  switch (p) {
    case Precision::bf16: return math::round_bf16(x);
    case Precision::fp32_tf32: return math::round_tf32(x);
    case Precision::fp32: break;
  }
  return x;
}

const float* round_rows(std::vector<float>& dst, const float* src, int64_t rows, int cols,
                        int64_t ld, Precision p) {
  dst.resize(static_cast<size_t>(rows) * cols);
  float* out = dst.data();
#pragma omp parallel for schedule(static) if (rows * cols > 16384)
  for (int64_t r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) out[r * cols + c] = round_input(src[r * ld + c], p);
  return out;
}

const float* round_flat(std::vector<float>& dst, const float* src, int64_t n, Precision p) {
  dst.resize(static_cast<size_t>(n));
  float* out = dst.data();
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; i++) out[i] = round_input(src[i], p);
  return out;
}

void WeightCopy::set(const float* base, size_t n) {
  base_ = n ? base : nullptr;
  n_ = base ? n : 0;
  refresh();
}

void WeightCopy::set_precision(Precision p) {
  p_ = p;
  refresh();
}

void WeightCopy::refresh() {
  if (p_ != Precision::bf16 || !base_) {
    copy_.clear();
    copy_.shrink_to_fit();
    return;
  }
  round_flat(copy_, base_, static_cast<int64_t>(n_), p_);
}

const float* WeightCopy::view(const float* w, size_t n, std::vector<float>& scratch) const {
  if (p_ == Precision::fp32) return w;
  const auto at = reinterpret_cast<uintptr_t>(w), b0 = reinterpret_cast<uintptr_t>(base_);
  if (p_ == Precision::bf16 && base_ && at >= b0 && at + n * sizeof(float) <= b0 + n_ * sizeof(float))
    return copy_.data() + (w - base_);
  return round_flat(scratch, w, static_cast<int64_t>(n), p_);
}

}  // namespace cpu

void CpuOps::set_precision(Precision p) { weights_.set_precision(p); }

void CpuOps::set_weights(const float* base, size_t n) { weights_.set(base, n); }

void CpuOps::refresh_weights() { weights_.refresh(); }

}  // namespace kvt

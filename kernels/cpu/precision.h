// kernels/cpu/precision.h — the CPU's emulation of the GPU's mixed precision (kernels/ops.h,
// Precision; docs/precision.md). The fp32 reference runs none of this.
//   bf16      a GEMM or attention input x is read as round_bf16(x): x and dout rounded into
//             scratch, weights from a bf16 copy of the registered fp32 master
//   fp32_tf32 a GEMM input x is read as round_tf32(x) (weights rounded on the fly)
// Products and sums stay fp32 (sgemm on the rounded values), outputs are fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace kvt::cpu {

// x as a GEMM of precision p reads it: round_bf16, round_tf32 or x itself (fp32).
float round_input(float x, Precision p);

// dst[r * cols + c] = round_input(src[r * ld + c], p) for r < rows, c < cols (dst contiguous,
// resized to rows * cols); returns dst.data().
const float* round_rows(std::vector<float>& dst, const float* src, int64_t rows, int cols,
                        int64_t ld, Precision p);
// dst[i] = round_input(src[i], p) for i < n (dst resized to n); returns dst.data().
const float* round_flat(std::vector<float>& dst, const float* src, int64_t n, Precision p);

// The low-precision copy of the fp32 master weights [base, base + n) (Ops::set_weights): kept in
// bf16 only, rebuilt by refresh(); between refreshes it keeps the values of the last one.
class WeightCopy {
 public:
  void set(const float* base, size_t n);  // base null or n 0: nothing registered; refreshes
  void set_precision(Precision p);        // refreshes
  Precision precision() const { return p_; }
  void refresh();
  // w[0, n) as the GEMM reads it: the copy when the range lies inside the registered master
  // (bf16), else w rounded into scratch (a weight outside the range, or fp32_tf32), or w (fp32).
  const float* view(const float* w, size_t n, std::vector<float>& scratch) const;

 private:
  const float* base_ = nullptr;
  size_t n_ = 0;
  Precision p_ = Precision::fp32;
  std::vector<float> copy_;
};

// Scratch of the emulated GEMMs and attention (grown on demand, reused across calls).
struct PrecisionScratch {
  std::vector<float> x, d, w;        // GEMM: input, output gradient, weight rounded on the fly
  std::vector<float> q, k, v, o;     // attention: rounded q, k, v, dout
  std::vector<float> dq, dk, dv;     // attention backward: fp32 contributions before rounding
};

}  // namespace kvt::cpu

// kernels/cuda/matmul.h — the matmul ops of the CUDA backend on cuBLASLt (lt_gemm.h) in the
// three precisions, and the bf16 copy of the fp32 master weights (Ops::set_weights).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lt_gemm.h"
#include "kernels/ops.h"

namespace kvt::cuda {

class Matmul {
 public:
  explicit Matmul(cudaStream_t stream) : stream_(stream), lt_(stream) {}
  void set_precision(Precision p);
  // Registers [base, base + n); in bf16 allocates the copy and fills it (refresh).
  void set_weights(const float* base, size_t n);
  void refresh_weights();  // copy[i] = bf16(base[i]); a no-op outside bf16 or with no weights
  // out[N, OC] = x[N, IC] W[OC, IC]^T
  void forward(float* out, const float* x, const float* w, int64_t N, int IC, int OC);
  // dx[N, IC] (= or +=) dout W;  dw[OC, IC] += dout^T x   (either may be null)
  void backward(float* dx, float* dw, const float* dout, const float* x, const float* w, int64_t N,
                int IC, int OC, bool accumulate_dx);

 private:
  // The GEMM operand for `count` floats at p: p itself (fp32, tf32), else bf16 bits: the weight
  // copy when [p, p + count) lies in the registered range, else p converted into `scratch`.
  const void* operand(const float* p, size_t count, Scratch& scratch, bool is_weight);

  cudaStream_t stream_;
  LtGemm lt_;
  Precision precision_ = Precision::fp32;
  const float* base_ = nullptr;
  size_t n_ = 0;
  DeviceMemory copy_;                 // bf16 bits of [base_, base_ + n_) (bf16 mode only)
  Scratch x_bf16_, w_bf16_, d_bf16_;  // converted activations, outside weights, output grads
};

}  // namespace kvt::cuda

// Token embedding, forward and backward.
#include "kernels/cpu/cpu_ops.h"

namespace kvt {

// out[n, :] = wte[tokens[n], :]
void CpuOps::embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N,
                               int C) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* row = wte + static_cast<int64_t>(tokens[n]) * C;
    float* o = out + n * C;
    for (int c = 0; c < C; c++) o[c] = row[c];
  }
}

// dwte[tokens[n], :] += dout[n, :]. Threads own column blocks and walk n in order, so rows of a
// repeated token are summed in increasing n whatever the thread count.
void CpuOps::embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N,
                                int C, int /*V*/) {
  constexpr int kCols = 64;
  const int nblocks = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < nblocks; blk++) {
    const int c0 = blk * kCols, c1 = c0 + kCols < C ? c0 + kCols : C;
    for (int64_t n = 0; n < N; n++) {
      float* d = dwte + static_cast<int64_t>(tokens[n]) * C;
      const float* g = dout + n * C;
      for (int c = c0; c < c1; c++) d[c] += g[c];
    }
  }
}

}  // namespace kvt

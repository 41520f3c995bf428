// Reductions, scaling and the optimizer updates (AdamW, SGD with momentum).
#include <cmath>
#include <vector>

#include "kernels/common/math.h"
#include "kernels/cpu/cpu_ops.h"

namespace kvt {

namespace {
// Sums f(x[i]) in double over fixed chunks, then the chunk sums in order: the result does not
// depend on the thread count.
template <typename F>
double chunked_sum(const float* x, int64_t n, F f) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(nchunks), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < nchunks; c++) {
    const int64_t i1 = (c + 1) * kChunk < n ? (c + 1) * kChunk : n;
    double s = 0.0;
    for (int64_t i = c * kChunk; i < i1; i++) s += f(x[i]);
    part[c] = s;
  }
  double total = 0.0;
  for (double p : part) total += p;
  return total;
}
}  // namespace

double CpuOps::sum_squares(const float* x, int64_t n) {
  return chunked_sum(x, n, [](float a) { return static_cast<double>(a) * a; });
}

double CpuOps::sum(const float* x, int64_t n) {
  return chunked_sum(x, n, [](float a) { return static_cast<double>(a); });
}

void CpuOps::scale(float* x, float s, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) x[i] *= s;
}

void CpuOps::adamw_update(float* p, const float* grad, float* m, float* v, int64_t n, float lr,
                          float beta1, float beta2, float eps, float weight_decay, int64_t t,
                          float grad_scale) {
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), t));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), t));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++)
    math::adamw_element(&p[i], grad[i] * grad_scale, &m[i], &v[i], lr, beta1, beta2, eps,
                        weight_decay, bc1, bc2);
}

void CpuOps::sgd_update(float* p, const float* grad, float* buf, int64_t n, float lr,
                        float momentum, float weight_decay, float grad_scale) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++)
    math::sgd_element(&p[i], grad[i] * grad_scale, &buf[i], lr, momentum, weight_decay);
}

}  // namespace kvt

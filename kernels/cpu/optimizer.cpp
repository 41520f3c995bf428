// Reductions, scaling and the optimizer updates (AdamW, SGD with momentum), in AVX-512 / AVX2
// variants (kernels/cpu/isa_dispatch.h).
#include <cmath>
#include <vector>

#include "kernels/common/math.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa_dispatch.h"

namespace kvt {

namespace {

// sum_i f(x_i) over [i0, i1), f(a) = a^2 (Square) or a, in double: 8 fixed lanes combined in a
// fixed order, so it vectorises (one chain of dependent double adds runs at one add per 4 cycles)
// and both ISAs give the same bits.
template <bool Square>
KVT_ALWAYS_INLINE double lanes_sum(const float* x, int64_t i0, int64_t i1) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8)
    for (int l = 0; l < 8; l++) {
      const double a = x[i + l];
      s[l] += Square ? a * a : a;
    }
  double r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < i1; i++) {
    const double a = x[i];
    r += Square ? a * a : a;
  }
  return r;
}

// Sums over fixed chunks of kChunk elements, then the chunk sums in order: the result does not
// depend on the thread count.
constexpr int64_t kChunk = 1 << 14;
int64_t n_chunks(int64_t n) { return (n + kChunk - 1) / kChunk; }

KVT_ISA_VARIANTS(chunk_sums_sq, (double* part, const float* x, int64_t n), {
  KVT_OMP_FOR
  for (int64_t c = 0; c < n_chunks(n); c++)
    part[c] = lanes_sum<true>(x, c * kChunk, (c + 1) * kChunk < n ? (c + 1) * kChunk : n);
})

KVT_ISA_VARIANTS(chunk_sums, (double* part, const float* x, int64_t n), {
  KVT_OMP_FOR
  for (int64_t c = 0; c < n_chunks(n); c++)
    part[c] = lanes_sum<false>(x, c * kChunk, (c + 1) * kChunk < n ? (c + 1) * kChunk : n);
})

double total(const std::vector<double>& part) {
  double t = 0.0;
  for (double p : part) t += p;
  return t;
}

KVT_ISA_VARIANTS(scale_k, (float* x, float s, int64_t n), {
  KVT_OMP_FOR
  for (int64_t i = 0; i < n; i++) x[i] *= s;
})

KVT_ISA_VARIANTS(adamw_k, (float* p, const float* grad, float* m, float* v, int64_t n, float lr,
                           float beta1, float beta2, float eps, float weight_decay, float bc1,
                           float bc2, float grad_scale), {
  KVT_OMP_FOR
  for (int64_t i = 0; i < n; i++)
    math::adamw_element(&p[i], grad[i] * grad_scale, &m[i], &v[i], lr, beta1, beta2, eps,
                        weight_decay, bc1, bc2);
})

KVT_ISA_VARIANTS(sgd_k, (float* p, const float* grad, float* buf, int64_t n, float lr,
                         float momentum, float weight_decay, float grad_scale), {
  KVT_OMP_FOR
  for (int64_t i = 0; i < n; i++)
    math::sgd_element(&p[i], grad[i] * grad_scale, &buf[i], lr, momentum, weight_decay);
})

}  // namespace

double CpuOps::sum_squares(const float* x, int64_t n) {
  std::vector<double> part(static_cast<size_t>(n_chunks(n)), 0.0);
  KVT_ISA_CALL(chunk_sums_sq, part.data(), x, n);
  return total(part);
}

double CpuOps::sum(const float* x, int64_t n) {
  std::vector<double> part(static_cast<size_t>(n_chunks(n)), 0.0);
  KVT_ISA_CALL(chunk_sums, part.data(), x, n);
  return total(part);
}

void CpuOps::accumulate_sum(float* acc, const float* x, int64_t n, float scale) {
  acc[0] += static_cast<float>(static_cast<double>(scale) * sum(x, n));
}

void CpuOps::scale(float* x, float s, int64_t n) { KVT_ISA_CALL(scale_k, x, s, n); }

void CpuOps::adamw_update(float* p, const float* grad, float* m, float* v, int64_t n, float lr,
                          float beta1, float beta2, float eps, float weight_decay, int64_t t,
                          float grad_scale) {
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), t));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), t));
  KVT_ISA_CALL(adamw_k, p, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2,
               grad_scale);
}

void CpuOps::sgd_update(float* p, const float* grad, float* buf, int64_t n, float lr,
                        float momentum, float weight_decay, float grad_scale) {
  KVT_ISA_CALL(sgd_k, p, grad, buf, n, lr, momentum, weight_decay, grad_scale);
}

}  // namespace kvt

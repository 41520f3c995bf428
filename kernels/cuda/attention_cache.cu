// kernels/cuda/attention_cache.cu — attention of new queries over a KV cache (ops.h,
// attention_cache_forward): one warp per (query t, head h), an online softmax over the slots of
// KV head g = h / G in increasing slot order (deterministic):
//   for each slot i with 0 <= pos_i <= p0 + t:  s = q·K_i / sqrt(D)  (warp butterfly sum)
//     m' = max(m, s);  l = l e^(m - m') + e^(s - m');  acc = acc e^(m - m') + e^(s - m') V_i
//   out = acc / l  (zero when no slot qualifies)
// The weights go through math::softmax_weight, the helper the CPU kernels use.
#include <cmath>
#include <string>

#include "kernels/common/math.h"
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

constexpr int kMaxPerLane = 8;  // D <= 32 * 8 = 256

__global__ void attention_cache_kernel(float* out, const float* q, const float* k,
                                       const float* v, const int32_t* pos, CacheAttnShape s,
                                       float scale) {
  const int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x;
  const int G = s.H / s.Hkv, g = h / G, D = s.D, p = s.p0 + t;
  const float* qr = q + int64_t(t) * s.ldq + int64_t(h) * D;
  const float* kg = k + g * s.head_stride;
  const float* vg = v + g * s.head_stride;
  const int32_t* pg = pos + int64_t(g) * s.S;
  float qv[kMaxPerLane], acc[kMaxPerLane];
  for (int j = 0; j < kMaxPerLane; j++) {
    const int d = lane + 32 * j;
    qv[j] = d < D ? qr[d] : 0.0f;
    acc[j] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int i = 0; i < s.S; i++) {
    const int pi = pg[i];
    if (pi < 0 || pi > p) continue;
    const float* kr = kg + int64_t(i) * s.ld;
    float dot = 0.0f;
    for (int j = 0; j < kMaxPerLane; j++) {
      const int d = lane + 32 * j;
      if (d < D) dot += qv[j] * kr[d];
    }
    const float sc = warp_sum(dot) * scale;
    const float mn = fmaxf(m, sc);
    const float old = m == -INFINITY ? 0.0f : math::softmax_weight(m, mn);
    const float w = math::softmax_weight(sc, mn);
    l = l * old + w;
    const float* vr = vg + int64_t(i) * s.ld;
    for (int j = 0; j < kMaxPerLane; j++) {
      const int d = lane + 32 * j;
      if (d < D) acc[j] = acc[j] * old + w * vr[d];
    }
    m = mn;
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  float* o = out + int64_t(t) * s.H * D + int64_t(h) * D;
  for (int j = 0; j < kMaxPerLane; j++) {
    const int d = lane + 32 * j;
    if (d < D) o[d] = acc[j] * inv;
  }
}

}  // namespace

void attention_cache_forward(cudaStream_t stream, float* out, const float* q, const float* k,
                             const float* v, const int32_t* pos, const CacheAttnShape& s) {
  if (s.H <= 0 || s.Hkv <= 0 || s.H % s.Hkv != 0 || s.D <= 0 || s.D > 32 * kMaxPerLane)
    throw std::runtime_error("attention_cache_forward: unsupported shape (H=" +
                             std::to_string(s.H) + ", Hkv=" + std::to_string(s.Hkv) +
                             ", D=" + std::to_string(s.D) + "; D at most " +
                             std::to_string(32 * kMaxPerLane) + ")");
  if (s.n <= 0) return;
  const float scale = 1.0f / sqrtf(static_cast<float>(s.D));
  attention_cache_kernel<<<dim3(s.n, s.H), 32, 0, stream>>>(out, q, k, v, pos, s, scale);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvt::cuda

namespace kvt::cuda {
// Placeholder until the kernel lands (ops.h, attention_cache_score).
void attention_cache_score(cudaStream_t, float*, const float*, const float*, const int32_t*,
                           const CacheAttnShape&, int, int, bool) {
  throw std::runtime_error("attention_cache_score: not implemented on CUDA yet");
}
}  // namespace kvt::cuda

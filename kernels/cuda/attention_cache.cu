// kernels/cuda/attention_cache.cu — attention of new queries over a KV cache (ops.h,
// attention_cache_forward): one warp per (query t, head h), an online softmax over the slots of
// KV head g = h / G in increasing slot order (deterministic):
//   for each slot i with 0 <= pos_i <= p0 + t:  s = q·K_i / sqrt(D)  (warp butterfly sum)
//     m' = max(m, s);  l = l e^(m - m') + e^(s - m');  acc = acc e^(m - m') + e^(s - m') V_i
//   out = acc / l  (zero when no slot qualifies)
//
// attention_cache_score (ops.h): two kernels, the probabilities recomputed rather than stored.
//   1. one block per (query row t in [t0, t1), head h): over the visible slots of g (threads
//      striding the slots), m = max of s_i (block max), then z = sum e^(s_i - m) (block sum);
//      saves m and 1/z (1/z = 0 when the row sees nothing).
//   2. one thread per (KV head g, slot i): for t in [t0, t1), then h in g, in that order,
//      p = e^(s_i - m) (1/z) over the rows that see the slot; out = max of p, or their sum
//      (0 for a slot no row sees; every element written).
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

// q[t,h]·K_i / sqrt(D), summed in increasing d (both score kernels call this one function).
__device__ __forceinline__ float cache_score(const float* qr, const float* kr, int D, float scale) {
  float dot = 0.0f;
  for (int d = 0; d < D; d++) dot += qr[d] * kr[d];
  return dot * scale;
}

// Kernel 1: grid (t1 - t0, H), blockDim kBlock. stats[2 r] = m, stats[2 r + 1] = 1/z for row
// r = (t - t0) H + h.
__global__ void cache_score_stats_kernel(float* stats, const float* q, const float* k,
                                         const int32_t* pos, CacheAttnShape s, int t0,
                                         float scale) {
  __shared__ float red[32];
  const int t = t0 + blockIdx.x, h = blockIdx.y;
  const int G = s.H / s.Hkv, g = h / G, D = s.D, p = s.p0 + t;
  const float* qr = q + int64_t(t) * s.ldq + int64_t(h) * D;
  const float* kg = k + g * s.head_stride;
  const int32_t* pg = pos + int64_t(g) * s.S;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < s.S; i += blockDim.x) {
    const int pi = pg[i];
    if (pi < 0 || pi > p) continue;
    m = fmaxf(m, cache_score(qr, kg + int64_t(i) * s.ld, D, scale));
  }
  m = block_max(m, red);
  float* st = stats + 2 * (int64_t(blockIdx.x) * s.H + h);
  if (m == -INFINITY) {  // the row sees no slot (the same branch for the whole block)
    if (threadIdx.x == 0) st[0] = m, st[1] = 0.0f;
    return;
  }
  float z = 0.0f;
  for (int i = threadIdx.x; i < s.S; i += blockDim.x) {
    const int pi = pg[i];
    if (pi < 0 || pi > p) continue;
    z += math::softmax_weight(cache_score(qr, kg + int64_t(i) * s.ld, D, scale), m);
  }
  z = block_sum(z, red);
  if (threadIdx.x == 0) st[0] = m, st[1] = 1.0f / z;
}

// Kernel 2: one thread per (g, i) (grid-stride), rows in increasing t, then h.
__global__ void cache_score_reduce_kernel(float* out, const float* stats, const float* q,
                                          const float* k, const int32_t* pos, CacheAttnShape s,
                                          int t0, int t1, bool sum, float scale) {
  const int G = s.H / s.Hkv, D = s.D;
  const int64_t total = int64_t(s.Hkv) * s.S;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int g = int(e / s.S), i = int(e % s.S);
    const int pi = pos[e];
    const float* kr = k + g * s.head_stride + int64_t(i) * s.ld;
    float acc = 0.0f;
    for (int t = t0; t < t1 && pi >= 0; t++) {
      if (pi > s.p0 + t) continue;  // a slot in the future of query t
      for (int h = g * G; h < (g + 1) * G; h++) {
        const float* st = stats + 2 * (int64_t(t - t0) * s.H + h);
        const float pr =
            math::softmax_weight(cache_score(q + int64_t(t) * s.ldq + int64_t(h) * D, kr, D, scale),
                                 st[0]) * st[1];
        acc = sum ? acc + pr : fmaxf(acc, pr);
      }
    }
    out[e] = acc;
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

void attention_cache_score(cudaStream_t stream, Scratch& scratch, float* out, const float* q,
                           const float* k, const int32_t* pos, const CacheAttnShape& s, int t0,
                           int t1, bool sum) {
  if (s.H <= 0 || s.Hkv <= 0 || s.H % s.Hkv != 0 || s.D <= 0 || s.S < 0)
    throw std::runtime_error("attention_cache_score: unsupported shape (H=" +
                             std::to_string(s.H) + ", Hkv=" + std::to_string(s.Hkv) +
                             ", D=" + std::to_string(s.D) + ", S=" + std::to_string(s.S) + ")");
  t0 = t0 > 0 ? t0 : 0;
  t1 = t1 < s.n ? t1 : s.n;
  const int64_t total = int64_t(s.Hkv) * s.S;
  if (total == 0) return;
  const float scale = 1.0f / sqrtf(static_cast<float>(s.D));
  float* stats = nullptr;
  if (t0 < t1) {  // (else no rows: kernel 2 writes zeros)
    stats = static_cast<float*>(
        scratch.get(2 * sizeof(float) * size_t(t1 - t0) * size_t(s.H), stream));
    cache_score_stats_kernel<<<dim3(t1 - t0, s.H), kBlock, 0, stream>>>(stats, q, k, pos, s, t0,
                                                                        scale);
    CUDA_CHECK(cudaGetLastError());
  }
  cache_score_reduce_kernel<<<grid_for(total), kBlock, 0, stream>>>(out, stats, q, k, pos, s, t0,
                                                                    t1, sum, scale);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvt::cuda

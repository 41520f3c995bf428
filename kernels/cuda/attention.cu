// kernels/cuda/attention.cu — causal attention with GQA (query head h reads KV head g = h / G,
// G = H / Hkv); q/k/v rows strided by ldq/ldk/ldv, out contiguous [N, H*D], att [B,H,T,T].
//   forward:  att[b,h,t,s] = softmax_{s<=t}(q[b,t,h]·k[b,s,g] / sqrt(D))   (s > t: 0)
//             out[b,t,h]   = sum_{s<=t} att[b,h,t,s] v[b,s,g]
//   backward: datt[t,s] = dout[t]·v[s];  dpre[t,s] = att[t,s] (datt[t,s] - sum_s' att datt)
//             dq[t]  = sum_s dpre[t,s] k[s] / sqrt(D)                        (overwritten)
//             dk[s] += sum_{h in g} sum_{t>=s} dpre[h,t,s] q[t,h] / sqrt(D)  (h increasing)
//             dv[s] += sum_{h in g} sum_{t>=s} att[h,t,s] dout[t,h]
// Straightforward kernels: one block per (b, h, t) row for scores/softmax/out and for
// dpre/dq; one thread per (b, g, s, d) for dk/dv, which owns its output element and loops h then
// t in increasing order (deterministic, no atomics). dpre goes through a scratch buffer, filled
// for a range of (b, g) pairs at a time to bound its size.
#include <cmath>
#include <string>

#include "kernels/common/math.h"
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

constexpr int kAttnBlock = 128;                       // 4 warps
constexpr size_t kDpreBudget = size_t(256) << 20;     // bytes of dpre scratch per chunk

// Lets `kernel` use `bytes` of dynamic shared memory next to its static shared memory
// (attributes.sharedSizeBytes): a block may hold static + dynamic <= 48 KiB by default, and up to
// the device's opt-in limit once the dynamic size is raised.
template <typename K>
void allow_shared(K kernel, size_t bytes, const char* what) {
  cudaFuncAttributes attr{};
  CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  const size_t total = bytes + attr.sharedSizeBytes;
  if (total <= 48 * 1024) return;
  int dev = 0, max_optin = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (total > static_cast<size_t>(max_optin))
    throw std::runtime_error(std::string(what) + ": sequence too long for this kernel (needs " +
                             std::to_string(bytes) + " + " + std::to_string(attr.sharedSizeBytes) +
                             " static bytes of shared memory, device allows " +
                             std::to_string(max_optin) + ")");
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(bytes)));
}

void check_shape(const AttnShape& s, const char* what) {
  if (s.B < 0 || s.T < 0 || s.H <= 0 || s.Hkv <= 0 || s.D <= 0 || s.H % s.Hkv != 0)
    throw std::runtime_error(std::string(what) + ": bad shape (H=" + std::to_string(s.H) +
                             ", Hkv=" + std::to_string(s.Hkv) + ", D=" + std::to_string(s.D) +
                             "; H must be a positive multiple of Hkv)");
}

// p[s] = scale * (a_row · b[s]) for s in [0, t], a warp per s; a_row in shared memory.
__device__ void row_dots(float* p, const float* a_row, const float* b, int64_t ldb, int t, int D,
                         float scale) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int s = warp; s <= t; s += nwarps) {
    const float* br = b + s * ldb;
    float acc = 0.0f;
    for (int d = lane; d < D; d += 32) acc += a_row[d] * br[d];
    acc = warp_sum(acc);
    if (lane == 0) p[s] = acc * scale;
  }
}

// blockIdx.x = (b H + h) T + t. Dynamic shared memory: q row (D) | probabilities (T).
__global__ void attention_forward_kernel(float* out, float* att, const float* q, const float* k,
                                         const float* v, AttnShape s, float scale) {
  extern __shared__ float sm[];
  __shared__ float red[32];
  const int D = s.D, T = s.T, H = s.H, G = s.H / s.Hkv;
  float* qs = sm;
  float* p = sm + D;
  const int64_t row = blockIdx.x;
  const int t = static_cast<int>(row % T);
  const int64_t bh = row / T;
  const int h = static_cast<int>(bh % H);
  const int64_t b = bh / H;
  const int g = h / G;

  const float* qr = q + (b * T + t) * s.ldq + int64_t(h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = qr[d];
  __syncthreads();
  row_dots(p, qs, k + b * T * s.ldk + int64_t(g) * D, s.ldk, t, D, scale);
  __syncthreads();

  float m = -INFINITY;
  for (int j = threadIdx.x; j <= t; j += blockDim.x) m = fmaxf(m, p[j]);
  m = block_max(m, red);
  float sum = 0.0f;
  for (int j = threadIdx.x; j <= t; j += blockDim.x) {
    const float e = math::softmax_weight(p[j], m);
    p[j] = e;
    sum += e;
  }
  sum = block_sum(sum, red);  // syncs: every p[j] is written
  const float inv = 1.0f / sum;
  float* arow = att + row * T;
  for (int j = threadIdx.x; j < T; j += blockDim.x) {
    const float a = j <= t ? p[j] * inv : 0.0f;
    if (j <= t) p[j] = a;
    arow[j] = a;
  }
  __syncthreads();

  const float* vb = v + b * T * s.ldv + int64_t(g) * D;
  float* orow = out + (b * T + t) * (int64_t(H) * D) + int64_t(h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j <= t; ++j) acc += p[j] * vb[j * int64_t(s.ldv) + d];
    orow[d] = acc;
  }
}

// Rows r = row0 + blockIdx.x, r = (b H + h) T + t. Writes dpre[r - row0, s] (s <= t) and dq[b,t,h].
// Dynamic shared memory: dout row (D) | datt, then dpre (T).
__global__ void attention_dpre_dq_kernel(float* dq, float* dpre, const float* dout,
                                         const float* att, const float* k, const float* v,
                                         AttnShape s, float scale, int64_t row0) {
  extern __shared__ float sm[];
  __shared__ float red[32];
  const int D = s.D, T = s.T, H = s.H, G = s.H / s.Hkv;
  float* ds = sm;
  float* p = sm + D;
  const int64_t row = row0 + blockIdx.x;
  const int t = static_cast<int>(row % T);
  const int64_t bh = row / T;
  const int h = static_cast<int>(bh % H);
  const int64_t b = bh / H;
  const int g = h / G;

  const float* dr = dout + (b * T + t) * (int64_t(H) * D) + int64_t(h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) ds[d] = dr[d];
  __syncthreads();
  row_dots(p, ds, v + b * T * s.ldv + int64_t(g) * D, s.ldv, t, D, 1.0f);  // datt
  __syncthreads();

  const float* arow = att + row * T;
  float dot = 0.0f;
  for (int j = threadIdx.x; j <= t; j += blockDim.x) dot += arow[j] * p[j];
  dot = block_sum(dot, red);
  float* wrow = dpre + int64_t(blockIdx.x) * T;
  for (int j = threadIdx.x; j <= t; j += blockDim.x) {
    const float dp = arow[j] * (p[j] - dot);
    p[j] = dp;
    wrow[j] = dp;
  }
  __syncthreads();

  const float* kb = k + b * T * s.ldk + int64_t(g) * D;
  float* dqr = dq + (b * T + t) * s.ldq + int64_t(h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j <= t; ++j) acc += p[j] * kb[j * int64_t(s.ldk) + d];
    dqr[d] = acc * scale;
  }
}

// One thread per (pair, s, d) for (b, g) pairs pair0 .. pair0 + npairs - 1 (pair = b Hkv + g).
// dpre holds rows of those pairs: index ((pl G + j) T + t) T + s, pl = pair - pair0.
__global__ void attention_dkdv_kernel(float* dk, float* dv, const float* dpre, const float* dout,
                                      const float* att, const float* q, AttnShape s, float scale,
                                      int64_t pair0, int64_t npairs) {
  const int D = s.D, T = s.T, H = s.H, G = s.H / s.Hkv;
  const int64_t total = npairs * T * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(i % D);
    const int sp = static_cast<int>((i / D) % T);
    const int64_t pl = i / (int64_t(D) * T);
    const int64_t pair = pair0 + pl;
    const int64_t b = pair / s.Hkv;
    const int g = static_cast<int>(pair % s.Hkv);
    float acc_k = 0.0f, acc_v = 0.0f;
    for (int j = 0; j < G; ++j) {
      const int h = g * G + j;
      const float* arow = att + ((b * H + h) * T) * int64_t(T) + sp;  // att[b,h,t=0,sp]
      const float* prow = dpre + ((pl * G + j) * T) * int64_t(T) + sp;
      for (int t = sp; t < T; ++t) {
        const int64_t tok = b * T + t;
        acc_v += arow[int64_t(t) * T] * dout[tok * (int64_t(H) * D) + int64_t(h) * D + d];
        acc_k += prow[int64_t(t) * T] * q[tok * s.ldq + int64_t(h) * D + d];
      }
    }
    const int64_t tok = b * T + sp;
    dv[tok * s.ldv + int64_t(g) * D + d] += acc_v;
    dk[tok * s.ldk + int64_t(g) * D + d] += acc_k * scale;
  }
}

}  // namespace

void attention_forward(cudaStream_t stream, float* out, float* att, const float* q,
                       const float* k, const float* v, const AttnShape& s) {
  check_shape(s, "attention_forward");
  const int64_t rows = int64_t(s.B) * s.H * s.T;
  if (rows == 0) return;
  const size_t shared = sizeof(float) * (size_t(s.D) + s.T);
  allow_shared(attention_forward_kernel, shared, "attention_forward");
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.D));
  attention_forward_kernel<<<to_int(rows, "attention rows"), kAttnBlock, shared, stream>>>(
      out, att, q, k, v, s, scale);
  CUDA_CHECK_LAUNCH();
}

void attention_backward(cudaStream_t stream, Scratch& scratch, float* dq, float* dk, float* dv,
                        const float* dout, const float* att, const float* q, const float* k,
                        const float* v, const AttnShape& s) {
  check_shape(s, "attention_backward");
  const int G = s.H / s.Hkv;
  const int64_t pairs = int64_t(s.B) * s.Hkv;
  if (pairs == 0 || s.T == 0) return;
  const size_t shared = sizeof(float) * (size_t(s.D) + s.T);
  allow_shared(attention_dpre_dq_kernel, shared, "attention_backward");
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.D));

  const size_t pair_bytes = sizeof(float) * size_t(G) * s.T * s.T;  // dpre of one (b, g)
  int64_t chunk = static_cast<int64_t>(kDpreBudget / pair_bytes);
  if (chunk < 1) chunk = 1;
  if (chunk > pairs) chunk = pairs;
  auto* dpre = static_cast<float*>(scratch.get(pair_bytes * chunk, stream));

  for (int64_t p0 = 0; p0 < pairs; p0 += chunk) {
    const int64_t np = p0 + chunk <= pairs ? chunk : pairs - p0;
    const int64_t row0 = p0 * G * s.T, rows = np * G * s.T;
    attention_dpre_dq_kernel<<<to_int(rows, "attention rows"), kAttnBlock, shared, stream>>>(
        dq, dpre, dout, att, k, v, s, scale, row0);
    CUDA_CHECK_LAUNCH();
    attention_dkdv_kernel<<<grid_for(np * s.T * s.D), kBlock, 0, stream>>>(
        dk, dv, dpre, dout, att, q, s, scale, p0, np);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace kvt::cuda

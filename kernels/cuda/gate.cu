// kernels/cuda/gate.cu — Fast KVzip gate ops (ops.h, docs/design.md, "Fast KVzip gates"), the math of
// kernels/common/gate_math.h:
//   bias_add:    x[n,c] += bias[c];  dbias[c] += sum_n dout[n,c]
//   gate_score:  score[n,h] = mean_g p_g (one thread per (n, h)); the backward writes the logit
//                gradients dl [N, Hkv, G, S+1] to scratch (one thread per (n, h, g)), then dq and
//                dk (one thread per (n, h, d)), then dsinks and dbias
//   kvzip_score: out[b,g,p] = max over t in [t0,t1) and the group's heads of att[b,h,t,p]
//                (one thread per (b, g, p))
// Parameter gradients are deterministic and summed in the CPU backend's order: one thread per
// (row chunk, parameter) sums its chunk's rows in order into scratch, then one thread per
// parameter adds the chunks in order. No atomics.
#include "kernels/common/gate_math.h"
#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

int64_t gate_chunks(int64_t N) {
  return (N + math::kGateRowsPerChunk - 1) / math::kGateRowsPerChunk;
}

__device__ __forceinline__ int64_t chunk_end(int64_t ch, int64_t N) {
  const int64_t n1 = (ch + 1) * math::kGateRowsPerChunk;
  return n1 < N ? n1 : N;
}

// dst[e] += sum over chunks (in order) of partial[ch * stride + e], e in [0, n).
__global__ void add_chunk_partials_kernel(float* dst, const float* partial, int64_t nchunks,
                                          int64_t stride, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int64_t ch = 0; ch < nchunks; ch++) acc += partial[ch * stride + e];
    dst[e] += acc;
  }
}

void add_chunk_partials(cudaStream_t stream, float* dst, const float* partial, int64_t nchunks,
                        int64_t stride, int64_t n) {
  add_chunk_partials_kernel<<<grid_for(n), kBlock, 0, stream>>>(dst, partial, nchunks, stride, n);
  CUDA_CHECK_LAUNCH();
}

__global__ void bias_add_forward_kernel(float* x, const float* bias, int64_t N, int C) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < N * C;
       e += int64_t(gridDim.x) * blockDim.x)
    x[e] += bias[e % C];
}

// partial[chunk][c]: thread per (chunk, c).
__global__ void bias_add_partial_kernel(float* partial, const float* dout, int64_t N, int C,
                                        int64_t nchunks) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < nchunks * C;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ch = e / C;
    const int c = static_cast<int>(e - ch * C);
    float acc = 0.0f;
    for (int64_t n = ch * math::kGateRowsPerChunk, n1 = chunk_end(ch, N); n < n1; n++)
      acc += dout[n * C + c];
    partial[e] = acc;
  }
}

__global__ void gate_score_forward_kernel(float* score, const float* q, const float* k,
                                          const float* sinks, const float* bias, int64_t N,
                                          int Hkv, int G, int Dg, int S) {
  for (int64_t nh = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; nh < N * Hkv;
       nh += int64_t(gridDim.x) * blockDim.x) {
    const int h = static_cast<int>(nh % Hkv);
    score[nh] = math::gate_score(q + nh * G * Dg, k + nh * Dg, sinks + int64_t(h) * S * Dg,
                                 bias + int64_t(h) * G, G, Dg, S);
  }
}

// dl[n, h, g, 0..S]: thread per (n, h, g).
__global__ void gate_dlogits_kernel(float* dl, const float* dscore, const float* q,
                                    const float* k, const float* sinks, const float* bias,
                                    int64_t N, int Hkv, int G, int Dg, int S) {
  const float scale = math::gate_scale(Dg);
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < N * Hkv * G;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t nh = e / G;
    const int g = static_cast<int>(e - nh * G), h = static_cast<int>(nh % Hkv);
    const float dscore_g = dscore[nh] / static_cast<float>(G);
    math::gate_dlogits(dl + e * (S + 1), dscore_g, q + e * Dg, k + nh * Dg,
                       sinks + int64_t(h) * S * Dg, bias[h * G + g], Dg, S, scale);
  }
}

// dq[n, h, g, d] for every g and dk[n, h, d] (overwritten): thread per (n, h, d).
__global__ void gate_dqk_kernel(float* dq, float* dk, const float* dl, const float* q,
                                const float* k, const float* sinks, int64_t N, int Hkv, int G,
                                int Dg, int S) {
  const float scale = math::gate_scale(Dg);
  const int L = S + 1;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < N * Hkv * Dg;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t nh = e / Dg;
    const int d = static_cast<int>(e - nh * Dg), h = static_cast<int>(nh % Hkv);
    const float* dlh = dl + nh * G * L;
    const float* sh = sinks + int64_t(h) * S * Dg;
    const float kd = k[e];
    for (int g = 0; g < G; g++)
      dq[(nh * G + g) * Dg + d] = math::gate_dq(dlh[g * L], dlh + g * L + 1, kd, sh + d, Dg, S, scale);
    dk[e] = math::gate_sum_over_g(dlh, L, q + nh * G * Dg + d, G, Dg) * scale;
  }
}

// partial[chunk][sinks (h, s, d) | bias (h, g)]: thread per (chunk, parameter).
__global__ void gate_param_partial_kernel(float* partial, const float* dl, const float* q,
                                          int64_t N, int Hkv, int G, int Dg, int S,
                                          int64_t nchunks) {
  const float scale = math::gate_scale(Dg);
  const int L = S + 1;
  const int64_t SD = int64_t(Hkv) * S * Dg, P = SD + int64_t(Hkv) * G;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < nchunks * P;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ch = e / P, i = e - ch * P;
    const int64_t n0 = ch * math::kGateRowsPerChunk, n1 = chunk_end(ch, N);
    float acc = 0.0f;
    if (i < SD) {
      const int h = static_cast<int>(i / (int64_t(S) * Dg));
      const int sd = static_cast<int>(i - int64_t(h) * S * Dg), s = sd / Dg, d = sd - s * Dg;
      for (int64_t n = n0; n < n1; n++) {
        const int64_t nh = n * Hkv + h;
        acc += math::gate_sum_over_g(dl + nh * G * L + 1 + s, L, q + nh * G * Dg + d, G, Dg) * scale;
      }
    } else {
      const int hg = static_cast<int>(i - SD), h = hg / G, g = hg - h * G;
      for (int64_t n = n0; n < n1; n++) acc += dl[((n * Hkv + h) * G + g) * L];
    }
    partial[e] = acc;
  }
}

__global__ void kvzip_score_kernel(float* out, const float* att, int B, int H, int Hg, int T,
                                   int t0, int t1, int P) {
  const int hpg = H / Hg;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < int64_t(B) * Hg * P;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t bg = e / P;
    const int p = static_cast<int>(e - bg * P), g = static_cast<int>(bg % Hg);
    const int b = static_cast<int>(bg / Hg);
    out[e] = math::kvzip_max(att, b, H, T, g * hpg, (g + 1) * hpg, t0, t1, p);
  }
}

}  // namespace

void bias_add_forward(cudaStream_t stream, float* x, const float* bias, int64_t N, int C) {
  const int64_t n = N * C;
  if (n <= 0) return;
  bias_add_forward_kernel<<<grid_for(n), kBlock, 0, stream>>>(x, bias, N, C);
  CUDA_CHECK_LAUNCH();
}

void bias_add_backward(cudaStream_t stream, Scratch& scratch, float* dbias, const float* dout,
                       int64_t N, int C) {
  if (N <= 0 || C <= 0) return;
  const int64_t nchunks = gate_chunks(N);
  float* partial = static_cast<float*>(scratch.get(nchunks * C * sizeof(float), stream));
  bias_add_partial_kernel<<<grid_for(nchunks * C), kBlock, 0, stream>>>(partial, dout, N, C,
                                                                         nchunks);
  CUDA_CHECK_LAUNCH();
  add_chunk_partials(stream, dbias, partial, nchunks, C, C);
}

void gate_score_forward(cudaStream_t stream, float* score, const float* q, const float* k,
                        const float* sinks, const float* bias, int64_t N, int Hkv, int G, int Dg,
                        int S) {
  const int64_t n = N * Hkv;
  if (n <= 0) return;
  gate_score_forward_kernel<<<grid_for(n), kBlock, 0, stream>>>(score, q, k, sinks, bias, N, Hkv,
                                                                G, Dg, S);
  CUDA_CHECK_LAUNCH();
}

void gate_score_backward(cudaStream_t stream, Scratch& scratch, float* dq, float* dk,
                         float* dsinks, float* dbias, const float* dscore, const float* q,
                         const float* k, const float* sinks, const float* bias, int64_t N,
                         int Hkv, int G, int Dg, int S) {
  if (N <= 0 || Hkv <= 0 || G <= 0) return;
  const int64_t nhg = N * Hkv * G, n_dl = nhg * (S + 1);
  const int64_t SD = int64_t(Hkv) * S * Dg, P = SD + int64_t(Hkv) * G;
  const int64_t nchunks = gate_chunks(N);
  float* dl = static_cast<float*>(scratch.get((n_dl + nchunks * P) * sizeof(float), stream));
  float* partial = dl + n_dl;
  gate_dlogits_kernel<<<grid_for(nhg), kBlock, 0, stream>>>(dl, dscore, q, k, sinks, bias, N, Hkv,
                                                            G, Dg, S);
  CUDA_CHECK_LAUNCH();
  const int64_t nhd = N * Hkv * Dg;
  gate_dqk_kernel<<<grid_for(nhd), kBlock, 0, stream>>>(dq, dk, dl, q, k, sinks, N, Hkv, G, Dg, S);
  CUDA_CHECK_LAUNCH();
  gate_param_partial_kernel<<<grid_for(nchunks * P), kBlock, 0, stream>>>(partial, dl, q, N, Hkv,
                                                                          G, Dg, S, nchunks);
  CUDA_CHECK_LAUNCH();
  if (SD > 0) add_chunk_partials(stream, dsinks, partial, nchunks, P, SD);
  add_chunk_partials(stream, dbias, partial + SD, nchunks, P, P - SD);
}

void kvzip_score(cudaStream_t stream, float* out, const float* att, int B, int H, int Hg, int T,
                 int t0, int t1, int P) {
  const int64_t n = int64_t(B) * Hg * P;
  if (n <= 0) return;
  kvzip_score_kernel<<<grid_for(n), kBlock, 0, stream>>>(out, att, B, H, Hg, T, t0, t1, P);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvt::cuda

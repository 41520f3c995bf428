// kernels/cuda/launch.cuh — host-side launchers of the CUDA kernels, one group per file. The
// math and the accumulate/overwrite conventions are those of kernels/ops.h; each launcher enqueues
// its kernels on `stream` and returns without waiting (except where it returns a host value).
#pragma once

#include "kernels/cuda/common.cuh"
#include "kernels/ops.h"

namespace kvt::cuda {

// embedding.cu
void embedding_forward(cudaStream_t stream, float* out, const int32_t* tokens, const float* wte,
                       int64_t N, int C);
// Sorts (token, n) pairs on the device (cub radix sort, stable), then one thread per (run of equal
// tokens, channel) adds the run's rows in increasing n: deterministic, no atomics, no host wait.
void embedding_backward(cudaStream_t stream, Scratch& scratch, float* dwte, const float* dout,
                        const int32_t* tokens, int64_t N, int C, int V);

// norm.cu
void rmsnorm_forward(cudaStream_t stream, float* out, float* rstd, const float* x, const float* w,
                     int64_t N, int C, float eps);
void rmsnorm_backward(cudaStream_t stream, Scratch& scratch, float* dx, float* dw,
                      const float* dout, const float* x, const float* w, const float* rstd,
                      int64_t N, int C);

// matmul: the Matmul class (matmul.h, cuBLASLt); flash attention: FlashAttention (sdpa.h).

// convert.cu: bf16 bits (uint16_t) rounded with math::to_bf16.
//   to_bf16:        dst[i] = bf16(src[i])
//   rows_to_bf16:   dst[r*cols + c] = bf16(src[r*lds + c])            (strided -> packed)
//   rows_from_bf16: dst[r*ldd + c] (= or += when accumulate) float(src[r*cols + c])
void to_bf16(cudaStream_t stream, uint16_t* dst, const float* src, int64_t n);
void rows_to_bf16(cudaStream_t stream, uint16_t* dst, const float* src, int64_t lds, int64_t rows,
                  int cols);
void rows_from_bf16(cudaStream_t stream, float* dst, int64_t ldd, const uint16_t* src,
                    int64_t rows, int cols, bool accumulate);

// rope.cu: rotates by +angle (sin_sign = 1, forward) or -angle (sin_sign = -1, backward).
void rope_rotate(cudaStream_t stream, float* x, int ld, int B, int T, int nh, int D, int pos0,
                 const float* cos, const float* sin, float sin_sign);

// attention.cu
void attention_forward(cudaStream_t stream, float* out, float* att, const float* q,
                       const float* k, const float* v, const AttnShape& s);
void attention_backward(cudaStream_t stream, Scratch& scratch, float* dq, float* dk, float* dv,
                        const float* dout, const float* att, const float* q, const float* k,
                        const float* v, const AttnShape& s);

// attention_cache.cu: attention of new queries over a KV cache (one warp per query and head).
void attention_cache_forward(cudaStream_t stream, float* out, const float* q, const float* k,
                             const float* v, const int32_t* pos, const CacheAttnShape& s);
// The rows' softmax max and 1/sum in `scratch` (one block per query row and head), then one
// thread per (KV head, slot) reduces the probabilities in increasing t, then h: deterministic.
void attention_cache_score(cudaStream_t stream, Scratch& scratch, float* out, const float* q,
                           const float* k, const int32_t* pos, const CacheAttnShape& s, int t0,
                           int t1, bool sum);

// kv_fuse.cu (FusedKV); weight gradients reduced through `scratch` in a fixed order.
void kv_fuse_forward(cudaStream_t stream, float* out, int ldo, const float* first, int ld_first,
                     const float* last, int ld_last, const float* w_first, const float* w_last,
                     int64_t N, int Hkv, int D, bool pair_tied);
void kv_fuse_backward(cudaStream_t stream, Scratch& scratch, float* dfirst, float* dlast,
                      float* dw_first, float* dw_last, const float* dout, int ldo,
                      const float* first, int ld_first, const float* last, int ld_last,
                      const float* w_first, const float* w_last, int64_t N, int Hkv, int D,
                      bool pair_tied);

// lrkv.cu (LRKV); dup reduced through `scratch` in a fixed order.
void lrkv_expand_forward(cudaStream_t stream, float* out, int ldo, const float* shared, int lds,
                         const float* lat, int ldl, const float* up, int64_t N, int H, int D,
                         int R);
void lrkv_expand_backward(cudaStream_t stream, Scratch& scratch, float* dshared, int lds,
                          float* dlat, float* dup, const float* dout, int ldo, const float* lat,
                          int ldl, const float* up, int64_t N, int H, int D, int R);

// elementwise.cu
void swiglu_forward(cudaStream_t stream, float* out, const float* gate_up, int64_t N, int F);
void swiglu_backward(cudaStream_t stream, float* dgate_up, const float* dout,
                     const float* gate_up, int64_t N, int F);
void residual_forward(cudaStream_t stream, float* out, const float* a, const float* b, int64_t n);
void residual_backward(cudaStream_t stream, float* da, float* db, const float* dout, int64_t n);
void scale(cudaStream_t stream, float* x, float s, int64_t n);

// loss.cu
void cross_entropy_forward(cudaStream_t stream, float* losses, const float* logits,
                           const int32_t* targets, int64_t N, int V);
void cross_entropy_backward(cudaStream_t stream, float* dlogits, const float* logits,
                            const int32_t* targets, int64_t N, int V, float dloss);

// reduce.cu: sum_i x[i] (or x[i]^2 when `square`) in double, fixed order; waits for the stream.
double reduce_sum(cudaStream_t stream, Scratch& scratch, const float* x, int64_t n, bool square);
// acc[0] += scale * sum x, on the device (no host wait)
void accumulate_sum(cudaStream_t stream, Scratch& scratch, float* acc, const float* x, int64_t n,
                    float scale);

// optimizer.cu: bc1 = 1 - beta1^t, bc2 = 1 - beta2^t (computed on the host in double).
void adamw_update(cudaStream_t stream, float* p, const float* grad, float* m, float* v, int64_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, float bc1,
                  float bc2, float grad_scale);
void sgd_update(cudaStream_t stream, float* p, const float* grad, float* buf, int64_t n, float lr,
                float momentum, float weight_decay, float grad_scale);

}  // namespace kvt::cuda

// kernels/cpu/cpu_ops.h — the CPU backend: the fp32 reference. OpenMP across rows/heads, BLAS
// sgemm for matmuls. Every reduction runs in a fixed order over fixed-size chunks, so results
// do not depend on the OpenMP thread count (only BLAS's own threading can change them).
// set_precision(bf16 | fp32_tf32) emulates the GPU's GEMM and attention input rounding
// (kernels/cpu/precision.h); the default fp32 is the reference and runs none of it.
#pragma once

#include "kernels/cpu/precision.h"
#include "kernels/ops.h"

namespace kvt {

class CpuOps final : public Ops {
 public:
  std::string name() const override { return "cpu"; }

  void* alloc(size_t bytes) override;
  void release(void* p) noexcept override;
  void to_device(void* dst, const void* src, size_t bytes) override;
  void to_host(void* dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void zero(void* p, size_t bytes) override;
  void copy_rows(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
                 int cols) override;
  void synchronize() override {}

  void set_precision(Precision p) override;
  Precision precision() const override { return weights_.precision(); }
  void set_weights(const float* base, size_t n) override;
  void refresh_weights() override;

  void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N,
                         int C) override;
  void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N, int C,
                          int V) override;
  void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int C,
                       float eps) override;
  void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                        const float* rstd, int64_t N, int C) override;
  void matmul_forward(float* out, const float* x, const float* w, int64_t N, int IC,
                      int OC) override;
  void matmul_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                       int64_t N, int IC, int OC, bool accumulate_dx) override;
  void rope_forward(float* x, int ld, int B, int T, int nh, int D, int pos0, const float* cos,
                    const float* sin) override;
  void rope_backward(float* dx, int ld, int B, int T, int nh, int D, int pos0, const float* cos,
                     const float* sin) override;
  void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                         const AttnShape& s) override;
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                          const float* att,
                          const float* q, const float* k, const float* v,
                          const AttnShape& s) override;
  void attention_cache_forward(float* out, const float* q, const float* k, const float* v,
                               const int32_t* pos, const CacheAttnShape& s) override;
  void attention_cache_score(float* out, const float* q, const float* k, const int32_t* pos,
                             const CacheAttnShape& s, int t0, int t1, bool sum) override;
  void kv_fuse_forward(float* out, int ldo, const float* first, int ld_first, const float* last,
                       int ld_last, const float* w_first, const float* w_last, int64_t N, int Hkv,
                       int D, bool pair_tied) override;
  void kv_fuse_backward(float* dfirst, float* dlast, float* dw_first, float* dw_last,
                        const float* dout, int ldo, const float* first, int ld_first,
                        const float* last, int ld_last, const float* w_first,
                        const float* w_last, int64_t N, int Hkv, int D, bool pair_tied) override;
  void lrkv_expand_forward(float* out, int ldo, const float* shared, int lds, const float* lat,
                           int ldl, const float* up, int64_t N, int H, int D, int R) override;
  void lrkv_expand_backward(float* dshared, int lds, float* dlat, float* dup, const float* dout,
                            int ldo, const float* lat, int ldl, const float* up, int64_t N, int H,
                            int D, int R) override;
  void bias_add_forward(float* x, const float* bias, int64_t N, int C) override;
  void bias_add_backward(float* dbias, const float* dout, int64_t N, int C) override;
  void gate_score_forward(float* score, const float* q, const float* k, const float* sinks,
                          const float* bias, int64_t N, int Hkv, int G, int Dg, int S) override;
  void gate_score_backward(float* dq, float* dk, float* dsinks, float* dbias, const float* dscore,
                           const float* q, const float* k, const float* sinks, const float* bias,
                           int64_t N, int Hkv, int G, int Dg, int S) override;
  void kvzip_score(float* out, const float* att, int B, int H, int Hg, int T, int t0, int t1,
                   int P) override;
  void sgd_update(float* p, const float* grad, float* buf, int64_t n, float lr, float momentum,
                  float weight_decay, float grad_scale) override;
  void swiglu_forward(float* out, const float* gate_up, int64_t N, int F) override;
  void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N,
                       int F) override;
  void residual_forward(float* out, const float* a, const float* b, int64_t n) override;
  void residual_backward(float* da, float* db, const float* dout, int64_t n) override;
  void cross_entropy_forward(float* losses, const float* logits, const int32_t* targets,
                             int64_t N, int V) override;
  void cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                              int64_t N, int V, float dloss) override;
  double sum_squares(const float* x, int64_t n) override;
  double sum(const float* x, int64_t n) override;
  void accumulate_sum(float* acc, const float* x, int64_t n, float scale) override;
  void scale(float* x, float s, int64_t n) override;
  void adamw_update(float* p, const float* grad, float* m, float* v, int64_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int64_t t,
                    float grad_scale) override;

 private:
  cpu::WeightCopy weights_;  // the precision and the bf16 copy of the registered master
  cpu::PrecisionScratch scratch_;
};

}  // namespace kvt

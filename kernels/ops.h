// kernels/ops.h — the op interface. The model is written once against this class; the CPU
// backend (kernels/cpu, the fp32 reference) and the CUDA backend (kernels/cuda) implement it.
//
// Conventions (docs/design.md, "The op interface"):
//  * Pointers are backend memory (host for cpu, device for cuda), row-major, fp32 unless typed.
//  * Shapes: N rows (= B*T tokens), C model width, B batch, T time, H query heads, Hkv KV heads,
//    D head dim, F MLP width, V vocab.
//  * Parameter gradients ACCUMULATE (+=): that is what makes gradient accumulation work.
//    Activation gradients are OVERWRITTEN (=), except where a signature says "+=" (residual
//    stream, and dK/dV, which several consumers may add into: docs/design.md, "The model family").
//  * Every reduction runs in a fixed order (no float atomics, no OpenMP reduction clauses), so
//    results are bitwise repeatable for a given thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace kvt {

// Attention problem shape. q has H heads, k/v have Hkv heads; query head h reads KV head
// h / (H / Hkv). Rows of q, k, v may be strided (ldq, ldk, ldv floats between token rows), so
// q/k/v can be column blocks of one fused projection output.
struct AttnShape {
  int B = 0, T = 0, H = 0, Hkv = 0, D = 0;
  int ldq = 0, ldk = 0, ldv = 0;  // row strides in floats
};

// Attention of n new queries over a KV cache (docs/design.md, "Inference and the KV cache").
// Each KV head g has its own list of S entry slots: slot i holds a K row at
// k + g*head_stride + i*ld, a V row at v + g*head_stride + i*ld and an absolute position
// pos[g*S + i] (-1: an empty or dropped slot). Queries are q rows t = 0..n-1 (row stride ldq) at
// absolute positions p0 + t; out is contiguous [n, H*D].
struct CacheAttnShape {
  int n = 0, p0 = 0;
  int H = 0, Hkv = 0, D = 0;
  int ldq = 0;
  int S = 0;                // entry slots per KV head
  int ld = 0;               // floats between consecutive slots of one head (K and V alike)
  int64_t head_stride = 0;  // floats between the slot lists of consecutive KV heads
};

// Arithmetic of the GEMMs and attention (docs/design.md, "GPU hot path"):
//  fp32      the reference: fp32 inputs, fp32 FMA.
//  fp32_tf32 GEMM inputs rounded to TF32 (10-bit mantissa), fp32 accumulation; attention fp32.
//  bf16      GEMM inputs rounded to bf16 (8-bit mantissa; weights from a bf16 copy of the fp32
//            master), fp32 accumulation, fp32 outputs; attention is flash (cuDNN SDPA) on bf16
//            q, k, v with bf16 out, dq, dk, dv and one fp32 softmax statistic per (row, head).
//            Norms, softmax, loss, optimizer and reductions stay fp32.
// Activations are fp32 in memory in every mode (see "Activation storage" in docs/gpu.md).
enum class Precision { fp32, fp32_tf32, bf16 };
// "fp32" | "fp32_tf32" | "bf16"; parse throws std::invalid_argument naming the value.
const char* precision_name(Precision p);
Precision parse_precision(const std::string& name);

class Ops {
 public:
  virtual ~Ops() = default;
  virtual std::string name() const = 0;  // "cpu" | "cuda"

  // ---- memory (bytes) -------------------------------------------------------------------
  virtual void* alloc(size_t bytes) = 0;  // zero-initialised
  virtual void release(void* p) noexcept = 0;
  virtual void to_device(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // within the backend
  virtual void zero(void* p, size_t bytes) = 0;
  // dst[r, 0:cols] = src[r, 0:cols] for r < rows (row strides ldd, lds in floats), within the
  // backend: moves K/V rows between a projection output and the cache's per-head entry lists.
  virtual void copy_rows(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
                         int cols) = 0;
  virtual void synchronize() = 0;
  // The backend's native stream (a cudaStream_t for cuda, null for cpu): the communicator orders
  // its collectives after the work submitted to it.
  virtual void* native_stream() { return nullptr; }
  // A host-to-backend copy that returns at once (the step's tokens): cuda stages the bytes in a
  // ring of page-locked buffers (each reused only once its previous copy has finished) and copies
  // on the stream, so the caller may reuse host_src on return and the copy overlaps compute;
  // cpu copies.
  virtual void to_device_async(void* dst, const void* host_src, size_t bytes) {
    to_device(dst, host_src, bytes);
  }

  // ---- precision (see Precision) ----------------------------------------------------------
  // Set once, before any model is built on this backend. The base class knows only fp32.
  virtual void set_precision(Precision p);
  virtual Precision precision() const { return Precision::fp32; }
  // Registers the fp32 master parameters [base, base + n): a GEMM whose weight lies inside reads
  // the low-precision copy (bf16) instead. refresh_weights() rebuilds the copy from the master;
  // the model calls it after every update and every load. No-ops in fp32 and fp32_tf32.
  virtual void set_weights(const float* base, size_t n) { (void)base, (void)n; }
  virtual void refresh_weights() {}
  // Floats attention_forward saves in `att` for B sequences of T tokens and H heads:
  // B*H*T*T probabilities, or B*H*T softmax statistics (logsumexp per row) when flash.
  virtual size_t attention_saved_floats(int B, int H, int T) const {
    return static_cast<size_t>(B) * H * T * T;
  }
  // Whether `att` holds probabilities (attention_probs, KVzip targets need them).
  virtual bool attention_saves_probs() const { return true; }

  // ---- embedding --------------------------------------------------------------------------
  // out[n, :] = wte[tokens[n], :]                                   tokens host or backend: backend
  virtual void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N,
                                 int C) = 0;
  // dwte[tokens[n], :] += dout[n, :]   (rows of the same token summed in increasing n)
  virtual void embedding_backward(float* dwte, const float* dout, const int32_t* tokens,
                                  int64_t N, int C, int V) = 0;

  // ---- RMSNorm ----------------------------------------------------------------------------
  // rstd[n] = 1 / sqrt(mean_c x[n,c]^2 + eps);  out[n,c] = x[n,c] * rstd[n] * w[c]
  virtual void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w,
                               int64_t N, int C, float eps) = 0;
  // dx[n,:] += rstd * (w*dout - xhat * mean_c(w*dout*xhat)),  xhat = x*rstd
  // dw[c]   += sum_n dout[n,c] * xhat[n,c]
  virtual void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x,
                                const float* w, const float* rstd, int64_t N, int C) = 0;

  // ---- matmul (BLAS sgemm on cpu, cuBLAS on cuda) -----------------------------------------
  // out[N, OC] = x[N, IC] · W[OC, IC]^T          (weights stored [out, in], as Hugging Face)
  virtual void matmul_forward(float* out, const float* x, const float* w, int64_t N, int IC,
                              int OC) = 0;
  // dx[N, IC] (= or += when accumulate_dx) dout · W ;  dw[OC, IC] += dout^T · x
  // dx may be null (no input gradient needed), dw may be null (frozen weight).
  virtual void matmul_backward(float* dx, float* dw, const float* dout, const float* x,
                               const float* w, int64_t N, int IC, int OC,
                               bool accumulate_dx) = 0;

  // ---- RoPE (rotate-half: dimension j pairs with j + D/2) --------------------------------
  // In place on x viewed [B, T, nh, D] with row stride ld (floats between tokens).
  // Token t of every sequence sits at absolute position pos0 + t.
  // cos/sin tables are [max_pos, D/2]: cos[p, j] = cos(p * theta^(-2j/D)).
  //   x'[j]       = x[j] cos - x[j+D/2] sin
  //   x'[j + D/2] = x[j+D/2] cos + x[j] sin
  virtual void rope_forward(float* x, int ld, int B, int T, int nh, int D, int pos0,
                            const float* cos, const float* sin) = 0;
  // The rotation is orthogonal: the backward rotates dx (in place) by the negative angle.
  virtual void rope_backward(float* dx, int ld, int B, int T, int nh, int D, int pos0,
                             const float* cos, const float* sin) = 0;

  // ---- causal attention, GQA --------------------------------------------------------------
  // For query head h, KV head g = h / (H/Hkv):
  //   att[b,h,t,s] = softmax_s<=t( q[b,t,h]·k[b,s,g] / sqrt(D) )     (saved for backward, [B,H,T,T];
  //                                                                   entries s > t are 0)
  //   out[b,t,h*D:(h+1)*D] = sum_s att[b,h,t,s] v[b,s,g]              (out is contiguous [N, H*D])
  virtual void attention_forward(float* out, float* att, const float* q, const float* k,
                                 const float* v, const AttnShape& s) = 0;
  // out is attention_forward's output (flash attention's backward needs it).
  // dq = (overwritten, row stride s.ldq);  dk, dv += (row strides s.ldk, s.ldv)
  //   dv[s] += sum_t att[t,s] dout[t];  datt[t,s] = dout[t]·v[s]
  //   dpre[t,s] = att[t,s] (datt[t,s] - sum_s' att[t,s'] datt[t,s'])
  //   dq[t] = sum_s dpre[t,s] k[s] / sqrt(D);  dk[s] += sum_t dpre[t,s] q[t] / sqrt(D)
  // (the G query heads of a KV head are summed in increasing h.)
  virtual void attention_backward(float* dq, float* dk, float* dv, const float* dout,
                                  const float* out, const float* att, const float* q, const float* k,
                                  const float* v, const AttnShape& s) = 0;

  // ---- attention over a KV cache (inference) ------------------------------------------------
  // For query t, head h, KV head g = h / (H/Hkv), over the slots i of g with 0 <= pos_i <= p0+t:
  //   out[t, h*D:(h+1)*D] = sum_i softmax_i(q[t,h]·K_i / sqrt(D)) V_i
  // and zero where no slot qualifies. pos is backend memory. Forward only.
  virtual void attention_cache_forward(float* out, const float* q, const float* k,
                                       const float* v, const int32_t* pos,
                                       const CacheAttnShape& s) = 0;
  // Attention probabilities of queries over a KV cache, reduced per slot (KVzip targets, SnapKV
  // scores). Same layout as attention_cache_forward; for query row t in [t0, t1) of head h (KV
  // head g = h / (H/Hkv)), p_{t,h}(i) = softmax over the visible slots i of g
  // (0 <= pos_i <= p0 + t) of q[t,h]·K_i / sqrt(D), and 0 for slots it does not see:
  //   out[g*S + i] = max_{t in [t0,t1), h in g} p_{t,h}(i)     (sum = false: KVzip)
  //   out[g*S + i] = sum_{t in [t0,t1), h in g} p_{t,h}(i)     (sum = true: SnapKV)
  // out [Hkv, S] is overwritten; sums run in a fixed order (the same for every thread count).
  // Forward only.
  virtual void attention_cache_score(float* out, const float* q, const float* k,
                                     const int32_t* pos, const CacheAttnShape& s, int t0, int t1,
                                     bool sum) = 0;

  // ---- FusedKV: a reusing layer's K or V from two storage layers (docs/design.md, "The model family") ------------
  // x viewed [N, Hkv, D] with row strides (floats between tokens). For KV head h, channel j:
  //   out[n,h,j] = w_first[h,c] first[n,h,j] + w_last[h,c] last[n,h,j]
  // pair_tied (keys, post-RoPE): c = j mod D/2, weights [Hkv, D/2] (channels j and j + D/2 of a
  // RoPE pair share one weight); otherwise (values): c = j, weights [Hkv, D].
  virtual void kv_fuse_forward(float* out, int ldo, const float* first, int ld_first,
                               const float* last, int ld_last, const float* w_first,
                               const float* w_last, int64_t N, int Hkv, int D,
                               bool pair_tied) = 0;
  // dfirst += w_first ⊙ dout, dlast += w_last ⊙ dout   (strides ld_first, ld_last, as the inputs)
  // dw_first[h,c] += sum_n sum_{j -> c} dout[n,h,j] first[n,h,j];  dw_last likewise with last.
  virtual void kv_fuse_backward(float* dfirst, float* dlast, float* dw_first, float* dw_last,
                                const float* dout, int ldo, const float* first, int ld_first,
                                const float* last, int ld_last, const float* w_first,
                                const float* w_last, int64_t N, int Hkv, int D,
                                bool pair_tied) = 0;

  // ---- LRKV: shared + per-head low-rank K or V (docs/design.md, "The model family") -----------------------------
  // shared [N, D] (row stride lds) = x W_shared^T; lat [N, H*R] (row stride ldl) = x U^T, the
  // per-head latents; up [H, D, R] (B_h stacked). out [N, H*D] (row stride ldo):
  //   out[n,h,d] = shared[n,d] + sum_r lat[n,h,r] up[h,d,r]
  virtual void lrkv_expand_forward(float* out, int ldo, const float* shared, int lds,
                                   const float* lat, int ldl, const float* up, int64_t N, int H,
                                   int D, int R) = 0;
  // dshared[n,d] += sum_h dout[n,h,d];  dlat[n,h,r] += sum_d dout[n,h,d] up[h,d,r];
  // dup[h,d,r] += sum_n dout[n,h,d] lat[n,h,r]   (dshared, dlat have the strides of shared, lat)
  virtual void lrkv_expand_backward(float* dshared, int lds, float* dlat, float* dup,
                                    const float* dout, int ldo, const float* lat, int ldl,
                                    const float* up, int64_t N, int H, int D, int R) = 0;

  // ---- Fast KVzip gates (docs/design.md, "Fast KVzip gates") ----------------------------------------------------
  // x[n, c] += bias[c]   (x [N, C])
  virtual void bias_add_forward(float* x, const float* bias, int64_t N, int C) = 0;
  // dbias[c] += sum_n dout[n, c]   (summed in increasing n)
  virtual void bias_add_backward(float* dbias, const float* dout, int64_t N, int C) = 0;
  // Gate score of one token and KV head h, from the normalised gate query q [N, Hkv, G, Dg],
  // key k [N, Hkv, Dg], sink keys sinks [Hkv, S, Dg] and logit bias [Hkv, G]:
  //   l_g = q_g·k / sqrt(Dg) + bias[h,g],   l_gs = q_g·sinks[h,s] / sqrt(Dg)
  //   p_g = softmax over the S+1 logits (l_g, l_g1, ..., l_gS), entry 0 = 1 / (1 + sum_s e^(l_gs - l_g))
  //   score[n, h] = mean_g p_g   in (0, 1)
  virtual void gate_score_forward(float* score, const float* q, const float* k,
                                  const float* sinks, const float* bias, int64_t N, int Hkv,
                                  int G, int Dg, int S) = 0;
  // With P_gs the softmax entry of sink s:  dl_g = dscore/G p_g (1 - p_g),  dl_gs = -dscore/G p_g P_gs
  //   dq_g = (dl_g k + sum_s dl_gs sinks_s) / sqrt(Dg)              (dq, dk overwritten)
  //   dk   = sum_g dl_g q_g / sqrt(Dg)
  //   dsinks[h,s] += sum_n sum_g dl_gs q_g / sqrt(Dg);  dbias[h,g] += sum_n dl_g   (increasing n)
  virtual void gate_score_backward(float* dq, float* dk, float* dsinks, float* dbias,
                                   const float* dscore, const float* q, const float* k,
                                   const float* sinks, const float* bias, int64_t N, int Hkv,
                                   int G, int Dg, int S) = 0;
  // KVzip score of a position: the largest attention probability any query t in [t0, t1) of any
  // query head of KV-head group g puts on it, from att [B, H, T, T] (attention_forward's):
  //   out[b, g, p] = max_{t in [t0,t1), h in [g H/Hg, (g+1) H/Hg)} att[b, h, t, p],  p in [0, P)
  // Hg divides H (Hkv, or 1 for one score over all heads).
  virtual void kvzip_score(float* out, const float* att, int B, int H, int Hg, int T, int t0,
                           int t1, int P) = 0;

  // ---- SwiGLU -----------------------------------------------------------------------------
  // gate_up[n] = [gate (F) | up (F)] (one row of the fused gate/up projection)
  // out[n, f] = silu(gate[n,f]) * up[n,f],  silu(a) = a * sigmoid(a)
  virtual void swiglu_forward(float* out, const float* gate_up, int64_t N, int F) = 0;
  // dgate_up (overwritten): dgate = dout * up * silu'(gate),  dup = dout * silu(gate)
  virtual void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up,
                               int64_t N, int F) = 0;

  // ---- residual -----------------------------------------------------------------------------
  // out = a + b  (out may alias a)
  virtual void residual_forward(float* out, const float* a, const float* b, int64_t n) = 0;
  // da += dout; db += dout   (either may be null; da may alias dout, then it is left as is)
  virtual void residual_backward(float* da, float* db, const float* dout, int64_t n) = 0;

  // ---- fused softmax cross-entropy --------------------------------------------------------
  // losses[n] = logsumexp(logits[n, :]) - logits[n, targets[n]]
  virtual void cross_entropy_forward(float* losses, const float* logits, const int32_t* targets,
                                     int64_t N, int V) = 0;
  // dlogits[n, :] = (softmax(logits[n, :]) - onehot(targets[n])) * dloss
  // dlogits may alias logits (computed row by row in place), which saves an [N, V] buffer.
  virtual void cross_entropy_backward(float* dlogits, const float* logits,
                                      const int32_t* targets, int64_t N, int V,
                                      float dloss) = 0;

  // ---- optimizer and reductions -----------------------------------------------------------
  // sum_i x[i]^2, accumulated in double in a fixed order; result returned to the host.
  virtual double sum_squares(const float* x, int64_t n) = 0;
  // sum_i x[i], same rules (mean loss of a batch).
  virtual double sum(const float* x, int64_t n) = 0;
  // acc[0] += scale * sum_i x[i], on the backend (the loss of a micro-step, read once per step);
  // summed in a fixed order.
  virtual void accumulate_sum(float* acc, const float* x, int64_t n, float scale) = 0;
  // x *= s
  virtual void scale(float* x, float s, int64_t n) = 0;
  // AdamW with decoupled weight decay (PyTorch's AdamW), step t >= 1, on one tensor:
  //   g = grad * grad_scale;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
  //   p -= lr * ( (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + wd * p )
  virtual void adamw_update(float* p, const float* grad, float* m, float* v, int64_t n,
                            float lr, float beta1, float beta2, float eps, float weight_decay,
                            int64_t t, float grad_scale) = 0;
  // SGD with momentum and L2 weight decay (PyTorch's SGD, dampening 0, not Nesterov), one tensor:
  //   g = grad * grad_scale + wd * p;  buf = momentum * buf + g;  p -= lr * buf
  // (buf starts at zero, so the first step is PyTorch's buf = g.)
  virtual void sgd_update(float* p, const float* grad, float* buf, int64_t n, float lr,
                          float momentum, float weight_decay, float grad_scale) = 0;
};

// Backend factory: "cpu", or "cuda" (throws when not compiled in or no device is present).
std::unique_ptr<Ops> make_ops(const std::string& backend);

// Whether the CUDA backend is compiled in and a device is usable; `why` says why not.
bool cuda_available(std::string* why = nullptr);

// A typed buffer in backend memory, released when it goes out of scope (RAII).
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(Ops& ops, size_t count)
      : ops_(&ops), ptr_(static_cast<T*>(ops.alloc(count * sizeof(T)))), count_(count) {}
  ~Buffer() { reset(); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : ops_(o.ops_), ptr_(o.ptr_), count_(o.count_) {
    o.ptr_ = nullptr;
    o.count_ = 0;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      ops_ = o.ops_;
      ptr_ = o.ptr_;
      count_ = o.count_;
      o.ptr_ = nullptr;
      o.count_ = 0;
    }
    return *this;
  }
  void reset() noexcept {
    if (ptr_) ops_->release(ptr_);
    ptr_ = nullptr;
    count_ = 0;
  }
  T* data() const { return ptr_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

 private:
  Ops* ops_ = nullptr;
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

}  // namespace kvt

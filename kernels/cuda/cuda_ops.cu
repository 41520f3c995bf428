// kernels/cuda/cuda_ops.cu — the CUDA backend of kvt::Ops: device memory, the stream (RAII,
// declared first so it outlives everything that uses it), and the dispatch of every op: GEMMs to
// Matmul (cuBLASLt, matmul.h), attention to FlashAttention (cuDNN SDPA, sdpa.h) in bf16 and to
// the fp32 kernels of attention.cu otherwise, everything else to its launcher (launch.cuh).
// All work runs on one stream of the device that was current when the backend was made.
#include <cmath>
#include <memory>
#include <string>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/sdpa.h"
#include "kernels/cuda/staging.h"

namespace kvt::cuda {

void throw_error(const char* file, int line, const char* call, const std::string& msg) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call + ": " +
                           msg);
}

const char* cublas_status_string(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

int to_int(int64_t v, const char* what) {
  if (v < 0 || v > INT32_MAX)
    throw std::runtime_error(std::string("cuda backend: ") + what + " = " + std::to_string(v) +
                             " does not fit in int");
  return static_cast<int>(v);
}

DeviceMemory::DeviceMemory(size_t bytes) : bytes_(bytes) {
  CUDA_CHECK(cudaMalloc(&ptr_, bytes > 0 ? bytes : 1));
}
DeviceMemory::~DeviceMemory() {
  if (ptr_) cudaFree(ptr_);  // errors ignored: may run after the runtime has shut down
}
DeviceMemory& DeviceMemory::operator=(DeviceMemory&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

Scratch::~Scratch() {
  if (ptr_) cudaFree(ptr_);  // errors ignored: may run after the runtime has shut down
}

void* Scratch::get(size_t bytes, cudaStream_t stream) {
  if (bytes <= bytes_ && ptr_) return ptr_;
  if (ptr_) {
    CUDA_CHECK(cudaStreamSynchronize(stream));  // earlier kernels may still read the old buffer
    CUDA_CHECK(cudaFree(ptr_));
    ptr_ = nullptr;
    bytes_ = 0;
  }
  CUDA_CHECK(cudaMalloc(&ptr_, bytes > 0 ? bytes : 1));
  bytes_ = bytes;
  return ptr_;
}

// gate.cu (Fast KVzip gates); parameter gradients reduced through `scratch` in a fixed order.
// (Declared here rather than in launch.cuh, which this change does not own.)
void bias_add_forward(cudaStream_t stream, float* x, const float* bias, int64_t N, int C);
void bias_add_backward(cudaStream_t stream, Scratch& scratch, float* dbias, const float* dout,
                       int64_t N, int C);
void gate_score_forward(cudaStream_t stream, float* score, const float* q, const float* k,
                        const float* sinks, const float* bias, int64_t N, int Hkv, int G, int Dg,
                        int S);
void gate_score_backward(cudaStream_t stream, Scratch& scratch, float* dq, float* dk,
                         float* dsinks, float* dbias, const float* dscore, const float* q,
                         const float* k, const float* sinks, const float* bias, int64_t N,
                         int Hkv, int G, int Dg, int S);
void kvzip_score(cudaStream_t stream, float* out, const float* att, int B, int H, int Hg, int T,
                 int t0, int t1, int P);

namespace {

// The backend's stream, synchronised and destroyed last (it is CudaOps's first member).
class Stream {
 public:
  Stream() { CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() {
    cudaStreamSynchronize(s_);
    cudaStreamDestroy(s_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

constexpr int kStagingSlots = 4;  // uploads in flight before to_device_async waits

class CudaOps final : public Ops {
 public:
  CudaOps()
      : matmul_(stream_.get()), flash_(stream_.get()), staging_(stream_.get(), kStagingSlots) {}
  ~CudaOps() override { cudaStreamSynchronize(stream_.get()); }
  CudaOps(const CudaOps&) = delete;
  CudaOps& operator=(const CudaOps&) = delete;

  std::string name() const override { return "cuda"; }

  // ---- memory -----------------------------------------------------------------------------
  void* alloc(size_t bytes) override {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, bytes > 0 ? bytes : 1));
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_.get()));
    return p;
  }
  void release(void* p) noexcept override {
    if (!p) return;
    cudaStreamSynchronize(stream_.get());
    cudaFree(p);
  }
  void to_device(void* dst, const void* host_src, size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_.get()));
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));  // the host buffer may be reused on return
  }
  void to_host(void* host_dst, const void* src, size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_.get()));
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0 || dst == src) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_.get()));
  }
  void zero(void* p, size_t bytes) override {
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_.get()));
  }
  void copy_rows(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
                 int cols) override {
    if (rows <= 0 || cols <= 0) return;
    CUDA_CHECK(cudaMemcpy2DAsync(dst, ldd * sizeof(float), src, lds * sizeof(float),
                                 cols * sizeof(float), rows, cudaMemcpyDeviceToDevice,
                                 stream_.get()));
  }
  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_.get())); }
  void* native_stream() override { return stream_.get(); }
  void to_device_async(void* dst, const void* host_src, size_t bytes) override {
    staging_.upload(dst, host_src, bytes);
  }

  // ---- precision --------------------------------------------------------------------------
  void set_precision(Precision p) override {
    precision_ = p;
    matmul_.set_precision(p);
  }
  Precision precision() const override { return precision_; }
  void set_weights(const float* base, size_t n) override { matmul_.set_weights(base, n); }
  void refresh_weights() override { matmul_.refresh_weights(); }
  size_t attention_saved_floats(int B, int H, int T) const override {
    return flash() ? static_cast<size_t>(B) * H * T : static_cast<size_t>(B) * H * T * T;
  }
  bool attention_saves_probs() const override { return !flash(); }

  // ---- ops ----------------------------------------------------------------------------------
  void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N,
                         int C) override {
    cuda::embedding_forward(stream_.get(), out, tokens, wte, N, C);
  }
  void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N,
                          int C, int V) override {
    cuda::embedding_backward(stream_.get(), scratch_, dwte, dout, tokens, N, C, V);
  }
  void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N,
                       int C, float eps) override {
    cuda::rmsnorm_forward(stream_.get(), out, rstd, x, w, N, C, eps);
  }
  void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                        const float* rstd, int64_t N, int C) override {
    cuda::rmsnorm_backward(stream_.get(), scratch_, dx, dw, dout, x, w, rstd, N, C);
  }
  void matmul_forward(float* out, const float* x, const float* w, int64_t N, int IC,
                      int OC) override {
    matmul_.forward(out, x, w, N, IC, OC);
  }
  void matmul_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                       int64_t N, int IC, int OC, bool accumulate_dx) override {
    matmul_.backward(dx, dw, dout, x, w, N, IC, OC, accumulate_dx);
  }
  void rope_forward(float* x, int ld, int B, int T, int nh, int D, int pos0, const float* cos,
                    const float* sin) override {
    cuda::rope_rotate(stream_.get(), x, ld, B, T, nh, D, pos0, cos, sin, 1.0f);
  }
  void rope_backward(float* dx, int ld, int B, int T, int nh, int D, int pos0, const float* cos,
                     const float* sin) override {
    cuda::rope_rotate(stream_.get(), dx, ld, B, T, nh, D, pos0, cos, sin, -1.0f);
  }
  void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                         const AttnShape& s) override {
    if (flash())
      flash_.forward(out, att, q, k, v, s);
    else
      cuda::attention_forward(stream_.get(), out, att, q, k, v, s);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                          const float* att, const float* q, const float* k, const float* v,
                          const AttnShape& s) override {
    if (flash())
      flash_.backward(dq, dk, dv, dout, out, att, q, k, v, s);
    else
      cuda::attention_backward(stream_.get(), scratch_, dq, dk, dv, dout, att, q, k, v, s);
  }
  void attention_cache_forward(float* out, const float* q, const float* k, const float* v,
                               const int32_t* pos, const CacheAttnShape& s) override {
    cuda::attention_cache_forward(stream_.get(), out, q, k, v, pos, s);
  }
  void attention_cache_score(float* out, const float* q, const float* k, const int32_t* pos,
                             const CacheAttnShape& s, int t0, int t1, bool sum) override {
    cuda::attention_cache_score(stream_.get(), scratch_, out, q, k, pos, s, t0, t1, sum);
  }
  void kv_fuse_forward(float* out, int ldo, const float* first, int ld_first, const float* last,
                       int ld_last, const float* w_first, const float* w_last, int64_t N, int Hkv,
                       int D, bool pair_tied) override {
    cuda::kv_fuse_forward(stream_.get(), out, ldo, first, ld_first, last, ld_last, w_first, w_last, N,
                          Hkv, D, pair_tied);
  }
  void kv_fuse_backward(float* dfirst, float* dlast, float* dw_first, float* dw_last,
                        const float* dout, int ldo, const float* first, int ld_first,
                        const float* last, int ld_last, const float* w_first,
                        const float* w_last, int64_t N, int Hkv, int D, bool pair_tied) override {
    cuda::kv_fuse_backward(stream_.get(), scratch_, dfirst, dlast, dw_first, dw_last, dout, ldo, first,
                           ld_first, last, ld_last, w_first, w_last, N, Hkv, D, pair_tied);
  }
  void lrkv_expand_forward(float* out, int ldo, const float* shared, int lds, const float* lat,
                           int ldl, const float* up, int64_t N, int H, int D, int R) override {
    cuda::lrkv_expand_forward(stream_.get(), out, ldo, shared, lds, lat, ldl, up, N, H, D, R);
  }
  void lrkv_expand_backward(float* dshared, int lds, float* dlat, float* dup, const float* dout,
                            int ldo, const float* lat, int ldl, const float* up, int64_t N, int H,
                            int D, int R) override {
    cuda::lrkv_expand_backward(stream_.get(), scratch_, dshared, lds, dlat, dup, dout, ldo, lat, ldl, up,
                               N, H, D, R);
  }
  void bias_add_forward(float* x, const float* bias, int64_t N, int C) override {
    cuda::bias_add_forward(stream_.get(), x, bias, N, C);
  }
  void bias_add_backward(float* dbias, const float* dout, int64_t N, int C) override {
    cuda::bias_add_backward(stream_.get(), scratch_, dbias, dout, N, C);
  }
  void gate_score_forward(float* score, const float* q, const float* k, const float* sinks,
                          const float* bias, int64_t N, int Hkv, int G, int Dg, int S) override {
    cuda::gate_score_forward(stream_.get(), score, q, k, sinks, bias, N, Hkv, G, Dg, S);
  }
  void gate_score_backward(float* dq, float* dk, float* dsinks, float* dbias, const float* dscore,
                           const float* q, const float* k, const float* sinks, const float* bias,
                           int64_t N, int Hkv, int G, int Dg, int S) override {
    cuda::gate_score_backward(stream_.get(), scratch_, dq, dk, dsinks, dbias, dscore, q, k, sinks, bias,
                              N, Hkv, G, Dg, S);
  }
  void kvzip_score(float* out, const float* att, int B, int H, int Hg, int T, int t0, int t1,
                   int P) override {
    if (flash())
      throw std::runtime_error(
          "kvzip_score: needs attention probabilities, which bf16 (flash) attention does not "
          "save (attention_saves_probs() is false)");
    cuda::kvzip_score(stream_.get(), out, att, B, H, Hg, T, t0, t1, P);
  }
  void swiglu_forward(float* out, const float* gate_up, int64_t N, int F) override {
    cuda::swiglu_forward(stream_.get(), out, gate_up, N, F);
  }
  void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N,
                       int F) override {
    cuda::swiglu_backward(stream_.get(), dgate_up, dout, gate_up, N, F);
  }
  void residual_forward(float* out, const float* a, const float* b, int64_t n) override {
    cuda::residual_forward(stream_.get(), out, a, b, n);
  }
  void residual_backward(float* da, float* db, const float* dout, int64_t n) override {
    cuda::residual_backward(stream_.get(), da, db, dout, n);
  }
  void cross_entropy_forward(float* losses, const float* logits, const int32_t* targets,
                             int64_t N, int V) override {
    cuda::cross_entropy_forward(stream_.get(), losses, logits, targets, N, V);
  }
  void cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                              int64_t N, int V, float dloss) override {
    cuda::cross_entropy_backward(stream_.get(), dlogits, logits, targets, N, V, dloss);
  }
  double sum_squares(const float* x, int64_t n) override {
    return cuda::reduce_sum(stream_.get(), scratch_, x, n, true);
  }
  double sum(const float* x, int64_t n) override {
    return cuda::reduce_sum(stream_.get(), scratch_, x, n, false);
  }
  void accumulate_sum(float* acc, const float* x, int64_t n, float scale) override {
    cuda::accumulate_sum(stream_.get(), scratch_, acc, x, n, scale);
  }
  void scale(float* x, float s, int64_t n) override { cuda::scale(stream_.get(), x, s, n); }
  void adamw_update(float* p, const float* grad, float* m, float* v, int64_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int64_t t,
                    float grad_scale) override {
    if (t < 1) throw std::runtime_error("adamw_update: step t must be >= 1");
    const double td = static_cast<double>(t);
    const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), td));
    const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), td));
    cuda::adamw_update(stream_.get(), p, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2,
                       grad_scale);
  }
  void sgd_update(float* p, const float* grad, float* buf, int64_t n, float lr, float momentum,
                  float weight_decay, float grad_scale) override {
    cuda::sgd_update(stream_.get(), p, grad, buf, n, lr, momentum, weight_decay, grad_scale);
  }

 private:
  bool flash() const { return precision_ == Precision::bf16; }

  Stream stream_;  // first: destroyed last
  Precision precision_ = Precision::fp32;
  Matmul matmul_;
  FlashAttention flash_;
  StagingRing staging_;
  Scratch scratch_;
};

}  // namespace
}  // namespace kvt::cuda

namespace kvt {

bool cuda_device_usable(std::string* why) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // reset the runtime's last-error state
    if (why)
      *why = std::string("no usable CUDA device (cudaGetDeviceCount: ") + cudaGetErrorString(err) +
             ")";
    return false;
  }
  if (count == 0) {
    if (why) *why = "no usable CUDA device (cudaGetDeviceCount found 0 devices)";
    return false;
  }
  if (why) why->clear();
  return true;
}

std::unique_ptr<Ops> make_cuda_ops() {
  std::string why;
  if (!cuda_device_usable(&why)) throw std::runtime_error("backend 'cuda': " + why);
  return std::make_unique<cuda::CudaOps>();
}

}  // namespace kvt

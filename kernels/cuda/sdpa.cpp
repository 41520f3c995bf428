// kernels/cuda/sdpa.cpp — the cuDNN SDPA graphs of FlashAttention (see sdpa.h). Tensors are
// described to cuDNN as [B, heads, T, D] with the strides of the packed row-major [B, T, heads, D]
// scratch, i.e. of a [N, heads*D] activation: (T*heads*D, D, heads*D, 1); stats as [B, H, T, 1]
// with strides (H*T, T, 1, 1).
#include "kernels/cuda/sdpa.h"

#include <cudnn.h>
#include <cudnn_frontend.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace fe = cudnn_frontend;

namespace {

enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kdO, kdQ, kdK, kdV };

std::string shape_text(const AttnShape& s) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " H=" + std::to_string(s.H) +
         " Hkv=" + std::to_string(s.Hkv) + " D=" + std::to_string(s.D);
}

// One line: "<op> (cuDNN SDPA, bf16): <what> for B=.. T=.. H=.. Hkv=.. D=..: <cuDNN's message>"
[[noreturn]] void fail(const char* op, const char* what, const AttnShape& s,
                       const std::string& msg) {
  std::string m = msg;
  for (char& c : m)
    if (c == '\n') c = ' ';
  throw std::runtime_error(std::string(op) + " (cuDNN SDPA, bf16): " + what + " for " +
                           shape_text(s) + ": " + m);
}

void check(fe::error_t e, const char* op, const char* stage, const AttnShape& s) {
  if (e.is_bad()) fail(op, stage, s, e.get_message());
}

std::vector<int64_t> bhtd(int64_t B, int64_t heads, int64_t T, int64_t D) {
  return {B, heads, T, D};
}
std::vector<int64_t> packed_strides(int64_t heads, int64_t T, int64_t D) {
  return {T * heads * D, D, heads * D, 1};
}

std::shared_ptr<fe::graph::Tensor_attributes> tensor(fe::graph::Graph& g, const char* name,
                                                     int64_t uid, int64_t B, int64_t heads,
                                                     int64_t T, int64_t D) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_uid(uid)
                      .set_dim(bhtd(B, heads, T, D))
                      .set_stride(packed_strides(heads, T, D)));
}

std::shared_ptr<fe::graph::Graph> new_graph() {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return g;
}

void build(fe::graph::Graph& g, cudnnHandle_t h, const char* op, const AttnShape& s) {
  check(g.validate(), op, "graph not valid", s);
  check(g.build_operation_graph(h), op, "operation graph not supported", s);
  check(g.create_execution_plans({fe::HeurMode_t::A}), op, "no execution plan", s);
  check(g.check_support(h), op, "no engine supports the shape on this device", s);
  check(g.build_plans(h), op, "plan build failed", s);
}

size_t align256(size_t b) { return (b + 255) & ~size_t(255); }

}  // namespace

struct FlashAttention::Impl {
  struct Built {
    std::shared_ptr<fe::graph::Graph> graph;
    int64_t workspace = 0;
  };
  using Key = std::tuple<bool, int, int, int, int, int>;  // (backward, B, T, H, Hkv, D)

  cudaStream_t stream = nullptr;
  cudnnHandle_t handle = nullptr;  // made on first use: fp32 runs never load cuDNN's engines
  std::map<Key, Built> graphs;
  Scratch bf16;       // packed bf16 operands and results
  Scratch workspace;  // cuDNN's workspace
  Scratch stats;      // stats when the caller's buffer is not 16-byte aligned

  ~Impl() {
    graphs.clear();
    if (handle) cudnnDestroy(handle);
  }

  cudnnHandle_t cudnn(const char* op, const AttnShape& s) {
    if (handle) return handle;
    cudnnHandle_t h = nullptr;
    cudnnStatus_t st = cudnnCreate(&h);
    if (st != CUDNN_STATUS_SUCCESS) fail(op, "cudnnCreate failed", s, cudnnGetErrorString(st));
    st = cudnnSetStream(h, stream);
    if (st != CUDNN_STATUS_SUCCESS) {
      cudnnDestroy(h);
      fail(op, "cudnnSetStream failed", s, cudnnGetErrorString(st));
    }
    handle = h;
    return h;
  }

  // The cached graph of (backward, shape), or a new one: define(g) adds the SDPA node and its
  // outputs to a fresh bf16 graph, which is then built and cached with its workspace size.
  template <typename Define>
  const Built& graph_for(bool backward, const AttnShape& s, Define&& define) {
    const Key key{backward, s.B, s.T, s.H, s.Hkv, s.D};
    if (auto it = graphs.find(key); it != graphs.end()) return it->second;
    const char* op = backward ? "attention_backward" : "attention_forward";
    cudnnHandle_t h = cudnn(op, s);
    Built b;
    try {
      b.graph = new_graph();
      fe::graph::Graph& g = *b.graph;
      define(g);
      build(g, h, op, s);
      check(g.get_workspace_size(b.workspace), op, "workspace query failed", s);
    } catch (const std::runtime_error&) {
      throw;
    } catch (const std::exception& e) {
      fail(op, "graph construction failed", s, e.what());
    }
    return graphs.emplace(key, std::move(b)).first->second;
  }

  const Built& forward_graph(const AttnShape& s) {
    return graph_for(false, s, [&](fe::graph::Graph& g) {
      auto Q = tensor(g, "Q", kQ, s.B, s.H, s.T, s.D);
      auto K = tensor(g, "K", kK, s.B, s.Hkv, s.T, s.D);
      auto V = tensor(g, "V", kV, s.B, s.Hkv, s.T, s.D);
      auto opts = fe::graph::SDPA_attributes()
                      .set_name("flash_forward")
                      .set_generate_stats(true)
                      .set_causal_mask(true)
                      .set_attn_scale(1.0f / std::sqrt(static_cast<float>(s.D)));
      auto [O, Stats] = g.sdpa(Q, K, V, opts);
      O->set_output(true)
          .set_uid(kO)
          .set_dim(bhtd(s.B, s.H, s.T, s.D))
          .set_stride(packed_strides(s.H, s.T, s.D));
      Stats->set_output(true)
          .set_uid(kStats)
          .set_data_type(fe::DataType_t::FLOAT)
          .set_dim({s.B, s.H, s.T, 1})
          .set_stride({int64_t(s.H) * s.T, s.T, 1, 1});
    });
  }

  const Built& backward_graph(const AttnShape& s) {
    return graph_for(true, s, [&](fe::graph::Graph& g) {
      auto Q = tensor(g, "Q", kQ, s.B, s.H, s.T, s.D);
      auto K = tensor(g, "K", kK, s.B, s.Hkv, s.T, s.D);
      auto V = tensor(g, "V", kV, s.B, s.Hkv, s.T, s.D);
      auto O = tensor(g, "O", kO, s.B, s.H, s.T, s.D);
      auto dO = tensor(g, "dO", kdO, s.B, s.H, s.T, s.D);
      auto Stats = g.tensor(fe::graph::Tensor_attributes()
                                .set_name("Stats")
                                .set_uid(kStats)
                                .set_dim({s.B, s.H, s.T, 1})
                                .set_stride({int64_t(s.H) * s.T, s.T, 1, 1})
                                .set_data_type(fe::DataType_t::FLOAT));
      auto opts = fe::graph::SDPA_backward_attributes()
                      .set_name("flash_backward")
                      .set_causal_mask(true)
                      .set_attn_scale(1.0f / std::sqrt(static_cast<float>(s.D)))
                      .set_deterministic_algorithm(true);
      auto [dQ, dK, dV] = g.sdpa_backward(Q, K, V, O, dO, Stats, opts);
      dQ->set_output(true)
          .set_uid(kdQ)
          .set_dim(bhtd(s.B, s.H, s.T, s.D))
          .set_stride(packed_strides(s.H, s.T, s.D));
      dK->set_output(true)
          .set_uid(kdK)
          .set_dim(bhtd(s.B, s.Hkv, s.T, s.D))
          .set_stride(packed_strides(s.Hkv, s.T, s.D));
      dV->set_output(true)
          .set_uid(kdV)
          .set_dim(bhtd(s.B, s.Hkv, s.T, s.D))
          .set_stride(packed_strides(s.Hkv, s.T, s.D));
    });
  }

  // Carves `count` packed bf16 regions of the given element counts out of the bf16 scratch.
  std::vector<uint16_t*> regions(std::initializer_list<size_t> elems) {
    size_t total = 0;
    for (size_t e : elems) total += align256(e * sizeof(uint16_t));
    char* p = static_cast<char*>(bf16.get(total, stream));
    std::vector<uint16_t*> out;
    for (size_t e : elems) {
      out.push_back(reinterpret_cast<uint16_t*>(p));
      p += align256(e * sizeof(uint16_t));
    }
    return out;
  }

  void execute(const Built& b, std::unordered_map<int64_t, void*>& pack, const char* op,
               const AttnShape& s) {
    void* ws = workspace.get(static_cast<size_t>(b.workspace), stream);
    check(b.graph->execute(handle, pack, ws), op, "execute failed", s);
  }
};

namespace {

void check_shape(const AttnShape& s, const char* op) {
  if (s.B < 0 || s.T < 0 || s.H <= 0 || s.Hkv <= 0 || s.D <= 0 || s.H % s.Hkv != 0)
    throw std::runtime_error(std::string(op) + ": bad shape (" + shape_text(s) +
                             "; H must be a positive multiple of Hkv)");
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

FlashAttention::FlashAttention(cudaStream_t stream) : impl_(std::make_unique<Impl>()) {
  impl_->stream = stream;
}
FlashAttention::~FlashAttention() = default;

void FlashAttention::forward(float* out, float* stats, const float* q, const float* k,
                             const float* v, const AttnShape& s) {
  check_shape(s, "attention_forward");
  const int64_t N = int64_t(s.B) * s.T;
  if (N == 0) return;
  const Impl::Built& b = impl_->forward_graph(s);
  const int qc = s.H * s.D, kc = s.Hkv * s.D;
  auto r = impl_->regions({size_t(N) * qc, size_t(N) * kc, size_t(N) * kc, size_t(N) * qc});
  cudaStream_t st = impl_->stream;
  rows_to_bf16(st, r[0], q, s.ldq, N, qc);
  rows_to_bf16(st, r[1], k, s.ldk, N, kc);
  rows_to_bf16(st, r[2], v, s.ldv, N, kc);
  const size_t stats_bytes = sizeof(float) * size_t(s.B) * s.H * s.T;
  float* st_dst = aligned16(stats) ? stats : static_cast<float*>(impl_->stats.get(stats_bytes, st));
  std::unordered_map<int64_t, void*> pack{
      {kQ, r[0]}, {kK, r[1]}, {kV, r[2]}, {kO, r[3]}, {kStats, st_dst}};
  impl_->execute(b, pack, "attention_forward", s);
  if (st_dst != stats)
    CUDA_CHECK(cudaMemcpyAsync(stats, st_dst, stats_bytes, cudaMemcpyDeviceToDevice, st));
  rows_from_bf16(st, out, qc, r[3], N, qc, false);
}

void FlashAttention::backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                              const float* stats, const float* q, const float* k, const float* v,
                              const AttnShape& s) {
  check_shape(s, "attention_backward");
  const int64_t N = int64_t(s.B) * s.T;
  if (N == 0) return;
  const Impl::Built& b = impl_->backward_graph(s);
  const int qc = s.H * s.D, kc = s.Hkv * s.D;
  const size_t nq = size_t(N) * qc, nk = size_t(N) * kc;
  // q | k | v | o | dO | dQ | dK | dV
  auto r = impl_->regions({nq, nk, nk, nq, nq, nq, nk, nk});
  cudaStream_t st = impl_->stream;
  rows_to_bf16(st, r[0], q, s.ldq, N, qc);
  rows_to_bf16(st, r[1], k, s.ldk, N, kc);
  rows_to_bf16(st, r[2], v, s.ldv, N, kc);
  to_bf16(st, r[3], out, int64_t(nq));  // exact: out holds bf16 values
  to_bf16(st, r[4], dout, int64_t(nq));
  const size_t stats_bytes = sizeof(float) * size_t(s.B) * s.H * s.T;
  void* st_src = const_cast<float*>(stats);
  if (!aligned16(stats)) {
    st_src = impl_->stats.get(stats_bytes, st);
    CUDA_CHECK(cudaMemcpyAsync(st_src, stats, stats_bytes, cudaMemcpyDeviceToDevice, st));
  }
  std::unordered_map<int64_t, void*> pack{{kQ, r[0]},  {kK, r[1]},  {kV, r[2]},
                                          {kO, r[3]},  {kdO, r[4]}, {kStats, st_src},
                                          {kdQ, r[5]}, {kdK, r[6]}, {kdV, r[7]}};
  impl_->execute(b, pack, "attention_backward", s);
  rows_from_bf16(st, dq, s.ldq, r[5], N, qc, false);
  rows_from_bf16(st, dk, s.ldk, r[6], N, kc, true);
  rows_from_bf16(st, dv, s.ldv, r[7], N, kc, true);
}

}  // namespace kvt::cuda

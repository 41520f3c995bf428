// kernels/cuda/embedding.cu — token embedding.
//   forward:  out[n, :] = wte[tokens[n], :]
//   backward: dwte[tokens[n], :] += dout[n, :], rows of one token summed in increasing n.
// The backward groups the positions of each token on the host (a stable counting sort of the N
// tokens), then one thread per (token, channel) adds that token's rows in order: every dwte
// element has exactly one writer and a fixed summation order, so the result is deterministic.
#include <algorithm>
#include <string>
#include <vector>

#include "kernels/cuda/launch.cuh"

namespace kvt::cuda {
namespace {

__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* wte,
                                         int64_t N, int C) {
  const int64_t total = N * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / C;
    const int c = static_cast<int>(i - n * C);
    out[i] = wte[int64_t(tokens[n]) * C + c];
  }
}

// blockIdx.x: one distinct token u; positions order[start[u] .. start[u+1]) in increasing n.
__global__ void embedding_backward_kernel(float* dwte, const float* dout, const int32_t* order,
                                          const int32_t* uniq, const int32_t* start, int C) {
  const int u = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float* row = dwte + int64_t(uniq[u]) * C + c;
  float acc = *row;
  for (int i = start[u]; i < start[u + 1]; ++i) acc += dout[int64_t(order[i]) * C + c];
  *row = acc;
}

}  // namespace

void embedding_forward(cudaStream_t stream, float* out, const int32_t* tokens, const float* wte,
                       int64_t N, int C) {
  if (N <= 0 || C <= 0) return;
  embedding_forward_kernel<<<grid_for(N * C), kBlock, 0, stream>>>(out, tokens, wte, N, C);
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(cudaStream_t stream, Scratch& scratch, float* dwte, const float* dout,
                        const int32_t* tokens, int64_t N, int C, int V) {
  if (N <= 0 || C <= 0) return;
  const int n_tok = to_int(N, "embedding_backward N");
  std::vector<int32_t> tok(n_tok);
  CUDA_CHECK(cudaMemcpyAsync(tok.data(), tokens, sizeof(int32_t) * tok.size(),
                             cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));

  // Stable counting sort: host layout [order (N) | uniq (U) | start (U+1)].
  std::vector<int32_t> count(static_cast<size_t>(V) + 1, 0);
  for (int n = 0; n < n_tok; ++n) {
    if (tok[n] < 0 || tok[n] >= V)
      throw std::runtime_error("embedding_backward: token " + std::to_string(tok[n]) +
                               " at position " + std::to_string(n) + " outside [0, " +
                               std::to_string(V) + ")");
    ++count[tok[n]];
  }
  std::vector<int32_t> uniq, start, next(V, 0);
  int32_t offset = 0;
  for (int t = 0; t < V; ++t) {
    if (count[t] == 0) continue;
    uniq.push_back(t);
    start.push_back(offset);
    next[t] = offset;
    offset += count[t];
  }
  start.push_back(offset);
  const size_t U = uniq.size();
  std::vector<int32_t> host(static_cast<size_t>(n_tok) + 2 * U + 1);
  for (int n = 0; n < n_tok; ++n) host[next[tok[n]]++] = n;
  std::copy(uniq.begin(), uniq.end(), host.begin() + n_tok);
  std::copy(start.begin(), start.end(), host.begin() + n_tok + U);

  auto* dev = static_cast<int32_t*>(scratch.get(host.size() * sizeof(int32_t), stream));
  CUDA_CHECK(cudaMemcpyAsync(dev, host.data(), host.size() * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream));
  const dim3 grid(static_cast<unsigned>(U), static_cast<unsigned>((C + kBlock - 1) / kBlock));
  embedding_backward_kernel<<<grid, kBlock, 0, stream>>>(dwte, dout, dev, dev + n_tok,
                                                          dev + n_tok + U, C);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaStreamSynchronize(stream));  // `host` is pageable and freed on return
}

}  // namespace kvt::cuda

// kernels/cuda/embedding.cu — token embedding.
//   forward:  out[n, :] = wte[tokens[n], :]
//   backward: dwte[tokens[n], :] += dout[n, :], rows of one token summed in increasing n.
// The backward runs on the device, without a host round trip:
//   1. pairs (tokens[n], n) sorted by token with cub::DeviceRadixSort (a stable LSD radix sort over
//      the full 32-bit key, so positions of one token stay in increasing n);
//   2. one thread per (sorted position i, channel c) where a run of equal tokens starts adds the
//      run's dout rows in order: acc = dwte[u, c]; acc += dout[n_j, c] for j = i, i+1, ... .
// Every dwte element has exactly one writer and the CPU's summation order (d += g row by row),
// so the result is deterministic and bitwise the CPU's. Tokens outside [0, V) are skipped (the
// forward does not check them either; the data loader does).
#include <cub/device/device_radix_sort.cuh>

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

__global__ void iota_kernel(int32_t* v, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v[i] = i;
}

// blockIdx.x: sorted position i (only the first of a run of equal tokens works); channel
// c = blockIdx.y * blockDim.x + threadIdx.x. key[] sorted tokens, pos[] their positions n.
__global__ void embedding_backward_kernel(float* dwte, const float* dout, const int32_t* key,
                                          const int32_t* pos, int n, int C, int V) {
  const int i = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  const int32_t u = key[i];
  if (c >= C || (i > 0 && key[i - 1] == u) || u < 0 || u >= V) return;
  float* row = dwte + int64_t(u) * C + c;
  float acc = *row;
  for (int j = i; j < n && key[j] == u; ++j) acc += dout[int64_t(pos[j]) * C + c];
  *row = acc;
}

size_t align256(size_t b) { return (b + 255) & ~size_t(255); }

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
  const int n = to_int(N, "embedding_backward N");
  size_t sort_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), n, 0, 32, stream));
  // scratch: sorted keys | positions in | positions out | cub's temporary storage
  const size_t arr = align256(sizeof(int32_t) * size_t(n));
  char* base = static_cast<char*>(scratch.get(3 * arr + sort_bytes, stream));
  auto* key_out = reinterpret_cast<int32_t*>(base);
  auto* pos_in = reinterpret_cast<int32_t*>(base + arr);
  auto* pos_out = reinterpret_cast<int32_t*>(base + 2 * arr);
  void* temp = base + 3 * arr;

  iota_kernel<<<grid_for(n), kBlock, 0, stream>>>(pos_in, n);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, sort_bytes, tokens, key_out, pos_in, pos_out, n,
                                             0, 32, stream));
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>((C + kBlock - 1) / kBlock));
  embedding_backward_kernel<<<grid, kBlock, 0, stream>>>(dwte, dout, key_out, pos_out, n, C, V);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvt::cuda

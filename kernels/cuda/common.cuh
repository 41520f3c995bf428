// kernels/cuda/common.cuh — error checks, launch helpers, reductions and scratch memory shared by
// the CUDA kernels. Every kernel runs on the backend's one stream, in issue order, so a scratch
// buffer is safely reused by consecutive ops.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace kvt::cuda {

// Throws std::runtime_error("<file>:<line>: <call>: <error string>").
[[noreturn]] void throw_error(const char* file, int line, const char* call, const std::string& msg);
const char* cublas_status_string(cublasStatus_t s);

#define CUDA_CHECK(call)                                                                \
  do {                                                                                  \
    cudaError_t kvt_err_ = (call);                                                      \
    if (kvt_err_ != cudaSuccess)                                                        \
      ::kvt::cuda::throw_error(__FILE__, __LINE__, #call, cudaGetErrorString(kvt_err_)); \
  } while (0)

#define CUBLAS_CHECK(call)                                                                     \
  do {                                                                                         \
    cublasStatus_t kvt_st_ = (call);                                                           \
    if (kvt_st_ != CUBLAS_STATUS_SUCCESS)                                                      \
      ::kvt::cuda::throw_error(__FILE__, __LINE__, #call,                                      \
                               ::kvt::cuda::cublas_status_string(kvt_st_));                    \
  } while (0)

// After a kernel launch: reports bad launch configurations (not asynchronous faults).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

constexpr int kBlock = 256;      // threads per block for element-wise and row kernels
constexpr int kMaxGrid = 65535;  // grid-stride kernels cap their grid here (fixed: deterministic)

inline unsigned grid_for(int64_t n, int block = kBlock) {
  int64_t g = (n + block - 1) / block;
  if (g < 1) g = 1;
  return static_cast<unsigned>(g < kMaxGrid ? g : kMaxGrid);
}

// Checked narrowing for sizes handed to cuBLAS or used as grid dimensions.
int to_int(int64_t v, const char* what);

// One cudaMalloc'ed block, freed on destruction (move-only).
class DeviceMemory {
 public:
  DeviceMemory() = default;
  explicit DeviceMemory(size_t bytes);
  ~DeviceMemory();
  DeviceMemory(DeviceMemory&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceMemory& operator=(DeviceMemory&& o) noexcept;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Device scratch memory that grows on demand and is never shrunk.
class Scratch {
 public:
  Scratch() = default;
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  // At least `bytes` of device memory; waits for `stream` before replacing a smaller buffer.
  void* get(size_t bytes, cudaStream_t stream);

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

#if defined(__CUDACC__)
// Sum over the 32 lanes of a warp; every lane gets the result (fixed butterfly order).
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum / max for blockDim.x a multiple of 32 (<= 1024); every thread gets the result.
// `shared` holds at least 32 elements; the function syncs before returning so it can be reused.
template <typename T>
__device__ T block_sum(T v, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T r = lane < nwarps ? shared[lane] : T(0);
  r = warp_sum(r);
  __syncthreads();
  return r;
}
__device__ inline float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float r = lane < nwarps ? shared[lane] : -INFINITY;
  r = warp_max(r);
  __syncthreads();
  return r;
}
#endif

}  // namespace kvt::cuda

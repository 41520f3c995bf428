// data/gguf_quant.h — ggml tensor types and their dequantization to float
// (docs/design.md, "Importing models").
//
// Block layouts (little-endian, fp16 = IEEE half), as in llama.cpp's ggml-common.h:
//   Q4_0  32 values, 18 bytes: fp16 d, qs[16]          x[j] = (lo4(qs[j]) - 8)·d, x[j+16] = (hi4 - 8)·d
//   Q4_1  32 values, 20 bytes: fp16 d, fp16 m, qs[16]  x[j] = lo4(qs[j])·d + m,   x[j+16] = hi4·d + m
//   Q8_0  32 values, 34 bytes: fp16 d, int8 q[32]      x[j] = q[j]·d
//   Q4_K 256 values, 144 bytes: fp16 d, fp16 dmin, scales[12] (8 pairs of 6-bit scale/min), qs[128]
//   Q5_K 256 values, 176 bytes: fp16 d, fp16 dmin, scales[12], qh[32] (5th bits), qs[128]
//   Q6_K 256 values, 210 bytes: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], fp16 d
//   F32, F16, BF16: one value per element.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvt {

enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
};

// True when `t` is one of the types above (the ones this reader dequantizes).
bool ggml_type_supported(uint32_t t);
// "Q4_1", ...; for a ggml type we do not dequantize (Q5_0, IQ2_XS, ...) its ggml name too, and
// nullptr for a number ggml does not define.
const char* ggml_type_name(uint32_t t);
// Values per block (1 for F32/F16/BF16, 32, or 256) and bytes per block.
int64_t ggml_block_values(GgmlType t);
size_t ggml_block_bytes(GgmlType t);
// Bytes of a row of ne0 values; throws std::runtime_error when ne0 is negative or not a whole
// number of blocks.
size_t ggml_row_bytes(GgmlType t, int64_t ne0);
// Dequantizes n values (a whole number of blocks) from src to dst.
void dequantize_row(GgmlType t, const uint8_t* src, float* dst, int64_t n);

// IEEE half -> float, exact (subnormals, ±inf, nan kept); bf16 -> float (the upper 16 bits).
float ggml_half_to_float(uint16_t h);
float ggml_bf16_to_float(uint16_t b);

}  // namespace kvt

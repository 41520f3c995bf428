// data/gguf_quant.cpp — dequantization of ggml blocks, written to match llama.cpp's
// dequantize_row_* in ggml-quants.c value for value (see data/gguf_quant.h for the layouts).
#include "data/gguf_quant.h"

#include <bit>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace kvt {

namespace {

constexpr int kQK = 32;    // values per Q4_0 / Q4_1 / Q8_0 block
constexpr int kQKK = 256;  // values per K-quant super-block

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
float load_half(const uint8_t* p) { return ggml_half_to_float(load_u16(p)); }

// The j-th (0..7) 6-bit scale and min of a Q4_K/Q5_K super-block (llama.cpp get_scale_min_k4):
// bytes 0..3 hold scales 0..3 in their low 6 bits, bytes 4..7 mins 0..3; scales and mins 4..7
// take their low 4 bits from bytes 8..11 (low / high nibble) and their top 2 bits from the top
// 2 bits of bytes 0..3 (scales) and 4..7 (mins).
void scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void dequant_q4_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>((qs[j] & 0xF) - 8) * d;
    y[j + kQK / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

void dequant_q4_1(const uint8_t* b, float* y) {
  const float d = load_half(b), m = load_half(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>(qs[j] & 0xF) * d + m;
    y[j + kQK / 2] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

void dequant_q8_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

// Q4_K: 8 sub-blocks of 32; sub-block s: x = d·sc_s·q - dmin·m_s, q the 4-bit quant.
// Each 32-byte chunk of qs serves two sub-blocks: low nibbles then high nibbles.
void dequant_q4_k(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int j = 0, is = 0; j < kQKK; j += 64, is += 2, q += 32) {
    uint8_t sc, m;
    scale_min_k4(is, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
  }
}

// Q5_K: as Q4_K with a 5th bit per value; value l of sub-block s takes bit s of qh[l].
void dequant_q5_k(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0, is = 0; j < kQKK; j += 64, is += 2, ql += 32) {
    uint8_t sc, m;
    scale_min_k4(is, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l)
      *y++ = d1 * static_cast<float>((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l)
      *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
    u1 = static_cast<uint8_t>(u1 << 2);
    u2 = static_cast<uint8_t>(u2 << 2);
  }
}

// Q6_K: 16 sub-blocks of 16; x = d·scale_s·(q - 32), q = 4 low bits from ql | 2 high bits from qh.
// Each half (128 values) uses ql[64], qh[32], scales[8]: value l + 32k (k = 0..3) takes the
// low (k even) or high (k odd) nibble of ql[l + 32·(k&1)] and bits 2k..2k+1 of qh[l].
void dequant_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_half(b + 208);
  for (int n = 0; n < kQKK; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

}  // namespace

float ggml_half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf, or nan with its payload
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;  // ±0
  } else {
    // Subnormal: value = mant · 2^-24; normalise so the leading 1 sits at bit 10.
    int e = 113;  // exponent field of 2^-14
    while ((mant & 0x400) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (static_cast<uint32_t>(e) << 23) | ((mant & 0x3FF) << 13);
  }
  return std::bit_cast<float>(bits);
}

float ggml_bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

bool ggml_type_supported(uint32_t t) {
  switch (static_cast<GgmlType>(t)) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q8_0:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
    case GgmlType::BF16:
      return true;
  }
  return false;
}

const char* ggml_type_name(uint32_t t) {
  // ggml's numbering (4 and 5, the removed Q4_2/Q4_3, are undefined).
  static const char* const names[] = {
      "F32",     "F16",    "Q4_0",    "Q4_1", nullptr, nullptr, "Q5_0",  "Q5_1",
      "Q8_0",    "Q8_1",   "Q2_K",    "Q3_K", "Q4_K",  "Q5_K",  "Q6_K",  "Q8_K",
      "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS",
      "I8",      "I16",    "I32",     "I64",  "F64",   "IQ1_M", "BF16",  nullptr,
      nullptr,   nullptr,  "TQ1_0",   "TQ2_0"};
  return t < sizeof(names) / sizeof(names[0]) ? names[t] : nullptr;
}

int64_t ggml_block_values(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
      return 1;
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q8_0:
      return kQK;
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return kQKK;
  }
  throw std::runtime_error("unsupported ggml type " + std::to_string(static_cast<uint32_t>(t)));
}

size_t ggml_block_bytes(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return 4;
    case GgmlType::F16: return 2;
    case GgmlType::BF16: return 2;
    case GgmlType::Q4_0: return 2 + kQK / 2;
    case GgmlType::Q4_1: return 4 + kQK / 2;
    case GgmlType::Q8_0: return 2 + kQK;
    case GgmlType::Q4_K: return 4 + 12 + kQKK / 2;
    case GgmlType::Q5_K: return 4 + 12 + kQKK / 8 + kQKK / 2;
    case GgmlType::Q6_K: return kQKK / 2 + kQKK / 4 + kQKK / 16 + 2;
  }
  throw std::runtime_error("unsupported ggml type " + std::to_string(static_cast<uint32_t>(t)));
}

size_t ggml_row_bytes(GgmlType t, int64_t ne0) {
  const int64_t bv = ggml_block_values(t);
  if (ne0 < 0 || ne0 % bv != 0)
    throw std::runtime_error(std::string("type ") + ggml_type_name(static_cast<uint32_t>(t)) +
                             " with " + std::to_string(ne0) +
                             " elements per row is not a whole number of blocks of " +
                             std::to_string(bv));
  const uint64_t blocks = static_cast<uint64_t>(ne0 / bv);
  if (blocks > std::numeric_limits<size_t>::max() / ggml_block_bytes(t))  // else wraps, to 0 for 2^62 F32
    throw std::runtime_error(std::string("type ") + ggml_type_name(static_cast<uint32_t>(t)) +
                             " with " + std::to_string(ne0) + " elements per row: the row's bytes overflow");
  return static_cast<size_t>(blocks) * ggml_block_bytes(t);
}

void dequantize_row(GgmlType t, const uint8_t* src, float* dst, int64_t n) {
  const int64_t bv = ggml_block_values(t);
  if (n < 0 || n % bv != 0) (void)ggml_row_bytes(t, n);  // throws the message above
  const size_t bb = ggml_block_bytes(t);
  const int64_t nb = n / bv;
  switch (t) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = ggml_half_to_float(load_u16(src + 2 * i));
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = ggml_bf16_to_float(load_u16(src + 2 * i));
      return;
    default:
      break;
  }
  void (*block)(const uint8_t*, float*) = nullptr;
  switch (t) {
    case GgmlType::Q4_0: block = dequant_q4_0; break;
    case GgmlType::Q4_1: block = dequant_q4_1; break;
    case GgmlType::Q8_0: block = dequant_q8_0; break;
    case GgmlType::Q4_K: block = dequant_q4_k; break;
    case GgmlType::Q5_K: block = dequant_q5_k; break;
    case GgmlType::Q6_K: block = dequant_q6_k; break;
    default: break;
  }
  for (int64_t i = 0; i < nb; ++i) block(src + i * bb, dst + i * bv);
}

}  // namespace kvt

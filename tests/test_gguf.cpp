// GGUF reader and ggml dequantization: metadata of every value type (v2 and v3), tensors read
// back exactly, each quant type against values computed here from the formulas (and, for the
// K-quants, against a bit-by-bit second implementation on random bytes), half->float on special
// values, and one-line errors naming the file for damaged files, including every truncation.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "data/gguf.h"
#include "data/gguf_quant.h"
#include "tests/gguf_writer.h"

namespace fs = std::filesystem;
using kvt::GgmlType;
using kvt::GgufFile;
using kvt::GgufType;
using kvt::GgufValue;

using namespace kvt::gguf_writer;

namespace {

class gguf_file : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kvt_gguf_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& bytes) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  // Opening `bytes` must throw a runtime_error naming the file and containing `what`.
  void expect_error(const std::string& bytes, const std::string& what) {
    const std::string p = write("bad.gguf", bytes);
    try {
      GgufFile::open(p);
      ADD_FAILURE() << "no error, expected: " << what;
    } catch (const std::runtime_error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(p), std::string::npos) << m;
      EXPECT_NE(m.find(what), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  }
  fs::path dir_;
};

std::string floats_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

// A float known to be a half: value = sign·(1024 + mant)·2^(exp - 25), from the bits, by hand.
double half_reference(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 31;
  const int mant = h & 1023;
  if (exp == 31) return mant ? std::nan("") : sign * INFINITY;
  if (exp == 0) return sign * std::ldexp(static_cast<double>(mant), -24);
  return sign * std::ldexp(static_cast<double>(1024 + mant), exp - 25);
}

// ---- metadata ----


TEST_F(gguf_file, metadata_of_every_type_round_trips_v2_and_v3) {
  for (uint32_t version : {2u, 3u}) {
    Builder b;
    b.version = version;
    b.kv("u8", GgufType::U8, Bytes().u8(200).b);
    b.kv("i8", GgufType::I8, Bytes().put<int8_t>(-100).b);
    b.kv("u16", GgufType::U16, Bytes().u16(60000).b);
    b.kv("i16", GgufType::I16, Bytes().put<int16_t>(-30000).b);
    b.kv("u32", GgufType::U32, enc_u32(4000000000u));
    b.kv("i32", GgufType::I32, Bytes().put<int32_t>(-2000000000).b);
    b.kv("f32", GgufType::F32, Bytes().put<float>(1e-5f).b);
    b.kv("bool_t", GgufType::BOOL, Bytes().u8(1).b);
    b.kv("bool_f", GgufType::BOOL, Bytes().u8(0).b);
    b.kv("str", GgufType::STRING, enc_str("llama \xe2\x9c\x93"));
    b.kv("empty_str", GgufType::STRING, enc_str(""));
    b.kv("u64", GgufType::U64, Bytes().u64(0xFFFFFFFFFFFFFFFFull).b);
    b.kv("i64", GgufType::I64, Bytes().put<int64_t>(std::numeric_limits<int64_t>::min()).b);
    b.kv("f64", GgufType::F64, Bytes().put<double>(3.141592653589793).b);
    b.kv("tokens", GgufType::ARRAY, Bytes().u32(8).u64(3).str("<s>").str("").str("\xe2\x96\x81the").b);
    b.kv("scores", GgufType::ARRAY, Bytes().u32(6).u64(2).put<float>(-1.5f).put<float>(2.f).b);
    b.kv("empty", GgufType::ARRAY, Bytes().u32(5).u64(0).b);
    // [[1, 2], [], [-3]] of i32, and [[["a"]]]
    b.kv("nested", GgufType::ARRAY,
         Bytes().u32(9).u64(3).u32(5).u64(2).put<int32_t>(1).put<int32_t>(2).u32(5).u64(0)
             .u32(5).u64(1).put<int32_t>(-3).b);
    b.kv("deep", GgufType::ARRAY, Bytes().u32(9).u64(1).u32(9).u64(1).u32(8).u64(1).str("a").b);
    const std::string p = write("v" + std::to_string(version) + ".gguf", b.build());
    const GgufFile f = GgufFile::open(p);
    EXPECT_EQ(f.version(), version);
    ASSERT_EQ(f.metadata().size(), 19u);
    EXPECT_EQ(f.metadata()[0].first, "u8");
    EXPECT_EQ(std::get<uint8_t>(f.find("u8")->v), 200);
    EXPECT_EQ(std::get<int8_t>(f.find("i8")->v), -100);
    EXPECT_EQ(std::get<uint16_t>(f.find("u16")->v), 60000);
    EXPECT_EQ(std::get<int16_t>(f.find("i16")->v), -30000);
    EXPECT_EQ(f.get_u32("u32"), 4000000000u);
    EXPECT_EQ(std::get<int32_t>(f.find("i32")->v), -2000000000);
    EXPECT_EQ(f.get_i64("i32"), -2000000000);
    EXPECT_EQ(f.get_u32("u8"), 200u);  // integer getters take any integer that fits
    EXPECT_EQ(f.get_f32("f32"), 1e-5f);
    EXPECT_TRUE(f.get_bool("bool_t"));
    EXPECT_FALSE(f.get_bool("bool_f"));
    EXPECT_EQ(f.get_string("str"), "llama \xe2\x9c\x93");
    EXPECT_EQ(f.get_string("empty_str"), "");
    EXPECT_EQ(f.get_u64("u64"), 0xFFFFFFFFFFFFFFFFull);
    EXPECT_EQ(f.get_i64("i64"), std::numeric_limits<int64_t>::min());
    EXPECT_EQ(std::get<double>(f.find("f64")->v), 3.141592653589793);
    EXPECT_EQ(f.find("f64")->type(), GgufType::F64);
    EXPECT_EQ(f.get_string_array("tokens"), (std::vector<std::string>{"<s>", "", "\xe2\x96\x81the"}));
    EXPECT_EQ(f.get_f32_array("scores"), (std::vector<float>{-1.5f, 2.f}));
    const auto& empty = std::get<kvt::GgufArray>(f.find("empty")->v);
    EXPECT_EQ(empty.elem_type, GgufType::I32);
    EXPECT_TRUE(empty.items.empty());
    const auto& nested = std::get<kvt::GgufArray>(f.find("nested")->v);
    ASSERT_EQ(nested.items.size(), 3u);
    EXPECT_EQ(nested.elem_type, GgufType::ARRAY);
    const auto& n0 = std::get<kvt::GgufArray>(nested.items[0].v);
    ASSERT_EQ(n0.items.size(), 2u);
    EXPECT_EQ(std::get<int32_t>(n0.items[1].v), 2);
    EXPECT_TRUE(std::get<kvt::GgufArray>(nested.items[1].v).items.empty());
    EXPECT_EQ(std::get<int32_t>(std::get<kvt::GgufArray>(nested.items[2].v).items[0].v), -3);
    const auto& d0 = std::get<kvt::GgufArray>(f.find("deep")->v).items[0];
    const auto& d1 = std::get<kvt::GgufArray>(d0.v).items[0];
    EXPECT_EQ(std::get<std::string>(std::get<kvt::GgufArray>(d1.v).items[0].v), "a");
    EXPECT_EQ(f.find("absent"), nullptr);
    EXPECT_TRUE(f.tensors().empty());
  }
}

TEST_F(gguf_file, getters_name_the_file_and_key_when_absent_or_mistyped) {
  Builder b;
  b.kv("name", GgufType::STRING, enc_str("x"));
  b.kv("neg", GgufType::I32, Bytes().put<int32_t>(-1).b);
  b.kv("ints", GgufType::ARRAY, Bytes().u32(5).u64(1).put<int32_t>(7).b);
  const std::string p = write("a.gguf", b.build());
  const GgufFile f = GgufFile::open(p);
  auto expect_throw = [&](auto fn, const std::string& what) {
    try {
      fn();
      ADD_FAILURE() << "no error, expected " << what;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_throw([&] { f.get_u32("llama.block_count"); }, "key 'llama.block_count' missing");
  expect_throw([&] { f.get_u32("name"); }, "key 'name' is string, expected u32");
  expect_throw([&] { f.get_string("neg"); }, "key 'neg' is i32, expected string");
  expect_throw([&] { f.get_u32("neg"); }, "key 'neg' value out of range for u32");
  expect_throw([&] { f.get_string_array("ints"); }, "key 'ints' is array of i32, expected array of string");
  expect_throw([&] { f.get_f32("name"); }, "expected f32");
  EXPECT_EQ(f.get_i64_array("ints"), (std::vector<int64_t>{7}));
}

// ---- tensors ----

TEST_F(gguf_file, f32_f16_bf16_tensors_read_back_exactly) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> f32(3 * 2 * 2);
  for (float& x : f32) x = nd(rng);
  const std::vector<uint16_t> f16_bits = {0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x8000,
                                          0x3555, 0xFBFF};  // 1, -2, .5, 65504, 2^-24, -0, ...
  const std::vector<float> f16_vals = {1.f, -2.f, 0.5f, 65504.f, std::ldexp(1.f, -24), -0.f,
                                       0.333251953125f, -65504.f};
  std::vector<float> bf_vals = {1.f, -3.5f, 1e30f, -1e-30f, 0.f, 2.f};
  std::vector<uint16_t> bf_bits;
  for (float& v : bf_vals) {
    const uint32_t u = std::bit_cast<uint32_t>(v) & 0xFFFF0000u;  // exactly bf16
    v = std::bit_cast<float>(u);
    bf_bits.push_back(static_cast<uint16_t>(u >> 16));
  }
  Builder b;
  b.tensors.push_back({"a.weight", {3, 2, 2}, 0, floats_bytes(f32), {}});
  b.tensors.push_back({"h", {4, 2}, 1, std::string(reinterpret_cast<const char*>(f16_bits.data()), 16), {}});
  b.tensors.push_back({"bf", {6}, 30, std::string(reinterpret_cast<const char*>(bf_bits.data()), 12), {}});
  const std::string p = write("t.gguf", b.build());
  const GgufFile f = GgufFile::open(p);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.data_offset(), b.data_pos);
  const kvt::GgufTensorInfo* a = f.tensor("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->n_dims, 3u);
  EXPECT_EQ(a->ne[0], 3);
  EXPECT_EQ(a->ne[1], 2);
  EXPECT_EQ(a->ne[2], 2);
  EXPECT_EQ(a->ne[3], 1);
  EXPECT_EQ(a->n_bytes, 48u);
  EXPECT_EQ(f.read_f32(*a), f32);
  const auto h = f.read_f32(*f.tensor("h"));
  ASSERT_EQ(h.size(), f16_vals.size());
  for (size_t i = 0; i < h.size(); ++i) {
    EXPECT_EQ(h[i], f16_vals[i]) << i;
    EXPECT_EQ(std::signbit(h[i]), std::signbit(f16_vals[i])) << i;
  }
  EXPECT_EQ(f.read_f32(*f.tensor("bf")), bf_vals);
  EXPECT_EQ(f.tensor("bf")->offset % 32, 0u);
  EXPECT_EQ(f.tensor("missing"), nullptr);
}

TEST(gguf_quant, half_to_float_special_values_and_every_bit_pattern) {
  EXPECT_EQ(kvt::ggml_half_to_float(0x0000), 0.f);
  EXPECT_FALSE(std::signbit(kvt::ggml_half_to_float(0x0000)));
  EXPECT_TRUE(std::signbit(kvt::ggml_half_to_float(0x8000)));
  EXPECT_EQ(kvt::ggml_half_to_float(0x0001), std::ldexp(1.f, -24));  // smallest subnormal
  EXPECT_EQ(kvt::ggml_half_to_float(0x03FF), std::ldexp(1023.f, -24));  // largest subnormal
  EXPECT_EQ(kvt::ggml_half_to_float(0x0400), std::ldexp(1.f, -14));  // smallest normal
  EXPECT_EQ(kvt::ggml_half_to_float(0x8001), -std::ldexp(1.f, -24));
  EXPECT_EQ(kvt::ggml_half_to_float(0x7BFF), 65504.f);
  EXPECT_EQ(kvt::ggml_half_to_float(0x7C00), INFINITY);
  EXPECT_EQ(kvt::ggml_half_to_float(0xFC00), -INFINITY);
  EXPECT_TRUE(std::isnan(kvt::ggml_half_to_float(0x7E00)));
  EXPECT_TRUE(std::isnan(kvt::ggml_half_to_float(0x7C01)));  // signalling-nan payload stays a nan
  EXPECT_TRUE(std::isnan(kvt::ggml_half_to_float(0xFE00)));
  EXPECT_EQ(kvt::ggml_half_to_float(0x3C00), 1.f);
  EXPECT_EQ(kvt::ggml_half_to_float(0xC000), -2.f);
  for (uint32_t h = 0; h < 65536; ++h) {
    const double want = half_reference(static_cast<uint16_t>(h));
    const float got = kvt::ggml_half_to_float(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << h;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << h;
      ASSERT_EQ(std::signbit(got), std::signbit(want)) << h;
    }
  }
  EXPECT_EQ(kvt::ggml_bf16_to_float(0x3F80), 1.f);
  EXPECT_EQ(kvt::ggml_bf16_to_float(0xC0A0), -5.f);
  EXPECT_EQ(kvt::ggml_bf16_to_float(0x7F80), INFINITY);
}

TEST(gguf_quant, row_bytes_per_type) {
  EXPECT_EQ(kvt::ggml_row_bytes(GgmlType::F32, 7), 28u);
  EXPECT_EQ(kvt::ggml_row_bytes(GgmlType::F16, 7), 14u);
  EXPECT_EQ(kvt::ggml_row_bytes(GgmlType::BF16, 7), 14u);
  EXPECT_EQ(kvt::ggml_row_bytes(GgmlType::Q4_0, 64), 36u);
  EXPECT_EQ(kvt::ggml_row_bytes(GgmlType::Q4_1, 64), 40u);
  EXPECT_EQ(kvt::ggml_row_bytes(GgmlType::Q8_0, 64), 68u);
  EXPECT_EQ(kvt::ggml_row_bytes(GgmlType::Q4_K, 512), 288u);
  EXPECT_EQ(kvt::ggml_row_bytes(GgmlType::Q5_K, 256), 176u);
  EXPECT_EQ(kvt::ggml_row_bytes(GgmlType::Q6_K, 256), 210u);
  EXPECT_THROW(kvt::ggml_row_bytes(GgmlType::Q4_K, 128), std::runtime_error);
  EXPECT_THROW(kvt::ggml_row_bytes(GgmlType::Q8_0, 33), std::runtime_error);
  EXPECT_STREQ(kvt::ggml_type_name(3), "Q4_1");
  EXPECT_STREQ(kvt::ggml_type_name(14), "Q6_K");
  EXPECT_EQ(kvt::ggml_type_name(99), nullptr);
  EXPECT_FALSE(kvt::ggml_type_supported(6));  // Q5_0
}

// ---- 32-value quants, built by hand ----

std::vector<float> dq(GgmlType t, const std::vector<uint8_t>& src, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  kvt::dequantize_row(t, src.data(), y.data(), n);
  return y;
}
void put16(std::vector<uint8_t>& v, uint16_t x) {
  v.push_back(static_cast<uint8_t>(x & 0xFF));
  v.push_back(static_cast<uint8_t>(x >> 8));
}

TEST(gguf_quant, q4_0_blocks) {
  std::vector<uint8_t> src;
  const uint16_t d_bits[2] = {0x3800, 0xC400};  // 0.5, -4
  const float d[2] = {0.5f, -4.f};
  for (int blk = 0; blk < 2; ++blk) {
    put16(src, d_bits[blk]);
    for (int j = 0; j < 16; ++j) src.push_back(static_cast<uint8_t>(j | ((15 - j) << 4)));
  }
  const auto y = dq(GgmlType::Q4_0, src, 64);
  for (int blk = 0; blk < 2; ++blk)
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[blk * 32 + j], (j - 8) * d[blk]);
      EXPECT_EQ(y[blk * 32 + 16 + j], (7 - j) * d[blk]);
    }
  EXPECT_EQ(y[0], -4.f);    // (0 - 8)·0.5
  EXPECT_EQ(y[32], 32.f);   // (0 - 8)·-4
}

TEST(gguf_quant, q4_1_blocks) {
  std::vector<uint8_t> src;
  put16(src, 0x3400);  // d = 0.25
  put16(src, 0xBE00);  // m = -1.5
  for (int j = 0; j < 16; ++j) src.push_back(static_cast<uint8_t>(((j * 5) & 15) | ((j ^ 9) << 4)));
  const auto y = dq(GgmlType::Q4_1, src, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], ((j * 5) & 15) * 0.25f - 1.5f);
    EXPECT_EQ(y[j + 16], (j ^ 9) * 0.25f - 1.5f);
  }
  EXPECT_EQ(y[16], 9 * 0.25f - 1.5f);
}

TEST(gguf_quant, q8_0_blocks) {
  std::vector<uint8_t> src;
  put16(src, 0x3000);  // d = 1/8
  for (int j = 0; j < 32; ++j) src.push_back(static_cast<uint8_t>(static_cast<int8_t>(j * 8 - 128)));
  const auto y = dq(GgmlType::Q8_0, src, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j * 8 - 128) / 8.f);
  EXPECT_EQ(y[0], -16.f);
  EXPECT_EQ(y[31], 15.f);
}

// ---- K-quants ----

// n bits of p starting at bit `pos` (bit 0 = least significant bit of p[0]).
unsigned bits(const uint8_t* p, int pos, int n) {
  unsigned v = 0;
  for (int i = 0; i < n; ++i) v |= ((p[(pos + i) / 8] >> ((pos + i) % 8)) & 1u) << i;
  return v;
}

// The 6-bit scale / min of sub-block s from the 12 scale bytes, described bit by bit:
// s < 4: scale = bits 0..5 of byte s, min = bits 0..5 of byte s+4;
// s >= 4: scale = low nibble of byte s+4, then bits 6..7 of byte s-4 as its top bits;
//         min = high nibble of byte s+4, then bits 6..7 of byte s as its top bits.
unsigned k_scale(const uint8_t* sc, int s) {
  return s < 4 ? bits(sc, 8 * s, 6) : bits(sc, 8 * (s + 4), 4) | (bits(sc, 8 * (s - 4) + 6, 2) << 4);
}
unsigned k_min(const uint8_t* sc, int s) {
  return s < 4 ? bits(sc, 8 * (s + 4), 6) : bits(sc, 8 * (s + 4) + 4, 4) | (bits(sc, 8 * s + 6, 2) << 4);
}

// Packs eight 6-bit scales and mins the way llama.cpp's quantize_row_q4_K does.
std::vector<uint8_t> pack_k_scales(const int (&sc)[8], const int (&mn)[8]) {
  std::vector<uint8_t> q(12);
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    q[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
  return q;
}

// Value i of a Q4_K / Q5_K super-block: sub-block s = i / 32, position l = i % 32; the 4 low bits
// are nibble (s odd ? high : low) of qs[32·(s/2) + l]; Q5_K adds 16 · bit s of qh[l].
double ref_q45k(const uint8_t* blk, int i, bool five) {
  const double d = half_reference(static_cast<uint16_t>(blk[0] | blk[1] << 8));
  const double dmin = half_reference(static_cast<uint16_t>(blk[2] | blk[3] << 8));
  const uint8_t* sc = blk + 4;
  const uint8_t* qh = blk + 16;
  const uint8_t* qs = blk + (five ? 48 : 16);
  const int s = i / 32, l = i % 32;
  unsigned q = bits(qs, 8 * (32 * (s / 2) + l) + 4 * (s % 2), 4);
  if (five) q += 16 * bits(qh, 8 * l + s, 1);
  return d * k_scale(sc, s) * q - dmin * k_min(sc, s);
}

// Value i of a Q6_K super-block: half h = i / 128, r = i % 128, quarter k = r / 32, l = r % 32;
// low 4 bits: nibble (k >= 2 ? high : low) of ql[64h + 32·(k % 2) + l]; high 2 bits: bits
// 2k..2k+1 of qh[32h + l]; q - 32 times the int8 scale of its 16-value sub-block i / 16, times d.
double ref_q6k(const uint8_t* blk, int i) {
  const uint8_t* ql = blk;
  const uint8_t* qh = blk + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
  const double d = half_reference(static_cast<uint16_t>(blk[208] | blk[209] << 8));
  const int h = i / 128, r = i % 128, k = r / 32, l = r % 32;
  const unsigned lo = bits(ql, 8 * (64 * h + 32 * (k % 2) + l) + 4 * (k / 2), 4);
  const unsigned hi = bits(qh, 8 * (32 * h + l) + 2 * k, 2);
  return d * sc[i / 16] * (static_cast<int>(lo | hi << 4) - 32);
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-6 * std::max(1.0, std::fabs(want[i]))) << "value " << i;
}

TEST(gguf_quant, q4_k_scale_min_unpacking_by_hand) {
  const int sc[8] = {1, 2, 3, 63, 17, 40, 5, 33};
  const int mn[8] = {0, 7, 63, 1, 48, 2, 31, 16};
  std::vector<uint8_t> blk;
  put16(blk, 0x3C00);  // d = 1
  put16(blk, 0x3800);  // dmin = 0.5
  const auto packed = pack_k_scales(sc, mn);
  blk.insert(blk.end(), packed.begin(), packed.end());
  for (int s = 0; s < 8; ++s) {
    EXPECT_EQ(k_scale(packed.data(), s), static_cast<unsigned>(sc[s])) << s;
    EXPECT_EQ(k_min(packed.data(), s), static_cast<unsigned>(mn[s])) << s;
  }
  for (int b = 0; b < 128; ++b) blk.push_back(static_cast<uint8_t>((b % 16) | ((15 - b % 16) << 4)));
  ASSERT_EQ(blk.size(), 144u);
  const auto y = dq(GgmlType::Q4_K, blk, 256);
  for (int i = 0; i < 256; ++i) {
    const int s = i / 32, l = i % 32;
    const int q = (s % 2 == 0) ? l % 16 : 15 - l % 16;
    EXPECT_EQ(y[i], 1.f * sc[s] * q - 0.5f * mn[s]) << i;
  }
  EXPECT_EQ(y[96], 944.5f);      // sub-block 3 (high nibbles): 63·15 - 0.5·1
  EXPECT_EQ(y[128 + 5], 85.f - 24.f);  // sub-block 4: 17·5 - 0.5·48
  EXPECT_EQ(y[224], 33 * 15 - 8.f);    // sub-block 7: 33·15 - 0.5·16
}

TEST(gguf_quant, q5_k_by_hand) {
  const int sc[8] = {4, 1, 0, 2, 9, 62, 3, 1};
  const int mn[8] = {1, 0, 5, 2, 3, 4, 60, 0};
  std::vector<uint8_t> blk;
  put16(blk, 0x3800);  // d = 0.5
  put16(blk, 0x3C00);  // dmin = 1
  const auto packed = pack_k_scales(sc, mn);
  blk.insert(blk.end(), packed.begin(), packed.end());
  for (int l = 0; l < 32; ++l) blk.push_back(static_cast<uint8_t>(l % 2 ? 0xAA : 0x55));  // qh
  for (int b = 0; b < 128; ++b) blk.push_back(0x73);  // low nibble 3, high 7
  ASSERT_EQ(blk.size(), 176u);
  const auto y = dq(GgmlType::Q5_K, blk, 256);
  for (int i = 0; i < 256; ++i) {
    const int s = i / 32, l = i % 32;
    const int hbit = ((l % 2 ? 0xAA : 0x55) >> s) & 1;
    const int q = (s % 2 == 0 ? 3 : 7) + 16 * hbit;
    EXPECT_EQ(y[i], 0.5f * sc[s] * q - 1.f * mn[s]) << i;
  }
  EXPECT_EQ(y[0], 0.5f * 4 * 19 - 1);  // qh[0] = 0x55: bit 0 set -> 3 + 16
  EXPECT_EQ(y[1], 0.5f * 4 * 3 - 1);   // qh[1] = 0xAA: bit 0 clear
}

TEST(gguf_quant, q6_k_by_hand) {
  std::vector<uint8_t> blk(128, 0x21);             // ql: low nibble 1, high nibble 2
  blk.insert(blk.end(), 64, 0xE4);                  // qh: bit pairs 0, 1, 2, 3
  for (int s = 0; s < 16; ++s) blk.push_back(static_cast<uint8_t>(static_cast<int8_t>(s - 8)));
  put16(blk, 0x3800);                               // d = 0.5
  ASSERT_EQ(blk.size(), 210u);
  const auto y = dq(GgmlType::Q6_K, blk, 256);
  const int q[4] = {1 - 32, 17 - 32, 34 - 32, 50 - 32};
  for (int i = 0; i < 256; ++i) EXPECT_EQ(y[i], 0.5f * (i / 16 - 8) * q[(i % 128) / 32]) << i;
  EXPECT_EQ(y[0], 124.f);   // 0.5·(-8)·(-31)
  EXPECT_EQ(y[255], 63.f);  // 0.5·7·18
}

TEST(gguf_quant, k_quants_on_random_bytes_match_a_bit_by_bit_implementation) {
  std::mt19937 rng(7);
  const uint16_t halves[] = {0x3C00, 0x2E66, 0xB800, 0x1400, 0x0200, 0x4A00, 0x8001};
  const int n_blocks = 3;
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    for (int trial = 0; trial < 20; ++trial) {
      const size_t bb = kvt::ggml_block_bytes(t);
      std::vector<uint8_t> src(bb * n_blocks);
      for (uint8_t& x : src) x = static_cast<uint8_t>(rng());
      for (int b = 0; b < n_blocks; ++b) {  // finite d / dmin
        uint8_t* blk = src.data() + b * bb;
        const uint16_t d = halves[rng() % 7], dm = halves[rng() % 7];
        if (t == GgmlType::Q6_K) {
          std::memcpy(blk + 208, &d, 2);
        } else {
          std::memcpy(blk, &d, 2);
          std::memcpy(blk + 2, &dm, 2);
        }
      }
      std::vector<double> want;
      for (int b = 0; b < n_blocks; ++b)
        for (int i = 0; i < 256; ++i)
          want.push_back(t == GgmlType::Q6_K ? ref_q6k(src.data() + b * bb, i)
                                             : ref_q45k(src.data() + b * bb, i, t == GgmlType::Q5_K));
      SCOPED_TRACE(kvt::ggml_type_name(static_cast<uint32_t>(t)));
      expect_close(dq(t, src, 256 * n_blocks), want);
    }
  }
}

TEST_F(gguf_file, quantized_tensors_read_row_by_row) {
  std::mt19937 rng(3);
  struct Case { uint32_t type; int64_t ne0; };
  Builder b;
  b.kv("general.alignment", GgufType::U32, enc_u32(64));
  b.alignment = 64;
  std::vector<std::vector<uint8_t>> raw;
  const Case cases[] = {{2, 64}, {3, 32}, {8, 96}, {12, 256}, {13, 512}, {14, 256}};
  for (const Case& c : cases) {
    const GgmlType t = static_cast<GgmlType>(c.type);
    const size_t row = kvt::ggml_row_bytes(t, c.ne0);
    std::vector<uint8_t> bytes(row * 3);
    for (uint8_t& x : bytes) x = static_cast<uint8_t>(rng() % 64);  // small halves: finite
    raw.push_back(bytes);
    b.tensors.push_back({std::string("t") + kvt::ggml_type_name(c.type),
                         {static_cast<uint64_t>(c.ne0), 3}, c.type,
                         std::string(bytes.begin(), bytes.end()), {}});
  }
  const GgufFile f = GgufFile::open(write("q.gguf", b.build()));
  EXPECT_EQ(f.alignment(), 64u);
  ASSERT_EQ(f.tensors().size(), 6u);
  for (size_t k = 0; k < 6; ++k) {
    const auto& ti = f.tensors()[k];
    EXPECT_EQ(ti.offset % 64, 0u);
    EXPECT_EQ(ti.n_bytes, raw[k].size());
    const auto y = f.read_f32(ti);
    ASSERT_EQ(y.size(), static_cast<size_t>(3 * cases[k].ne0));
    const size_t row = raw[k].size() / 3;
    for (int r = 0; r < 3; ++r) {
      std::vector<float> want(static_cast<size_t>(cases[k].ne0));
      kvt::dequantize_row(ti.type, raw[k].data() + r * row, want.data(), cases[k].ne0);
      for (int64_t i = 0; i < cases[k].ne0; ++i) ASSERT_EQ(y[r * cases[k].ne0 + i], want[i]) << ti.name;
    }
  }
}

// ---- damaged files ----

Builder valid_builder() {
  Builder b;
  b.kv("general.architecture", GgufType::STRING, enc_str("llama"));
  b.kv("llama.block_count", GgufType::U32, enc_u32(2));
  b.kv("tokenizer.ggml.tokens", GgufType::ARRAY, Bytes().u32(8).u64(2).str("a").str("bc").b);
  b.tensors.push_back({"w0", {4, 2}, 0, std::string(32, '\1'), {}});
  b.tensors.push_back({"w1", {32}, 2, std::string(18, '\2'), {}});
  b.tensors.push_back({"w2", {2}, 1, std::string(4, '\3'), {}});
  b.tensors.push_back({"w3", {3}, 30, std::string(6, '\4'), {}});
  return b;
}

TEST_F(gguf_file, bad_header_and_metadata) {
  {
    Builder b = valid_builder();
    b.magic = "GGUG";
    expect_error(b.build(), "wrong magic");
  }
  {
    Builder b = valid_builder();
    b.version = 4;
    expect_error(b.build(), "unsupported version 4");
  }
  {
    Builder b = valid_builder();
    b.version = 1;
    expect_error(b.build(), "unsupported version 1");
  }
  expect_error("", "truncated in header");
  expect_error("GGU", "truncated in header");
  {
    Builder b = valid_builder();
    b.kv("llama.block_count", GgufType::U32, enc_u32(3));
    expect_error(b.build(), "duplicate key 'llama.block_count'");
  }
  {
    // A key length of 2^60: an error, not a bad_alloc.
    Builder b;
    b.kvs.push_back(Bytes().u64(1ull << 60).b);
    expect_error(b.build() + std::string(64, '\0'), "truncated in metadata key 0 (needs 1152921504606846976 bytes");
  }
  {
    Builder b;
    b.kv("s", GgufType::STRING, Bytes().u64(1ull << 60).b);
    expect_error(b.build(), "truncated in metadata key 0 's'");
  }
  {
    Builder b;
    b.kv("big", GgufType::ARRAY, Bytes().u32(10).u64(1ull << 61).b);
    expect_error(b.build(), "array of 2305843009213693952 u64");
  }
  {
    Builder b;
    b.kv("t", static_cast<GgufType>(13), enc_u32(0));
    expect_error(b.build(), "unknown value type 13 in metadata key 0 't'");
  }
  {
    Builder b;
    b.kv("b", GgufType::BOOL, Bytes().u8(2).b);
    expect_error(b.build(), "bool value 2");
  }
  {
    std::string nest = Bytes().u32(8).u64(0).b;
    for (int i = 0; i < 9; ++i) nest = Bytes().u32(9).u64(1).b + nest;
    Builder b;
    b.kv("deep", GgufType::ARRAY, nest.substr(12));  // 9 levels of arrays
    expect_error(b.build(), "arrays nested deeper than 8");
  }
  {
    Builder b = valid_builder();
    b.kv("general.alignment", GgufType::U32, enc_u32(24));
    expect_error(b.build(), "general.alignment 24 is not a power of two");
  }
  {
    Builder b = valid_builder();
    b.kv("general.alignment", GgufType::U64, Bytes().u64(32).b);
    expect_error(b.build(), "general.alignment is u64, expected u32");
  }
  {
    Bytes h;
    h.b = "GGUF";
    h.u32(3).u64(1ull << 40).u64(0);
    expect_error(h.b, "tensor count 1099511627776 exceeds");
    Bytes k;
    k.b = "GGUF";
    k.u32(3).u64(0).u64(~0ull);
    expect_error(k.b, "metadata count 18446744073709551615 exceeds");
  }
}

TEST_F(gguf_file, bad_tensor_infos) {
  {
    Builder b = valid_builder();
    const std::string full = b.build();
    expect_error(full.substr(0, b.info_pos[3] + 5), "truncated in tensor info 3");
  }
  {
    Builder b = valid_builder();
    b.tensors.push_back({"x", {33, 2}, 3, std::string(40, '\0'), {}});
    expect_error(b.build(), "tensor 'x': type Q4_1 with 33 elements per row is not a whole number of blocks");
  }
  {
    Builder b = valid_builder();
    b.tensors[1].offset = 1024;
    const std::string cut = b.build().substr(0, b.data_pos + 1030);
    expect_error(cut, "tensor 'w1': data [1024, 1042) past the end of the file (size " +
                          std::to_string(cut.size()) + ", data section at " +
                          std::to_string(b.data_pos) + ")");
  }
  {
    Builder b = valid_builder();
    b.tensors[2].name = "w0";
    expect_error(b.build(), "duplicate tensor name 'w0'");
  }
  {
    Builder b = valid_builder();
    b.tensors[3].type = 99;
    expect_error(b.build(), "unknown ggml type 99 for tensor 'w3'");
  }
  {
    Builder b = valid_builder();
    b.tensors[3].type = 6;
    expect_error(b.build(), "unsupported ggml type 6 (Q5_0) for tensor 'w3'");
  }
  {
    Builder b = valid_builder();
    b.tensors[0].ne = {1, 1, 1, 1, 32};
    expect_error(b.build(), "tensor 'w0': 5 dimensions (at most 4)");
  }
  {
    Builder b = valid_builder();
    b.tensors[1].offset = 48;
    expect_error(b.build(), "tensor 'w1': offset 48 is not a multiple of the alignment 32");
  }
  {
    Builder b = valid_builder();
    b.tensors[0].ne = {1ull << 62, 1ull << 62};
    expect_error(b.build(), "tensor 'w0': element count overflows");
  }
  {
    Builder b = valid_builder();
    b.tensors[0].ne = {1ull << 40, 1ull << 20};
    expect_error(b.build(), "exceed the file size");
  }
  {
    Builder b = valid_builder();
    b.tensors[0].name = std::string();
    b.tensors[0].ne = {};
    const std::string ok = b.build();
    const GgufFile f = GgufFile::open(write("scalar.gguf", ok));  // 0 dims: one element
    EXPECT_EQ(f.tensors()[0].n_elements(), 1);
  }
}

TEST_F(gguf_file, every_truncation_throws) {
  Builder b = valid_builder();
  const std::string full = b.build();
  ASSERT_NO_THROW(GgufFile::open(write("full.gguf", full)));
  const size_t step = full.size() > 2000 ? 7 : 1;
  int n = 0;
  for (size_t len = 0; len < full.size(); len += step, ++n) {
    const std::string p = write("cut.gguf", full.substr(0, len));
    EXPECT_THROW(GgufFile::open(p), std::runtime_error) << "length " << len;
  }
  EXPECT_GT(n, 200);
}

// ---- fuzzer findings (tests/fuzz/fuzz_gguf.cpp; docs/design.md, "Fuzzing") ----

// A zero dimension: no values. read_f32 returned before memcpy'ing 0 bytes to a null vector
// (UBSan) and before looping over ne1 rows of nothing (2^40 here: a hang).
TEST_F(gguf_file, fuzz_zero_dimension_tensor_reads_empty) {
  Builder b;
  b.tensors.push_back({"empty", {0, 3}, 0, "", {}});
  b.tensors.push_back({"huge_empty", {0, 1ull << 40}, 12, "", {}});
  b.tensors.push_back({"after", {2}, 0, floats_bytes({1.5f, -2.f}), {}});
  const GgufFile f = GgufFile::open(write("zero_dim.gguf", b.build()));
  EXPECT_TRUE(f.read_f32(f.tensors()[0]).empty());
  EXPECT_TRUE(f.read_f32(f.tensors()[1]).empty());
  EXPECT_EQ(f.read_f32(f.tensors()[2]), (std::vector<float>{1.5f, -2.f}));
}

// ne0 = 2^62 F32: 2^64 row bytes wrapped to 0, so the size check passed and read_f32 asked for a
// vector of 2^62 floats (std::length_error). Now the row's byte count is checked for overflow.
TEST_F(gguf_file, fuzz_row_bytes_overflow_is_an_error) {
  // F32 x 2^62 wrapped to 0 bytes, x (2^62 + 1) to 4 (F32 is the one type of more than 2 bytes
  // per value, so the one that can wrap).
  for (const uint64_t ne0 : {1ull << 62, (1ull << 62) + 1, (1ull << 63) - 1}) {
    Builder b;
    b.tensors.push_back({"w", {ne0, 1}, 0, std::string(64, '\0'), {}});
    expect_error(b.build(), "elements per row: the row's bytes overflow");
  }
}

// Keys and tensor names are bytes from the file: a newline in one stays out of the message.
TEST_F(gguf_file, fuzz_control_bytes_in_names_keep_errors_one_line) {
  {
    Builder b;
    b.kv("bad\nkey", static_cast<GgufType>(99), enc_u32(0));
    expect_error(b.build(), "unknown value type 99 in metadata key 0 'bad\\x0Akey'");
  }
  {
    Builder b = valid_builder();
    b.tensors[0].name = "w\r\n0";
    b.tensors[0].ne = {1, 1, 1, 1, 32};
    expect_error(b.build(), "tensor 'w\\x0D\\x0A0': 5 dimensions");
  }
  {
    Builder b;
    b.kv("k\n", GgufType::U8, Bytes().u8(1).b);
    const GgufFile f = GgufFile::open(write("key_nl.gguf", b.build()));
    expect_file_error([&] { f.get_string("k\n"); }, f.path(), "key 'k\\x0A' is u8, expected string");
  }
}

// Counts of 2^60 (tensors, keys, array items, a string length): one-line errors, no allocation.
TEST_F(gguf_file, fuzz_counts_of_2_60_are_one_line_errors) {
  const uint64_t n = 1ull << 60;
  Bytes t;
  t.b = "GGUF";
  t.u32(3).u64(n).u64(0);
  expect_error(t.b + std::string(64, '\0'), "tensor count 1152921504606846976 exceeds what the file size");
  Bytes k;
  k.b = "GGUF";
  k.u32(3).u64(0).u64(n);
  expect_error(k.b + std::string(64, '\0'), "metadata count 1152921504606846976 exceeds");
  Builder a;
  a.kv("a", GgufType::ARRAY, Bytes().u32(0).u64(n).b);
  expect_error(a.build() + std::string(64, '\0'), "array of 1152921504606846976 u8");
}

// A count the file size allows, wrong after one entry, in a 64 MiB (sparse) file: an error,
// with no allocation of count x sizeof(entry) first (an array of 64M bools claimed 2.5 GB, 64M/13
// keys 350 MB, 64M/24 tensor infos 250 MB). Run in a child under an address-space limit of
// what it has now + 256 MB (the 64 MiB mapping included).
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
TEST_F(gguf_file, fuzz_large_counts_do_not_reserve_memory_up_front) {
  const uint64_t size = 64ull << 20;
  auto sparse = [&](const std::string& name, const std::string& head) {
    const std::string p = write(name, head);
    fs::resize_file(p, size);
    return p;
  };
  Builder arr;
  arr.kv("flags", GgufType::ARRAY, Bytes().u32(7).u64(size - 64).u8(2).b);  // bools; the first is 2
  Bytes kvs;
  kvs.b = "GGUF";
  kvs.u32(3).u64(0).u64(size / 13 - 2).str("k").u32(99);  // the first key has type 99
  Bytes infos;
  infos.b = "GGUF";
  infos.u32(3).u64(size / 24 - 2).u64(0).str("t").u32(5);  // the first tensor has 5 dims
  const std::pair<std::string, std::string> files[] = {
      {sparse("array.gguf", arr.build()), "bool value 2"},
      {sparse("kvs.gguf", kvs.b), "unknown value type 99"},
      {sparse("infos.gguf", infos.b), "5 dimensions"}};
  for (const auto& [p, what] : files) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      long pages = 0;
      std::ifstream("/proc/self/statm") >> pages;
      const rlimit lim{static_cast<rlim_t>(pages) * 4096 + (256ull << 20), RLIM_INFINITY};
      setrlimit(RLIMIT_AS, &lim);
      int code = 3;
      try {
        GgufFile::open(p);
      } catch (const std::runtime_error& e) {
        code = std::string(e.what()).find(what) != std::string::npos ? 0 : 4;
      } catch (const std::bad_alloc&) {
        code = 5;
      }
      _exit(code);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << p;
    EXPECT_EQ(WEXITSTATUS(status), 0) << p << ": 3 no error, 4 another error, 5 bad_alloc";
  }
}
#endif

}  // namespace

// Safetensors writer/reader: round trips of every dtype, the byte layout Hugging Face expects,
// files written by hand (not by our writer), and clear errors for damaged files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tools/safetensors.h"

namespace fs = std::filesystem;
using kvt::DType;
using kvt::SafetensorsReader;
using kvt::SafetensorsWriter;

namespace {

class safetensors_file : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kvt_safetensors_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

std::string read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// A file from a header text and a data block, built by hand.
std::string raw_file(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

// The message of the std::runtime_error that reading `p` throws ("" if none).
std::string read_error(const std::string& p) {
  try {
    SafetensorsReader r(p);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_F(safetensors_file, RoundTripEveryDtype) {
  const std::vector<float> w = {1.5f, -2.25f, 3.0f, 1e-30f, -0.0f, 7.0f};
  const std::vector<double> scalar = {3.141592653589793};
  const std::vector<int32_t> toks = {0, 96, -5, 2147483647};
  const std::vector<float> b = {1.0f, -0.5f, 65280.0f};  // exactly representable in bf16
  SafetensorsWriter wr;
  wr.add_f32("model.layers.0.w", {2, 3}, w);
  wr.add_f64("loss", {}, scalar);
  wr.add_i32("tokens", {2, 2}, toks);
  wr.add_bf16("half", {3}, b);
  wr.add_f32("empty", {0, 4}, {});
  wr.set_metadata("config", "model:\n  vocab_size: 97\n");
  wr.write(path("a.safetensors"));

  SafetensorsReader r(path("a.safetensors"));
  EXPECT_EQ(r.names(), (std::vector<std::string>{"empty", "half", "loss", "model.layers.0.w",
                                                  "tokens"}));
  EXPECT_EQ(r.metadata("format"), "pt");
  EXPECT_EQ(r.metadata("config"), "model:\n  vocab_size: 97\n");
  EXPECT_EQ(r.tensor("model.layers.0.w").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r.tensor("model.layers.0.w").dtype, DType::F32);
  std::vector<float> w2 = r.to_f32("model.layers.0.w");
  ASSERT_EQ(w2.size(), w.size());
  EXPECT_EQ(std::memcmp(w2.data(), w.data(), w.size() * 4), 0);  // bitwise, -0.0 included
  EXPECT_TRUE(r.tensor("loss").shape.empty());
  EXPECT_EQ(r.f64("loss"), scalar);
  EXPECT_EQ(r.i32("tokens"), toks);
  EXPECT_EQ(r.tensor("half").dtype, DType::BF16);
  EXPECT_EQ(r.to_f32("half"), b);
  EXPECT_EQ(r.to_f32("empty").size(), 0u);
  EXPECT_EQ(r.tensor("empty").shape, (std::vector<int64_t>{0, 4}));
}

TEST_F(safetensors_file, LayoutIsSortedPaddedAndDeterministic) {
  const std::vector<float> a = {1, 2, 3}, z = {4, 5};
  const std::vector<int32_t> m = {7};
  SafetensorsWriter w1, w2;
  w1.add_f32("zeta", {2}, z);
  w1.add_i32("mid", {1}, m);
  w1.add_f32("alpha", {3}, a);
  w2.add_f32("alpha", {3}, a);
  w2.add_f32("zeta", {2}, z);
  w2.add_i32("mid", {1}, m);
  w1.write(path("1.safetensors"));
  w2.write(path("2.safetensors"));
  const std::string bytes = read_bytes(path("1.safetensors"));
  EXPECT_EQ(bytes, read_bytes(path("2.safetensors")));  // insertion order does not matter
  EXPECT_FALSE(fs::exists(path("1.safetensors.tmp")));

  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  EXPECT_EQ((8 + n) % 8, 0u) << "header must be padded to 8 bytes";
  ASSERT_EQ(bytes.size(), 8 + n + 12 + 4 + 8);
  const std::string header = bytes.substr(8, n);
  const size_t close = header.rfind('}');
  ASSERT_NE(close, std::string::npos);
  EXPECT_EQ(header.substr(close + 1), std::string(header.size() - close - 1, ' '))
      << "padding after the JSON must be spaces";
  auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["__metadata__"]["format"], "pt");
  // Data in name order: alpha [0,12), mid [12,16), zeta [16,24).
  EXPECT_EQ(j["alpha"]["data_offsets"], nlohmann::json::parse("[0, 12]"));
  EXPECT_EQ(j["mid"]["data_offsets"], nlohmann::json::parse("[12, 16]"));
  EXPECT_EQ(j["zeta"]["data_offsets"], nlohmann::json::parse("[16, 24]"));
  EXPECT_EQ(j["mid"]["dtype"], "I32");
  EXPECT_EQ(bytes.substr(8 + n, 12), f32_bytes(a));
  EXPECT_EQ(bytes.substr(8 + n + 16, 8), f32_bytes(z));
}

TEST_F(safetensors_file, ReadsHandWrittenFile) {
  // Key order, spacing and trailing padding as another writer might produce them.
  const std::string header =
      R"({ "__metadata__": {"format": "pt", "who": "hand"},
           "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
           "a": {"shape": [1, 2], "data_offsets": [0, 8], "dtype": "I32"} }   )";
  std::vector<int32_t> ai = {-3, 9};
  std::string data(reinterpret_cast<const char*>(ai.data()), 8);
  data += f32_bytes({0.25f, -8.0f});
  write_bytes(path("h.safetensors"), raw_file(header, data));
  SafetensorsReader r(path("h.safetensors"));
  EXPECT_EQ(r.metadata("who"), "hand");
  EXPECT_EQ(r.i32("a"), ai);
  EXPECT_EQ(r.to_f32("b"), (std::vector<float>{0.25f, -8.0f}));
}

TEST_F(safetensors_file, AddViewWritesCallerMemory) {
  std::vector<float> big(1000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i) * 0.5f;
  SafetensorsWriter w;
  w.add_view("v", DType::F32, {10, 100}, big.data());
  w.write(path("v.safetensors"));
  SafetensorsReader r(path("v.safetensors"));
  std::vector<int64_t> shape = {10, 100};
  EXPECT_EQ(r.to_f32("v", &shape), big);
  std::vector<int64_t> wrong = {100, 10};
  EXPECT_THROW(r.to_f32("v", &wrong), std::runtime_error);
}

TEST(safetensors_bf16, RoundsToNearestEven) {
  EXPECT_EQ(kvt::float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(kvt::float_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(kvt::float_to_bf16(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie -> even
  EXPECT_EQ(kvt::float_to_bf16(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie -> even
  EXPECT_EQ(kvt::float_to_bf16(std::bit_cast<float>(0x3F808001u)), 0x3F81);  // above tie
  EXPECT_EQ(kvt::float_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_TRUE(std::isnan(kvt::bf16_to_float(kvt::float_to_bf16(std::nanf("")))));
  // A NaN whose payload sits only in the low 16 bits must not become infinity.
  EXPECT_TRUE(std::isnan(kvt::bf16_to_float(kvt::float_to_bf16(std::bit_cast<float>(0x7F800001u)))));
  EXPECT_EQ(kvt::bf16_to_float(0x4049), 3.140625f);
}

TEST_F(safetensors_file, WriterRejectsBadInput) {
  SafetensorsWriter w;
  w.add_f32("x", {2}, {1, 2});
  EXPECT_THROW(w.add_f32("x", {2}, {1, 2}), std::invalid_argument);
  EXPECT_THROW(w.add_f32("y", {3}, {1, 2}), std::invalid_argument);
  EXPECT_THROW(w.add_f32("__metadata__", {1}, {1}), std::invalid_argument);
  EXPECT_THROW(w.add_f32("", {1}, {1}), std::invalid_argument);
  EXPECT_THROW(w.add_f32("neg", {-1}, {}), std::invalid_argument);
  EXPECT_THROW(w.write((dir_ / "no_such_dir" / "f.safetensors").string()), std::runtime_error);
}

TEST_F(safetensors_file, BadFilesGiveErrorsNamingFileAndTensor) {
  const std::string ok_header = R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})";
  const std::string ok_data = f32_bytes({1, 2});
  struct Case {
    std::string file, bytes, expect;  // expect: a substring of the message besides the path
  };
  std::vector<Case> cases = {
      {"short", "abc", "shorter than the 8-byte header length"},
      {"hdr_past_end", le64(1000) + "{}", "runs past the end of the file"},
      {"hdr_huge", le64(uint64_t(1) << 40) + "{}", "exceeds the limit"},
      {"bad_json", raw_file("{\"w\": [", ""), "not valid JSON"},
      {"not_object", raw_file("[1, 2]", ""), "not a JSON object"},
      {"bad_dtype", raw_file(R"({"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 4]}})",
                             std::string(4, '\0')),
       "tensor w: unsupported dtype \"F8_E4M3\""},
      {"size_mismatch",
       raw_file(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", ok_data),
       "tensor w: data_offsets [0, 8] hold 8 bytes, but F32 [3] needs 12"},
      {"truncated", raw_file(ok_header, ok_data.substr(0, 6)),
       "tensor w: data_offsets [0, 8] run past the data block of 6 bytes"},
      {"reversed",
       raw_file(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}})", ok_data),
       "tensor w: data_offsets [8, 0] end before they begin"},
      {"overlap",
       raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                ok_data),
       "tensor b: data_offsets overlap"},
      {"hole",
       raw_file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", ok_data),
       "tensor a: hole of 4 bytes"},
      {"trailing", raw_file(ok_header, ok_data + "junk"), "4 bytes after the last tensor"},
      {"neg_shape",
       raw_file(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", ok_data),
       "tensor w: shape[0] = -2 is not a non-negative integer"},
      {"no_offsets", raw_file(R"({"w": {"dtype": "F32", "shape": [2]}})", ok_data),
       "tensor w: data_offsets must be an array"},
      {"meta_not_string", raw_file(R"({"__metadata__": {"step": 3}})", ""),
       "__metadata__ value of \"step\" is not a string"},
  };
  for (const auto& c : cases) {
    const std::string p = path(c.file + ".safetensors");
    write_bytes(p, c.bytes);
    const std::string msg = read_error(p);
    EXPECT_NE(msg.find(p), std::string::npos) << c.file << ": message lacks the path: " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos)
        << c.file << ": expected \"" << c.expect << "\" in: " << msg;
  }
  const std::string missing = path("missing.safetensors");
  const std::string msg = read_error(missing);
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot open"), std::string::npos) << msg;
}

TEST_F(safetensors_file, LookupErrorsNameFileAndTensor) {
  SafetensorsWriter w;
  w.add_i32("tokens", {2}, {1, 2});
  w.write(path("t.safetensors"));
  SafetensorsReader r(path("t.safetensors"));
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  std::string m = message([&] { r.tensor("grad/x"); });
  EXPECT_NE(m.find(path("t.safetensors")), std::string::npos) << m;
  EXPECT_NE(m.find("no tensor named grad/x"), std::string::npos) << m;
  m = message([&] { r.f64("tokens"); });
  EXPECT_NE(m.find("tensor tokens: dtype I32, expected F64"), std::string::npos) << m;
  m = message([&] { r.to_f32("tokens"); });
  EXPECT_NE(m.find("tensor tokens: dtype I32 is not a float type"), std::string::npos) << m;
  m = message([&] { r.metadata("config"); });
  EXPECT_NE(m.find("no __metadata__ key config"), std::string::npos) << m;
}

// ---- fuzzer findings (tests/fuzz/fuzz_safetensors.cpp; docs/design.md, "Fuzzing") ----

// A shape nested 200000 deep (a 400 KB header): the error named the shape by dump(), which
// recursed once per level and overflowed the stack. Now the entry is named by its index.
TEST_F(safetensors_file, FuzzDeeplyNestedShapeIsAnErrorNotAStackOverflow) {
  const int depth = 200000;
  const std::string header = R"({"w": {"dtype": "F32", "shape": )" + std::string(depth, '[') +
                             std::string(depth, ']') + R"(, "data_offsets": [0, 0]}})";
  const std::string p = path("deep.safetensors");
  write_bytes(p, raw_file(header, ""));
  const std::string msg = read_error(p);
  EXPECT_NE(msg.find(p), std::string::npos) << msg.substr(0, 200);
  EXPECT_NE(msg.find("tensor w: shape[0] = array is not a non-negative integer"), std::string::npos)
      << msg.substr(0, 200);
  write_bytes(p, raw_file(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [0, [[]]]}})", ""));
  const std::string off = read_error(p);
  EXPECT_NE(off.find("tensor w: data_offsets[1] = array is not a non-negative integer"),
            std::string::npos)
      << off;
}

// Tensor names and metadata keys are strings from the file: control bytes in them (JSON "\n")
// stay out of the one-line message.
TEST_F(safetensors_file, FuzzControlBytesInNamesKeepErrorsOneLine) {
  const std::string p = path("nl.safetensors");
  write_bytes(p, raw_file(R"({"w\n1": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})",
                          f32_bytes({1, 2})));
  const std::string msg = read_error(p);
  EXPECT_NE(msg.find("tensor w\\x0A1: data_offsets [0, 8] hold 8 bytes"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

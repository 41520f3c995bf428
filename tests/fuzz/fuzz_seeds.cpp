// tests/fuzz/fuzz_seeds.cpp — writes the seed corpus of the three fuzzers: small valid files
// (a LLaMA GGUF with a byte-level vocab and one tensor of each ggml type, safetensors files of
// each dtype, tokenizer.json files of each pre-tokenizer). Usage: fuzz_seeds OUT_DIR, which gets
// OUT_DIR/{gguf,safetensors,tokenizer_json}/*.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/bpe.h"
#include "tests/gguf_writer.h"
#include "tools/safetensors.h"

namespace fs = std::filesystem;
using namespace kvt;
using namespace kvt::gguf_writer;

namespace {

void put(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The 256 byte tokens, then a few merges' results.
std::vector<std::string> byte_vocab() {
  std::vector<std::string> v;
  for (int b = 0; b < 256; ++b) v.push_back(byte_level_encode(std::string(1, char(b))));
  for (const char* t : {"he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld"}) v.push_back(t);
  return v;
}
const std::vector<std::string> kMerges = {"h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d"};

Bytes string_array(const std::vector<std::string>& v) {
  Bytes b;
  b.u32(static_cast<uint32_t>(GgufType::STRING)).u64(v.size());
  for (const auto& s : v) b.str(s);
  return b;
}

// One block of pseudo-random bytes (a fixed LCG: the seeds are the same on every run).
std::string block(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  for (char& c : s) {
    seed = seed * 1664525u + 1013904223u;
    c = static_cast<char>(seed >> 24);
  }
  return s;
}

void gguf_seeds(const fs::path& dir) {
  {  // LLaMA config + vocab, a tiny F32 embedding and the usual key types.
    Builder b;
    b.kv("general.architecture", GgufType::STRING, enc_str("llama"));
    b.kv("general.alignment", GgufType::U32, enc_u32(32));
    b.kv("llama.block_count", GgufType::U32, enc_u32(1));
    b.kv("llama.embedding_length", GgufType::U32, enc_u32(8));
    b.kv("llama.feed_forward_length", GgufType::U32, enc_u32(16));
    b.kv("llama.attention.head_count", GgufType::U32, enc_u32(2));
    b.kv("llama.attention.head_count_kv", GgufType::U32, enc_u32(1));
    b.kv("llama.rope.freq_base", GgufType::F32, Bytes().put(10000.0f).b);
    b.kv("llama.attention.layer_norm_rms_epsilon", GgufType::F32, Bytes().put(1e-5f).b);
    b.kv("llama.context_length", GgufType::U64, Bytes().u64(64).b);
    b.kv("llama.rope.dimension_count", GgufType::U32, enc_u32(4));
    b.kv("tokenizer.ggml.model", GgufType::STRING, enc_str("gpt2"));
    b.kv("tokenizer.ggml.pre", GgufType::STRING, enc_str("smollm"));
    std::vector<std::string> vocab = byte_vocab();
    vocab.push_back("<|im_start|>");
    b.kv("tokenizer.ggml.tokens", GgufType::ARRAY, string_array(vocab).b);
    b.kv("tokenizer.ggml.merges", GgufType::ARRAY, string_array(kMerges).b);
    Bytes types;
    types.u32(static_cast<uint32_t>(GgufType::I32)).u64(vocab.size());
    for (size_t i = 0; i < vocab.size(); ++i) types.put<int32_t>(i + 1 == vocab.size() ? 3 : 1);
    b.kv("tokenizer.ggml.token_type", GgufType::ARRAY, types.b);
    b.kv("tokenizer.ggml.bos_token_id", GgufType::U32, enc_u32(static_cast<uint32_t>(vocab.size() - 1)));
    b.kv("tokenizer.ggml.add_bos_token", GgufType::BOOL, Bytes().u8(1).b);
    Bytes scores;
    scores.u32(static_cast<uint32_t>(GgufType::F64)).u64(2).put(0.5).put(-1.0);
    b.kv("general.scores", GgufType::ARRAY, scores.b);
    Bytes nested;  // an array of arrays of i16
    nested.u32(static_cast<uint32_t>(GgufType::ARRAY)).u64(1);
    nested.u32(static_cast<uint32_t>(GgufType::I16)).u64(2).put<int16_t>(-3).put<int16_t>(7);
    b.kv("general.nested", GgufType::ARRAY, nested.b);
    b.kv("general.i8", GgufType::I8, Bytes().put<int8_t>(-5).b);
    b.kv("general.i64", GgufType::I64, Bytes().put<int64_t>(-1).b);
    b.tensors.push_back({"token_embd.weight", {8, 2}, 0, block(64, 1), {}});
    b.tensors.push_back({"blk.0.attn_norm.weight", {8}, 0, block(32, 2), {}});
    put(dir / "llama_vocab.gguf", b.build());
  }
  {  // One tensor of each dequantized type, one block (or row) each; version 2.
    Builder b;
    b.version = 2;
    const struct {
      const char* name;
      uint32_t type;
      uint64_t ne0;
      size_t bytes;
    } ts[] = {{"f32", 0, 4, 16},     {"f16", 1, 4, 8},      {"bf16", 30, 4, 8},
              {"q4_0", 2, 32, 18},   {"q4_1", 3, 32, 20},   {"q8_0", 8, 32, 34},
              {"q4_k", 12, 256, 144}, {"q5_k", 13, 256, 176}, {"q6_k", 14, 256, 210}};
    uint32_t seed = 10;
    for (const auto& t : ts) b.tensors.push_back({t.name, {t.ne0, 1}, t.type, block(t.bytes, seed++), {}});
    b.tensors.push_back({"empty", {0, 3}, 0, "", {}});
    put(dir / "all_types.gguf", b.build());
  }
  {  // Small alignment, a 3-d tensor, llama-bpe vocab without merges.
    Builder b;
    b.alignment = 8;
    b.kv("general.alignment", GgufType::U32, enc_u32(8));
    b.kv("tokenizer.ggml.model", GgufType::STRING, enc_str("gpt2"));
    b.kv("tokenizer.ggml.pre", GgufType::STRING, enc_str("llama-bpe"));
    b.kv("tokenizer.ggml.tokens", GgufType::ARRAY, string_array({"a", "b", "ab"}).b);
    b.tensors.push_back({"cube", {2, 2, 2}, 1, block(16, 99), {}});
    put(dir / "align8.gguf", b.build());
  }
}

void safetensors_seeds(const fs::path& dir) {
  {
    SafetensorsWriter w;
    w.add_f32("model.embed_tokens.weight", {2, 3}, {1, 2, 3, 4, 5, 6});
    w.add_bf16("model.norm.weight", {3}, {0.5f, -1.f, 2.f});
    w.add_f64("scalar", {}, {3.25});
    w.add_i32("ids", {2}, {7, -1});
    w.add_f32("empty", {0, 4}, {});
    w.set_metadata("format", "pt");
    w.set_metadata("note", "seed");
    w.write((dir / "mixed.safetensors").string());
  }
  {
    SafetensorsWriter w;
    w.write((dir / "no_tensors.safetensors").string());
  }
}

nlohmann::json tokenizer_json(const nlohmann::json& pre, bool ignore_merges, bool array_merges) {
  nlohmann::json vocab = nlohmann::json::object();
  const std::vector<std::string> v = byte_vocab();
  for (size_t i = 0; i < v.size(); ++i) vocab[v[i]] = i;
  nlohmann::json merges = nlohmann::json::array();
  for (const std::string& m : kMerges) {
    const auto [a, b] = split_merge(m);
    if (array_merges) merges.push_back({a, b});
    else merges.push_back(m);
  }
  nlohmann::json j;
  j["version"] = "1.0";
  j["added_tokens"] = nlohmann::json::array(
      {{{"id", v.size()}, {"content", "<|endoftext|>"}, {"special", true}},
       {{"id", v.size() + 1}, {"content", "<s>"}, {"special", true}}});
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = pre;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", ignore_merges}};
  return j;
}

void tokenizer_seeds(const fs::path& dir) {
  const std::string llama =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const std::string qwen =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const nlohmann::json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  auto split = [](const std::string& re) {
    return nlohmann::json{
        {"type", "Sequence"},
        {"pretokenizers",
         nlohmann::json::array({{{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}, {"invert", false}},
                                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  };
  const nlohmann::json digits = {
      {"type", "Sequence"},
      {"pretokenizers", nlohmann::json::array({{{"type", "Digits"}, {"individual_digits", true}}, byte_level})}};
  std::ofstream(dir / "gpt2.json") << tokenizer_json(byte_level, false, false).dump();
  std::ofstream(dir / "llama_bpe.json") << tokenizer_json(split(llama), true, true).dump();
  std::ofstream(dir / "qwen2.json") << tokenizer_json(split(qwen), false, true).dump(1);
  std::ofstream(dir / "smollm.json") << tokenizer_json(digits, false, false).dump();
  nlohmann::json tiny;  // a vocab without the byte tokens
  tiny["model"] = {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}};
  tiny["added_tokens"] = nlohmann::json::array({{{"id", 3}, {"content", "<|endoftext|>"}}});
  tiny["pre_tokenizer"] = byte_level;
  std::ofstream(dir / "tiny.json") << tiny.dump();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds OUT_DIR\n");
    return 2;
  }
  const fs::path out = argv[1];
  for (const char* d : {"gguf", "safetensors", "tokenizer_json"}) fs::create_directories(out / d);
  gguf_seeds(out / "gguf");
  safetensors_seeds(out / "safetensors");
  tokenizer_seeds(out / "tokenizer_json");
  return 0;
}

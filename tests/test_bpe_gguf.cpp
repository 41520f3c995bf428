// The byte-level BPE from GGUF metadata (data/bpe_gguf.h) on files written by tests/gguf_writer.h:
// what it reads (tokens, merges, special tokens by type, bos/eos, add_bos, the pre-tokenizer
// name) and the one-line errors naming the file and key. Its agreement with Hugging Face's ids on
// real vocab files is the CTest bpe_vocab_llamacpp (tests/tools/bpe_vocab_check.cpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/bpe_gguf.h"
#include "tests/gguf_writer.h"

namespace kvt {
namespace {

using namespace gguf_writer;
namespace fs = std::filesystem;

// A vocab of a, b, ab, <|end|> (control), merge "a b"; keys replaced or dropped per test.
struct TokFile {
  std::string model = "gpt2", pre = "gpt2", merge = "a b";
  std::vector<int32_t> types = {1, 1, 1, 3};
  int64_t eos = 3;
  bool add_bos = false;
  std::string write(const std::string& name) const {
    Builder b;
    b.kv("tokenizer.ggml.model", GgufType::STRING, enc_str(model));
    b.kv("tokenizer.ggml.pre", GgufType::STRING, enc_str(pre));
    b.kv("tokenizer.ggml.tokens", GgufType::ARRAY, string_array({"a", "b", "ab", "<|end|>"}).b);
    b.kv("tokenizer.ggml.merges", GgufType::ARRAY, string_array({merge}).b);
    Bytes t;
    t.u32(static_cast<uint32_t>(GgufType::I32)).u64(types.size());
    for (int32_t v : types) t.put<int32_t>(v);
    b.kv("tokenizer.ggml.token_type", GgufType::ARRAY, t.b);
    b.kv("tokenizer.ggml.eos_token_id", GgufType::U32, enc_u32(static_cast<uint32_t>(eos)));
    b.kv("tokenizer.ggml.add_bos_token", GgufType::BOOL, Bytes().u8(add_bos).b);
    return write_temp("bpe_gguf_" + name, b.build());
  }
};

TEST(bpe_gguf, reads_tokens_merges_special_tokens_and_ids) {
  TokFile tf;
  tf.add_bos = true;
  const std::string path = tf.write("ok");
  GgufTokenizerInfo info;
  const BpeTokenizer t = bpe_from_gguf(GgufFile::open(path), &info);
  EXPECT_EQ(t.encode("abab<|end|>a", true), (std::vector<int32_t>{2, 2, 3, 0}));
  EXPECT_EQ(t.decode(std::vector<int32_t>{2, 3}), "ab<|end|>");
  EXPECT_EQ(info.eos_id, 3);
  EXPECT_EQ(info.bos_id, -1);  // absent key
  EXPECT_TRUE(info.add_bos);
  EXPECT_EQ(t.pre_tokenizer(), "gpt2");
  fs::remove(path);
}

TEST(bpe_gguf, maps_llama_cpp_pre_tokenizer_names) {
  const std::pair<const char*, const char*> names[] = {
      {"gpt-2", "gpt2"}, {"refact", "smollm"}, {"starcoder", "smollm"},
      {"smollm", "smollm"}, {"llama3", "llama-bpe"}, {"qwen2", "qwen2"}};
  for (const auto& [gguf, ours] : names) {
    TokFile tf;
    tf.pre = gguf;
    const std::string path = tf.write(std::string("pre_") + gguf);
    EXPECT_EQ(bpe_from_gguf(GgufFile::open(path)).pre_tokenizer(), ours) << gguf;
    fs::remove(path);
  }
}

// Each bad file: a runtime_error of one line naming the file and containing `what`.
void expect_error(const TokFile& tf, const std::string& name, const std::string& what) {
  const std::string path = tf.write(name);
  expect_file_error([&] { bpe_from_gguf(GgufFile::open(path)); }, path, what);
  std::filesystem::remove(path);
}

TEST(bpe_gguf, bad_metadata_is_one_line_naming_file_and_key) {
  TokFile tf;
  tf.model = "llama";
  expect_error(tf, "model", "tokenizer.ggml.model = 'llama' is not byte-level BPE");
  tf = TokFile();
  tf.pre = "deepseek-coder";
  expect_error(tf, "pre", "tokenizer.ggml.pre = 'deepseek-coder' is not a supported");
  tf = TokFile();
  tf.merge = "ab";
  expect_error(tf, "merge", "tokenizer.ggml.merges[0] is not two tokens");
  tf = TokFile();
  tf.types = {1, 1, 3};
  expect_error(tf, "types", "tokenizer.ggml.token_type has 3 entries for 4 tokens");
  tf = TokFile();
  tf.eos = 7;
  expect_error(tf, "eos", "tokenizer.ggml.eos_token_id = 7 is not a token id");
  tf = TokFile();
  tf.model = "gpt\n2";  // a string from the file: the message stays one line (tests/fuzz)
  expect_error(tf, "model_nl", "tokenizer.ggml.model = 'gpt\\x0A2' is not byte-level BPE");
  tf = TokFile();
  tf.pre = "\x1b[2J";
  expect_error(tf, "pre_esc", "tokenizer.ggml.pre = '\\x1B[2J' is not a supported");
}

}  // namespace
}  // namespace kvt

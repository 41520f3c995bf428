// A LLaMA GGUF's config mapping and the Q/K row un-permutation (train/gguf_llama.h), on files
// written by tests/gguf_writer.h.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "tests/gguf_writer.h"
#include "train/gguf_llama.h"

namespace kvt {
namespace {

using namespace gguf_writer;
namespace fs = std::filesystem;

TEST(gguf_llama, permute_is_llama_cpp_converter_step_and_unpermute_undoes_it) {
  const int n_head = 3, R = 4, cols = 5;
  const int64_t rows = 2 * R * n_head;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  std::iota(w.begin(), w.end(), 0.0f);
  std::vector<float> p = w;
  permute_qk_rows(p.data(), rows, cols, n_head);
  // reshape(n_head, 2, R, cols).swapaxes(1, 2): new row h*2R + r*2 + a is old row h*2R + a*R + r
  for (int h = 0; h < n_head; h++)
    for (int r = 0; r < R; r++)
      for (int a = 0; a < 2; a++)
        for (int c = 0; c < cols; c++)
          ASSERT_EQ(p[static_cast<size_t>((h * 2 * R + r * 2 + a) * cols + c)],
                    w[static_cast<size_t>((h * 2 * R + a * R + r) * cols + c)]);
  unpermute_qk_rows(p.data(), rows, cols, n_head);
  EXPECT_EQ(p, w);
  EXPECT_THROW(unpermute_qk_rows(p.data(), 10, cols, 3), std::invalid_argument);
}

// SmolLM2-135M's shape at small size: 9 heads, 3 KV heads, theta 1e5.
struct LlamaFile {
  std::string arch = "llama";
  bool output = false;
  std::vector<std::pair<std::string, std::string>> extra_str;  // more string keys
  std::vector<std::pair<std::string, uint32_t>> extra_u32;
  std::string tensor = "token_embd.weight";
  std::string write(const std::string& name) const {
    Builder b;
    b.kv("general.architecture", GgufType::STRING, enc_str(arch));
    auto u32 = [&](const std::string& k, uint32_t v) { b.kv(k, GgufType::U32, enc_u32(v)); };
    auto f32 = [&](const std::string& k, float v) { b.kv(k, GgufType::F32, Bytes().put(v).b); };
    u32("llama.block_count", 2);
    u32("llama.embedding_length", 72);
    u32("llama.feed_forward_length", 192);
    u32("llama.attention.head_count", 9);
    u32("llama.attention.head_count_kv", 3);
    u32("llama.context_length", 8192);
    u32("llama.vocab_size", 100);
    f32("llama.rope.freq_base", 100000.0f);
    f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    for (const auto& [k, v] : extra_str) b.kv(k, GgufType::STRING, enc_str(v));
    for (const auto& [k, v] : extra_u32) u32(k, v);
    const std::string four(16, '\0');
    b.tensors.push_back({tensor, {4}, 0, four, {}});
    if (output) b.tensors.push_back({"output.weight", {4}, 0, four, {}});
    return write_temp("gguf_llama_" + name, b.build());
  }
};

TEST(gguf_llama, config_from_llama_metadata) {
  LlamaFile lf;
  std::string path = lf.write("ok");
  ModelConfig m = gguf_llama_config(GgufFile::open(path));
  EXPECT_EQ(m.n_layers, 2);
  EXPECT_EQ(m.d_model, 72);
  EXPECT_EQ(m.d_ff, 192);
  EXPECT_EQ(m.n_heads, 9);
  EXPECT_EQ(m.kv_heads(), 3);
  EXPECT_EQ(m.max_seq_len, 8192);
  EXPECT_EQ(m.vocab_size, 100);
  EXPECT_FLOAT_EQ(m.rope_theta, 100000.0f);
  EXPECT_FLOAT_EQ(m.norm_eps, 1e-5f);
  EXPECT_TRUE(m.tie_embeddings);  // no output.weight
  fs::remove(path);
  lf.output = true;
  path = lf.write("untied");
  EXPECT_FALSE(gguf_llama_config(GgufFile::open(path)).tie_embeddings);
  fs::remove(path);
}

void expect_refused(const LlamaFile& lf, const std::string& name, const std::string& what) {
  const std::string path = lf.write(name);
  expect_file_error([&] { gguf_llama_config(GgufFile::open(path)); }, path, what);
  std::filesystem::remove(path);
}

TEST(gguf_llama, anything_but_a_plain_llama_block_is_refused_by_name) {
  LlamaFile lf;
  lf.arch = "qwen2";
  expect_refused(lf, "arch", "general.architecture = 'qwen2'");
  lf.arch = "llama\n";  // a string from the file: the message stays one line (tests/fuzz)
  expect_refused(lf, "arch_nl", "general.architecture = 'llama\\x0A'");
  lf = LlamaFile();
  lf.extra_str = {{"llama.rope.scaling.type", "linear"}};
  expect_refused(lf, "scaling", "llama.rope.scaling.type");
  lf = LlamaFile();
  lf.extra_u32 = {{"llama.expert_count", 8}};
  expect_refused(lf, "moe", "llama.expert_count");
  lf = LlamaFile();
  lf.extra_u32 = {{"llama.attention.sliding_window", 4096}};
  expect_refused(lf, "swa", "llama.attention.sliding_window");
  lf = LlamaFile();
  lf.tensor = "blk.0.attn_q.bias";
  expect_refused(lf, "bias", "tensor 'blk.0.attn_q.bias'");
  lf = LlamaFile();
  lf.tensor = "blk.0.attn_k_norm.weight";
  expect_refused(lf, "qknorm", "tensor 'blk.0.attn_k_norm.weight'");
  lf = LlamaFile();
  lf.extra_u32 = {{"llama.rope.dimension_count", 4}};
  expect_refused(lf, "partial", "llama.rope.dimension_count = 4");
  // rope scaling "none" is plain
  lf = LlamaFile();
  lf.extra_str = {{"llama.rope.scaling.type", "none"}};
  const std::string path = lf.write("none");
  EXPECT_NO_THROW(gguf_llama_config(GgufFile::open(path)));
  fs::remove(path);
}

}  // namespace
}  // namespace kvt

// Tests of `kvtrain import` (tools/model_import.h, docs/design.md, "Importing models"): GGUF and
// Hugging Face directories into weights-only checkpoints, with the tokenizer embedded; kvtrain's
// own exports of every variant import bitwise; what is not a plain LLaMA block, and damaged or
// incomplete sources, are one-line errors naming the file and the key or tensor.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "data/bpe.h"
#include "data/gguf_quant.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "gguf_writer.h"
#include "kernels/ops.h"
#include "model/transformer.h"
#include "model_checks.h"
#include "tools/model_import.h"
#include "tools/safetensors.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/gguf_llama.h"

namespace kvt {
namespace {

namespace fs = std::filesystem;
using namespace gguf_writer;
using json = nlohmann::json;

const std::vector<std::string> kSpecial = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
const char* const kChatml =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\\nYou are a test.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + "
    "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";

// 256 byte tokens, two merges, the three special tokens (ids 258..260).
std::vector<std::string> test_vocab() {
  std::vector<std::string> v;
  for (int b = 0; b < 256; ++b) v.push_back(byte_level_encode(std::string(1, char(b))));
  v.push_back("ab");
  v.push_back("Ġab");
  for (const auto& s : kSpecial) v.push_back(s);
  return v;
}
BpeTokenizer test_bpe() {
  std::vector<std::pair<std::string, int32_t>> special;
  for (size_t i = 0; i < kSpecial.size(); ++i) special.emplace_back(kSpecial[i], 258 + int32_t(i));
  return BpeTokenizer(test_vocab(), {{"a", "b"}, {"Ġ", "ab"}}, special, "smollm");
}

ModelConfig tiny_llama() {
  ModelConfig m;
  m.vocab_size = 261;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.d_ff = 64;
  m.max_seq_len = 64;
  m.rope_theta = 100000.0f;
  m.tie_embeddings = true;
  m.resolve();
  return m;
}

std::string floats(const float* p, size_t n) { return std::string(reinterpret_cast<const char*>(p), n * 4); }

class Import : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kvt_test_import_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A GGUF of tiny_llama(): Q8_0 embeddings, one F16 tensor, the rest F32; attn_q / attn_k
  // permuted as llama.cpp's converter writes them. *want: the parameters import must give.
  std::string write_gguf(const std::string& name, std::vector<float>* want, const std::string& drop = "",
                         const std::string& extra = "", bool bad_shape = false) {
    const ModelConfig m = tiny_llama();
    const ParamTable table = build_param_table(m);
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 0.5f);
    want->assign(table.total(), 0.0f);
    Builder b;
    auto u32 = [&](const std::string& k, uint32_t v) { b.kv(k, GgufType::U32, enc_u32(v)); };
    auto f32 = [&](const std::string& k, float v) { b.kv(k, GgufType::F32, Bytes().put(v).b); };
    b.kv("general.architecture", GgufType::STRING, enc_str("llama"));
    u32("llama.block_count", m.n_layers);
    u32("llama.embedding_length", m.d_model);
    u32("llama.feed_forward_length", m.d_ff);
    u32("llama.attention.head_count", m.n_heads);
    u32("llama.attention.head_count_kv", m.n_kv_heads);
    u32("llama.context_length", m.max_seq_len);
    f32("llama.rope.freq_base", m.rope_theta);
    f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    b.kv("tokenizer.ggml.model", GgufType::STRING, enc_str("gpt2"));
    b.kv("tokenizer.ggml.pre", GgufType::STRING, enc_str("smollm"));
    b.kv("tokenizer.ggml.tokens", GgufType::ARRAY, string_array(test_vocab()).b);
    b.kv("tokenizer.ggml.merges", GgufType::ARRAY, string_array({"a b", "Ġ ab"}).b);
    Bytes types;
    types.u32(static_cast<uint32_t>(GgufType::I32)).u64(m.vocab_size);
    for (int i = 0; i < m.vocab_size; ++i) types.put<int32_t>(i >= 258 ? 3 : 1);
    b.kv("tokenizer.ggml.token_type", GgufType::ARRAY, types.b);
    u32("tokenizer.ggml.bos_token_id", 259);
    u32("tokenizer.ggml.eos_token_id", 260);
    b.kv("tokenizer.ggml.add_bos_token", GgufType::BOOL, Bytes().u8(0).b);
    b.kv("tokenizer.chat_template", GgufType::STRING, enc_str(kChatml));
    const std::map<std::string, std::string> leaf = {
        {"input_layernorm.weight", "attn_norm"},     {"self_attn.q_proj.weight", "attn_q"},
        {"self_attn.k_proj.weight", "attn_k"},       {"self_attn.v_proj.weight", "attn_v"},
        {"self_attn.o_proj.weight", "attn_output"},  {"post_attention_layernorm.weight", "ffn_norm"},
        {"mlp.gate_proj.weight", "ffn_gate"},        {"mlp.up_proj.weight", "ffn_up"},
        {"mlp.down_proj.weight", "ffn_down"}};
    for (const ParamInfo& p : table.entries()) {
      float* w = want->data() + p.offset;
      std::string gname;
      if (p.name == "model.embed_tokens.weight") gname = "token_embd.weight";
      else if (p.name == "model.norm.weight") gname = "output_norm.weight";
      else {
        const size_t dot = p.name.find('.', 13);
        gname = "blk." + p.name.substr(13, dot - 13) + "." + leaf.at(p.name.substr(dot + 1)) + ".weight";
      }
      if (gname == drop) continue;
      std::vector<uint64_t> ne(p.shape.rbegin(), p.shape.rend());
      if (bad_shape && gname == "blk.1.ffn_up.weight") ne = {ne[0], ne[1] - 1};
      std::string data;
      if (gname == "token_embd.weight") {  // Q8_0: fp16 scale + 32 int8 per block of a row
        Bytes q;
        for (size_t blk = 0; blk < p.numel / 32; ++blk) {
          const uint16_t d = static_cast<uint16_t>(0x2000 + rng() % 0x1000);  // ~2^-7 .. 2^-6
          q.u16(d);
          for (int j = 0; j < 32; ++j) {
            const int8_t v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
            q.put(v);
            w[blk * 32 + j] = ggml_half_to_float(d) * v;
          }
        }
        data = q.b;
        b.tensors.push_back({gname, ne, 8, data, {}});
        continue;
      }
      if (gname.find("ffn_down") != std::string::npos) {  // F16
        Bytes h;
        for (size_t i = 0; i < p.numel; ++i) {
          const uint16_t x = static_cast<uint16_t>((rng() % 2) << 15 | (0x3000 + rng() % 0x0c00));
          h.u16(x);
          w[i] = ggml_half_to_float(x);
        }
        b.tensors.push_back({gname, ne, 1, h.b, {}});
        continue;
      }
      for (size_t i = 0; i < p.numel; ++i) w[i] = normal(rng);
      std::vector<float> file(w, w + p.numel);
      if (gname.find("attn_q") != std::string::npos) permute_qk_rows(file.data(), p.shape[0], p.shape[1], m.n_heads);
      if (gname.find("attn_k") != std::string::npos) permute_qk_rows(file.data(), p.shape[0], p.shape[1], m.n_kv_heads);
      b.tensors.push_back({gname, ne, 0, floats(file.data(), file.size()), {}});
    }
    if (!extra.empty()) b.tensors.push_back({extra, {32}, 0, std::string(128, '\0'), {}});
    const std::string path = (dir_ / (name + ".gguf")).string();
    const std::string bytes = b.build();
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path;
  }

  // A Hugging Face directory of `m` with these parameters (laid out by its table), F32, or F16
  // for the tensors named in f16; shards > 1 splits them over that many files with an index.
  fs::path write_hf(const std::string& name, const ModelConfig& m, const std::vector<float>& params,
                    const json& config_extra = json::object(), int shards = 1, bool f16_down = false) {
    const fs::path out = dir_ / name;
    fs::create_directories(out);
    json c = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", m.vocab_size},
              {"hidden_size", m.d_model}, {"intermediate_size", m.ffn_dim()}, {"num_hidden_layers", m.n_layers},
              {"num_attention_heads", m.n_heads}, {"num_key_value_heads", m.kv_heads()},
              {"max_position_embeddings", m.max_seq_len}, {"rms_norm_eps", m.norm_eps},
              {"rope_parameters", {{"rope_theta", m.rope_theta}, {"rope_type", "default"}}},
              {"hidden_act", "silu"}, {"tie_word_embeddings", m.tie_embeddings}, {"attention_bias", false}};
    for (const auto& [k, v] : config_extra.items()) c[k] = v;
    std::ofstream(out / "config.json") << c.dump(2);
    const ParamTable table = build_param_table(m);
    std::vector<SafetensorsWriter> w(shards);
    json index = {{"metadata", json::object()}, {"weight_map", json::object()}};
    std::vector<std::vector<uint16_t>> halves;
    halves.reserve(table.entries().size());
    int i = 0;
    for (const ParamInfo& p : table.entries()) {
      const int s = i++ % shards;
      const float* data = params.data() + p.offset;
      if (f16_down && p.name.find("down_proj") != std::string::npos) {
        halves.emplace_back();
        for (size_t k = 0; k < p.numel; ++k) halves.back().push_back(static_cast<uint16_t>(0x3400 + k % 512));
        w[s].add(p.name, DType::F16, p.shape, halves.back().data());
      } else {
        w[s].add_view(p.name, DType::F32, p.shape, data);
      }
      index["weight_map"][p.name] = "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) +
                                    ".safetensors";
    }
    if (shards == 1) {
      w[0].write((out / "model.safetensors").string());
    } else {
      for (int s = 0; s < shards; ++s)
        w[s].write((out / ("model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) +
                           ".safetensors")).string());
      std::ofstream(out / "model.safetensors.index.json") << index.dump(2);
    }
    std::ofstream(out / "tokenizer.json") << test_bpe().to_json();
    std::ofstream(out / "tokenizer_config.json")
        << json({{"bos_token", "<|im_start|>"}, {"eos_token", {{"content", "<|im_end|>"}}}, {"add_bos_token", false},
                 {"chat_template", kChatml}}).dump();
    return out;
  }

  fs::path dir_;
};

void expect_bitwise(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);
}

TEST_F(Import, GgufIsMappedDequantizedAndUnpermuted) {
  std::vector<float> want;
  const std::string path = write_gguf("m", &want);
  const ImportedModel m = import_gguf(path);
  EXPECT_TRUE(m.model.tie_embeddings);
  EXPECT_EQ(m.model.kv_heads(), 2);
  EXPECT_FLOAT_EQ(m.model.rope_theta, 100000.0f);
  expect_bitwise(m.params, want);
  const SpecialTokens& s = m.tokenizer->special();
  EXPECT_EQ(s.bos, 259);
  EXPECT_EQ(s.eos, 260);
  EXPECT_EQ(s.eot, 258);  // "<|endoftext|>": no eot key in the file
  EXPECT_FALSE(s.add_bos);
  EXPECT_TRUE(m.tokenizer->has_chatml());
}

TEST_F(Import, CheckpointIsWeightsOnlyWithTheTokenizerEmbedded) {
  std::vector<float> want;
  ImportedModel m = import_gguf(write_gguf("m", &want));
  const std::string out = (dir_ / "m.h5").string();
  write_imported_checkpoint(m, out, false);
  expect_bitwise(m.params, want);  // lent to the writer and given back
  const ModelCheckpoint ck = load_model_checkpoint(out);
  expect_bitwise(ck.params, want);
  EXPECT_EQ(config_differences(ck.config, RunConfig{ck.config.model, {}, {}, {}}, "model").size(), 0u);
  const CheckpointSummary sum = read_checkpoint_summary(out);
  EXPECT_FALSE(sum.has_optimizer);
  std::string why;
  EXPECT_TRUE(checkpoint_verify(out, &why)) << why;
  EXPECT_NE(why.find("weights only"), std::string::npos) << why;
  try {
    checkpoint_read(out, build_param_table(m.model));
    ADD_FAILURE() << "resuming from a weights-only checkpoint must fail";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no optimizer state"), std::string::npos) << e.what();
  }
  // The embedded tokenizer encodes as the GGUF's does, special tokens and chat included.
  const std::string* tj = find_text(sum.texts, "tokenizer.json");
  const std::string* tc = find_text(sum.texts, "tokenizer_config.json");
  ASSERT_TRUE(tj && tc);
  const auto tok = tokenizer_from_texts(*tj, *tc, out);
  const std::string text = "ab ab 2025 <|im_end|> x";
  EXPECT_EQ(tok->encode(text, true), m.tokenizer->encode(text, true));
  EXPECT_EQ(tok->encode(text, false), m.tokenizer->encode(text, false));
  EXPECT_EQ(tok->special().eos, 260);
  EXPECT_EQ(tok->chatml_prompt("hi"), m.tokenizer->chatml_prompt("hi"));
  // An existing file is kept unless --force.
  EXPECT_THROW(write_imported_checkpoint(m, out, false), std::runtime_error);
  EXPECT_NO_THROW(write_imported_checkpoint(m, out, true));
  // The CLI: inspect says there is no optimizer state.
  const auto r = testutil::run_kvtrain("inspect " + out);
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("none: weights only"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bpe:smollm"), std::string::npos) << r.out;
}

TEST_F(Import, GgufFaultsNameTheFileAndTensor) {
  std::vector<float> want;
  const std::string missing = write_gguf("missing", &want, "blk.1.attn_v.weight");
  expect_file_error([&] { import_gguf(missing); }, missing, "missing tensor 'blk.1.attn_v.weight'");
  const std::string extra = write_gguf("extra", &want, "", "rope_freqs.weight");
  expect_file_error([&] { import_gguf(extra); }, extra, "'rope_freqs.weight' has no place");
  const std::string shape = write_gguf("shape", &want, "", "", true);
  expect_file_error([&] { import_gguf(shape); }, shape, "'blk.1.ffn_up.weight' has shape");
  // A truncated file fails in the reader, naming the file.
  std::string bytes;
  {
    std::ifstream f(missing, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  const std::string cut = (dir_ / "cut.gguf").string();
  std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  expect_file_error([&] { import_gguf(cut); }, cut, "");
  // Through the CLI: one line naming the file, a non-zero exit, nothing written.
  const auto before = std::distance(fs::directory_iterator(dir_), fs::directory_iterator());
  for (const std::string& src : {cut, missing, extra}) {
    const auto r = testutil::run_kvtrain("import --from " + src + " --out " + (dir_ / "out.h5").string());
    EXPECT_NE(r.rc, 0);
    EXPECT_NE(r.out.find("kvtrain: error: " + src), std::string::npos) << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), before);
  EXPECT_FALSE(fs::exists(dir_ / "out.h5"));
}

TEST_F(Import, HuggingFaceSingleShardedAndF16) {
  std::vector<float> params;
  write_gguf("m", &params);
  const ModelConfig m = tiny_llama();
  const ImportedModel a = import_hf_dir(write_hf("single", m, params).string());
  expect_bitwise(a.params, params);
  EXPECT_EQ(a.model.kv_heads(), 2);
  EXPECT_FLOAT_EQ(a.model.rope_theta, m.rope_theta);
  EXPECT_EQ(a.tokenizer->special().bos, 259);
  EXPECT_EQ(a.tokenizer->special().eos, 260);
  EXPECT_TRUE(a.tokenizer->has_chatml());
  const ImportedModel b = import_hf_dir(write_hf("sharded", m, params, json::object(), 3).string());
  expect_bitwise(b.params, params);
  // F16 tensors widen exactly.
  const ImportedModel c = import_hf_dir(write_hf("f16", m, params, json::object(), 1, true).string());
  const ParamTable table = build_param_table(m);
  const ParamInfo& down = table.find("model.layers.1.mlp.down_proj.weight");
  for (size_t k = 0; k < down.numel; k += 97)
    EXPECT_EQ(c.params[down.offset + k], ggml_half_to_float(static_cast<uint16_t>(0x3400 + k % 512)));
}

TEST_F(Import, HuggingFaceRefusesWhatIsNotPlainLlama) {
  std::vector<float> params;
  write_gguf("m", &params);
  const ModelConfig m = tiny_llama();
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"attention_bias", true}}, "attention_bias: true: not a plain LLaMA block"},
      {{{"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}}, "rope_scaling"},
      {{{"rope_parameters", {{"rope_type", "yarn"}, {"rope_theta", 1e4}}}}, "rope_parameters.rope_type"},
      {{{"model_type", "qwen2"}}, "model_type: 'qwen2'"},
      {{{"sliding_window", 4096}}, "sliding_window"},
      {{{"num_local_experts", 8}}, "num_local_experts"},
      {{{"head_dim", 16}}, "head_dim"},
      {{{"hidden_size", -3}}, "hidden_size"}};
  int i = 0;
  for (const auto& [extra, what] : cases) {
    const fs::path d = write_hf("refuse" + std::to_string(i++), m, params, extra);
    expect_file_error([&] { import_hf_dir(d.string()); }, (d / "config.json").string(), what);
  }
  // A missing tensor, one with no place, and an index naming a tensor its shard lacks.
  const fs::path d = write_hf("tensors", m, params);
  {
    SafetensorsReader r((d / "model.safetensors").string());
    SafetensorsWriter w;
    for (const std::string& n : r.names())
      if (n != "model.layers.0.mlp.up_proj.weight") w.add_view(n, DType::F32, r.tensor(n).shape, r.tensor(n).data);
    w.add_f32("model.layers.0.self_attn.q_proj.bias", {32}, std::vector<float>(32));
    w.write((d / "model.safetensors").string());
  }
  expect_file_error([&] { import_hf_dir(d.string()); }, d.string(), "missing tensor model.layers.0.mlp.up_proj.weight");
  const fs::path s = write_hf("index", m, params, json::object(), 2);
  json index = json::parse(std::ifstream(s / "model.safetensors.index.json"));
  index["weight_map"]["model.layers.0.mlp.up_proj.weight"] = "model-00002-of-00002.safetensors";
  std::ofstream(s / "model.safetensors.index.json") << index.dump();
  expect_file_error([&] { import_hf_dir(s.string()); }, (s / "model.safetensors.index.json").string(),
                    "has no such tensor");
}

// A run starts from an imported model (train.init_from) on shards `prepare` wrote with its
// tokenizer: after one step at lr 1e-9 the weights are the imported ones to within 1e-6. Gates
// train on it and eval uses them.
TEST_F(Import, TrainGatesAndEvalTakeAnImportedModel) {
  std::vector<float> want;
  ImportedModel m = import_gguf(write_gguf("m", &want));
  const std::string ck = (dir_ / "m.h5").string();
  write_imported_checkpoint(m, ck, false);
  const fs::path hf = write_hf("tok", tiny_llama(), want);
  {
    std::ofstream t(dir_ / "text.txt");
    for (int i = 0; i < 400; ++i) t << "ab ab the cab " << i << " <|im_end|>\n";
  }
  PrepareOptions opt;
  opt.inputs = {(dir_ / "text.txt").string()};
  opt.out_dir = (dir_ / "data").string();
  opt.tokenizer = (hf / "tokenizer.json").string();
  opt.val_fraction = 0.1;
  opt.val_block = 256;
  prepare_corpus(opt, nullptr);
  const std::string yaml =
      "model: {vocab_size: 261, d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, d_ff: 64, max_seq_len: 64, "
      "rope_theta: 100000}\n"
      "train: {steps: 1, batch_size: 2, seq_len: 32, lr: 1.0e-9, warmup_steps: 0, eval_every: 0, eval_batches: 1, "
      "init_from: '" + ck + "'}\n"
      "data: {train: '" + (dir_ / "data").string() + "/*train*.bin', val: '" + (dir_ / "data").string() +
      "/*val*.bin'}\noutput: {dir: '" + (dir_ / "run").string() + "'}\n";
  std::ofstream(dir_ / "run.yaml") << yaml;
  const auto r = testutil::run_kvtrain("train --config " + (dir_ / "run.yaml").string());
  ASSERT_EQ(r.rc, 0) << r.out;
  const ModelCheckpoint after = load_model_checkpoint((dir_ / "run" / "ckpt_00000001.h5").string());
  ASSERT_EQ(after.params.size(), want.size());
  float worst = 0;
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(after.params[i] - want[i]));
  EXPECT_LT(worst, 1e-6f);
  EXPECT_TRUE(read_checkpoint_summary((dir_ / "run" / "ckpt_00000001.h5").string()).has_optimizer);

  // Fast KVzip gates for the imported model (its embedded tokenizer encodes the repeat prompt),
  // then eval with them: at keep 1.0 the gate policy's losses are the full cache's.
  const std::string data = (dir_ / "data").string();
  std::ofstream(dir_ / "gates.yaml") << "gates: {checkpoint: '" << ck << "', context: 8, steps: 2, eval_every: 2, "
                                     << "eval_contexts: 1, threads: 1}\n"
                                     << "data: {train: '" << data << "/*train*.bin', val: '" << data << "/*val*.bin'}\n"
                                     << "output: {dir: '" << (dir_ / "gates").string() << "', checkpoint_every: 0}\n";
  const auto g = testutil::run_kvtrain("gates --config " + (dir_ / "gates.yaml").string());
  ASSERT_EQ(g.rc, 0) << g.out;
  const auto e = testutil::run_kvtrain("eval --checkpoint " + ck + " --gates " + (dir_ / "gates" / "gates.h5").string() +
                                       " --data '" + data + "/*val*.bin' --policy full,gates --keep 1.0 --context 8 "
                                       "--continuation 4 --contexts 1 --json " + (dir_ / "eval.jsonl").string());
  ASSERT_EQ(e.rc, 0) << e.out;
  std::ifstream in(dir_ / "eval.jsonl");
  std::vector<json> rows;
  for (std::string line; std::getline(in, line);)
    if (json j = json::parse(line); j.contains("policy")) rows.push_back(j);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_NEAR(rows[1]["continuation_loss"].get<double>(), rows[0]["continuation_loss"].get<double>(), 1e-6);
  EXPECT_GT(rows[0]["continuation_loss"].get<double>(), 0.0);
}

// kvtrain's own fp32 export of every variant imports bitwise, config included.
TEST_F(Import, KvtrainExportsOfEveryVariantImportBitwise) {
  testutil::write_word_text((dir_ / "text.txt").string(), 400, 5);
  Tokenizer::train({(dir_ / "text.txt").string()}, 280, (dir_ / "tok").string());
  const std::vector<std::string> variants = {
      "n_kv_heads: 4", "n_kv_heads: 2", "n_kv_heads: 1, tie_embeddings: false", "kv_sharing: cla",
      "kv_sharing: yoco, n_layers: 4", "kv_sharing: fusedkv, n_layers: 4", "kv_sharing: fusedkv_lite, n_layers: 4",
      "lrkv_rank: 2"};
  int i = 0;
  for (const std::string& v : variants) {
    SCOPED_TRACE(v);
    const std::string yaml = "model: {vocab_size: 290, d_model: 32, n_heads: 4, max_seq_len: 24, " + v +
                             "}\ntrain: {seq_len: 16}\ndata: {train: 'unused/*.bin', tokenizer: '" + (dir_ / "tok.model").string() + "'}\n";
    const RunConfig cfg = parse_run_config(yaml, {}, v);
    auto ops = make_ops("cpu");
    Transformer t(cfg.model, *ops, 1, 8, false);
    t.init_parameters(11 + i);
    CheckpointState st;
    st.config_yaml = to_yaml(cfg);
    st.params = t.params_to_host();
    const std::string name = "v" + std::to_string(i++);
    const std::string ck = checkpoint_write_file_atomic(dir_.string(), name + ".h5", t.params(), st);
    const fs::path out = dir_ / (name + "_hf");
    const auto r = testutil::run_kvtrain("export --checkpoint " + ck + " --out " + out.string());
    ASSERT_EQ(r.rc, 0) << r.out;
    const ImportedModel m = import_hf_dir(out.string());
    RunConfig back;
    back.model = m.model;
    EXPECT_TRUE(config_differences(cfg, back, "model").empty())
        << testing::PrintToString(config_differences(cfg, back, "model"));
    expect_bitwise(m.params, st.params);
    EXPECT_EQ(m.tokenizer->kind(), "sentencepiece");
  }
}

}  // namespace
}  // namespace kvt

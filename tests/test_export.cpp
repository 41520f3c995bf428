// Tests of `kvtrain export` (tools/cmd_export.cpp, docs/design.md, "Inference and the KV cache"), CPU only, no transformers:
//  * checkpoints are written directly (checkpoint_write_atomic of a randomly initialised
//    Transformer, a tokenizer trained here), then exported by the kvtrain binary (KVT_BINARY);
//  * fp32: every tensor of model.safetensors equals the checkpoint's parameter bitwise, under the
//    parameter table's names, metadata format "pt"; tied embeddings write no lm_head;
//  * bf16: every tensor is the round-to-nearest-even bf16 of the parameter;
//  * config.json: LlamaForCausalLM keys (transformers 5.x: rope_parameters, dtype) for MHA/GQA,
//    model_type kvtrain + auto_map + the variant's keys (and the Python files) for a sharing
//    scheme and LRKV; tokenizer files;
//  * tokenizer.json from kvtrain's SentencePiece model (tools/sp_tokenizer_json.h): a
//    from-scratch Hugging Face BPE (normalizer, merge ranks, byte fallback, BOS template) run on
//    its vocab and merges gives Tokenizer::encode's ids on varied texts; non-kvtrain settings
//    are refused;
//  * an imported checkpoint (/text/tokenizer.json + /text/tokenizer_config.json): the embedded
//    tokenizer.json verbatim, a tokenizer_config.json with the ids' token strings, add_bos_token
//    and the chat template (also chat_template.jinja), config/generation ids; bad ids refused;
//  * --merge-lrkv: a plain MHA Transformer loaded with the merged weights gives the LRKV
//    Transformer's logits to 1e-5;
//  * bad input: a non-empty directory without --force, an unknown variant in a checkpoint, a
//    missing tokenizer, --merge-lrkv on a non-LRKV checkpoint: clear one-line errors.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "tools/sp_tokenizer_json.h"
#include "kernels/common/rng.h"
#include "kernels/ops.h"
#include "model/transformer.h"
#include "tools/safetensors.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "model_checks.h"

namespace kvt {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using testutil::CmdResult;
using testutil::run_kvtrain;
std::string q(const fs::path& p) {
  std::string s(1, '\'');
  s += p.string();
  s += '\'';
  return s;
}

json read_json(const fs::path& p) {
  std::ifstream f(p);
  return json::parse(f);
}

class Export : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("kvt_test_export_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    testutil::write_word_text((dir_ / "text.txt").string(), 400, 5);
    Tokenizer::train({(dir_ / "text.txt").string()}, 280, (dir_ / "tok").string());
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  // Writes a checkpoint of a random-init model with this `model:` YAML flow mapping body; returns
  // its path. `edit` may rewrite the stored config text (to plant an unknown variant).
  static std::string make_checkpoint(const std::string& name, const std::string& model,
                                     const std::string& from = "", const std::string& to = "",
                                     const NamedTexts& texts = {}, int vocab_size = 290) {
    const std::string yaml = "model: {vocab_size: " + std::to_string(vocab_size) + ", d_model: 32, n_heads: 4, max_seq_len: 24, "
                             "init_std: 0.2, " + model + "}\n"
                             "train: {seq_len: 16}\n"
                             "data: {train: 'unused/*train*.bin', val: 'unused/*val*.bin', tokenizer: '" +
                             (dir_ / "tok.model").string() + "'}\n";
    const RunConfig cfg = parse_run_config(yaml, {}, name);
    auto ops = make_ops("cpu");
    Transformer t(cfg.model, *ops, 1, 8, false);
    t.init_parameters(17);
    CheckpointState st;
    st.step = 3;
    st.config_yaml = to_yaml(cfg);
    if (!from.empty()) {
      const size_t at = st.config_yaml.find(from);
      if (at == std::string::npos) throw std::runtime_error("no '" + from + "' in " + st.config_yaml);
      st.config_yaml.replace(at, from.size(), to);
    }
    st.params = t.params_to_host();
    st.adam_m.assign(st.params.size(), 0.0f);
    st.adam_v.assign(st.params.size(), 0.0f);
    st.texts = texts;
    st.kvtrain_version = "test";
    st.utc_time = "2025-01-01T00:00:00Z";
    return checkpoint_write_atomic((dir_ / ("run_" + name)).string(), t.params(), st, RetentionPolicy{});
  }

  static RunConfig config_of(const std::string& ckpt) {
    return parse_run_config(read_checkpoint_config(ckpt), {}, ckpt);
  }

  static fs::path dir_;
};
fs::path Export::dir_;

// Logits of a forward over fixed tokens for a config and parameters.
std::vector<float> logits_of(const ModelConfig& m, const std::vector<float>& params) {
  auto ops = make_ops("cpu");
  Transformer t(m, *ops, 1, 12, false);
  t.params_from_host(params);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 12; i++) tokens.push_back((i * 37 + 5) % m.vocab_size);
  t.forward(tokens.data(), nullptr, 1, 12);
  return t.logits_to_host();
}

TEST_F(Export, LlamaFp32IsBitwiseAndConfigIsLlama) {
  const std::string ck = make_checkpoint("gqa", "n_layers: 2, n_kv_heads: 2, tie_embeddings: false");
  const fs::path out = dir_ / "out_gqa";
  const CmdResult r = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(out));
  ASSERT_EQ(r.rc, 0) << r.out;

  const RunConfig cfg = config_of(ck);
  const ParamTable table = build_param_table(cfg.model);
  const CheckpointWeights w = read_model_weights(ck, table);
  SafetensorsReader st((out / "model.safetensors").string());
  EXPECT_EQ(st.metadata("format"), "pt");
  ASSERT_EQ(st.names().size(), table.entries().size());
  EXPECT_TRUE(st.contains("lm_head.weight"));
  for (const ParamInfo& p : table.entries()) {
    ASSERT_TRUE(st.contains(p.name)) << p.name;
    const TensorView& v = st.tensor(p.name);
    EXPECT_EQ(v.dtype, DType::F32) << p.name;
    EXPECT_EQ(v.shape, p.shape) << p.name;
    ASSERT_EQ(v.nbytes, p.numel * 4) << p.name;
    EXPECT_EQ(std::memcmp(v.data, w.params.data() + p.offset, v.nbytes), 0) << p.name;
  }

  const json c = read_json(out / "config.json");
  EXPECT_EQ(c["architectures"], json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(c["model_type"], "llama");
  EXPECT_EQ(c["hidden_size"], 32);
  EXPECT_EQ(c["intermediate_size"], cfg.model.ffn_dim());
  EXPECT_EQ(c["num_hidden_layers"], 2);
  EXPECT_EQ(c["num_attention_heads"], 4);
  EXPECT_EQ(c["num_key_value_heads"], 2);
  EXPECT_EQ(c["max_position_embeddings"], 24);
  EXPECT_EQ(c["vocab_size"], 290);
  EXPECT_EQ(c["tie_word_embeddings"], false);
  EXPECT_EQ(c["hidden_act"], "silu");
  EXPECT_EQ(c["attention_bias"], false);
  EXPECT_EQ(c["mlp_bias"], false);
  EXPECT_EQ(c["dtype"], "float32");
  EXPECT_FLOAT_EQ(c["rms_norm_eps"].get<float>(), cfg.model.norm_eps);
  EXPECT_EQ(c["rope_parameters"]["rope_type"], "default");
  EXPECT_FLOAT_EQ(c["rope_parameters"]["rope_theta"].get<float>(), cfg.model.rope_theta);
  EXPECT_FALSE(c.contains("auto_map"));
  EXPECT_FALSE(c.contains("kv_sharing"));
  EXPECT_FALSE(fs::exists(out / "modeling_kvtrain.py"));

  const Tokenizer tok((dir_ / "tok.model").string());
  EXPECT_EQ(c["bos_token_id"], tok.bos_id());
  EXPECT_EQ(c["eos_token_id"], tok.eos_id());
  const json g = read_json(out / "generation_config.json");
  EXPECT_EQ(g["bos_token_id"], tok.bos_id());
  EXPECT_EQ(g["eos_token_id"], tok.eos_id());
  ASSERT_TRUE(fs::exists(out / "tokenizer.model"));
  EXPECT_EQ(fs::file_size(out / "tokenizer.model"), fs::file_size(dir_ / "tok.model"));
  const json tc = read_json(out / "tokenizer_config.json");
  EXPECT_EQ(tc["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(tc["bos_token"], tok.piece(tok.bos_id()));
  EXPECT_EQ(tc["eos_token"], tok.piece(tok.eos_id()));
  EXPECT_EQ(tc["unk_token"], tok.piece(0));
  EXPECT_EQ(tc["add_bos_token"], true);
  EXPECT_EQ(tc["model_max_length"], 24);
  EXPECT_FALSE(tc.contains("chat_template"));  // kvtrain's own models have none
  EXPECT_FALSE(fs::exists(out / "chat_template.jinja"));
  const json tj = read_json(out / "tokenizer.json");
  EXPECT_EQ(tj["model"]["type"], "BPE");
  EXPECT_EQ(tj["model"]["vocab"].size(), size_t(tok.vocab_size()));
  EXPECT_EQ(tj["post_processor"]["special_tokens"][tok.piece(tok.bos_id())]["ids"], json::array({tok.bos_id()}));
}

TEST_F(Export, TiedEmbeddingsWriteNoLmHead) {
  const std::string ck = make_checkpoint("mqa", "n_layers: 2, n_kv_heads: 1");
  const fs::path out = dir_ / "out_mqa";
  const CmdResult r = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(out));
  ASSERT_EQ(r.rc, 0) << r.out;
  SafetensorsReader st((out / "model.safetensors").string());
  EXPECT_TRUE(st.contains("model.embed_tokens.weight"));
  EXPECT_FALSE(st.contains("lm_head.weight"));
  const json c = read_json(out / "config.json");
  EXPECT_EQ(c["tie_word_embeddings"], true);
  EXPECT_EQ(c["num_key_value_heads"], 1);
}

TEST_F(Export, Bf16IsTheRoundedParameters) {
  const std::string ck = make_checkpoint("bf16", "n_layers: 2");
  const fs::path out = dir_ / "out_bf16";
  const CmdResult r = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(out) + " --dtype bf16");
  ASSERT_EQ(r.rc, 0) << r.out;
  const ParamTable table = build_param_table(config_of(ck).model);
  const CheckpointWeights w = read_model_weights(ck, table);
  SafetensorsReader st((out / "model.safetensors").string());
  size_t inexact = 0;
  for (const ParamInfo& p : table.entries()) {
    const TensorView& v = st.tensor(p.name);
    ASSERT_EQ(v.dtype, DType::BF16) << p.name;
    ASSERT_EQ(v.nbytes, p.numel * 2) << p.name;
    std::vector<uint16_t> got(p.numel);
    std::memcpy(got.data(), v.data, v.nbytes);
    for (size_t i = 0; i < p.numel; i++) {
      const float x = w.params[p.offset + i];
      ASSERT_EQ(got[i], float_to_bf16(x)) << p.name << "[" << i << "]";
      inexact += bf16_to_float(got[i]) != x;
    }
  }
  EXPECT_GT(inexact, 0u) << "random weights are not all bf16-representable";
  EXPECT_EQ(read_json(out / "config.json")["dtype"], "bfloat16");
}

TEST_F(Export, SharingSchemeShipsRemoteCode) {
  const std::string ck = make_checkpoint("fusedkv", "n_layers: 4, n_kv_heads: 2, kv_sharing: fusedkv");
  const fs::path out = dir_ / "out_fusedkv";
  const CmdResult r = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(out));
  ASSERT_EQ(r.rc, 0) << r.out;
  const json c = read_json(out / "config.json");
  EXPECT_EQ(c["model_type"], "kvtrain");
  EXPECT_EQ(c["architectures"], json::array({"KvtrainForCausalLM"}));
  EXPECT_EQ(c["auto_map"]["AutoConfig"], "configuration_kvtrain.KvtrainConfig");
  EXPECT_EQ(c["auto_map"]["AutoModelForCausalLM"], "modeling_kvtrain.KvtrainForCausalLM");
  EXPECT_EQ(c["kv_sharing"], "fusedkv");
  EXPECT_EQ(c["storage_layers"], 2);
  EXPECT_EQ(c["fusion_init"], "normal");
  EXPECT_EQ(c["lrkv_rank"], 0);
  EXPECT_EQ(c["num_key_value_heads"], 2);
  EXPECT_TRUE(fs::is_regular_file(out / "modeling_kvtrain.py"));
  EXPECT_TRUE(fs::is_regular_file(out / "configuration_kvtrain.py"));
  SafetensorsReader st((out / "model.safetensors").string());
  EXPECT_TRUE(st.contains("model.layers.3.self_attn.fuse_k_first"));
  EXPECT_EQ(st.tensor("model.layers.3.self_attn.fuse_k_first").shape, (std::vector<int64_t>{2, 4}));
  EXPECT_FALSE(st.contains("model.layers.3.self_attn.k_proj.weight"));

  const std::string ck2 = make_checkpoint("lrkv", "n_layers: 2, lrkv_rank: 3");
  const fs::path out2 = dir_ / "out_lrkv";
  const CmdResult r2 = run_kvtrain("export --checkpoint " + q(ck2) + " --out " + q(out2));
  ASSERT_EQ(r2.rc, 0) << r2.out;
  const json c2 = read_json(out2 / "config.json");
  EXPECT_EQ(c2["model_type"], "kvtrain");
  EXPECT_EQ(c2["lrkv_rank"], 3);
  EXPECT_EQ(c2["kv_sharing"], "none");
  SafetensorsReader st2((out2 / "model.safetensors").string());
  EXPECT_EQ(st2.tensor("model.layers.1.self_attn.k_up.weight").shape, (std::vector<int64_t>{4, 8, 3}));
}

TEST_F(Export, MergedLrkvGivesTheLrkvLogits) {
  const std::string ck = make_checkpoint("lrkv_merge", "n_layers: 2, lrkv_rank: 3, tie_embeddings: false");
  const fs::path out = dir_ / "out_lrkv_merged";
  const CmdResult r = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(out) + " --merge-lrkv");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("warning"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cache saving is lost"), std::string::npos) << r.out;
  const json c = read_json(out / "config.json");
  EXPECT_EQ(c["model_type"], "llama");
  EXPECT_EQ(c["num_key_value_heads"], 4);
  EXPECT_FALSE(c.contains("lrkv_rank"));

  const RunConfig cfg = config_of(ck);
  const CheckpointWeights w = read_model_weights(ck, build_param_table(cfg.model));
  const std::vector<float> want = logits_of(cfg.model, w.params);

  ModelConfig mha = cfg.model;
  mha.lrkv_rank = 0;
  const ParamTable table = build_param_table(mha);
  SafetensorsReader st((out / "model.safetensors").string());
  ASSERT_EQ(st.names().size(), table.entries().size());
  std::vector<float> params(table.total());
  for (const ParamInfo& p : table.entries()) {
    const std::vector<float> v = st.to_f32(p.name, &p.shape);
    std::copy(v.begin(), v.end(), params.begin() + p.offset);
  }
  const std::vector<float> got = logits_of(mha, params);
  ASSERT_EQ(got.size(), want.size());
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < got.size(); i++) {
    max_diff = std::max(max_diff, double(std::fabs(got[i] - want[i])));
    max_abs = std::max(max_abs, double(std::fabs(want[i])));
  }
  EXPECT_LT(max_diff, 1e-5) << "max |logit| " << max_abs;
  EXPECT_GT(max_abs, 0.1);
}

TEST_F(Export, BadInputIsAClearError) {
  const std::string ck = make_checkpoint("bad", "n_layers: 2");
  const fs::path out = dir_ / "out_bad";
  fs::create_directories(out);
  std::ofstream(out / "keep.txt") << "x";
  CmdResult r = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(out));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("not empty"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--force"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
  r = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(out) + " --force");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  EXPECT_TRUE(fs::exists(out / "keep.txt"));

  r = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(dir_ / "out_notok") + " --tokenizer " +
                  q(dir_ / "absent.model"));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("absent.model"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "out_notok" / "model.safetensors"));

  r = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(dir_ / "out_nomerge") + " --merge-lrkv");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("lrkv_rank"), std::string::npos) << r.out;

  r = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(dir_ / "out_dtype") + " --dtype fp16");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("fp16"), std::string::npos) << r.out;

  const std::string unknown = make_checkpoint("unknown", "n_layers: 2", "kv_sharing: \"none\"",
                                               "kv_sharing: \"mla\"");
  r = run_kvtrain("export --checkpoint " + q(unknown) + " --out " + q(dir_ / "out_unknown"));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("mla"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kv_sharing"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "out_unknown" / "model.safetensors"));

  // One line on stderr, from main.
  size_t lines = 0;
  for (char ch : r.out) lines += ch == '\n';
  EXPECT_EQ(lines, 1u) << r.out;
}

// A from-scratch Hugging Face `tokenizers` BPE over the tokenizer.json export writes: normalizer
// Replace(" ", "▁"), no pre-tokenizer (the text is one word), then repeatedly merge the adjacent
// pair of lowest merge rank (leftmost first), a symbol without a vocab entry becoming its
// <0xNN> byte pieces, BOS from the post_processor. Not SentencePiece's algorithm (which merges
// by piece score), so equal ids mean the vocab and merges carry the model.
std::vector<int32_t> hf_bpe_encode(const json& tj, const std::string& text) {
  EXPECT_EQ(tj["normalizer"]["type"], "Replace");
  EXPECT_TRUE(tj["pre_tokenizer"].is_null());
  const json& model = tj["model"];
  EXPECT_EQ(model["byte_fallback"], true);
  std::string s;
  for (char c : text) s += c == ' ' ? std::string("\u2581") : std::string(1, c);
  std::vector<std::string> sym;
  for (size_t i = 0; i < s.size();) {
    size_t n = 1;
    while (i + n < s.size() && (static_cast<uint8_t>(s[i + n]) & 0xC0) == 0x80) ++n;
    sym.push_back(s.substr(i, n));
    i += n;
  }
  std::map<std::pair<std::string, std::string>, size_t> rank;
  for (size_t r = 0; r < model["merges"].size(); ++r)
    rank.emplace(std::make_pair(model["merges"][r][0].get<std::string>(), model["merges"][r][1].get<std::string>()), r);
  for (;;) {
    size_t best = SIZE_MAX, at = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      const auto it = rank.find({sym[i], sym[i + 1]});
      if (it != rank.end() && it->second < best) best = it->second, at = i;
    }
    if (best == SIZE_MAX) break;
    sym[at] += sym[at + 1];
    sym.erase(sym.begin() + static_cast<long>(at) + 1);
  }
  const json& post = tj["post_processor"];
  const std::string bos = post["single"][0]["SpecialToken"]["id"];
  std::vector<int32_t> ids = {post["special_tokens"][bos]["ids"][0].get<int32_t>()};
  for (const std::string& x : sym) {
    if (model["vocab"].contains(x)) {
      ids.push_back(model["vocab"][x].get<int32_t>());
      continue;
    }
    for (unsigned char b : x) {
      char piece[8];
      std::snprintf(piece, sizeof piece, "<0x%02X>", b);
      EXPECT_TRUE(model["vocab"].contains(piece)) << piece;
      ids.push_back(model["vocab"].value(piece, -1));
    }
  }
  return ids;
}

TEST_F(Export, TokenizerJsonEncodesLikeSentencePiece) {
  // A tokenizer with digits, punctuation, non-ASCII letters and whitespace runs in its pieces.
  {
    std::ofstream t(dir_ / "varied.txt");
    const char* words[] = {"the", "lord", "said", "unto", "café", "naïve", "über", "日本", "語", "1984", "3.14",
                           "(a)", "\"q\"", "it's", "Straße", "été", "ok,", "yes;", "no."};
    Rng r(7);
    for (int line = 0; line < 600; line++) {
      for (int w = 0; w < 10; w++) t << (w ? (r.below(4) ? " " : "  ") : "") << words[r.below(19)];
      t << (r.below(3) ? "\t." : ".") << "\n";
    }
  }
  Tokenizer::train({(dir_ / "varied.txt").string()}, 380, (dir_ / "varied").string());
  const std::string model_path = (dir_ / "varied.model").string();
  const std::string ck = make_checkpoint("tokjson", "n_layers: 1", "", "", {}, 400);
  const fs::path out = dir_ / "out_tokjson";
  const CmdResult r = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(out) + " --tokenizer " + q(model_path));
  ASSERT_EQ(r.rc, 0) << r.out;
  const json tj = read_json(out / "tokenizer.json");
  const Tokenizer tok(model_path);
  ASSERT_EQ(tj["model"]["vocab"].size(), size_t(tok.vocab_size()));
  for (int id = 0; id < tok.vocab_size(); ++id) ASSERT_EQ(tj["model"]["vocab"][tok.piece(id)], id) << tok.piece(id);
  EXPECT_GT(tj["model"]["merges"].size(), 60u);
  for (const json& m : tj["added_tokens"]) EXPECT_EQ(m["special"], true);
  EXPECT_EQ(tj["added_tokens"].size(), 3u);  // unk, bos, eos

  const std::vector<std::string> texts = {
      "the lord said unto", "café  naïve   über\tStraße", "digits 1984 and 3.14159, 10,000 (a) \"q\"",
      "line one\nline two\n\n", " leading and trailing ", "unseen: жук 🙂 Ωmega ß", "", "     ",
      "日本語 it's ok, yes; no.", std::string(300, 'x') + " the the the lord"};
  size_t n_ids = 0;
  for (const std::string& t : texts) {
    std::vector<int32_t> want = {tok.bos_id()};
    const std::vector<int32_t> e = tok.encode(t);
    want.insert(want.end(), e.begin(), e.end());
    EXPECT_EQ(hf_bpe_encode(tj, t), want) << "text: " << t;
    n_ids += want.size();
  }
  EXPECT_GT(n_ids, 100u);

  // Settings whose conversion would not be exact are refused, naming the setting.
  std::ifstream in(model_path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  const SpModel m = parse_sp_model(bytes.str(), model_path);
  EXPECT_EQ(m.model_type, 2);
  EXPECT_TRUE(m.byte_fallback);
  EXPECT_FALSE(m.add_dummy_prefix);
  EXPECT_EQ(m.bos_id, tok.bos_id());
  auto refused = [&](SpModel bad, const std::string& what) {
    try {
      sp_tokenizer_json(bad, "x.model");
    } catch (const std::exception& e) {
      return std::string(e.what()).find(what) != std::string::npos && std::string(e.what()).find("x.model") != std::string::npos;
    }
    return false;
  };
  SpModel bad = m;
  bad.add_dummy_prefix = true;
  EXPECT_TRUE(refused(bad, "add_dummy_prefix"));
  bad = m;
  bad.model_type = 1;
  EXPECT_TRUE(refused(bad, "not BPE"));
  bad = m;
  bad.normalizer_name = "nmt_nfkc";
  EXPECT_TRUE(refused(bad, "nmt_nfkc"));
  bad = m;
  bad.byte_fallback = false;
  EXPECT_TRUE(refused(bad, "byte_fallback"));
  EXPECT_THROW(parse_sp_model(bytes.str().substr(0, bytes.str().size() / 2), model_path), std::runtime_error);
}

// The two texts `kvtrain import` embeds, SmolLM2-like: byte-level BPE, bos <|im_start|>,
// eos <|im_end|>, end-of-text <|endoftext|>, no BOS added, a ChatML template.
const char* kImportedTokenizerJson = R"({"version": "1.0", "truncation": null, "padding": null,
 "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                  {"id": 1, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                  {"id": 2, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
 "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
 "post_processor": null, "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
 "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
           "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
           "vocab": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "a": 3, "b": 4, "ab": 5},
           "merges": [["a", "b"]]}}
)";
const char* kChatTemplate =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

TEST_F(Export, ImportedCheckpointWritesItsEmbeddedTokenizer) {
  const json kc = {{"bos_token_id", 1}, {"eos_token_id", 2}, {"eot_token_id", 0}, {"add_bos_token", false},
                   {"chat_template", kChatTemplate}};
  const std::string ck = make_checkpoint("imported", "n_layers: 2", "", "",
                                         {{"tokenizer.json", kImportedTokenizerJson}, {"tokenizer_config.json", kc.dump()}});
  const fs::path out = dir_ / "out_imported";
  const CmdResult r = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(out));
  ASSERT_EQ(r.rc, 0) << r.out;
  std::ifstream f(out / "tokenizer.json", std::ios::binary);
  std::ostringstream got;
  got << f.rdbuf();
  EXPECT_EQ(got.str(), kImportedTokenizerJson);  // verbatim
  EXPECT_FALSE(fs::exists(out / "tokenizer.model"));
  const json tc = read_json(out / "tokenizer_config.json");
  EXPECT_EQ(tc["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(tc["bos_token"], "<|im_start|>");
  EXPECT_EQ(tc["eos_token"], "<|im_end|>");
  EXPECT_EQ(tc["add_bos_token"], false);
  EXPECT_EQ(tc["chat_template"], kChatTemplate);
  EXPECT_EQ(tc["model_max_length"], 24);
  EXPECT_FALSE(tc.contains("unk_token"));  // the BPE model has none
  std::ifstream jf(out / "chat_template.jinja", std::ios::binary);
  std::ostringstream jinja;
  jinja << jf.rdbuf();
  EXPECT_EQ(jinja.str(), kChatTemplate);
  const json st = read_json(out / "special_tokens_map.json");
  EXPECT_EQ(st["eos_token"], "<|im_end|>");
  const json c = read_json(out / "config.json");
  EXPECT_EQ(c["bos_token_id"], 1);
  EXPECT_EQ(c["eos_token_id"], 2);
  const json g = read_json(out / "generation_config.json");
  EXPECT_EQ(g["eos_token_id"], json::array({2, 0}));  // stops at <|im_end|> and <|endoftext|>

  // --tokenizer wins over the embedded one.
  const CmdResult r2 = run_kvtrain("export --checkpoint " + q(ck) + " --out " + q(dir_ / "out_imported_sp") +
                                   " --tokenizer " + q(dir_ / "tok.model"));
  ASSERT_EQ(r2.rc, 0) << r2.out;
  EXPECT_TRUE(fs::exists(dir_ / "out_imported_sp" / "tokenizer.model"));
  EXPECT_EQ(read_json(dir_ / "out_imported_sp" / "tokenizer_config.json")["bos_token"], "<s>");

  // An id the embedded tokenizer.json lacks, and a missing config text: one-line errors, nothing written.
  json bad = kc;
  bad["eos_token_id"] = 77;
  const std::string ck_bad = make_checkpoint("imported_bad", "n_layers: 2", "", "",
                                             {{"tokenizer.json", kImportedTokenizerJson}, {"tokenizer_config.json", bad.dump()}});
  CmdResult e = run_kvtrain("export --checkpoint " + q(ck_bad) + " --out " + q(dir_ / "out_imported_bad"));
  EXPECT_NE(e.rc, 0);
  EXPECT_NE(e.out.find("eos_token_id 77"), std::string::npos) << e.out;
  EXPECT_FALSE(fs::exists(dir_ / "out_imported_bad" / "model.safetensors"));
  const std::string ck_nocfg = make_checkpoint("imported_nocfg", "n_layers: 2", "", "",
                                               {{"tokenizer.json", kImportedTokenizerJson}});
  e = run_kvtrain("export --checkpoint " + q(ck_nocfg) + " --out " + q(dir_ / "out_imported_nocfg"));
  EXPECT_NE(e.rc, 0);
  EXPECT_NE(e.out.find("tokenizer_config.json"), std::string::npos) << e.out;
}

}  // namespace
}  // namespace kvt

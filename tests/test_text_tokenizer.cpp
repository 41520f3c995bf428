// Tests of the tokenizer interface (data/text_tokenizer.h): the tokenizer.json kvtrain writes
// reads back as the same tokenizer for every pre-tokenizer, special tokens as the model defines
// them (HF and kvtrain tokenizer_config.json), documents framed by BOS / end-of-text, ChatML
// prompts, and `prepare` with a byte-level BPE tokenizer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <algorithm>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/bpe.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/text_tokenizer.h"

namespace kvt {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// 256 byte tokens, merges for " the", "12", the special tokens at 262..264.
BpeTokenizer tokenizer(const std::string& pre) {
  std::vector<std::string> v;
  for (int b = 0; b < 256; ++b) v.push_back(byte_level_encode(std::string(1, char(b))));
  for (const char* t : {"th", "the", "Ġthe", "12", "Ġt", "he"}) v.push_back(t);
  std::vector<std::pair<std::string, int32_t>> special = {{"<|endoftext|>", 262}, {"<|im_start|>", 263},
                                                          {"<|im_end|>", 264}};
  for (const auto& s : special) v.push_back(s.first);
  return BpeTokenizer(v, {{"t", "h"}, {"th", "e"}, {"Ġ", "the"}, {"1", "2"}, {"Ġ", "t"}, {"h", "e"}}, special, pre);
}

const char* const kText = "the 12 345 ' the' 's THE\t\t  x\n\n é日本 😀 <|im_end|> <|endoftext|>the";

class TextTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kvt_test_text_tok_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
    return dir_ / name;
  }
  fs::path dir_;
};

TEST_F(TextTokenizerTest, ToJsonReadsBackAsTheSameTokenizer) {
  for (const char* pre : {"gpt2", "smollm", "llama-bpe", "qwen2"}) {
    SCOPED_TRACE(pre);
    const BpeTokenizer a = tokenizer(pre);
    const BpeTokenizer b = BpeTokenizer::from_json_text(a.to_json(), "x");
    EXPECT_EQ(b.pre_tokenizer(), pre);
    for (bool special : {false, true}) EXPECT_EQ(a.encode(kText, special), b.encode(kText, special));
    EXPECT_EQ(b.decode(b.encode(kText, false)), kText);
    EXPECT_EQ(b.vocab_size(), a.vocab_size());
  }
}

TEST_F(TextTokenizerTest, SpecialTokensFromHuggingFaceAndKvtrainConfigs) {
  const std::string tj = tokenizer("smollm").to_json();
  write("tokenizer.json", tj);
  write("tokenizer_config.json", json({{"bos_token", "<|im_start|>"}, {"eos_token", {{"content", "<|im_end|>"}}},
                                       {"add_bos_token", true}}).dump());
  write("chat_template.jinja", "{{'<|im_start|>' + message['role'] + '\\n'}}");
  const auto hf = open_tokenizer((dir_ / "tokenizer.json").string());
  EXPECT_EQ(hf->special().bos, 263);
  EXPECT_EQ(hf->special().eos, 264);
  EXPECT_EQ(hf->special().eot, 262);  // "<|endoftext|>"
  EXPECT_TRUE(hf->special().add_bos);
  EXPECT_TRUE(hf->has_chatml());
  // The kvtrain form it embeds reads back to the same ids.
  const auto texts = hf->embedded_texts();
  ASSERT_EQ(texts.size(), 2u);
  const auto back = tokenizer_from_texts(texts[0].second, texts[1].second, "ck.h5");
  EXPECT_EQ(back->special().bos, 263);
  EXPECT_EQ(back->special().eos, 264);
  EXPECT_EQ(back->special().eot, 262);
  EXPECT_EQ(back->special().chat_template, hf->special().chat_template);
  // Documents: [bos] + text + [end-of-text].
  const std::vector<int32_t> doc = back->document_ids("the");
  EXPECT_EQ(doc, (std::vector<int32_t>{263, 257, 262}));
  // Errors name the text and the key.
  for (const auto& [cfg, key] : std::vector<std::pair<std::string, std::string>>{
           {R"({"eos_token": "<|nope|>"})", "eos_token '<|nope|>'"},
           {R"({"bos_token_id": "one"})", "bos_token_id"},
           {R"({"eos_token_id": 999})", "999"},
           {R"({"add_bos_token": 1})", "add_bos_token"},
           {"[1, 2", "not valid JSON"}}) {
    try {
      tokenizer_from_texts(tj, cfg, "ck.h5");
      ADD_FAILURE() << cfg;
    } catch (const std::runtime_error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("ck.h5"), std::string::npos) << m;
      EXPECT_NE(m.find(key), std::string::npos) << m;
    }
  }
  EXPECT_THROW(open_tokenizer(write("x.vocab", "a").string()), std::invalid_argument);
  EXPECT_THROW(open_tokenizer((dir_ / "absent.gguf").string()), std::runtime_error);
}

TEST_F(TextTokenizerTest, ChatmlPromptTakesTheTemplatesSystemMessage) {
  const std::string tj = tokenizer("smollm").to_json();
  SpecialTokens s;
  s.eos = 264;
  s.chat_template =
      "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are Smol.<|im_end|>\\n' "
      "}}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}";
  const auto tok = tokenizer_from_texts(tj, special_tokens_json(s), "ck");
  EXPECT_EQ(tok->chatml_prompt("Hi?"),
            "<|im_start|>system\nYou are Smol.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n");
  const std::vector<int32_t> ids = tok->encode(tok->chatml_prompt("Hi?"), true);
  EXPECT_EQ(ids.front(), 263);
  // No default system message: user and assistant turns only.
  s.chat_template = "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}";
  EXPECT_EQ(tokenizer_from_texts(tj, special_tokens_json(s), "ck")->chatml_prompt("a"),
            "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n");
  // Another template (or none) is refused by name.
  s.chat_template = "[INST] {{ message['content'] }} [/INST]";
  EXPECT_THROW(tokenizer_from_texts(tj, special_tokens_json(s), "ck")->chatml_prompt("a"), std::invalid_argument);
}

TEST_F(TextTokenizerTest, PrepareWritesBpeShardsWithEndOfText) {
  write("tokenizer.json", tokenizer("gpt2").to_json());
  write("tokenizer_config.json", R"({"eos_token": "<|im_end|>", "add_bos_token": false})");
  const fs::path a = write("a.txt", "the the 12"), b = write("b.txt", "the <|endoftext|>");
  for (bool parse : {false, true}) {
    PrepareOptions opt;
    opt.inputs = {a.string(), b.string()};
    opt.out_dir = (dir_ / "out").string();
    opt.tokenizer = (dir_ / "tokenizer.json").string();
    opt.val_fraction = 0;
    opt.parse_special = parse;
    const CorpusStats st = prepare_corpus(opt, nullptr);
    EXPECT_EQ(st.vocab_size, 265);
    const Shard shard((dir_ / "out" / st.train_shards[0]).string(), st.vocab_size);
    EXPECT_EQ(shard.token_bytes(), 2u);
    std::vector<uint32_t> got;
    for (size_t i = 0; i < shard.size(); ++i) got.push_back(shard[i]);
    // a's ids, end-of-text, b's ids, end-of-text (no BOS: add_bos_token false).
    const BpeTokenizer t = tokenizer("gpt2");
    std::vector<uint32_t> want;
    for (const fs::path& p : {a, b}) {
      std::ifstream f(p);
      const std::string text((std::istreambuf_iterator<char>(f)), {});
      for (int32_t id : t.encode(text, parse)) want.push_back(static_cast<uint32_t>(id));
      want.push_back(262);
    }
    EXPECT_EQ(got, want);
    EXPECT_EQ(std::count(got.begin(), got.end(), 262u), parse ? 3 : 2);
    // The tokenizer is kept beside the shards and reads back.
    const auto kept = open_tokenizer((dir_ / "out" / "tokenizer.json").string());
    EXPECT_EQ(kept->special().eos, 264);
    EXPECT_EQ(kept->encode(kText, true), t.encode(kText, true));
  }
}

}  // namespace
}  // namespace kvt

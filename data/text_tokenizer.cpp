// data/text_tokenizer.cpp — the tokenizer interface over SentencePiece and byte-level BPE (see
// data/text_tokenizer.h).
#include "data/text_tokenizer.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data/bpe.h"
#include "data/bpe_gguf.h"
#include "data/file_commit.h"
#include "data/gguf.h"
#include "data/tokenizer.h"

namespace kvt {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* const kImStart = "<|im_start|>";
const char* const kImEnd = "<|im_end|>";

// kvtrain's SentencePiece models: documents start with BOS and carry no end token (the shards
// `prepare` has always written); eos ends generation.
class SentencePieceText final : public TextTokenizer {
 public:
  explicit SentencePieceText(const std::string& path) : tok_(path) {
    source_ = path;
    special_.bos = tok_.bos_id();
    special_.eos = tok_.eos_id();
    special_.eot = -1;
    special_.add_bos = true;
  }
  std::vector<int32_t> encode(std::string_view text, bool) const override {
    return tok_.encode(std::string(text));
  }
  std::string decode(std::span<const int32_t> ids) const override { return tok_.decode(ids); }
  int vocab_size() const override { return tok_.vocab_size(); }
  std::string kind() const override { return "sentencepiece"; }
  std::string token_string(int32_t id) const override { return tok_.piece(id); }
  std::vector<std::pair<std::string, std::string>> embedded_texts() const override {
    throw std::logic_error(source_ + ": a SentencePiece tokenizer is not embedded in checkpoints");
  }

 private:
  Tokenizer tok_;
};

class BpeText final : public TextTokenizer {
 public:
  BpeText(BpeTokenizer tok, SpecialTokens special, std::string source) : tok_(std::move(tok)) {
    special_ = std::move(special);
    source_ = std::move(source);
    const int n = tok_.vocab_size();
    for (int32_t id : {special_.bos, special_.eos, special_.eot})
      if (id >= n)
        throw std::runtime_error(source_ + ": special token id " + std::to_string(id) +
                                 " is outside the vocab (" + std::to_string(n) + ")");
  }
  std::vector<int32_t> encode(std::string_view text, bool parse_special) const override {
    return tok_.encode(text, parse_special);
  }
  std::string decode(std::span<const int32_t> ids) const override { return tok_.decode(ids); }
  int vocab_size() const override { return tok_.vocab_size(); }
  std::string kind() const override { return "bpe:" + tok_.pre_tokenizer(); }
  std::string token_string(int32_t id) const override { return tok_.id_to_token(id); }
  std::vector<std::pair<std::string, std::string>> embedded_texts() const override {
    return {{"tokenizer.json", tok_.to_json()}, {"tokenizer_config.json", special_tokens_json(special_)}};
  }

 private:
  BpeTokenizer tok_;
};

// The end-of-text token when the model names none: "<|endoftext|>" if it exists, else eos.
int32_t default_eot(const BpeTokenizer& tok, int32_t eos) {
  const int32_t id = tok.token_to_id("<|endoftext|>");
  return id >= 0 ? id : eos;
}

// A token given as an id, a string, or {"content": string}; -1 when absent or null.
int32_t token_id_of(const json& j, const char* id_key, const char* text_key, const BpeTokenizer& tok,
                    const std::string& where) {
  if (j.contains(id_key) && !j[id_key].is_null()) {
    if (!j[id_key].is_number_integer())
      throw std::runtime_error(where + ": " + id_key + " is not an integer");
    return j[id_key].get<int32_t>();
  }
  if (!j.contains(text_key) || j[text_key].is_null()) return -1;
  const json& t = j[text_key];
  std::string text;
  if (t.is_string()) text = t.get<std::string>();
  else if (t.is_object() && t.contains("content") && t["content"].is_string()) text = t["content"].get<std::string>();
  else throw std::runtime_error(where + ": " + text_key + " is neither a string nor {\"content\": ...}");
  const int32_t id = tok.token_to_id(text);
  if (id < 0) throw std::runtime_error(where + ": " + text_key + " '" + text + "' is not a token of the vocab");
  return id;
}

// kvtrain's tokenizer_config.json or Hugging Face's (see the header).
SpecialTokens parse_special_config(const std::string& text, const BpeTokenizer& tok, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw std::runtime_error(where + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw std::runtime_error(where + ": not a JSON object");
  SpecialTokens s;
  s.bos = token_id_of(j, "bos_token_id", "bos_token", tok, where);
  s.eos = token_id_of(j, "eos_token_id", "eos_token", tok, where);
  s.eot = token_id_of(j, "eot_token_id", "eot_token", tok, where);
  if (s.eot < 0) s.eot = default_eot(tok, s.eos);
  if (j.contains("add_bos_token")) {
    if (!j["add_bos_token"].is_boolean()) throw std::runtime_error(where + ": add_bos_token is not a boolean");
    s.add_bos = j["add_bos_token"].get<bool>();
  }
  if (j.contains("chat_template")) {
    const json& t = j["chat_template"];
    if (t.is_string()) {
      s.chat_template = t.get<std::string>();
    } else if (t.is_array()) {  // [{"name": "default", "template": "..."}, ...]
      for (const json& e : t)
        if (e.is_object() && e.value("name", std::string()) == "default" && e.contains("template") &&
            e["template"].is_string())
          s.chat_template = e["template"].get<std::string>();
    } else if (!t.is_null()) {
      throw std::runtime_error(where + ": chat_template is neither a string nor a list of named templates");
    }
  }
  return s;
}

std::unique_ptr<TextTokenizer> open_gguf(const std::string& path) {
  const GgufFile f = GgufFile::open(path);
  GgufTokenizerInfo info;
  BpeTokenizer tok = bpe_from_gguf(f, &info);
  SpecialTokens s;
  s.bos = info.bos_id;
  s.eos = info.eos_id;
  s.add_bos = info.add_bos;
  const char* eot_key = "tokenizer.ggml.eot_token_id";
  s.eot = f.find(eot_key) ? static_cast<int32_t>(f.get_i64(eot_key)) : default_eot(tok, s.eos);
  if (s.eot >= tok.vocab_size())
    throw std::runtime_error(path + ": " + eot_key + " = " + std::to_string(s.eot) + " is not a token id");
  if (f.find("tokenizer.chat_template")) s.chat_template = f.get_string("tokenizer.chat_template");
  return std::make_unique<BpeText>(std::move(tok), std::move(s), path);
}

std::unique_ptr<TextTokenizer> open_json(const std::string& path) {
  BpeTokenizer tok = BpeTokenizer::from_json(path);
  const fs::path dir = fs::path(path).parent_path();
  const fs::path config = dir / "tokenizer_config.json";
  SpecialTokens s;
  if (fs::is_regular_file(config)) {
    s = parse_special_config(read_whole_file(config.string()), tok, config.string());
  } else {
    s.eot = default_eot(tok, -1);
    s.eos = s.eot;
  }
  // transformers 5.x writes the template to its own file.
  const fs::path jinja = dir / "chat_template.jinja";
  if (s.chat_template.empty() && fs::is_regular_file(jinja)) s.chat_template = read_whole_file(jinja.string());
  return std::make_unique<BpeText>(std::move(tok), std::move(s), path);
}

}  // namespace

std::vector<int32_t> TextTokenizer::document_ids(std::string_view text, bool parse_special) const {
  std::vector<int32_t> ids;
  if (special_.add_bos && special_.bos >= 0) ids.push_back(special_.bos);
  const std::vector<int32_t> body = encode(text, parse_special);
  ids.insert(ids.end(), body.begin(), body.end());
  if (special_.eot >= 0) ids.push_back(special_.eot);
  return ids;
}

bool TextTokenizer::has_chatml() const {
  if (special_.chat_template.find(kImStart) == std::string::npos) return false;
  const std::vector<int32_t> a = encode(kImStart, true), b = encode(kImEnd, true);
  return a.size() == 1 && b.size() == 1;
}

std::string TextTokenizer::chatml_prompt(const std::string& user) const {
  if (!has_chatml())
    throw std::invalid_argument(source_ + ": the model has no ChatML chat template (only ChatML is rendered; "
                                "arbitrary Jinja templates are out of scope)");
  // The template's default system message: the literal after "<|im_start|>system\n" (newline
  // written as itself or as the Jinja escape \n) up to "<|im_end|>", when it is a plain string.
  std::string system;
  const std::string& t = special_.chat_template;
  for (const char* head : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
    const size_t at = t.find(head);
    if (at == std::string::npos) continue;
    const size_t from = at + std::char_traits<char>::length(head);
    const size_t end = t.find(kImEnd, from);
    if (end == std::string::npos) break;
    std::string lit = t.substr(from, end - from);
    if (lit.find_first_of("'\"{}+") != std::string::npos) break;  // not a literal: no default
    for (size_t p; (p = lit.find("\\n")) != std::string::npos;) lit.replace(p, 2, "\n");
    system = lit;
    break;
  }
  std::string s;
  if (!system.empty()) s += std::string(kImStart) + "system\n" + system + kImEnd + "\n";
  return s + kImStart + "user\n" + user + kImEnd + "\n" + kImStart + "assistant\n";
}

std::unique_ptr<TextTokenizer> open_tokenizer(const std::string& path) {
  if (!fs::is_regular_file(path)) throw std::runtime_error("tokenizer " + path + ": no such file");
  if (path.ends_with(".model")) return std::make_unique<SentencePieceText>(path);
  if (path.ends_with(".gguf")) return open_gguf(path);
  if (path.ends_with(".json")) return open_json(path);
  throw std::invalid_argument("tokenizer " + path +
                              ": unknown kind (give a SentencePiece .model, a .gguf or a tokenizer.json)");
}

std::unique_ptr<TextTokenizer> tokenizer_from_texts(const std::string& tokenizer_json,
                                                    const std::string& tokenizer_config_json,
                                                    const std::string& where) {
  BpeTokenizer tok = BpeTokenizer::from_json_text(tokenizer_json, where + ": /text/tokenizer.json");
  SpecialTokens s = parse_special_config(tokenizer_config_json, tok, where + ": /text/tokenizer_config.json");
  return std::make_unique<BpeText>(std::move(tok), std::move(s), where);
}

std::string special_tokens_json(const SpecialTokens& s) {
  nlohmann::ordered_json j;
  j["bos_token_id"] = s.bos >= 0 ? json(s.bos) : json(nullptr);
  j["eos_token_id"] = s.eos >= 0 ? json(s.eos) : json(nullptr);
  j["eot_token_id"] = s.eot >= 0 ? json(s.eot) : json(nullptr);
  j["add_bos_token"] = s.add_bos;
  j["chat_template"] = s.chat_template;
  return j.dump(2);
}

}  // namespace kvt

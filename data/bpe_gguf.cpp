#include "data/bpe_gguf.h"

#include "data/error_text.h"

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace kvt {

namespace {
// llama.cpp's token types (llama_token_type): 3 control, 4 user-defined.
constexpr int64_t kControl = 3, kUserDefined = 4;

// GGUF's tokenizer.ggml.pre names (llama.cpp's) -> the pre-tokenizers of data/bpe.h. "refact"
// and "starcoder" split as "smollm" does (each \p{N} alone, then GPT-2's regex).
std::string pre_tokenizer_of(const GgufFile& f) {
  if (!f.find("tokenizer.ggml.pre")) return "gpt2";  // files older than the key: GPT-2's regex
  const std::string& pre = f.get_string("tokenizer.ggml.pre");
  if (pre == "gpt2" || pre == "gpt-2") return "gpt2";
  if (pre == "smollm" || pre == "refact" || pre == "starcoder") return "smollm";
  if (pre == "llama-bpe" || pre == "llama3") return "llama-bpe";
  if (pre == "qwen2") return pre;
  throw std::runtime_error(f.path() + ": tokenizer.ggml.pre = '" + one_line(pre) +
                           "' is not a supported pre-tokenizer (gpt2/gpt-2, smollm/refact/starcoder, "
                           "llama-bpe/llama3, qwen2)");
}

int32_t optional_id(const GgufFile& f, const std::string& key, size_t n) {
  if (!f.find(key)) return -1;
  const int64_t id = f.get_i64(key);
  if (id < 0 || static_cast<uint64_t>(id) >= n)
    throw std::runtime_error(f.path() + ": " + key + " = " + std::to_string(id) +
                             " is not a token id (vocab " + std::to_string(n) + ")");
  return static_cast<int32_t>(id);
}
}  // namespace

BpeTokenizer bpe_from_gguf(const GgufFile& f, GgufTokenizerInfo* info) {
  const std::string& model = f.get_string("tokenizer.ggml.model");
  if (model != "gpt2")
    throw std::runtime_error(f.path() + ": tokenizer.ggml.model = '" + one_line(model) +
                             "' is not byte-level BPE ('gpt2')");
  std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  std::vector<std::pair<std::string, std::string>> merges;
  if (f.find("tokenizer.ggml.merges")) {
    const std::vector<std::string> m = f.get_string_array("tokenizer.ggml.merges");
    merges.reserve(m.size());
    for (size_t r = 0; r < m.size(); r++) {
      try {
        merges.push_back(split_merge(m[r]));
      } catch (const std::exception&) {
        throw std::runtime_error(f.path() + ": tokenizer.ggml.merges[" + std::to_string(r) +
                                 "] is not two tokens 'a b'");
      }
    }
  }
  std::vector<std::pair<std::string, int32_t>> special;
  if (f.find("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> type = f.get_i64_array("tokenizer.ggml.token_type");
    if (type.size() != tokens.size())
      throw std::runtime_error(f.path() + ": tokenizer.ggml.token_type has " +
                               std::to_string(type.size()) + " entries for " +
                               std::to_string(tokens.size()) + " tokens");
    for (size_t id = 0; id < tokens.size(); id++)
      if (type[id] == kControl || type[id] == kUserDefined)
        special.emplace_back(tokens[id], static_cast<int32_t>(id));
  }
  GgufTokenizerInfo ids;  // checked whether or not the caller asks for them
  ids.bos_id = optional_id(f, "tokenizer.ggml.bos_token_id", tokens.size());
  ids.eos_id = optional_id(f, "tokenizer.ggml.eos_token_id", tokens.size());
  ids.add_bos = f.find("tokenizer.ggml.add_bos_token") && f.get_bool("tokenizer.ggml.add_bos_token");
  if (info) *info = ids;
  const std::string pre = pre_tokenizer_of(f);
  // Llama 3 emits a piece that is itself a token whole, before merging (llama.cpp sets
  // ignore_merges for it; its tokenizer.json says so, its GGUF does not).
  const bool ignore_merges = pre == "llama-bpe";
  try {
    return BpeTokenizer(std::move(tokens), merges, special, pre, ignore_merges);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(f.path() + ": " + e.what());
  }
}

}  // namespace kvt

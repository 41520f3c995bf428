// data/text_tokenizer.h — the one tokenizer interface the commands use (docs/design.md,
// "Importing models"): kvtrain's own SentencePiece models and the byte-level BPE tokenizers of
// imported models, with the special tokens as the model defines them.
//
// Where a tokenizer comes from (open_tokenizer):
//   *.model          a SentencePiece model (`kvtrain prepare`): bos 1, eos 2, documents start
//                    with BOS, end-of-text = eos, no chat template
//   *.gguf           the file's tokenizer.ggml.* metadata (data/bpe_gguf.h)
//   *.json           a Hugging Face tokenizer.json; the bos/eos/add_bos/chat template come from
//                    tokenizer_config.json next to it when present
// An imported checkpoint embeds its tokenizer as two texts (tokenizer_texts /
// tokenizer_from_texts): "tokenizer.json" (Hugging Face's format, written by
// bpe_to_tokenizer_json) and "tokenizer_config.json" (kvtrain's small JSON below).
//
// Special ids (-1 when the model has none):
//   bos   prepended to each document when add_bos (SmolLM2: add_bos false)
//   eos   where generation stops (SmolLM2: <|im_end|>, id 2)
//   eot   appended after each document by `prepare` (SmolLM2: <|endoftext|>, id 0): GGUF's
//         tokenizer.ggml.eot_token_id, else the token "<|endoftext|>", else eos
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvt {

struct SpecialTokens {
  int32_t bos = -1, eos = -1, eot = -1;
  bool add_bos = false;
  std::string chat_template;  // the model's Jinja text, as shipped; "" if none
};

class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;
  // parse_special: special-token strings in the text become their ids; otherwise they are
  // encoded as ordinary text. No BOS/EOS is added here (see document_ids).
  virtual std::vector<int32_t> encode(std::string_view text, bool parse_special = false) const = 0;
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  virtual int vocab_size() const = 0;
  // "sentencepiece" or "bpe:<pre-tokenizer>"
  virtual std::string kind() const = 0;
  // The token's string as the vocabulary holds it (a special token's text, e.g. "<|im_end|>").
  virtual std::string token_string(int32_t id) const = 0;

  const SpecialTokens& special() const { return special_; }
  const std::string& source() const { return source_; }  // the file it was read from

  // A document as `prepare` writes it: [bos if add_bos] + ids + [eot if any].
  std::vector<int32_t> document_ids(std::string_view text, bool parse_special = false) const;
  // True when the chat template is ChatML (<|im_start|>role\n...<|im_end|>\n) and both tokens
  // exist; the only template `generate --chat` renders (arbitrary Jinja is out of scope).
  bool has_chatml() const;
  // The ChatML text of one user turn, ready for the assistant's answer, with the template's
  // default system message when it has one. Throws naming source() unless has_chatml().
  std::string chatml_prompt(const std::string& user) const;

  // The two texts an imported checkpoint embeds ("tokenizer.json", "tokenizer_config.json").
  // Throws for a SentencePiece tokenizer (its checkpoints refer to the .model file instead).
  virtual std::vector<std::pair<std::string, std::string>> embedded_texts() const = 0;

 protected:
  SpecialTokens special_;
  std::string source_;
};

// By the file name (see above). Throws naming the file.
std::unique_ptr<TextTokenizer> open_tokenizer(const std::string& path);
// From the texts an imported checkpoint embeds; `where` names them in errors (the checkpoint).
std::unique_ptr<TextTokenizer> tokenizer_from_texts(const std::string& tokenizer_json,
                                                    const std::string& tokenizer_config_json,
                                                    const std::string& where);

// kvtrain's tokenizer_config.json: {"bos_token_id", "eos_token_id", "eot_token_id",
// "add_bos_token", "chat_template"} — and its reader, which also takes Hugging Face's
// tokenizer_config.json (bos_token/eos_token as strings or {"content": ...}, resolved through
// token_to_id). Throws naming `where` and the key.
std::string special_tokens_json(const SpecialTokens& s);

}  // namespace kvt

// train/model_tokenizer.cpp — see train/model_tokenizer.h.
#include "train/model_tokenizer.h"

#include <stdexcept>

#include "train/checkpoint.h"

namespace kvt {

std::unique_ptr<TextTokenizer> checkpoint_tokenizer(const std::string& checkpoint, const std::string& data_tokenizer,
                                                    int model_vocab, const std::string& override_path) {
  std::unique_ptr<TextTokenizer> tok;
  if (!override_path.empty()) {
    tok = open_tokenizer(override_path);
  } else {
    const NamedTexts texts = read_checkpoint_summary(checkpoint).texts;
    const std::string* json = find_text(texts, "tokenizer.json");
    const std::string* config = find_text(texts, "tokenizer_config.json");
    if (json && config) tok = tokenizer_from_texts(*json, *config, checkpoint);
    else if (!data_tokenizer.empty()) tok = open_tokenizer(data_tokenizer);
    else
      throw std::invalid_argument(checkpoint + ": no tokenizer is embedded and its config has no data.tokenizer; "
                                  "give --tokenizer");
  }
  if (tok->vocab_size() > model_vocab)
    throw std::invalid_argument("tokenizer " + tok->source() + " has " + std::to_string(tok->vocab_size()) +
                                " tokens, more than the model's vocab_size " + std::to_string(model_vocab) +
                                " (" + checkpoint + ")");
  return tok;
}

}  // namespace kvt

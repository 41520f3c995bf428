// train/model_tokenizer.h — the tokenizer a model checkpoint is used with (docs/design.md,
// "Importing models").
#pragma once

#include <memory>
#include <string>

#include "data/text_tokenizer.h"

namespace kvt {

// override_path when given; else the tokenizer embedded in the checkpoint (an imported model's
// /text/tokenizer.json and /text/tokenizer_config.json); else data_tokenizer (the checkpoint
// config's data.tokenizer). Throws naming the checkpoint when there is none, and when the
// tokenizer has more tokens than the model's vocab_size.
std::unique_ptr<TextTokenizer> checkpoint_tokenizer(const std::string& checkpoint, const std::string& data_tokenizer,
                                                    int model_vocab, const std::string& override_path = "");

}  // namespace kvt

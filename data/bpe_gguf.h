// data/bpe_gguf.h — a byte-level BPE tokenizer from a GGUF file's tokenizer.ggml.* metadata
// (llama.cpp's vocabulary keys; docs/design.md, "Importing models").
#pragma once

#include <cstdint>

#include "data/bpe.h"
#include "data/gguf.h"

namespace kvt {

// What the model says about its special tokens (absent keys: -1 / false).
struct GgufTokenizerInfo {
  int32_t bos_id = -1, eos_id = -1;
  bool add_bos = false;
};

// tokenizer.ggml.model must be "gpt2" (byte-level BPE); tokens, merges ("a b"), token_type
// (3 control and 4 user-defined tokens become special tokens, matched whole), and pre:
// "gpt2"/"gpt-2", "smollm"/"refact"/"starcoder", "llama-bpe"/"llama3" (with ignore_merges, as
// llama.cpp), "qwen2"; any other is refused naming it.
// Throws naming the file and the key.
BpeTokenizer bpe_from_gguf(const GgufFile& f, GgufTokenizerInfo* info = nullptr);

}  // namespace kvt

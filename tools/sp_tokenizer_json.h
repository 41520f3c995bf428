// tools/sp_tokenizer_json.h — a Hugging Face tokenizer.json equivalent to a SentencePiece BPE
// model of kvtrain's training settings (data/tokenizer.h), for `kvtrain export` (docs/export.md).
//
// What SentencePiece does on encode, and the tokenizer.json pipeline that does the same:
//   identity normalization, escape_whitespaces: " " -> "▁"        normalizer Replace(" ", "▁")
//   add_dummy_prefix=false, remove_extra_whitespaces=false        (no Prepend, no Strip)
//   BPE: repeatedly merge the adjacent pair whose concatenation     model BPE, merges = every split
//     is a normal piece of the highest score                          (l, r) of a normal piece into
//                                                                     two normal pieces, ranked by
//                                                                     the piece's score (higher first)
//   byte_fallback: a character with no piece -> <0xNN> pieces      byte_fallback, fuse_unk
//   unk/bos/eos are control pieces                                  added_tokens (special)
// post_processor prepends BOS (kvtrain's generate and eval do); decoder Replace("▁", " "),
// ByteFallback, Fuse (no Strip: no dummy prefix to remove). Same pipeline as transformers'
// LlamaConverter with legacy=false and add_prefix_space=false.
//
// One difference remains, as for every Hugging Face Llama tokenizer: the text "<s>" (a special
// token's content) encodes to the special id there, to "<", "s", ">" in SentencePiece.
#pragma once

#include <string>
#include <vector>

namespace kvt {

struct SpPiece {
  std::string piece;
  float score = 0.0f;
  int type = 1;  // SentencePiece's ModelProto.SentencePiece.Type: 1 normal, 2 unknown, 3 control,
                 // 4 user defined, 5 unused, 6 byte
};

// The parts of a serialized SentencePiece ModelProto (a .model file's bytes) the conversion needs.
struct SpModel {
  std::vector<SpPiece> pieces;  // id order
  int model_type = 1;           // TrainerSpec.model_type: 1 unigram, 2 bpe, 3 word, 4 char
  bool byte_fallback = false, treat_whitespace_as_suffix = false;
  std::string normalizer_name, precompiled_charsmap;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
  int unk_id = -1, bos_id = -1, eos_id = -1;  // TrainerSpec unk_id/bos_id/eos_id (-1: none or out of range)
};

// Parses the protobuf wire format; throws naming `source` on a malformed file.
SpModel parse_sp_model(const std::string& bytes, const std::string& source);

// tokenizer.json text (2-space indented). Throws naming `source` and the setting when the model
// is not BPE with byte_fallback, identity normalization, no dummy prefix and no whitespace
// stripping (the conversion would not be exact), or has no bos piece.
std::string sp_tokenizer_json(const SpModel& model, const std::string& source);

}  // namespace kvt

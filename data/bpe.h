// data/bpe.h — a byte-level BPE tokenizer of the GPT-2 family (docs/design.md, "Data").
//
// encode(text):
//   1. with parse_special, special-token strings are cut out first (longest match first) and
//      emitted as their ids; the text between them goes on to step 2.
//   2. pre-tokenize: split into pieces by the pre-tokenizer's regex (PCRE2, UTF + UCP):
//        "gpt2"      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//        "smollm"    every \p{N} code point alone, then "gpt2" on the text between them
//        "llama-bpe" (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//                     ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+      (Llama 3)
//        "qwen2"     as "llama-bpe" with \p{N} (one digit) for \p{N}{1,3}
//      \s / \S are Unicode's White_Space (as in llama.cpp and Oniguruma), not PCRE2's \s, which
//      also matches U+180E.
//      Invalid UTF-8 is handled per byte: each byte that does not start a valid sequence is a
//      piece of its own, and the regex runs on the valid stretches between such bytes; nothing is
//      replaced, so decode(encode(s)) == s for every byte string.
//   3. each piece's bytes become GPT-2's byte-level symbols (byte_to_unicode: printable bytes
//      are their own code point, the other 68 map to U+0100 + n in byte order), each symbol the
//      token of that one byte; then the adjacent pair of lowest merge rank is merged, repeatedly,
//      until no pair has a rank (a heap over a linked list: O(n log n) per piece).
//      Every merge result is a vocab token (checked when built), so the only failure is a byte
//      whose single-symbol token is missing: an error naming the byte and the piece.
//      With ignore_merges (Llama 3's tokenizer.json) a piece that is itself a token is emitted
//      whole, before any merging.
// decode(ids): special tokens give their string; other tokens map their code points back to
// bytes (a code point outside the byte map is kept as its UTF-8), concatenated.
// encode/decode are const and keep no state: safe from several threads.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvt {

// GPT-2's bytes_to_unicode: the code point standing for each byte.
const std::array<char32_t, 256>& byte_to_unicode();
// Bytes -> their byte-level text (UTF-8 of the mapped code points), e.g. " the" -> "Ġthe".
std::string byte_level_encode(std::string_view bytes);
// The inverse; a code point outside the map is kept as its UTF-8.
std::string byte_level_decode(std::string_view text);
// "a b" -> {"a", "b"}; throws unless exactly one space separates two non-empty parts.
std::pair<std::string, std::string> split_merge(std::string_view merge);

class BpeTokenizer {
 public:
  // vocab[id] is the byte-level text of token id; merges in rank order (rank 0 first);
  // special: (string, id), the id may be inside the vocab or beyond it.
  // pre_tokenizer: "gpt2" | "smollm" | "llama-bpe" | "qwen2".
  BpeTokenizer(std::vector<std::string> vocab,
               const std::vector<std::pair<std::string, std::string>>& merges,
               const std::vector<std::pair<std::string, int32_t>>& special,
               const std::string& pre_tokenizer, bool ignore_merges = false);
  // Hugging Face tokenizer.json (model.type "BPE"). Throws naming the file and the key.
  static BpeTokenizer from_json(const std::string& path);
  // The same from the file's text; `where` names it in errors.
  static BpeTokenizer from_json_text(const std::string& text, const std::string& where);
  // This tokenizer as a Hugging Face tokenizer.json (vocab, merges as pairs in rank order, the
  // special tokens as added_tokens, the pre-tokenizer in the form from_json maps back to it):
  // from_json_text(to_json()) encodes as this one does.
  std::string to_json() const;

  ~BpeTokenizer();
  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;

  std::vector<int32_t> encode(std::string_view text, bool parse_special) const;
  std::string decode(std::span<const int32_t> ids) const;
  // The pieces of step 2 (raw bytes, in order; their concatenation is text).
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  // token_to_id takes the byte-level text (or a special token's string); -1 when absent.
  int32_t token_to_id(const std::string& token) const;
  // The byte-level text of id (a special token's string); throws for an id with no token.
  const std::string& id_to_token(int32_t id) const;
  // max(vocab size, largest special id + 1).
  int vocab_size() const;
  const std::string& pre_tokenizer() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvt

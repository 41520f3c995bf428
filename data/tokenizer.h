// data/tokenizer.h — a SentencePiece BPE tokenizer (docs/design.md, "Data").
//
// Training settings (Tokenizer::train) and why:
//   model_type=bpe, character_coverage=1.0, byte_fallback=true: every byte string is
//     representable; characters never seen (and "\n", see below) become <0xNN> byte pieces.
//   normalization_rule_name=identity, remove_extra_whitespaces=false: decode(encode(s)) == s
//     exactly, whitespace runs included.
//   add_dummy_prefix=false: encoding does not insert a space at the start, so a text encoded in
//     pieces (context, then the gate's repeat prompt "\n\nRepeat ...") decodes to the pieces'
//     concatenation, with no space invented in between.
//   split_digits=true; unk=0, bos=1, eos=2, no pad.
// The trainer reads one sentence per line, so pieces never contain "\n"; encoding takes whole
// documents, where each newline becomes the byte piece <0x0A>.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace kvt {

class Tokenizer {
 public:
  // Trains a BPE model on the lines of text_files; writes model_prefix.model and .vocab.
  // Deterministic for the same inputs. Throws naming the file or the value at fault.
  static void train(const std::vector<std::string>& text_files, int vocab_size,
                    const std::string& model_prefix);

  explicit Tokenizer(const std::string& model_path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // No BOS/EOS added. Long texts are encoded in newline-terminated chunks (in parallel), which
  // gives the same ids as encoding the text whole (see the constructor).
  std::vector<int32_t> encode(const std::string& text) const;
  std::string decode(std::span<const int32_t> ids) const;
  std::string piece(int32_t id) const;
  int vocab_size() const;
  int bos_id() const;
  int eos_id() const;
  const std::string& path() const { return path_; }

 private:
  std::vector<int32_t> encode_whole(std::string_view text) const;

  std::string path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  bool split_at_newlines_ = false;
};

}  // namespace kvt

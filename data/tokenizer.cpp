// data/tokenizer.cpp — SentencePiece training, loading, encoding and decoding.
#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <unordered_map>
#include <utility>

namespace kvt {

namespace {

// Feeds the trainer the lines of several files in order (paths may contain commas, which the
// trainer's own comma-separated `input` flag could not take).
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>& files) : files_(files) { Next(); }
  bool done() const override { return done_; }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return status_; }
  void Next() override {
    while (true) {
      if (in_.is_open() && std::getline(in_, line_)) return;
      if (in_.is_open() && in_.bad()) {
        status_ = sentencepiece::util::Status(sentencepiece::util::StatusCode::kInternal,
                                              "read error in " + files_[next_ - 1]);
        done_ = true;
        return;
      }
      in_.close();
      if (next_ == files_.size()) {
        done_ = true;
        return;
      }
      in_.open(files_[next_], std::ios::binary);
      if (!in_) {
        status_ = sentencepiece::util::Status(sentencepiece::util::StatusCode::kNotFound,
                                              "cannot open " + files_[next_]);
        done_ = true;
        return;
      }
      ++next_;
    }
  }

 private:
  const std::vector<std::string>& files_;
  size_t next_ = 0;
  std::ifstream in_;
  std::string line_;
  bool done_ = false;
  sentencepiece::util::Status status_;
};

}  // namespace

void Tokenizer::train(const std::vector<std::string>& text_files, int vocab_size,
                      const std::string& model_prefix) {
  if (text_files.empty()) throw std::runtime_error("tokenizer training: no input files");
  // 256 byte pieces + unk/bos/eos, and at least one merge.
  if (vocab_size < 260 || vocab_size > (1 << 24))
    throw std::runtime_error("tokenizer training: bad vocab size " + std::to_string(vocab_size) +
                             " (must be in [260, 16777216]: 256 byte pieces + unk/bos/eos)");
  for (const auto& f : text_files)
    if (!std::filesystem::is_regular_file(f))
      throw std::runtime_error("tokenizer training: input file " + f + " does not exist");

  const std::unordered_map<std::string, std::string> args = {
      {"model_prefix", model_prefix},
      {"vocab_size", std::to_string(vocab_size)},
      {"model_type", "bpe"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"character_coverage", "1.0"},
      {"num_threads", "2"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      // Bounded sample of lines (~a few seconds of training for a 4 MB corpus).
      {"input_sentence_size", "2000000"},
      {"shuffle_input_sentence", "true"},
      {"minloglevel", "1"},
  };
  sentencepiece::SetRandomGeneratorSeed(1234);  // the line sample is reproducible
  LineIterator lines(text_files);
  const auto st = sentencepiece::SentencePieceTrainer::Train(args, &lines);
  if (!st.ok())
    throw std::runtime_error("tokenizer training (model prefix " + model_prefix + ", vocab size " +
                             std::to_string(vocab_size) + "): " + st.ToString());
}

Tokenizer::Tokenizer(const std::string& model_path)
    : path_(model_path), sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  const auto st = sp_->Load(model_path);
  if (!st.ok())
    throw std::runtime_error("cannot load tokenizer " + model_path + ": " + st.ToString());
  // Splitting at newlines is exact when no piece spans a newline and the normaliser neither adds
  // a dummy prefix nor strips whitespace at a chunk start (true for models trained by train());
  // a model trained elsewhere is probed and otherwise encoded whole.
  bool safe = true;
  for (int i = 0; i < sp_->GetPieceSize() && safe; ++i)
    safe = sp_->IdToPiece(i).find('\n') == std::string::npos;
  if (safe) {
    const std::string probe = "ab\n cd\n\nef";
    const auto whole = encode_whole(probe);
    auto parts = encode_whole("ab\n");
    for (const char* p : {" cd\n", "\n", "ef"}) {
      const auto v = encode_whole(p);
      parts.insert(parts.end(), v.begin(), v.end());
    }
    safe = whole == parts && decode(whole) == probe;
  }
  split_at_newlines_ = safe;
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int32_t> Tokenizer::encode_whole(std::string_view text) const {
  std::vector<int> ids;
  const auto st = sp_->Encode(text, &ids);
  if (!st.ok())
    throw std::runtime_error("tokenizer " + path_ + ": encode failed: " + st.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  // SentencePiece's BPE encode grows faster than linearly with the input (a 4.4 MB text takes
  // ~20 s whole, ~4 s line by line), so long texts are encoded in chunks that end at a newline.
  constexpr size_t kChunk = 4096;
  if (!split_at_newlines_ || text.size() <= kChunk) return encode_whole(text);
  std::vector<std::pair<size_t, size_t>> chunks;  // [begin, end)
  for (size_t b = 0; b < text.size();) {
    size_t e = text.size();
    if (b + kChunk < text.size()) {
      const size_t nl = text.find('\n', b + kChunk);
      if (nl != std::string::npos) e = nl + 1;
    }
    chunks.emplace_back(b, e);
    b = e;
  }
  std::vector<std::vector<int32_t>> parts(chunks.size());
  std::atomic<bool> failed{false};
  std::string error;
  const std::string_view view(text);
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = 0; i < static_cast<int64_t>(chunks.size()); ++i) {
    if (failed.load()) continue;
    try {
      const auto [b, e] = chunks[static_cast<size_t>(i)];
      parts[static_cast<size_t>(i)] = encode_whole(view.substr(b, e - b));
    } catch (const std::exception& ex) {
#pragma omp critical(kvt_tokenizer_error)
      if (!failed.exchange(true)) error = ex.what();
    }
  }
  if (failed) throw std::runtime_error(error);
  size_t total = 0;
  for (const auto& p : parts) total += p.size();
  std::vector<int32_t> ids;
  ids.reserve(total);
  for (const auto& p : parts) ids.insert(ids.end(), p.begin(), p.end());
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  const int n = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= n)
      throw std::runtime_error("tokenizer " + path_ + ": cannot decode id " +
                               std::to_string(ids[i]) + " at index " + std::to_string(i) +
                               " (vocab size " + std::to_string(n) + ")");
  std::string text;
  const auto st = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  if (!st.ok())
    throw std::runtime_error("tokenizer " + path_ + ": decode failed: " + st.ToString());
  return text;
}

std::string Tokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw std::runtime_error("tokenizer " + path_ + ": no piece for id " + std::to_string(id));
  return sp_->IdToPiece(id);
}

int Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int Tokenizer::bos_id() const { return sp_->bos_id(); }
int Tokenizer::eos_id() const { return sp_->eos_id(); }

}  // namespace kvt

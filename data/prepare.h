// data/prepare.h — text files -> tokenizer -> train/val shards + stats.json (`kvtrain prepare`).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace kvt {

// Unigram and bigram statistics of a token stream, fed in pieces (the stream continues across
// add() calls). Entropies are in nats.
class BigramCounter {
 public:
  void add(std::span<const uint32_t> tokens);
  uint64_t tokens() const { return tokens_; }
  // H(X) of the empirical unigram distribution.
  double unigram_entropy() const;
  // H(X_t | X_{t-1}) of the empirical bigram distribution over the tokens() - 1 adjacent pairs:
  // -1/N sum_{a,b} c(a,b) ln(c(a,b) / c(a,.)), the in-sample loss of the best bigram model.
  double bigram_entropy() const;

 private:
  std::vector<uint64_t> unigram_;                  // count per token id
  std::unordered_map<uint64_t, uint64_t> pairs_;  // (prev << 32 | next) -> count
  uint64_t tokens_ = 0;
  uint32_t last_ = 0;
};

double unigram_entropy(std::span<const uint32_t> tokens);
double bigram_entropy(std::span<const uint32_t> tokens);

struct PrepareOptions {
  std::vector<std::string> inputs;  // text files; each one document
  std::string out_dir;
  int vocab_size = 0;               // train a tokenizer of this size, or
  std::string tokenizer;            // use this tokenizer: a SentencePiece .model, a .gguf or a
                                    // tokenizer.json (data/text_tokenizer.h)
  bool parse_special = false;       // special-token strings in the text become their ids
                                    // (default: encoded as the literal text they are)
  double val_fraction = 0.05;       // fraction of the token stream held out for validation
  // Held-out tokens are every k-th block of val_block tokens (k = round(1 / val_fraction)), so
  // validation samples the whole corpus rather than its end (a book's last chapters differ from
  // the rest); 0 takes the last val_fraction of the stream instead.
  int64_t val_block = 8192;
  int64_t shard_tokens = 100000000; // tokens per train shard
  std::string format = "auto";      // auto | u16 | u32
  std::string name = "data";        // shard prefix: <name>_train_000000.bin, <name>_val_000000.bin
};

struct CorpusStats {
  uint64_t documents = 0;
  uint64_t train_tokens = 0;
  uint64_t val_tokens = 0;
  int vocab_size = 0;
  double unigram_entropy = 0;  // nats, train stream
  double bigram_entropy = 0;   // nats, train stream: the bar a trained model's val loss must beat
  std::vector<std::string> train_shards;  // file names inside out_dir
  std::string val_shard;                  // empty when val_fraction == 0
};

// Tokenizes the inputs (each document is BOS + its encoded text, documents concatenated in the
// given order), writes out_dir/tokenizer.model, the shards and out_dir/stats.json, and returns
// the statistics. Shards left by an earlier run with the same name are removed first. Progress
// lines go to `log` when given. Throws naming the file or option value at fault.
CorpusStats prepare_corpus(const PrepareOptions& opt, std::ostream* log = nullptr);

}  // namespace kvt

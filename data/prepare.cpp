// data/prepare.cpp — corpus preparation and token-stream statistics.
#include "data/prepare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "data/file_commit.h"
#include "data/shard.h"
#include "data/text_tokenizer.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;

namespace kvt {

// ---- statistics --------------------------------------------------------------------------

void BigramCounter::add(std::span<const uint32_t> tokens) {
  if (pairs_.empty()) pairs_.reserve(1 << 16);
  for (uint32_t t : tokens) {
    if (t >= unigram_.size()) unigram_.resize(static_cast<size_t>(t) + 1, 0);
    ++unigram_[t];
    if (tokens_ > 0) ++pairs_[(static_cast<uint64_t>(last_) << 32) | t];
    last_ = t;
    ++tokens_;
  }
}

double BigramCounter::unigram_entropy() const {
  if (tokens_ == 0) return 0.0;
  // H = ln N - 1/N sum_a c(a) ln c(a)
  double s = 0.0;
  for (uint64_t c : unigram_)
    if (c > 0) s += static_cast<double>(c) * std::log(static_cast<double>(c));
  const double n = static_cast<double>(tokens_);
  return std::log(n) - s / n;
}

double BigramCounter::bigram_entropy() const {
  if (tokens_ < 2) return 0.0;
  // H = 1/N [sum_a c(a,.) ln c(a,.) - sum_{a,b} c(a,b) ln c(a,b)], N = number of pairs
  std::vector<uint64_t> prev(unigram_.size(), 0);
  double s_pair = 0.0;
  for (const auto& [key, c] : pairs_) {
    prev[key >> 32] += c;
    s_pair += static_cast<double>(c) * std::log(static_cast<double>(c));
  }
  double s_prev = 0.0;
  for (uint64_t c : prev)
    if (c > 0) s_prev += static_cast<double>(c) * std::log(static_cast<double>(c));
  return (s_prev - s_pair) / static_cast<double>(tokens_ - 1);
}

double unigram_entropy(std::span<const uint32_t> tokens) {
  BigramCounter c;
  c.add(tokens);
  return c.unigram_entropy();
}

double bigram_entropy(std::span<const uint32_t> tokens) {
  BigramCounter c;
  c.add(tokens);
  return c.bigram_entropy();
}

// ---- prepare -----------------------------------------------------------------------------

namespace {

std::string read_text_file(const std::string& path) {
  if (!fs::is_regular_file(path))
    throw std::runtime_error("prepare: input file " + path + " does not exist");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("prepare: cannot open input file " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error("prepare: read error in input file " + path);
  return ss.str();
}

std::string shard_name(const std::string& name, const char* split, size_t index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "_%s_%06zu.bin", split, index);
  return name + buf;
}

// Removes the <name>_{train,val}_NNNNNN.bin of dir that `keep` does not list, so a re-run never
// leaves stale shards that a glob would pick up.
void remove_stale_shards(const fs::path& dir, const std::string& name, const CorpusStats& keep,
                         std::ostream* log) {
  std::string escaped;
  for (char ch : name) {
    if (std::string("\\^$.|?*+()[]{}").find(ch) != std::string::npos) escaped += '\\';
    escaped += ch;
  }
  const std::regex re(escaped + "_(train|val)_[0-9]{6}\\.bin");
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string f = e.path().filename().string();
    const bool kept = f == keep.val_shard ||
                      std::find(keep.train_shards.begin(), keep.train_shards.end(), f) != keep.train_shards.end();
    if (e.is_regular_file() && std::regex_match(f, re) && !kept) {
      if (log) *log << "prepare: removing stale shard " << e.path().string() << "\n";
      fs::remove(e.path());
    }
  }
}

}  // namespace

CorpusStats prepare_corpus(const PrepareOptions& opt, std::ostream* log) {
  if (opt.inputs.empty()) throw std::runtime_error("prepare: no input files (--input)");
  if (opt.out_dir.empty()) throw std::runtime_error("prepare: no output directory (--out)");
  if (!opt.tokenizer.empty() && opt.vocab_size != 0)
    throw std::runtime_error("prepare: give either --vocab-size " +
                             std::to_string(opt.vocab_size) + " or --tokenizer " + opt.tokenizer +
                             ", not both");
  if (opt.tokenizer.empty() && opt.vocab_size < 260)
    throw std::runtime_error("prepare: bad vocab size " + std::to_string(opt.vocab_size) +
                             " (give --vocab-size >= 260: 256 byte pieces + unk/bos/eos + 1 "
                             "merge, or --tokenizer)");
  if (!(opt.val_fraction >= 0.0 && opt.val_fraction < 1.0))
    throw std::runtime_error("prepare: bad val fraction " + std::to_string(opt.val_fraction) +
                             " (must be in [0, 1))");
  if (opt.shard_tokens <= 0 || opt.shard_tokens > INT32_MAX)
    throw std::runtime_error("prepare: bad shard tokens " + std::to_string(opt.shard_tokens) +
                             " (must be in [1, 2^31 - 1])");
  if (opt.format != "auto" && opt.format != "u16" && opt.format != "u32")
    throw std::runtime_error("prepare: bad format '" + opt.format + "' (auto | u16 | u32)");
  if (opt.name.empty() || opt.name.find('/') != std::string::npos)
    throw std::runtime_error("prepare: bad name '" + opt.name + "'");

  // Read every input first: a missing or empty file fails before any work is done.
  std::vector<std::string> texts;
  texts.reserve(opt.inputs.size());
  for (const auto& f : opt.inputs) {
    texts.push_back(read_text_file(f));
    if (texts.back().empty()) throw std::runtime_error("prepare: input file " + f + " is empty");
  }

  const fs::path dir(opt.out_dir);
  fs::create_directories(dir);
  // The tokenizer, kept beside the shards: a SentencePiece model as tokenizer.model (trained here
  // or copied), a byte-level BPE one (.gguf, tokenizer.json) as tokenizer.json and kvtrain's
  // tokenizer_config.json (data/text_tokenizer.h), which open_tokenizer reads back.
  fs::path model = dir / "tokenizer.model";
  std::unique_ptr<TextTokenizer> tok;
  if (opt.tokenizer.empty()) {
    if (log) *log << "prepare: training a " << opt.vocab_size << "-piece BPE tokenizer\n";
    Tokenizer::train(opt.inputs, opt.vocab_size, (dir / "tokenizer").string());
    tok = open_tokenizer(model.string());
  } else {
    if (!fs::is_regular_file(opt.tokenizer))
      throw std::runtime_error("prepare: tokenizer " + opt.tokenizer + " does not exist");
    tok = open_tokenizer(opt.tokenizer);
    if (tok->kind() == "sentencepiece") {
      if (!fs::exists(model) || !fs::equivalent(opt.tokenizer, model))
        write_file_atomic(model.string(), read_text_file(opt.tokenizer));
    } else {
      model = dir / "tokenizer.json";
      for (const auto& [name, text] : tok->embedded_texts())
        if (!fs::exists(dir / name) || !fs::equivalent(opt.tokenizer, dir / name))
          write_file_atomic((dir / name).string(), text);
    }
  }
  if (log) *log << "prepare: tokenizer " << tok->kind() << " (" << tok->source() << "), " << tok->vocab_size()
                << " tokens\n";

  CorpusStats st;
  st.vocab_size = tok->vocab_size();
  int32_t version = shard_version_for_vocab(st.vocab_size);
  if (opt.format == "u32") version = kShardVersionU32;
  if (opt.format == "u16") {
    if (st.vocab_size > 65536)
      throw std::runtime_error("prepare: --format u16 cannot hold vocab size " +
                               std::to_string(st.vocab_size) + " (at most 65536)");
    version = kShardVersionU16;
  }

  // The token stream: each document as the model frames it ([BOS] + text + [end-of-text]; see
  // TextTokenizer::document_ids), in order.
  std::vector<uint32_t> stream;
  for (size_t d = 0; d < texts.size(); ++d) {
    const std::vector<int32_t> ids = tok->document_ids(texts[d], opt.parse_special);
    stream.insert(stream.end(), ids.begin(), ids.end());
    std::string().swap(texts[d]);
    if (log) *log << "prepare: " << opt.inputs[d] << ": " << ids.size() << " tokens\n";
  }
  st.documents = texts.size();

  // Split the stream: every k-th block of val_block tokens to validation (or the tail).
  const uint64_t total = stream.size();
  std::vector<uint32_t> train, val;
  if (opt.val_fraction > 0.0 && opt.val_block > 0) {
    const uint64_t blk = static_cast<uint64_t>(opt.val_block);
    const uint64_t k = std::max<uint64_t>(2, static_cast<uint64_t>(std::llround(1.0 / opt.val_fraction)));
    for (uint64_t b = 0, i = 0; b < total; b += blk, ++i) {
      auto& dst = (i % k == k - 1) ? val : train;
      dst.insert(dst.end(), stream.begin() + b, stream.begin() + std::min(total, b + blk));
    }
  } else {
    uint64_t n_val = 0;
    if (opt.val_fraction > 0.0)
      n_val = std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(opt.val_fraction * total)));
    n_val = std::min(n_val, total);
    train.assign(stream.begin(), stream.end() - n_val);
    val.assign(stream.end() - n_val, stream.end());
  }
  std::vector<uint32_t>().swap(stream);
  if (train.empty())
    throw std::runtime_error("prepare: val fraction " + std::to_string(opt.val_fraction) +
                             " leaves no training tokens (" + std::to_string(total) +
                             " tokens in all)");
  if (opt.val_fraction > 0.0 && val.empty())
    throw std::runtime_error("prepare: the corpus (" + std::to_string(total) +
                             " tokens) is too small for a validation block of " +
                             std::to_string(opt.val_block) + " tokens; lower --val-block");
  st.train_tokens = train.size();
  st.val_tokens = val.size();

  // New shards replace old ones of the same name atomically; stale ones (beyond the new count)
  // go only after every new one is committed, so a full disk leaves the earlier output whole.
  const uint64_t per = static_cast<uint64_t>(opt.shard_tokens);
  for (uint64_t b = 0, i = 0; b < st.train_tokens; b += per, ++i) {
    const std::string fname = shard_name(opt.name, "train", i);
    write_shard((dir / fname).string(),
                std::span<const uint32_t>(train).subspan(b, std::min(per, st.train_tokens - b)),
                version);
    st.train_shards.push_back(fname);
  }
  if (!val.empty()) {
    st.val_shard = shard_name(opt.name, "val", 0);
    write_shard((dir / st.val_shard).string(), val, version);
  }
  remove_stale_shards(dir, opt.name, st, log);

  BigramCounter counts;
  counts.add(train);
  st.unigram_entropy = counts.unigram_entropy();
  st.bigram_entropy = counts.bigram_entropy();

  nlohmann::ordered_json j;
  j["documents"] = st.documents;
  j["train_tokens"] = st.train_tokens;
  j["val_tokens"] = st.val_tokens;
  j["vocab_size"] = st.vocab_size;
  j["format"] = version == kShardVersionU16 ? "u16" : "u32";
  j["tokenizer"] = model.filename().string();
  j["tokenizer_kind"] = tok->kind();
  j["train_shards"] = st.train_shards;
  j["val_shard"] = st.val_shard;
  j["unigram_entropy_nats"] = st.unigram_entropy;
  // H(X_t | X_{t-1}) of the train stream: the loss of the best bigram model (in-sample).
  j["bigram_entropy_nats"] = st.bigram_entropy;
  j["inputs"] = opt.inputs;
  write_file_atomic((dir / "stats.json").string(), j.dump(2) + "\n");
  return st;
}

}  // namespace kvt

// tests/test_data.cpp — shards, the window loader, the tokenizer and `prepare` (docs/design.md, "Data").
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "kernels/common/rng.h"
#include "tools/commands.h"

namespace fs = std::filesystem;
using namespace kvt;

namespace {

// A fresh directory under /tmp, unique per test and process, removed afterwards.
class TmpDir {
 public:
  TmpDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::path("/tmp") / ("kvt_test_data_" + std::string(info->test_suite_name()) + "_" +
                                info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TmpDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "<no error>";
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void patch_int32(const std::string& path, size_t offset, int32_t value) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(reinterpret_cast<const char*>(&value), sizeof(value));
}

// Deterministic English-like text: lines of words, digits, punctuation and blank lines.
std::string generated_text(uint64_t seed, int lines) {
  static const char* words[] = {
      "the",     "and",  "of",    "to",     "in",    "he",     "that",    "shall",  "unto",
      "for",     "his",  "lord",  "they",   "be",    "is",     "him",     "not",    "them",
      "with",    "all",  "thou",  "thy",    "was",   "which",  "my",      "said",   "God",
      "house",   "land", "king",  "people", "came",  "Israel", "son",     "day",    "hand",
      "against", "came", "earth", "water",  "light", "night",  "morning", "evening"};
  Rng rng(seed);
  std::string s;
  for (int l = 0; l < lines; ++l) {
    if (rng.below(10) == 0) {
      s += "\n";
      continue;
    }
    s += std::to_string(1 + rng.below(50)) + ":" + std::to_string(1 + rng.below(30)) + " ";
    const int n = 5 + static_cast<int>(rng.below(10));
    for (int w = 0; w < n; ++w) {
      s += words[rng.below(std::size(words))];
      s += w + 1 == n ? "." : (rng.below(6) == 0 ? ", " : " ");
    }
    s += "\n";
  }
  return s;
}

std::vector<uint32_t> iota_tokens(size_t n, uint32_t start) {
  std::vector<uint32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = start + static_cast<uint32_t>(i);
  return t;
}

}  // namespace

// ---- shards ------------------------------------------------------------------------------

TEST(dataShard, RoundTripBothFormats) {
  TmpDir dir;
  Rng rng(7);
  std::vector<uint32_t> small(5000), large(5000);
  for (auto& t : small) t = static_cast<uint32_t>(rng.below(65536));
  for (auto& t : large) t = static_cast<uint32_t>(rng.below(1u << 20));
  small[0] = 65535;
  large[0] = 5;
  large[1] = (1u << 20) - 1;  // the first token that does not fit uint16

  write_shard(dir / "a.bin", small, kShardVersionU16);
  write_shard(dir / "b.bin", large, kShardVersionU32);
  EXPECT_EQ(fs::file_size(dir / "a.bin"), 1024u + 2u * small.size());
  EXPECT_EQ(fs::file_size(dir / "b.bin"), 1024u + 4u * large.size());
  const std::string raw = read_file(dir / "a.bin");
  int32_t header[3];
  std::memcpy(header, raw.data(), sizeof(header));
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], 5000);

  const Shard a(dir / "a.bin", 65536), b(dir / "b.bin", 1 << 20);
  EXPECT_EQ(a.version(), 1);
  EXPECT_EQ(b.version(), 7);
  ASSERT_EQ(a.size(), small.size());
  ASSERT_EQ(b.size(), large.size());
  for (size_t i = 0; i < small.size(); ++i) ASSERT_EQ(a[i], small[i]) << i;
  for (size_t i = 0; i < large.size(); ++i) ASSERT_EQ(b[i], large[i]) << i;
  std::vector<int32_t> part(100);
  b.read(4900, 100, part.data());
  for (size_t i = 0; i < 100; ++i) EXPECT_EQ(static_cast<uint32_t>(part[i]), large[4900 + i]);
  EXPECT_THROW(b.read(4901, 100, part.data()), std::runtime_error);

  // An empty shard is valid; a uint16 shard cannot take a token >= 65536.
  write_shard(dir / "empty.bin", std::vector<uint32_t>{}, kShardVersionU32);
  EXPECT_EQ(Shard(dir / "empty.bin", 10).size(), 0u);
  const std::string e = error_of([&] { write_shard(dir / "c.bin", large, kShardVersionU16); });
  EXPECT_NE(e.find("c.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("token 1048575 at index 1 "), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "c.bin"));
}

TEST(dataShard, BadMagicVersionNamesFileAndOffset) {
  TmpDir dir;
  const std::string p = dir / "magic.bin";
  write_shard(p, iota_tokens(10, 0), kShardVersionU16);
  patch_int32(p, 0, 12345);
  std::string e = error_of([&] { Shard s(p, 100); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("bad magic 12345"), std::string::npos) << e;
  EXPECT_NE(e.find("byte offset 0"), std::string::npos) << e;

  write_shard(p, iota_tokens(10, 0), kShardVersionU32);
  patch_int32(p, 4, 1);  // magic 20240801 with version 1
  e = error_of([&] { Shard s(p, 100); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("bad version 1"), std::string::npos) << e;
  EXPECT_NE(e.find("byte offset 4"), std::string::npos) << e;
}

TEST(dataShard, TruncatedAndOversizedNameFileAndOffset) {
  TmpDir dir;
  const std::string p = dir / "trunc.bin";
  write_shard(p, iota_tokens(100, 0), kShardVersionU16);  // 1024 + 200 bytes
  fs::resize_file(p, 1024 + 150);
  std::string e = error_of([&] { Shard s(p, 1000); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  EXPECT_NE(e.find("byte offset 1174"), std::string::npos) << e;

  fs::resize_file(p, 1000);  // not even a header
  e = error_of([&] { Shard s(p, 1000); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("byte offset 1000"), std::string::npos) << e;

  write_shard(p, iota_tokens(100, 0), kShardVersionU32);  // 1024 + 400 bytes
  fs::resize_file(p, 1024 + 404);
  e = error_of([&] { Shard s(p, 1000); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("oversized"), std::string::npos) << e;
  EXPECT_NE(e.find("byte offset 1424"), std::string::npos) << e;

  EXPECT_NE(error_of([&] { Shard s(dir / "missing.bin", 10); }).find("missing.bin"),
            std::string::npos);
}

TEST(dataShard, TokenAtLeastVocabNamesIndexAndOffset) {
  TmpDir dir;
  std::vector<uint32_t> t(10000, 3);
  t[9000] = 499;  // valid: the largest id
  t[7037] = 500;  // the first bad token
  t[9999] = 600;
  for (int32_t version : {kShardVersionU16, kShardVersionU32}) {
    const std::string p = dir / ("vocab_v" + std::to_string(version) + ".bin");
    write_shard(p, t, version);
    const size_t bytes = version == kShardVersionU16 ? 2 : 4;
    const std::string e = error_of([&] { Shard s(p, 500); });
    EXPECT_NE(e.find(p), std::string::npos) << e;
    EXPECT_NE(e.find("token 500 >= vocab_size 500"), std::string::npos) << e;
    EXPECT_NE(e.find("index 7037"), std::string::npos) << e;
    EXPECT_NE(e.find("byte offset " + std::to_string(1024 + 7037 * bytes)), std::string::npos) << e;
    EXPECT_EQ(Shard(p, 601).size(), t.size());
  }
}

// ---- loader ------------------------------------------------------------------------------

namespace {

// Two shards whose token at global stream position i is i: a window is identified by its first
// token. Shard sizes 100 and 57 with T + 1 = 10 give 10 + 5 windows (the last 7 tokens dropped).
struct TwoShards {
  TmpDir dir;
  std::vector<std::string> files{dir / "s_000.bin", dir / "s_001.bin"};
  TwoShards() {
    write_shard(files[0], iota_tokens(100, 0), kShardVersionU16);
    write_shard(files[1], iota_tokens(57, 100), kShardVersionU32);
  }
};

std::vector<int32_t> first_tokens(WindowLoader& L, uint64_t g0, int n) {
  std::vector<int32_t> buf(static_cast<size_t>(n) * L.window_len());
  L.read_samples(g0, n, buf.data());
  std::vector<int32_t> firsts;
  for (int i = 0; i < n; ++i) firsts.push_back(buf[static_cast<size_t>(i) * L.window_len()]);
  return firsts;
}

}  // namespace

TEST(dataLoader, WindowsAreNonOverlappingAndCoverEachShard) {
  TwoShards s;
  WindowLoader L(s.files, 9, 1000, 0, false);
  ASSERT_EQ(L.num_windows(), 100u / 10 + 57u / 10);
  std::set<int32_t> seen;
  std::vector<int32_t> w(10);
  for (uint64_t i = 0; i < L.num_windows(); ++i) {
    L.read_window(i, w.data());
    // Shard 0 windows start at 0, 10, ..., 90; shard 1 windows at 100, 110, ..., 140.
    const int32_t start =
        i < 10 ? static_cast<int32_t>(10 * i) : static_cast<int32_t>(100 + 10 * (i - 10));
    for (int j = 0; j < 10; ++j) {
      ASSERT_EQ(w[j], start + j) << "window " << i;
      EXPECT_TRUE(seen.insert(w[j]).second) << "token " << w[j] << " in two windows";
    }
  }
  EXPECT_EQ(seen.size(), 150u);
  EXPECT_EQ(seen.count(99), 1u);   // shard 0 is fully used
  EXPECT_EQ(seen.count(150), 0u);  // the 7-token tail of shard 1 is dropped
  // Without shuffle, sample g is window g mod count.
  EXPECT_EQ(first_tokens(L, 14, 3), (std::vector<int32_t>{140, 0, 10}));
}

TEST(dataLoader, MaxWindowsSpreadsASubsetEvenly) {
  TwoShards s;  // 15 windows: starts 0, 10, ..., 90 (shard 0), 100, ..., 140 (shard 1)
  WindowLoader L(s.files, 9, 1000, 3, true, 5);
  ASSERT_EQ(L.num_windows(), 5u);
  std::vector<int32_t> w(10);
  std::vector<int32_t> starts;
  for (uint64_t i = 0; i < 5; ++i) {
    L.read_window(i, w.data());
    starts.push_back(w[0]);
  }
  EXPECT_EQ(starts, (std::vector<int32_t>{0, 30, 60, 90, 120}));  // windows 0, 3, 6, 9, 12
  EXPECT_THROW(L.read_window(5, w.data()), std::runtime_error);
  // every epoch visits exactly those five
  std::vector<int32_t> e = first_tokens(L, 5, 5);
  std::sort(e.begin(), e.end());
  EXPECT_EQ(e, starts);
  WindowLoader all(s.files, 9, 1000, 3, true, 100);  // more than there are: all of them
  EXPECT_EQ(all.num_windows(), 15u);
}

TEST(dataLoader, EveryEpochIsAPermutationAndSeedDecidesOrder) {
  TwoShards s;
  WindowLoader a(s.files, 9, 1000, 42, true), b(s.files, 9, 1000, 42, true),
      c(s.files, 9, 1000, 43, true);
  const int n = static_cast<int>(a.num_windows());
  std::vector<std::vector<int32_t>> epochs;
  for (int e = 0; e < 3; ++e) {
    auto f = first_tokens(a, static_cast<uint64_t>(e) * n, n);
    std::vector<int32_t> sorted = f;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int32_t> all;
    for (int i = 0; i < 10; ++i) all.push_back(10 * i);
    for (int i = 0; i < 5; ++i) all.push_back(100 + 10 * i);
    EXPECT_EQ(sorted, all) << "epoch " << e << " is not a permutation";
    EXPECT_NE(f, all) << "epoch " << e << " is not shuffled";
    epochs.push_back(f);
  }
  EXPECT_NE(epochs[0], epochs[1]);  // each epoch draws its own order
  EXPECT_NE(epochs[1], epochs[2]);
  EXPECT_EQ(first_tokens(b, 0, 3 * n), [&] {
    std::vector<int32_t> v;
    for (auto& e : epochs) v.insert(v.end(), e.begin(), e.end());
    return v;
  }());
  EXPECT_NE(first_tokens(c, 0, n), epochs[0]);
}

TEST(dataLoader, SplitReadsEqualOneReadAcrossEpochBoundary) {
  TwoShards s;
  WindowLoader one(s.files, 9, 1000, 5, true), two(s.files, 9, 1000, 5, true);
  const int B = 4;
  const uint64_t count = one.num_windows();  // 15
  // Samples 12 .. 19 cross the epoch boundary at 15 in the middle of each read.
  for (uint64_t g0 : {uint64_t{0}, uint64_t{12}, 3 * count - 3}) {
    std::vector<int32_t> whole(2 * B * 10), halves(2 * B * 10);
    one.read_samples(g0, 2 * B, whole.data());
    two.read_samples(g0 + B, B, halves.data() + B * 10);  // read out of order: no hidden state
    two.read_samples(g0, B, halves.data());
    EXPECT_EQ(whole, halves) << "g0 " << g0;
  }
  // Across the boundary, samples follow epoch 0's tail then epoch 1's head.
  WindowLoader fresh(s.files, 9, 1000, 5, true);
  const auto tail = first_tokens(fresh, 12, 3), head = first_tokens(fresh, count, 5);
  auto crossing = first_tokens(one, 12, 8);
  EXPECT_EQ(std::vector<int32_t>(crossing.begin(), crossing.begin() + 3), tail);
  EXPECT_EQ(std::vector<int32_t>(crossing.begin() + 3, crossing.end()), head);
  EXPECT_EQ(one.epoch_of(14), 0u);
  EXPECT_EQ(one.epoch_of(15), 1u);
}

TEST(dataLoader, TwoRanksOfBatchBReadWhatOneRankOfTwoBReads) {
  TwoShards s;
  WindowLoader L(s.files, 9, 1000, 11, true);
  const int B = 3, accum = 2;
  // The global sample index micro-step m of rank r reads in step s (data/loader.h).
  auto sample_index = [](uint64_t s, int m, int r, int batch, int grad_accum, int world) {
    return s * batch * grad_accum * world + (static_cast<uint64_t>(m) * world + r) * batch;
  };
  for (uint64_t step = 0; step < 4; ++step) {
    for (int m = 0; m < accum; ++m) {
      const uint64_t single = sample_index(step, m, 0, 2 * B, accum, 1);
      auto ref = first_tokens(L, single, 2 * B);
      auto r0 = first_tokens(L, sample_index(step, m, 0, B, accum, 2), B);
      auto r1 = first_tokens(L, sample_index(step, m, 1, B, accum, 2), B);
      r0.insert(r0.end(), r1.begin(), r1.end());
      EXPECT_EQ(r0, ref) << "step " << step << " micro " << m;
    }
  }
}

TEST(dataLoader, ErrorsAndGlob) {
  TwoShards s;
  std::string e = error_of([&] { WindowLoader L(s.files, 200, 1000, 0, true); });
  EXPECT_NE(e.find("s_000.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("s_001.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("201"), std::string::npos) << e;
  // A token >= vocab_size in the second shard is caught when the loader opens it.
  e = error_of([&] { WindowLoader L(s.files, 9, 150, 0, true); });
  EXPECT_NE(e.find("s_001.bin"), std::string::npos) << e;

  EXPECT_EQ(expand_glob((s.dir / "s_*.bin")), s.files);
  write_shard(s.dir / "s_0000.bin", iota_tokens(20, 0), kShardVersionU16);  // sorts between
  const auto g = expand_glob(s.dir / "s_*.bin");
  ASSERT_EQ(g.size(), 3u);
  EXPECT_TRUE(std::is_sorted(g.begin(), g.end()));
  const std::string pattern = s.dir / "nothing_*.bin";
  e = error_of([&] { expand_glob(pattern); });
  EXPECT_NE(e.find(pattern), std::string::npos) << e;
}

TEST(dataLoader, SplitInputsTargets) {
  const std::vector<int32_t> w = {1, 2, 3, 4, 10, 20, 30, 40};  // 2 windows, T = 3
  std::vector<int32_t> in(6), tg(6);
  split_inputs_targets(w.data(), 2, 3, in.data(), tg.data());
  EXPECT_EQ(in, (std::vector<int32_t>{1, 2, 3, 10, 20, 30}));
  EXPECT_EQ(tg, (std::vector<int32_t>{2, 3, 4, 20, 30, 40}));
}

// ---- statistics --------------------------------------------------------------------------

TEST(dataStats, BigramAndUnigramEntropyByHand) {
  // Stream 1 2 1 2 1 3: pairs (1,2) x2, (2,1) x2, (1,3) x1; N = 5 pairs.
  // p(2|1) = 2/3, p(3|1) = 1/3, p(1|2) = 1.
  // H = -(2/5 ln 2/3 + 1/5 ln 1/3 + 2/5 ln 1) = 0.4 ln 1.5 + 0.2 ln 3 = 0.38190850097688...
  // Unigram: p = 3/6, 2/6, 1/6: H = 0.5 ln 2 + 1/3 ln 3 + 1/6 ln 6 = 1.01140426470735...
  const std::vector<uint32_t> t = {1, 2, 1, 2, 1, 3};
  EXPECT_NEAR(bigram_entropy(t), 0.38190850097688, 1e-12);
  EXPECT_NEAR(unigram_entropy(t), 1.01140426470735, 1e-12);
  // Fed in pieces, the stream continues across calls (the pair (2,1) at the seam counts).
  BigramCounter c;
  c.add(std::span(t).subspan(0, 2));
  c.add(std::span(t).subspan(2));
  EXPECT_NEAR(c.bigram_entropy(), 0.38190850097688, 1e-12);
  // A deterministic stream has zero conditional entropy but positive unigram entropy.
  const std::vector<uint32_t> cyc = {4, 5, 6, 4, 5, 6, 4, 5, 6};
  EXPECT_NEAR(bigram_entropy(cyc), 0.0, 1e-12);
  EXPECT_NEAR(unigram_entropy(cyc), std::log(3.0), 1e-12);
}

// ---- tokenizer ---------------------------------------------------------------------------

TEST(dataTokenizer, TrainEncodeDecodeRoundTrip) {
  TmpDir dir;
  write_file(dir / "corpus.txt", generated_text(1, 3000));
  Tokenizer::train({dir / "corpus.txt"}, 320, dir / "tok");
  ASSERT_TRUE(fs::exists(dir / "tok.model"));
  const Tokenizer tok(dir / "tok.model");
  EXPECT_EQ(tok.vocab_size(), 320);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);

  const auto ids = tok.encode("a\n\nb");
  EXPECT_EQ(tok.decode(ids), "a\n\nb");
  int newlines = 0;
  for (int32_t id : ids) newlines += tok.piece(id) == "<0x0A>";
  EXPECT_EQ(newlines, 2);
  for (const std::string& s :
       {std::string("\n\nRepeat the previous context exactly.\n"), std::string("  two  spaces\t"),
        std::string("caf\xc3\xa9 \xe2\x9c\x93 12345"), generated_text(99, 40)}) {
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  }
  // A long text (encoded in newline-terminated chunks) gives the ids of its lines encoded apart.
  const std::string long_text = generated_text(77, 1000);
  ASSERT_GT(long_text.size(), 20000u);
  std::vector<int32_t> by_line;
  for (size_t b = 0; b < long_text.size();) {
    const size_t e = long_text.find('\n', b) + 1;
    const auto v = tok.encode(long_text.substr(b, e - b));
    by_line.insert(by_line.end(), v.begin(), v.end());
    b = e;
  }
  EXPECT_EQ(tok.encode(long_text), by_line);
  EXPECT_EQ(tok.decode(by_line), long_text);
  // No dummy prefix: pieces encoded separately concatenate to the joined text.
  auto joined = tok.encode("the king");
  const auto more = tok.encode("\n\nRepeat");
  joined.insert(joined.end(), more.begin(), more.end());
  EXPECT_EQ(tok.decode(joined), "the king\n\nRepeat");
  // Merges were learned: common words take fewer pieces than bytes.
  EXPECT_LT(tok.encode("the people").size(), 10u);
  // Digits are split.
  EXPECT_EQ(tok.encode("2024").size(), 4u);

  // Same inputs, same pieces and scores (the .model also records its own prefix).
  Tokenizer::train({dir / "corpus.txt"}, 320, dir / "tok2");
  EXPECT_TRUE(read_file(dir / "tok.vocab") == read_file(dir / "tok2.vocab"));

  EXPECT_NE(error_of([&] { Tokenizer t(dir / "nope.model"); }).find("nope.model"),
            std::string::npos);
  EXPECT_NE(
      error_of([&] { Tokenizer::train({dir / "absent.txt"}, 320, dir / "x"); }).find("absent.txt"),
      std::string::npos);
  EXPECT_NE(error_of([&] { Tokenizer::train({dir / "corpus.txt"}, 50, dir / "x"); }).find("50"),
            std::string::npos);
}

// ---- prepare -----------------------------------------------------------------------------

namespace {

// Independent H(X_t | X_{t-1}): -sum p(a,b) ln p(b|a) from ordered maps.
double reference_bigram_entropy(const std::vector<uint32_t>& t) {
  std::map<std::pair<uint32_t, uint32_t>, double> pair;
  std::map<uint32_t, double> prev;
  for (size_t i = 1; i < t.size(); ++i) {
    pair[{t[i - 1], t[i]}] += 1;
    prev[t[i - 1]] += 1;
  }
  const double n = static_cast<double>(t.size() - 1);
  double h = 0;
  for (const auto& [k, c] : pair) h -= c / n * std::log(c / prev[k.first]);
  return h;
}

std::vector<uint32_t> read_stream(const std::vector<std::string>& files, int vocab) {
  std::vector<uint32_t> all;
  for (const auto& f : files) {
    const Shard s(f, vocab);
    for (size_t i = 0; i < s.size(); ++i) all.push_back(s[i]);
  }
  return all;
}

}  // namespace

TEST(dataPrepare, EndToEndShardsDecodeToInputAndStats) {
  TmpDir dir;
  const std::string t1 = generated_text(3, 1500), t2 = "Second document.\n\nIt ends here\n";
  write_file(dir / "one.txt", t1);
  write_file(dir / "two.txt", t2);
  PrepareOptions opt;
  opt.inputs = {dir / "one.txt", dir / "two.txt"};
  opt.out_dir = dir / "out";
  opt.vocab_size = 320;
  opt.val_fraction = 0.1;
  opt.val_block = 0;  // the tail split; the block split is tested below
  opt.shard_tokens = 3000;
  const CorpusStats st = prepare_corpus(opt);

  ASSERT_GE(st.train_shards.size(), 2u);
  EXPECT_EQ(st.vocab_size, 320);
  EXPECT_EQ(st.documents, 2u);
  EXPECT_EQ(st.train_shards[0], "data_train_000000.bin");
  EXPECT_EQ(st.val_shard, "data_val_000000.bin");
  std::vector<std::string> files;
  for (const auto& f : st.train_shards) files.push_back((dir.path() / "out" / f).string());
  EXPECT_EQ(expand_glob(dir / "out/data_train_*.bin"), files);
  const std::vector<uint32_t> train = read_stream(files, 320);
  const std::vector<uint32_t> val = read_stream({dir / "out/data_val_000000.bin"}, 320);
  EXPECT_EQ(Shard(files[0], 320).version(), 1);  // u16 for a small vocab
  EXPECT_EQ(Shard(files[0], 320).size(), 3000u);
  ASSERT_EQ(train.size(), st.train_tokens);
  ASSERT_EQ(val.size(), st.val_tokens);
  const double total = static_cast<double>(train.size() + val.size());
  EXPECT_NEAR(static_cast<double>(val.size()) / total, 0.1, 1.0 / total);

  // The concatenated stream is BOS doc1 BOS doc2 and decodes back to the inputs exactly.
  std::vector<uint32_t> all = train;
  all.insert(all.end(), val.begin(), val.end());
  const Tokenizer tok(dir / "out/tokenizer.model");
  ASSERT_EQ(all[0], 1u);
  std::vector<std::string> docs;
  std::vector<int32_t> cur;
  for (size_t i = 1; i <= all.size(); ++i) {
    if (i == all.size() || all[i] == 1u) {
      docs.push_back(tok.decode(cur));
      cur.clear();
    } else {
      cur.push_back(static_cast<int32_t>(all[i]));
    }
  }
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], t1);
  EXPECT_EQ(docs[1], t2);

  // stats.json agrees with an independent computation on the train stream.
  const auto j = nlohmann::json::parse(read_file(dir / "out/stats.json"));
  EXPECT_EQ(j.at("train_tokens").get<uint64_t>(), train.size());
  EXPECT_EQ(j.at("val_tokens").get<uint64_t>(), val.size());
  EXPECT_EQ(j.at("vocab_size").get<int>(), 320);
  const double ref = reference_bigram_entropy(train);
  EXPECT_NEAR(j.at("bigram_entropy_nats").get<double>(), ref, 1e-9);
  EXPECT_NEAR(st.bigram_entropy, ref, 1e-9);
  EXPECT_GT(j.at("unigram_entropy_nats").get<double>(), ref);  // context helps

  // Re-run with the same tokenizer, u32 shards and one big shard: stale shards are removed and
  // the token stream is the same.
  PrepareOptions again = opt;
  again.vocab_size = 0;
  again.tokenizer = dir / "out/tokenizer.model";
  again.shard_tokens = 1000000;
  again.format = "u32";
  const CorpusStats st2 = prepare_corpus(again);
  ASSERT_EQ(st2.train_shards.size(), 1u);
  EXPECT_EQ(expand_glob(dir / "out/data_train_*.bin").size(), 1u);
  const std::string f2 = dir / "out/data_train_000000.bin";
  EXPECT_EQ(Shard(f2, 320).version(), 7);
  EXPECT_EQ(read_stream({f2}, 320), train);
}

TEST(dataPrepare, ErrorsNameTheFileOrValue) {
  TmpDir dir;
  write_file(dir / "ok.txt", generated_text(5, 300));
  write_file(dir / "empty.txt", "");
  PrepareOptions opt;
  opt.out_dir = dir / "out";
  opt.vocab_size = 320;

  opt.inputs = {dir / "ok.txt", dir / "missing.txt"};
  std::string e = error_of([&] { prepare_corpus(opt); });
  EXPECT_NE(e.find("missing.txt"), std::string::npos) << e;
  opt.inputs = {dir / "ok.txt", dir / "empty.txt"};
  e = error_of([&] { prepare_corpus(opt); });
  EXPECT_NE(e.find("empty.txt"), std::string::npos) << e;
  EXPECT_NE(e.find("empty"), std::string::npos) << e;
  opt.inputs = {dir / "ok.txt"};
  opt.vocab_size = -7;
  e = error_of([&] { prepare_corpus(opt); });
  EXPECT_NE(e.find("vocab size -7"), std::string::npos) << e;
  opt.vocab_size = 320;
  opt.format = "u8";
  e = error_of([&] { prepare_corpus(opt); });
  EXPECT_NE(e.find("u8"), std::string::npos) << e;
  opt.format = "auto";
  opt.val_fraction = 1.5;
  e = error_of([&] { prepare_corpus(opt); });
  EXPECT_NE(e.find("1.5"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "out/stats.json"));
}

TEST(dataPrepare, CommandLine) {
  TmpDir dir;
  write_file(dir / "in.txt", generated_text(8, 800));
  const std::string in = dir / "in.txt", out = dir / "out";
  {
    CLI::App app;
    kvt::cli::add_prepare(app);
    std::vector<std::string> args = {"kvtrain",        "prepare", "--input",      in,
                                     "--out",          out,       "--vocab-size", "300",
                                     "--val-fraction", "0.2",     "--name",       "bible"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    app.parse(static_cast<int>(argv.size()), argv.data());
  }
  EXPECT_TRUE(fs::exists(out + "/bible_train_000000.bin"));
  EXPECT_TRUE(fs::exists(out + "/bible_val_000000.bin"));
  EXPECT_TRUE(fs::exists(out + "/tokenizer.model"));
  const auto j = nlohmann::json::parse(read_file(out + "/stats.json"));
  EXPECT_EQ(j.at("vocab_size").get<int>(), 300);
  EXPECT_GT(j.at("bigram_entropy_nats").get<double>(), 0.0);
  {
    // --vocab-size and --tokenizer exclude each other.
    CLI::App app;
    kvt::cli::add_prepare(app);
    std::vector<std::string> args = {"kvtrain",      "prepare",
                                     "--input",      in,
                                     "--out",        out,
                                     "--vocab-size", "300",
                                     "--tokenizer",  out + "/tokenizer.model"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    EXPECT_THROW(app.parse(static_cast<int>(argv.size()), argv.data()), CLI::ParseError);
  }
}

// The block split: with val_fraction 1/4 and blocks of 64 tokens, validation is blocks 3, 7, 11,
// ... of the stream and training the others, in order.
TEST(dataPrepare, ValidationIsEveryKthBlock) {
  TmpDir dir;
  write_file(dir / "one.txt", generated_text(5, 1200));
  PrepareOptions opt;
  opt.inputs = {dir / "one.txt"};
  opt.out_dir = dir / "tail";
  opt.vocab_size = 300;
  opt.val_fraction = 0.25;
  opt.val_block = 0;
  prepare_corpus(opt);
  std::vector<uint32_t> stream = read_stream({dir / "tail/data_train_000000.bin"}, 300);
  const std::vector<uint32_t> tail = read_stream({dir / "tail/data_val_000000.bin"}, 300);
  stream.insert(stream.end(), tail.begin(), tail.end());

  opt.out_dir = dir / "blocks";
  opt.tokenizer = dir / "tail/tokenizer.model";
  opt.vocab_size = 0;
  opt.val_block = 64;
  const CorpusStats st = prepare_corpus(opt);
  std::vector<uint32_t> want_train, want_val;
  for (size_t b = 0, i = 0; b < stream.size(); b += 64, ++i) {
    auto& dst = i % 4 == 3 ? want_val : want_train;
    dst.insert(dst.end(), stream.begin() + b, stream.begin() + std::min(stream.size(), b + 64));
  }
  ASSERT_GT(want_val.size(), 64u);
  EXPECT_EQ(read_stream({dir / "blocks/data_train_000000.bin"}, 300), want_train);
  EXPECT_EQ(read_stream({dir / "blocks/data_val_000000.bin"}, 300), want_val);
  EXPECT_EQ(st.val_tokens, want_val.size());
  EXPECT_NEAR(st.bigram_entropy, reference_bigram_entropy(want_train), 1e-9);
}

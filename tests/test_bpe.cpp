// tests/test_bpe.cpp — the byte-level BPE tokenizer (docs/design.md, "Data").
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "data/bpe.h"

namespace fs = std::filesystem;
using namespace kvt;
using Pieces = std::vector<std::string>;

namespace {

// The 256 single-byte tokens (id = byte), then extra tokens.
std::vector<std::string> byte_vocab(const std::vector<std::string>& extra = {}) {
  std::vector<std::string> v;
  for (int b = 0; b < 256; ++b) v.push_back(byte_level_encode(std::string(1, char(b))));
  for (const auto& e : extra) v.push_back(e);
  return v;
}

BpeTokenizer bytes_only(const std::string& pre) { return BpeTokenizer(byte_vocab(), {}, {}, pre); }

Pieces split(const std::string& pre, const std::string& text) {
  return bytes_only(pre).pre_tokenize(text);
}

std::string expect_throw(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception";
  return {};
}

}  // namespace

// ---- pre-tokenizers (each expected split worked out by hand from the regex) -------------------

TEST(bpePreTokenize, Gpt2) {
  EXPECT_EQ(split("gpt2", "I'm here, they've"),
            (Pieces{"I", "'m", " here", ",", " they", "'ve"}));
  EXPECT_EQ(split("gpt2", "I'M"), (Pieces{"I", "'", "M"}));  // contractions are case-sensitive
  EXPECT_EQ(split("gpt2", "abc 12345 x"), (Pieces{"abc", " 12345", " x"}));
  EXPECT_EQ(split("gpt2", "hello!!! ...world"), (Pieces{"hello", "!!!", " ...", "world"}));
  EXPECT_EQ(split("gpt2", "a.b"), (Pieces{"a", ".", "b"}));
  // \s+(?!\S): a whitespace run leaves its last space to the word after it.
  EXPECT_EQ(split("gpt2", "a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(split("gpt2", "hello "), (Pieces{"hello", " "}));
  EXPECT_EQ(split("gpt2", "a\n\nb"), (Pieces{"a", "\n", "\n", "b"}));
  EXPECT_EQ(split("gpt2", "hi\n  there"), (Pieces{"hi", "\n ", " there"}));
  EXPECT_EQ(split("gpt2", "a\tb"), (Pieces{"a", "\t", "b"}));
  EXPECT_EQ(split("gpt2", "héllo wörld"), (Pieces{"héllo", " wörld"}));
  EXPECT_EQ(split("gpt2", "你好世界 ok"), (Pieces{"你好世界", " ok"}));
  EXPECT_EQ(split("gpt2", "hi 👋🏽!"), (Pieces{"hi", " 👋🏽!"}));  // So + Sk + Po: one run
}

TEST(bpePreTokenize, SmolLm) {
  EXPECT_EQ(split("smollm", "2024"), (Pieces{"2", "0", "2", "4"}));
  EXPECT_EQ(split("smollm", "abc 12345 x"), (Pieces{"abc", " ", "1", "2", "3", "4", "5", " x"}));
  EXPECT_EQ(split("smollm", "I'm here, they've"),
            (Pieces{"I", "'m", " here", ",", " they", "'ve"}));
  EXPECT_EQ(split("smollm", "a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(split("smollm", "x2y"), (Pieces{"x", "2", "y"}));
  EXPECT_EQ(split("smollm", "héllo wörld 你好"), (Pieces{"héllo", " wörld", " 你好"}));
}

TEST(bpePreTokenize, LlamaBpe) {
  EXPECT_EQ(split("llama-bpe", "I'm here, they've"),
            (Pieces{"I", "'m", " here", ",", " they", "'ve"}));
  EXPECT_EQ(split("llama-bpe", "I'M"), (Pieces{"I", "'M"}));  // (?i:...)
  EXPECT_EQ(split("llama-bpe", "abc 12345 x"), (Pieces{"abc", " ", "123", "45", " x"}));
  EXPECT_EQ(split("llama-bpe", "hello!!! ...world"), (Pieces{"hello", "!!!", " ...", "world"}));
  EXPECT_EQ(split("llama-bpe", "a.b"), (Pieces{"a", ".b"}));  // [^\r\n\p{L}\p{N}]?\p{L}+
  EXPECT_EQ(split("llama-bpe", "a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(split("llama-bpe", "a\n\nb"), (Pieces{"a", "\n\n", "b"}));  // \s*[\r\n]+
  EXPECT_EQ(split("llama-bpe", "hi\n  there"), (Pieces{"hi", "\n", " ", " there"}));
  EXPECT_EQ(split("llama-bpe", "a\tb"), (Pieces{"a", "\tb"}));
  EXPECT_EQ(split("llama-bpe", "ok.\n\nNext"), (Pieces{"ok", ".\n\n", "Next"}));
  EXPECT_EQ(split("llama-bpe", "héllo wörld"), (Pieces{"héllo", " wörld"}));
  EXPECT_EQ(split("llama-bpe", "你好世界 ok"), (Pieces{"你好世界", " ok"}));
  EXPECT_EQ(split("llama-bpe", "hi 👋🏽!"), (Pieces{"hi", " 👋🏽!"}));
}

TEST(bpePreTokenize, Qwen2) {
  EXPECT_EQ(split("qwen2", "abc 12345 x"), (Pieces{"abc", " ", "1", "2", "3", "4", "5", " x"}));
  EXPECT_EQ(split("qwen2", "I'M"), (Pieces{"I", "'M"}));
  EXPECT_EQ(split("qwen2", "a.b"), (Pieces{"a", ".b"}));
  EXPECT_EQ(split("qwen2", "a\n\nb"), (Pieces{"a", "\n\n", "b"}));
  EXPECT_EQ(split("qwen2", "a\tb"), (Pieces{"a", "\tb"}));
  EXPECT_EQ(split("qwen2", "你好世界 ok"), (Pieces{"你好世界", " ok"}));
}

TEST(bpePreTokenize, InvalidUtf8IsSplitPerByte) {
  for (const char* pre : {"gpt2", "smollm", "llama-bpe", "qwen2"}) {
    EXPECT_EQ(split(pre, "ab\xFF" "cd"), (Pieces{"ab", "\xFF", "cd"})) << pre;
    EXPECT_EQ(split(pre, "x\xC3"), (Pieces{"x", "\xC3"})) << pre;            // truncated
    EXPECT_EQ(split(pre, "\xED\xA0\x80"), (Pieces{"\xED", "\xA0", "\x80"})) << pre;  // surrogate
  }
}

// \s is Unicode's White_Space (as llama.cpp's and Oniguruma's), not PCRE2's, which adds U+180E;
// found by the SmolLM2 fixture (tests/data/bpe_smollm2).
TEST(bpePreTokenize, WhiteSpaceIsUnicodes) {
  const std::string mvs = "\xE1\xA0\x8E", nel = "\xC2\x85", ideo = "\xE3\x80\x80";
  for (const char* pre : {"gpt2", "smollm", "llama-bpe", "qwen2"}) {
    EXPECT_EQ(split(pre, "a" + mvs + "'s"), (Pieces{"a", mvs + "'", "s"})) << pre;  // not a space
    EXPECT_EQ(split(pre, "a" + mvs + " b"), (Pieces{"a", mvs, " b"})) << pre;
    EXPECT_EQ(split(pre, "a" + nel + "'s"), (Pieces{"a", nel, "'s"})) << pre;  // spaces
    const bool gpt2 = std::string(pre) == "gpt2" || std::string(pre) == "smollm";
    EXPECT_EQ(split(pre, "a" + ideo + ideo + "b"),  // \s+(?!\S) leaves the last space to the word
              gpt2 ? (Pieces{"a", ideo, ideo, "b"}) : (Pieces{"a", ideo, ideo + "b"})) << pre;
  }
}

TEST(bpePreTokenize, LongWhitespaceRunDoesNotFail) {
  const std::string text = std::string(200000, ' ') + "x";
  for (const char* pre : {"gpt2", "llama-bpe"}) {
    const Pieces p = split(pre, text);
    ASSERT_EQ(p.size(), 2u) << pre;
    EXPECT_EQ(p[0].size(), 199999u);
    EXPECT_EQ(p[1], " x");
  }
}

// ---- the byte map -------------------------------------------------------------------------------

TEST(bpeByteMap, Gpt2BytesToUnicode) {
  const auto& m = byte_to_unicode();
  std::set<char32_t> seen(m.begin(), m.end());
  EXPECT_EQ(seen.size(), 256u);  // a bijection onto its image
  EXPECT_EQ(m[' '], U'\u0120');  // 'Ġ'
  EXPECT_EQ(m['\n'], U'\u010A');  // 'Ċ'
  EXPECT_EQ(m['A'], U'A');
  EXPECT_EQ(m['!'], U'!');
  EXPECT_EQ(m['~'], U'~');
  EXPECT_EQ(m[0], U'\u0100');
  EXPECT_EQ(m[0x7F], char32_t(256 + 33));
  EXPECT_EQ(m[0xA0], char32_t(256 + 66));
  EXPECT_EQ(m[0xA1], U'\u00A1');
  EXPECT_EQ(m[0xAD], U'\u0143');  // soft hyphen -> 'Ń', the last of the 68
  EXPECT_EQ(m[0xFF], U'\u00FF');
  for (int b = 0; b < 256; ++b) EXPECT_LT(m[b], char32_t(256 + 68));
  EXPECT_EQ(byte_level_encode(" the\n"), "Ġthe\xC4\x8A");
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  EXPECT_EQ(byte_level_decode(byte_level_encode(all)), all);
}

// ---- merges -------------------------------------------------------------------------------------

TEST(bpeMerges, LowestRankFirstNotLeftToRight) {
  const std::vector<std::string> vocab = {"a", "b", "c", "ab", "bc", "abc"};
  // Ranks: "b c" before "a b": by rank "abc" -> a|bc; greedy left-to-right would give ab|c.
  BpeTokenizer t1(vocab, {{"b", "c"}, {"a", "b"}}, {}, "gpt2");
  EXPECT_EQ(t1.encode("abc", false), (std::vector<int32_t>{0, 4}));
  BpeTokenizer t2(vocab, {{"a", "b"}, {"b", "c"}}, {}, "gpt2");
  EXPECT_EQ(t2.encode("abc", false), (std::vector<int32_t>{3, 2}));
  BpeTokenizer t3(vocab, {{"b", "c"}, {"a", "b"}, {"a", "bc"}}, {}, "gpt2");
  EXPECT_EQ(t3.encode("abc", false), (std::vector<int32_t>{5}));
  EXPECT_EQ(t3.encode("cab", false), (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(t3.decode(std::vector<int32_t>{5, 2, 3}), "abccab");
}

TEST(bpeMerges, EqualPairsMergeLeftmostFirst) {
  const std::vector<std::string> vocab = {"a", "aa", "aaaa"};
  BpeTokenizer t(vocab, {{"a", "a"}, {"aa", "aa"}}, {}, "gpt2");
  EXPECT_EQ(t.encode("aaa", false), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(t.encode("aaaa", false), (std::vector<int32_t>{2}));
  EXPECT_EQ(t.encode("aaaaaaa", false), (std::vector<int32_t>{2, 1, 0}));
}

TEST(bpeMerges, PiecesAreEncodedSeparately) {
  // " ab" and "ab" are different tokens; merges never cross the pre-tokenizer's pieces.
  auto vocab = byte_vocab({"ab", "Ġa", "Ġab"});  // ids 256, 257, 258
  BpeTokenizer t(vocab, {{"Ġ", "a"}, {"Ġa", "b"}, {"a", "b"}}, {}, "gpt2");
  EXPECT_EQ(t.encode("ab ab", false), (std::vector<int32_t>{256, 258}));
  // With "a b" ranked first, " ab" becomes Ġ|ab and "Ġ ab" is no merge: the space stays alone.
  BpeTokenizer u(vocab, {{"a", "b"}, {"Ġ", "a"}, {"Ġa", "b"}}, {}, "gpt2");
  EXPECT_EQ(u.encode("ab ab", false), (std::vector<int32_t>{256, ' ', 256}));
  EXPECT_EQ(t.encode("ab,ab", false), (std::vector<int32_t>{256, ',', 256}));
  EXPECT_EQ(t.token_to_id("Ġab"), 258);
  EXPECT_EQ(t.id_to_token(257), "Ġa");
  EXPECT_EQ(t.token_to_id("nope"), -1);
  EXPECT_EQ(t.vocab_size(), 259);
}

TEST(bpeMerges, IgnoreMergesTakesWholeTokens) {
  // "abc" is a token but no merge reaches it: only with ignore_merges is it used.
  const std::vector<std::string> vocab = {"a", "b", "c", "ab", "abc"};
  EXPECT_EQ(BpeTokenizer(vocab, {{"a", "b"}}, {}, "gpt2").encode("abc", false),
            (std::vector<int32_t>{3, 2}));
  EXPECT_EQ(BpeTokenizer(vocab, {{"a", "b"}}, {}, "gpt2", true).encode("abc", false),
            (std::vector<int32_t>{4}));
}

TEST(bpeMerges, Errors) {
  const std::vector<std::string> vocab = {"a", "b"};
  EXPECT_NE(expect_throw([&] { BpeTokenizer(vocab, {{"a", "b"}}, {}, "gpt2"); }).find("'ab'"),
            std::string::npos);
  EXPECT_NE(expect_throw([&] { BpeTokenizer(vocab, {}, {}, "t5"); }).find("'t5'"),
            std::string::npos);
  BpeTokenizer t(vocab, {}, {}, "gpt2");
  const std::string msg = expect_throw([&] { t.encode("abc", false); });
  EXPECT_NE(msg.find("0x63"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'c'"), std::string::npos) << msg;
  EXPECT_NE(expect_throw([&] { t.decode(std::vector<int32_t>{7}); }).find("id 7"),
            std::string::npos);
  EXPECT_EQ(split_merge("Ġt he"), (std::pair<std::string, std::string>{"Ġt", "he"}));
  expect_throw([] { split_merge("abc"); });
  expect_throw([] { split_merge("a b c"); });
}

// ---- special tokens -----------------------------------------------------------------------------

TEST(bpeSpecial, ParsedOrLiteral) {
  const int32_t eot = 300, e = 301, e_bang = 302;
  BpeTokenizer t(byte_vocab(), {}, {{"<|endoftext|>", eot}, {"<|e|>", e}, {"<|e|>!", e_bang}},
                 "gpt2");
  EXPECT_EQ(t.vocab_size(), 303);
  EXPECT_EQ(t.encode("a<|endoftext|>b", true), (std::vector<int32_t>{'a', eot, 'b'}));
  const auto literal = t.encode("a<|endoftext|>b", false);
  EXPECT_EQ(literal.size(), 15u);  // every byte its own token
  EXPECT_EQ(t.decode(literal), "a<|endoftext|>b");
  EXPECT_EQ(t.encode("<|e|>!", true), (std::vector<int32_t>{e_bang}));  // longest first
  EXPECT_EQ(t.encode("<|e|>?<|e|>", true), (std::vector<int32_t>{e, '?', e}));
  EXPECT_EQ(t.encode(" <|e|>x<|e", true), (std::vector<int32_t>{' ', e, 'x', '<', '|', 'e'}));
  EXPECT_EQ(t.decode(std::vector<int32_t>{'a', eot, 'b', e_bang}), "a<|endoftext|>b<|e|>!");
  EXPECT_EQ(t.token_to_id("<|endoftext|>"), eot);
  EXPECT_EQ(t.id_to_token(e), "<|e|>");
  EXPECT_ANY_THROW(t.id_to_token(299));  // between the vocab and the special ids
}

// ---- round trip ---------------------------------------------------------------------------------

TEST(bpeRoundTrip, RandomUtf8) {
  // Byte tokens plus a few merges, so decoding sees merged tokens too.
  auto vocab = byte_vocab({"th", "the", "Ġthe", "in", "Ãľ", "ä½"});  // "Ü", the first 2 bytes of "你"
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"t", "h"}, {"th", "e"}, {"Ġ", "the"}, {"i", "n"}, {"Ã", "ľ"}, {"ä", "½"}};
  std::mt19937 rng(1234);
  auto pick = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); };
  const std::vector<std::vector<char32_t>> pools = {
      {U'a', U't', U'h', U'e', U'i', U'n', U'Z', U'0', U'7', U'\'', U'!', U'.', U'-'},
      {U'é', U'ö', U'ß', U'Ü', U'ñ', U'¡', U'×', U'\u00A0'},
      {U'你', U'好', U'世', U'界', U'日', U'本'},
      {U'\U0001F44B', U'\U0001F3FD', U'\U0001F600', U'\u2764'},
      {U' ', U' ', U'\n', U'\t', U'\r', U'\u3000'}};
  std::vector<BpeTokenizer> toks;
  for (const char* pre : {"gpt2", "smollm", "llama-bpe", "qwen2"})
    toks.emplace_back(vocab, merges, std::vector<std::pair<std::string, int32_t>>{}, pre);
  for (int it = 0; it < 300; ++it) {
    std::string s;
    const int n = pick(40);
    for (int k = 0; k < n; ++k) {
      const auto& pool = pools[pick(int(pools.size()))];
      std::string u;
      const char32_t cp = pool[pick(int(pool.size()))];
      // UTF-8 by hand (byte_level_encode maps bytes, not code points).
      if (cp < 0x80) u += char(cp);
      else if (cp < 0x800) u += {char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
      else if (cp < 0x10000)
        u += {char(0xE0 | (cp >> 12)), char(0x80 | ((cp >> 6) & 0x3F)), char(0x80 | (cp & 0x3F))};
      else
        u += {char(0xF0 | (cp >> 18)), char(0x80 | ((cp >> 12) & 0x3F)),
              char(0x80 | ((cp >> 6) & 0x3F)), char(0x80 | (cp & 0x3F))};
      s += u;
    }
    for (const auto& t : toks) {
      const auto ids = t.encode(s, false);
      ASSERT_EQ(t.decode(ids), s) << t.pre_tokenizer() << " case " << it;
      std::string joined;
      for (const auto& p : t.pre_tokenize(s)) joined += p;
      ASSERT_EQ(joined, s);
    }
  }
  // The merges were used: " the" is one token.
  EXPECT_EQ(toks[0].encode(" the", false), (std::vector<int32_t>{258}));
}

TEST(bpeRoundTrip, InvalidUtf8Bytes) {
  BpeTokenizer t = bytes_only("llama-bpe");
  const std::string s = "ok\xFF\xFE x\xC3(\xED\xA0\x80 end\xF4\x90\x80\x80";
  EXPECT_EQ(t.decode(t.encode(s, false)), s);
}

// ---- tokenizer.json -----------------------------------------------------------------------------

namespace {

class JsonFile {
 public:
  explicit JsonFile(const nlohmann::json& j) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = (fs::temp_directory_path() /
             ("kvt_test_bpe_" + std::string(info->name()) + "_" + std::to_string(::getpid()) +
              ".json")).string();
    std::ofstream(path_) << j.dump();
  }
  ~JsonFile() { fs::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

nlohmann::json small_json() {
  nlohmann::json j;
  j["model"] = {{"type", "BPE"},
                {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}, {"Ġ", 3}, {"ab", 4}, {"bc", 5}, {"Ġa", 6}}},
                {"merges", nlohmann::json::array({"b c", nlohmann::json::array({"a", "b"}), "Ġ a"})}};
  j["added_tokens"] = nlohmann::json::array(
      {{{"id", 7}, {"content", "<|endoftext|>"}, {"special", true}}});
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  return j;
}

std::string load_error(const nlohmann::json& j) {
  JsonFile f(j);
  const std::string msg = expect_throw([&] { BpeTokenizer::from_json(f.path()); });
  EXPECT_NE(msg.find(f.path()), std::string::npos) << msg;
  return msg;
}

}  // namespace

TEST(bpeJson, LoadsVocabMergesAddedTokens) {
  JsonFile f(small_json());
  const BpeTokenizer t = BpeTokenizer::from_json(f.path());
  EXPECT_EQ(t.pre_tokenizer(), "gpt2");
  EXPECT_EQ(t.vocab_size(), 8);
  EXPECT_EQ(t.token_to_id("Ġa"), 6);
  // "abc" -> a|bc (rank 0 "b c"); " abc<|endoftext|>" -> Ġa (rank 2) | bc | eot.
  EXPECT_EQ(t.encode("abc", true), (std::vector<int32_t>{0, 5}));
  EXPECT_EQ(t.encode(" abc<|endoftext|>", true), (std::vector<int32_t>{6, 5, 7}));
  EXPECT_EQ(t.decode(std::vector<int32_t>{6, 5, 7, 4}), " abc<|endoftext|>ab");
}

TEST(bpeJson, RecognisesSplitPreTokenizers) {
  const std::string llama =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const std::string qwen =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  auto with_split = [](const std::string& re) {
    nlohmann::json j = small_json();
    j["model"]["ignore_merges"] = true;
    j["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         nlohmann::json::array(
             {{{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}, {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}})}};
    return j;
  };
  {
    JsonFile f(with_split(llama));
    EXPECT_EQ(BpeTokenizer::from_json(f.path()).pre_tokenizer(), "llama-bpe");
  }
  {
    JsonFile f(with_split(qwen));
    EXPECT_EQ(BpeTokenizer::from_json(f.path()).pre_tokenizer(), "qwen2");
  }
  {
    nlohmann::json j = small_json();
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", nlohmann::json::array(
                                                {{{"type", "Digits"}, {"individual_digits", true}},
                                                 {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}})}};
    JsonFile f(j);
    EXPECT_EQ(BpeTokenizer::from_json(f.path()).pre_tokenizer(), "smollm");
  }
  EXPECT_NE(load_error(with_split("\\w+")).find("Split pattern"), std::string::npos);
}

TEST(bpeJson, MalformedFilesNameFileAndKey) {
  {
    nlohmann::json j = small_json();
    j["model"].erase("vocab");
    EXPECT_NE(load_error(j).find("model.vocab"), std::string::npos);
  }
  {
    nlohmann::json j = small_json();
    j["model"]["merges"][1] = 42;
    EXPECT_NE(load_error(j).find("model.merges[1]"), std::string::npos);
  }
  {
    nlohmann::json j = small_json();
    j["model"]["merges"][0] = "b c d";
    EXPECT_NE(load_error(j).find("model.merges[0]"), std::string::npos);
  }
  {
    nlohmann::json j = small_json();
    j["model"]["merges"].push_back("c a");  // "ca" is not in the vocab
    EXPECT_NE(load_error(j).find("'ca'"), std::string::npos);
  }
  {
    nlohmann::json j = small_json();
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}};
    const std::string msg = load_error(j);
    EXPECT_NE(msg.find("unsupported pre_tokenizer"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Metaspace"), std::string::npos) << msg;
  }
  {
    nlohmann::json j = small_json();
    j["model"]["type"] = "Unigram";
    EXPECT_NE(load_error(j).find("model.type"), std::string::npos);
  }
  {
    nlohmann::json j = small_json();
    j["model"]["vocab"]["a"] = 99;
    EXPECT_NE(load_error(j).find("model.vocab['a']"), std::string::npos);
  }
  const std::string missing = "/nonexistent/tokenizer.json";
  EXPECT_NE(expect_throw([&] { BpeTokenizer::from_json(missing); }).find(missing),
            std::string::npos);
  std::ofstream("/tmp/kvt_test_bpe_notjson.json") << "{ not json";
  EXPECT_NE(expect_throw([] { BpeTokenizer::from_json("/tmp/kvt_test_bpe_notjson.json"); })
                .find("not valid JSON"),
            std::string::npos);
  fs::remove("/tmp/kvt_test_bpe_notjson.json");
}

// ---- fuzzer findings (tests/fuzz/fuzz_tokenizer_json.cpp; docs/design.md, "Fuzzing") ----

// A key of the wrong type: an error naming the file and the key, not nlohmann's type_error.
TEST(bpeJson, FuzzMistypedOptionalKeysNameFileAndKey) {
  const std::pair<std::function<void(nlohmann::json&)>, std::string> cases[] = {
      {[](nlohmann::json& j) { j["model"]["type"] = 1; }, "model.type is number, not a string"},
      {[](nlohmann::json& j) { j["model"]["ignore_merges"] = 3; },
       "model.ignore_merges is number, not a boolean"},
      {[](nlohmann::json& j) { j["pre_tokenizer"]["add_prefix_space"] = "no"; },
       "pre_tokenizer.add_prefix_space is string, not a boolean"},
      {[](nlohmann::json& j) { j["pre_tokenizer"]["use_regex"] = nullptr; },
       "pre_tokenizer.use_regex is null, not a boolean"},
  };
  for (const auto& [edit, what] : cases) {
    nlohmann::json j = small_json();
    edit(j);
    JsonFile f(j);
    try {
      BpeTokenizer::from_json(f.path());
      ADD_FAILURE() << "no error, expected: " << what;
    } catch (const std::runtime_error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(f.path()), std::string::npos) << m;
      EXPECT_NE(m.find(what), std::string::npos) << m;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a runtime_error: " << e.what();
    }
  }
}

// An added token's id must be an int32 below INT32_MAX (the vocab size is id + 1): 2^31 - 1 was
// a signed overflow (UBSan), 2^32 + 5 silently became id 5.
TEST(bpeJson, FuzzAddedTokenIdsOutsideInt32AreRefused) {
  for (const int64_t id : {int64_t(2147483647), int64_t(4294967301), int64_t(-2)}) {
    nlohmann::json j = small_json();
    j["added_tokens"][0]["id"] = id;
    EXPECT_NE(load_error(j).find("added_tokens[0].id = " + std::to_string(id) + " is not a token id"),
              std::string::npos)
        << id;
  }
  EXPECT_NE(expect_throw([] { BpeTokenizer({"a"}, {}, {{"<s>", 2147483647}}, "gpt2"); }).find("has id"),
            std::string::npos);
}

// Strings from the file in messages keep them one line.
TEST(bpeJson, FuzzControlBytesInPreTokenizerTypeKeepErrorOneLine) {
  nlohmann::json j = small_json();
  j["pre_tokenizer"] = {{"type", "Meta\nspace"}};
  const std::string m = load_error(j);
  EXPECT_NE(m.find("'Meta\\x0Aspace'"), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

// A pre_tokenizer nested 100000 deep: j.value() copied it, and the copy recursed once per level
// (a stack overflow). Now it is read by reference and refused as a Sequence without types.
TEST(bpeJson, FuzzDeeplyNestedPreTokenizerIsAnErrorNotAStackOverflow) {
  const int depth = 100000;
  const std::string path =
      (fs::temp_directory_path() / ("kvt_test_bpe_deep_" + std::to_string(::getpid()) + ".json")).string();
  std::ofstream(path) << R"({"model": {"type": "BPE", "vocab": {"a": 0}},
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": )"
                      << std::string(depth, '[') << std::string(depth, ']') << "}}";
  const std::string m = expect_throw([&] { BpeTokenizer::from_json(path); });
  EXPECT_NE(m.find(path + ": unsupported pre_tokenizer (no type)"), std::string::npos) << m.substr(0, 200);
  fs::remove(path);
}

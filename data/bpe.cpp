// data/bpe.cpp — byte-level BPE (see data/bpe.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "data/bpe.h"

#include "data/file_commit.h"

#include <pcre2.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <queue>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>

namespace kvt {

namespace {

const char* const kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlamaRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kDigitRegex = R"(\p{N})";

// RAII for PCRE2 objects.
struct CodeFree {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct MatchDataFree {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};
using Regex = std::unique_ptr<pcre2_code, CodeFree>;
using MatchData = std::unique_ptr<pcre2_match_data, MatchDataFree>;

// Unicode's White_Space, which \s means to llama.cpp and to Hugging Face's Oniguruma. PCRE2's
// \s (with UCP) also matches U+180E MONGOLIAN VOWEL SEPARATOR (Cf since Unicode 6.3; in its \h
// list): "a\u180E's" must split "a" "\u180E'" "s" as theirs does, not "a" "\u180E" "'s".
const char* const kWhiteSpace =
    R"(\t-\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

// pattern with \s and \S spelled out as kWhiteSpace (inside a [...] class and outside).
std::string with_white_space(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's')
        out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
      else if (e == 'S' && !in_class)
        out += "[^" + std::string(kWhiteSpace) + "]";
      else
        out.append({c, e});
      continue;
    }
    if (c == '[') in_class = true;
    if (c == ']') in_class = false;
    out += c;
  }
  return out;
}

Regex compile(const char* spelled) {
  int err = 0;
  PCRE2_SIZE at = 0;
  const std::string pattern = with_white_space(spelled);
  pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), PCRE2_ZERO_TERMINATED,
                                PCRE2_UTF | PCRE2_UCP, &err, &at, nullptr);
  if (!c) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    throw std::runtime_error("BPE: cannot compile regex at offset " + std::to_string(at) + ": " +
                             reinterpret_cast<const char*>(msg));
  }
  pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);  // no JIT on this platform: the interpreter runs
  return Regex(c);
}

// Length of the valid UTF-8 sequence at s[0..n), 0 when invalid (overlong, surrogate, > U+10FFFF,
// truncated, stray continuation byte): the same rules as PCRE2's UTF check.
size_t utf8_len(const unsigned char* s, size_t n) {
  const unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t k = 2; k < len; ++k)
    if ((s[k] & 0xC0) != 0x80) return 0;
  return len;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// Appends text split by re to out: each match is a piece, and so is each unmatched stretch
// between matches (none for the pre-tokenizer regexes, which match every character).
// text is valid UTF-8 (checked by the caller), so PCRE2's own check is skipped.
void regex_split(const pcre2_code* re, std::string_view text, std::vector<std::string_view>& out,
                 std::vector<std::string_view>* gaps_out = nullptr) {
  MatchData md(pcre2_match_data_create_from_pattern(re, nullptr));
  if (!md) throw std::bad_alloc();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  auto gap = [&](size_t a, size_t b) {
    if (b <= a) return;
    if (gaps_out) {
      gaps_out->push_back(text.substr(a, b - a));
      out.push_back({});  // marks the place of the gap
    } else {
      out.push_back(text.substr(a, b - a));
    }
  };
  while (pos < text.size()) {
    int rc = pcre2_match(re, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // a very long run: the interpreter uses the heap
      rc = pcre2_match(re, subject, text.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md.get(),
                       nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      throw std::runtime_error(std::string("BPE: regex match failed: ") +
                               reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    size_t b = ov[0], e = ov[1];
    gap(pos, b);
    if (e == b) {  // empty match (not possible with our patterns): step one code point
      e = b + utf8_len(reinterpret_cast<const unsigned char*>(text.data()) + b, text.size() - b);
      gap(b, e);
    } else {
      out.push_back(text.substr(b, e - b));
    }
    pos = e;
  }
  gap(pos, text.size());
}

const std::array<char32_t, 256> kByteToUnicode = [] {
  std::array<char32_t, 256> m{};
  char32_t n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    m[b] = printable ? char32_t(b) : char32_t(256 + n++);
  }
  return m;
}();

const std::unordered_map<char32_t, unsigned char> kUnicodeToByte = [] {
  std::unordered_map<char32_t, unsigned char> m;
  for (int b = 0; b < 256; ++b) m[kByteToUnicode[b]] = static_cast<unsigned char>(b);
  return m;
}();

std::string show(std::string_view s) {  // for error messages: printable, bounded
  std::string out;
  for (unsigned char c : s.substr(0, 64)) {
    if (c >= 0x20 && c != 0x7F) {
      out += char(c);
    } else {
      char buf[8];
      snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  if (s.size() > 64) out += "...";
  return out;
}

}  // namespace

const std::array<char32_t, 256>& byte_to_unicode() { return kByteToUnicode; }

std::string byte_level_encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) append_utf8(out, kByteToUnicode[c]);
  return out;
}

std::string byte_level_decode(std::string_view text) {
  std::string out;
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    const size_t len = utf8_len(s + i, text.size() - i);
    if (len == 0) {  // not UTF-8: keep the byte
      out += char(s[i++]);
      continue;
    }
    char32_t cp = len == 1 ? s[i] : (s[i] & (0x7F >> len));
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (s[i + k] & 0x3F);
    auto it = kUnicodeToByte.find(cp);
    if (it != kUnicodeToByte.end())
      out += char(it->second);
    else
      out.append(text.substr(i, len));
    i += len;
  }
  return out;
}

std::pair<std::string, std::string> split_merge(std::string_view merge) {
  const size_t sp = merge.find(' ');
  if (sp == std::string_view::npos || sp == 0 || sp + 1 >= merge.size() ||
      merge.find(' ', sp + 1) != std::string_view::npos)
    throw std::runtime_error("BPE: merge '" + show(merge) + "' is not two tokens 'a b'");
  return {std::string(merge.substr(0, sp)), std::string(merge.substr(sp + 1))};
}

struct BpeTokenizer::Impl {
  std::vector<std::string> vocab;
  std::unordered_map<std::string, int32_t> ids;  // byte-level text -> id (vocab only)
  struct Merge {
    int32_t rank, id;
  };
  std::unordered_map<uint64_t, Merge> merges;    // (left id << 32 | right id) -> rank, result
  std::array<int32_t, 256> byte_id{};            // token of each single byte, -1 if none
  std::vector<std::pair<std::string, int32_t>> special;  // longest first
  std::unordered_map<int32_t, size_t> special_of_id;     // id -> index into special
  std::string pre_name;
  Regex main, digits;
  bool ignore_merges = false;
  int n_vocab = 0;

  void bpe(std::string_view piece, std::vector<int32_t>& out) const;
};

// Merges the adjacent pair of lowest rank until none is left. Symbols form a linked list over
// the piece's bytes; the heap holds candidate pairs (rank, left position); an entry is stale when
// either side has changed since it was pushed, and is then skipped.
void BpeTokenizer::Impl::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  if (ignore_merges) {
    auto it = ids.find(byte_level_encode(piece));
    if (it != ids.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const int n = static_cast<int>(piece.size());
  struct Sym {
    int32_t id;
    int prev, next;
  };
  std::vector<Sym> sym(n);
  for (int i = 0; i < n; ++i) {
    const unsigned char c = piece[i];
    if (byte_id[c] < 0) {
      char buf[8];
      snprintf(buf, sizeof(buf), "0x%02X", c);
      throw std::runtime_error(std::string("BPE: no token for byte ") + buf + " of piece '" +
                               show(piece) + "' (the vocab lacks '" +
                               byte_level_encode(piece.substr(i, 1)) + "')");
    }
    sym[i] = {byte_id[c], i - 1, i + 1 < n ? i + 1 : -1};
  }
  struct Cand {
    int32_t rank;
    int left;
    int32_t lid, rid;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int left) {
    if (left < 0) return;
    const int right = sym[left].next;
    if (right < 0) return;
    auto it = merges.find(uint64_t(uint32_t(sym[left].id)) << 32 | uint32_t(sym[right].id));
    if (it != merges.end()) heap.push({it->second.rank, left, sym[left].id, sym[right].id});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym& l = sym[c.left];
    if (l.id != c.lid || l.next < 0 || sym[l.next].id != c.rid) continue;  // stale
    const int r = l.next;
    l.id = merges.at(uint64_t(uint32_t(c.lid)) << 32 | uint32_t(c.rid)).id;
    l.next = sym[r].next;
    if (l.next >= 0) sym[l.next].prev = c.left;
    sym[r].id = -1;  // dead
    push(l.prev);
    push(c.left);
  }
  for (int i = n > 0 ? 0 : -1; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

BpeTokenizer::BpeTokenizer(std::vector<std::string> vocab,
                           const std::vector<std::pair<std::string, std::string>>& merges,
                           const std::vector<std::pair<std::string, int32_t>>& special,
                           const std::string& pre_tokenizer, bool ignore_merges)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.vocab = std::move(vocab);
  m.ignore_merges = ignore_merges;
  for (size_t i = 0; i < m.vocab.size(); ++i)
    if (!m.ids.emplace(m.vocab[i], int32_t(i)).second)
      throw std::runtime_error("BPE: token '" + show(m.vocab[i]) + "' appears twice in the vocab");
  auto id_of = [&](const std::string& t, size_t rank) {
    auto it = m.ids.find(t);
    if (it == m.ids.end())
      throw std::runtime_error("BPE: merge #" + std::to_string(rank) + ": '" + show(t) +
                               "' is not in the vocab");
    return it->second;
  };
  for (size_t r = 0; r < merges.size(); ++r) {
    const int32_t a = id_of(merges[r].first, r), b = id_of(merges[r].second, r);
    const int32_t ab = id_of(merges[r].first + merges[r].second, r);
    m.merges.emplace(uint64_t(uint32_t(a)) << 32 | uint32_t(b), Impl::Merge{int32_t(r), ab});
  }
  for (int b = 0; b < 256; ++b) {
    auto it = m.ids.find(byte_level_encode(std::string(1, char(b))));
    m.byte_id[b] = it == m.ids.end() ? -1 : it->second;
  }
  m.n_vocab = static_cast<int>(m.vocab.size());
  for (const auto& [s, id] : special) {
    if (s.empty()) throw std::runtime_error("BPE: empty special token (id " + std::to_string(id) + ")");
    if (id < 0 || id == std::numeric_limits<int32_t>::max())  // id + 1 is the vocab size
      throw std::runtime_error("BPE: special token '" + show(s) + "' has id " + std::to_string(id));
    m.special.emplace_back(s, id);
    m.n_vocab = std::max(m.n_vocab, id + 1);
  }
  std::stable_sort(m.special.begin(), m.special.end(),
                   [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
  for (size_t i = 0; i < m.special.size(); ++i) m.special_of_id.emplace(m.special[i].second, i);

  m.pre_name = pre_tokenizer;
  if (pre_tokenizer == "gpt2") {
    m.main = compile(kGpt2Regex);
  } else if (pre_tokenizer == "smollm") {
    m.main = compile(kGpt2Regex);
    m.digits = compile(kDigitRegex);
  } else if (pre_tokenizer == "llama-bpe") {
    m.main = compile(kLlamaRegex);
  } else if (pre_tokenizer == "qwen2") {
    m.main = compile(kQwen2Regex);
  } else {
    throw std::runtime_error("BPE: unknown pre-tokenizer '" + pre_tokenizer +
                             "' (gpt2, smollm, llama-bpe, qwen2)");
  }
}

BpeTokenizer::~BpeTokenizer() = default;
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;

std::vector<std::string> BpeTokenizer::pre_tokenize(std::string_view text) const {
  const Impl& m = *impl_;
  std::vector<std::string_view> pieces;
  auto run = [&](std::string_view valid) {
    if (valid.empty()) return;
    if (!m.digits) {
      regex_split(m.main.get(), valid, pieces);
      return;
    }
    // smollm: each digit alone; the text between digits through the GPT-2 regex.
    std::vector<std::string_view> digits, between;
    regex_split(m.digits.get(), valid, digits, &between);
    size_t g = 0;
    for (std::string_view d : digits) {
      if (d.data() == nullptr)
        regex_split(m.main.get(), between[g++], pieces);
      else
        pieces.push_back(d);
    }
  };
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const size_t len = utf8_len(s + i, text.size() - i);
    if (len > 0) {
      i += len;
      continue;
    }
    run(text.substr(start, i - start));
    pieces.push_back(text.substr(i, 1));  // an invalid byte is a piece of its own
    start = ++i;
  }
  run(text.substr(start));
  return {pieces.begin(), pieces.end()};
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool parse_special) const {
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  auto plain = [&](std::string_view t) {
    for (const std::string& p : pre_tokenize(t)) m.bpe(p, out);
  };
  if (!parse_special || m.special.empty()) {
    plain(text);
    return out;
  }
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const auto hit = std::find_if(m.special.begin(), m.special.end(), [&](const auto& sp) {
      return text.compare(i, sp.first.size(), sp.first) == 0;
    });
    if (hit == m.special.end()) {
      ++i;
      continue;
    }
    plain(text.substr(start, i - start));
    out.push_back(hit->second);
    i += hit->first.size();
    start = i;
  }
  plain(text.substr(start));
  return out;
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
  const Impl& m = *impl_;
  std::string out;
  for (int32_t id : ids) {
    auto sp = m.special_of_id.find(id);
    if (sp != m.special_of_id.end())
      out += m.special[sp->second].first;
    else
      out += byte_level_decode(id_to_token(id));
  }
  return out;
}

int32_t BpeTokenizer::token_to_id(const std::string& token) const {
  const Impl& m = *impl_;
  for (const auto& [s, id] : m.special)
    if (s == token) return id;
  auto it = m.ids.find(token);
  return it == m.ids.end() ? -1 : it->second;
}

const std::string& BpeTokenizer::id_to_token(int32_t id) const {
  const Impl& m = *impl_;
  auto sp = m.special_of_id.find(id);
  if (sp != m.special_of_id.end()) return m.special[sp->second].first;
  if (id < 0 || id >= static_cast<int32_t>(m.vocab.size()))
    throw std::runtime_error("BPE: no token has id " + std::to_string(id) + " (vocab size " +
                             std::to_string(m.n_vocab) + ")");
  return m.vocab[id];
}

int BpeTokenizer::vocab_size() const { return impl_->n_vocab; }
const std::string& BpeTokenizer::pre_tokenizer() const { return impl_->pre_name; }

// ---- tokenizer.json ---------------------------------------------------------------------------

namespace {

using nlohmann::json;

// j[key] (j an object), or def when absent; a value of another type is an error naming the file
// and the key (not nlohmann's type_error, which names neither).
template <typename T>
T value_or(const json& j, const char* key, T def, const std::string& path, const char* where) {
  const auto it = j.find(key);
  if (it == j.end()) return def;
  if constexpr (std::is_same_v<T, bool>) {
    if (it->is_boolean()) return it->template get<bool>();
  } else {
    if (it->is_string()) return it->template get<std::string>();
  }
  throw std::runtime_error(path + ": " + where + "." + key + " is " + it->type_name() +
                           (std::is_same_v<T, bool> ? ", not a boolean" : ", not a string"));
}

// Maps the pre_tokenizer object to one of ours, or throws naming the file and the type.
std::string pre_tokenizer_name(const json& pt, const std::string& path) {
  auto fail = [&](const std::string& what) {
    throw std::runtime_error(path + ": unsupported pre_tokenizer " + what +
                             " (supported: ByteLevel; Split(gpt2|llama-bpe|qwen2 regex) + "
                             "ByteLevel; Digits(individual) + ByteLevel)");
  };
  auto type = [&](const json& j) -> std::string {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) fail("(no type)");
    return j["type"].get<std::string>();
  };
  auto byte_level = [&](const json& j, bool want_regex) {
    if (type(j) != "ByteLevel") return false;
    if (value_or(j, "add_prefix_space", false, path, "pre_tokenizer"))
      fail("ByteLevel with add_prefix_space=true");
    return value_or(j, "use_regex", true, path, "pre_tokenizer") == want_regex;
  };
  if (pt.is_null()) fail("null");
  if (byte_level(pt, true)) return "gpt2";
  if (type(pt) != "Sequence") fail("'" + show(type(pt)) + "'");
  if (!pt.contains("pretokenizers") || !pt["pretokenizers"].is_array())
    fail("Sequence without pretokenizers");
  const json& seq = pt["pretokenizers"];
  std::string types;
  for (const json& j : seq) {
    if (!types.empty()) types += ',';
    types += type(j);
  }
  if (seq.size() == 2 && type(seq[0]) == "Split" && byte_level(seq[1], false)) {
    const json& s = seq[0];
    std::string re;
    if (s.contains("pattern") && s["pattern"].is_object() && s["pattern"].contains("Regex") &&
        s["pattern"]["Regex"].is_string())
      re = s["pattern"]["Regex"].get<std::string>();
    if (value_or(s, "behavior", std::string(), path, "pre_tokenizer") != "Isolated" ||
        value_or(s, "invert", false, path, "pre_tokenizer"))
      fail("Split that is not Isolated");
    if (re == kGpt2Regex) return "gpt2";
    if (re == kLlamaRegex) return "llama-bpe";
    if (re == kQwen2Regex) return "qwen2";
    fail("Split pattern '" + show(re) + "'");
  }
  if (seq.size() == 2 && type(seq[0]) == "Digits" &&
      value_or(seq[0], "individual_digits", false, path, "pre_tokenizer") &&
      byte_level(seq[1], true))
    return "smollm";
  fail("Sequence[" + show(types) + "]");
  return {};
}

}  // namespace

BpeTokenizer BpeTokenizer::from_json(const std::string& path) {
  return from_json_text(read_whole_file(path), path);
}

BpeTokenizer BpeTokenizer::from_json_text(const std::string& text, const std::string& path) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    throw std::runtime_error(path + ": missing key 'model'");
  const json& model = j["model"];
  const std::string type = value_or(model, "type", std::string(), path, "model");
  if (type != "BPE")
    throw std::runtime_error(path + ": model.type is '" + show(type) + "', not 'BPE'");
  if (!model.contains("vocab") || !model["vocab"].is_object())
    throw std::runtime_error(path + ": missing key 'model.vocab' (an object token -> id)");
  const json& jv = model["vocab"];
  std::vector<std::string> vocab(jv.size());
  std::vector<bool> seen(jv.size(), false);
  for (auto it = jv.begin(); it != jv.end(); ++it) {
    if (!it.value().is_number_integer())
      throw std::runtime_error(path + ": model.vocab['" + show(it.key()) + "'] is not an integer id");
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= int64_t(vocab.size()) || seen[id])
      throw std::runtime_error(path + ": model.vocab['" + show(it.key()) + "'] = " +
                               std::to_string(id) + " is not a unique id in [0, " +
                               std::to_string(vocab.size()) + ")");
    seen[id] = true;
    vocab[id] = it.key();
  }
  std::vector<std::pair<std::string, std::string>> merges;
  if (model.contains("merges")) {
    const json& jm = model["merges"];
    if (!jm.is_array()) throw std::runtime_error(path + ": model.merges is not an array");
    for (size_t r = 0; r < jm.size(); ++r) {
      const json& e = jm[r];
      const std::string where = path + ": model.merges[" + std::to_string(r) + "]";
      if (e.is_string()) {
        try {
          merges.push_back(split_merge(e.get<std::string>()));
        } catch (const std::exception&) {
          throw std::runtime_error(where + " = '" + show(e.get<std::string>()) +
                                   "' is not two tokens 'a b'");
        }
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      } else {
        throw std::runtime_error(where + " is neither 'a b' nor [a, b]");
      }
    }
  }
  std::vector<std::pair<std::string, int32_t>> special;
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    const json& ja = j["added_tokens"];
    if (!ja.is_array()) throw std::runtime_error(path + ": added_tokens is not an array");
    for (size_t i = 0; i < ja.size(); ++i) {
      const json& a = ja[i];
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          !a.contains("content") || !a["content"].is_string())
        throw std::runtime_error(path + ": added_tokens[" + std::to_string(i) +
                                 "] lacks an integer 'id' or a string 'content'");
      const int64_t id = a["id"].get<int64_t>();  // above 2^63: negative, refused too
      if (id < 0 || id >= std::numeric_limits<int32_t>::max())
        throw std::runtime_error(path + ": added_tokens[" + std::to_string(i) + "].id = " +
                                 a["id"].dump() + " is not a token id");
      special.emplace_back(a["content"].get<std::string>(), static_cast<int32_t>(id));
    }
  }
  // By reference: a copy (j.value() makes one) recurses per level of a deeply nested value.
  static const json kAbsent;
  const auto pt = j.find("pre_tokenizer");
  const std::string pre = pre_tokenizer_name(pt != j.end() ? *pt : kAbsent, path);
  try {
    return BpeTokenizer(std::move(vocab), merges, special, pre,
                        value_or(model, "ignore_merges", false, path, "model"));
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

// The pre_tokenizer object pre_tokenizer_name maps back to `name`: Hugging Face's own forms.
static json pre_tokenizer_json(const std::string& name) {
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                           {"use_regex", true}};
  if (name == "gpt2") return byte_level;
  if (name == "smollm")
    return {{"type", "Sequence"},
            {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}}, byte_level})}};
  json split = {{"type", "Split"},
                {"pattern", {{"Regex", name == "qwen2" ? kQwen2Regex : kLlamaRegex}}},
                {"behavior", "Isolated"},
                {"invert", false}};
  json bl = byte_level;
  bl["use_regex"] = false;
  return {{"type", "Sequence"}, {"pretokenizers", json::array({split, bl})}};
}

std::string BpeTokenizer::to_json() const {
  const Impl& m = *impl_;
  using ojson = nlohmann::ordered_json;
  ojson vocab = ojson::object();
  for (size_t id = 0; id < m.vocab.size(); ++id) vocab[m.vocab[id]] = id;
  // Merges in rank order, from the (left, right) -> rank table.
  std::vector<std::pair<int32_t, uint64_t>> by_rank;
  by_rank.reserve(m.merges.size());
  for (const auto& [pair, merge] : m.merges) by_rank.emplace_back(merge.rank, pair);
  std::sort(by_rank.begin(), by_rank.end());
  ojson merges = ojson::array();
  for (const auto& [rank, pair] : by_rank)
    merges.push_back(ojson::array({m.vocab[pair >> 32], m.vocab[pair & 0xffffffffu]}));
  // Special tokens in id order.
  std::vector<std::pair<int32_t, std::string>> special;
  for (const auto& [text, id] : m.special) special.emplace_back(id, text);
  std::sort(special.begin(), special.end());
  ojson added = ojson::array();
  for (const auto& [id, text] : special)
    added.push_back({{"id", id}, {"content", text}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = ojson::parse(pre_tokenizer_json(m.pre_name).dump());
  j["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false},
                         {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                  {"use_regex", true}};
  j["model"] = {{"type", "BPE"},          {"dropout", nullptr},
                {"unk_token", nullptr},   {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                {"byte_fallback", false}, {"ignore_merges", m.ignore_merges},
                {"vocab", vocab},         {"merges", merges}};
  try {
    return j.dump();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("BPE: the vocabulary is not valid UTF-8, so it has no tokenizer.json: ") +
                             e.what());
  }
}

}  // namespace kvt

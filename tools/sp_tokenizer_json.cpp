// tools/sp_tokenizer_json.cpp — SentencePiece BPE model -> Hugging Face tokenizer.json (see the header).
#include "tools/sp_tokenizer_json.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string_view>
#include <tuple>
#include <unordered_map>

namespace kvt {
namespace {

using ojson = nlohmann::ordered_json;

// Protobuf wire format: a key varint (field << 3 | wire type), then a varint (type 0), 8 bytes
// (1), a length-prefixed string (2) or 4 bytes (5).
class Wire {
 public:
  Wire(std::string_view b, const std::string& source) : b_(b), source_(source) {}
  bool done() const { return at_ >= b_.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at_ >= b_.size()) fail("truncated varint");
      const uint8_t c = static_cast<uint8_t>(b_[at_++]);
      v |= uint64_t(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
    }
    fail("varint longer than 10 bytes");
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > b_.size() - at_) fail("length-prefixed field runs past the end");
    const std::string_view s = b_.substr(at_, n);
    at_ += n;
    return s;
  }
  uint32_t fixed32() {
    if (b_.size() - at_ < 4) fail("truncated fixed32");
    uint32_t v;
    std::memcpy(&v, b_.data() + at_, 4);
    at_ += 4;
    return v;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: if (b_.size() - at_ < 8) fail("truncated fixed64"); at_ += 8; break;
      case 2: bytes(); break;
      case 5: fixed32(); break;
      default: fail("unknown wire type " + std::to_string(wire_type));
    }
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("tokenizer " + source_ + ": not a SentencePiece model (" + what + ")");
  }

 private:
  std::string_view b_;
  const std::string& source_;
  size_t at_ = 0;
};

SpPiece parse_piece(std::string_view b, const std::string& source) {
  SpPiece p;
  Wire w(b, source);
  while (!w.done()) {
    const uint64_t key = w.varint();
    const int field = int(key >> 3), type = int(key & 7);
    if (field == 1 && type == 2) p.piece = std::string(w.bytes());
    else if (field == 2 && type == 5) { const uint32_t u = w.fixed32(); std::memcpy(&p.score, &u, 4); }
    else if (field == 3 && type == 0) p.type = int(w.varint());
    else w.skip(type);
  }
  return p;
}

// UTF-8 code point boundaries of s (0 and s.size() included).
std::vector<size_t> char_starts(const std::string& s) {
  std::vector<size_t> at;
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<uint8_t>(s[i]) & 0xC0) != 0x80) at.push_back(i);
  at.push_back(s.size());
  return at;
}

ojson added_token(int id, const std::string& content) {
  return ojson{{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
               {"rstrip", false}, {"normalized", false}, {"special", true}};
}

}  // namespace

SpModel parse_sp_model(const std::string& bytes, const std::string& source) {
  SpModel m;
  int unk = 0, bos = 1, eos = 2;  // TrainerSpec defaults
  Wire w(bytes, source);
  while (!w.done()) {
    const uint64_t key = w.varint();
    const int field = int(key >> 3), type = int(key & 7);
    if (field == 1 && type == 2) {
      m.pieces.push_back(parse_piece(w.bytes(), source));
    } else if (field == 2 && type == 2) {  // TrainerSpec
      Wire t(w.bytes(), source);
      while (!t.done()) {
        const uint64_t k = t.varint();
        const int f = int(k >> 3), ty = int(k & 7);
        if (ty != 0) { t.skip(ty); continue; }
        const int64_t v = static_cast<int64_t>(t.varint());
        if (f == 3) m.model_type = int(v);
        else if (f == 24) m.treat_whitespace_as_suffix = v != 0;
        else if (f == 35) m.byte_fallback = v != 0;
        else if (f == 40) unk = int(v);
        else if (f == 41) bos = int(v);
        else if (f == 42) eos = int(v);
      }
    } else if (field == 3 && type == 2) {  // NormalizerSpec
      Wire n(w.bytes(), source);
      while (!n.done()) {
        const uint64_t k = n.varint();
        const int f = int(k >> 3), ty = int(k & 7);
        if (f == 1 && ty == 2) m.normalizer_name = std::string(n.bytes());
        else if (f == 2 && ty == 2) m.precompiled_charsmap = std::string(n.bytes());
        else if (f == 3 && ty == 0) m.add_dummy_prefix = n.varint() != 0;
        else if (f == 4 && ty == 0) m.remove_extra_whitespaces = n.varint() != 0;
        else if (f == 5 && ty == 0) m.escape_whitespaces = n.varint() != 0;
        else n.skip(ty);
      }
    } else {
      w.skip(type);
    }
  }
  if (m.pieces.empty()) w.fail("no pieces");
  const int n = int(m.pieces.size());
  m.unk_id = unk >= 0 && unk < n ? unk : -1;
  m.bos_id = bos >= 0 && bos < n ? bos : -1;
  m.eos_id = eos >= 0 && eos < n ? eos : -1;
  return m;
}

std::string sp_tokenizer_json(const SpModel& m, const std::string& source) {
  auto refuse = [&](const std::string& what) {
    throw std::invalid_argument("export: tokenizer " + source + ": " + what +
                                "; tokenizer.json is written only for SentencePiece BPE models with kvtrain's "
                                "settings (data/tokenizer.h)");
  };
  if (m.model_type != 2) refuse("model_type is " + std::to_string(m.model_type) + ", not BPE (2)");
  if (!m.byte_fallback) refuse("byte_fallback is false");
  if (m.add_dummy_prefix) refuse("add_dummy_prefix is true");
  if (m.remove_extra_whitespaces) refuse("remove_extra_whitespaces is true");
  if (!m.escape_whitespaces) refuse("escape_whitespaces is false");
  if (m.treat_whitespace_as_suffix) refuse("treat_whitespace_as_suffix is true");
  if (!m.precompiled_charsmap.empty() || (m.normalizer_name != "identity" && !m.normalizer_name.empty()))
    refuse("normalization rule \"" + m.normalizer_name + "\" is not identity");
  if (m.bos_id < 0 || m.unk_id < 0) refuse("it has no bos or unk piece");

  // Vocab in id order; merges from the normal pieces (SentencePiece merges only into those).
  const int n = int(m.pieces.size());
  std::unordered_map<std::string, int> normal;
  for (int i = 0; i < n; ++i)
    if (m.pieces[i].type == 1) normal.emplace(m.pieces[i].piece, i);
  struct Merge {
    float score;
    int id, left, right;
    size_t left_len;
  };
  std::vector<Merge> merges;
  for (int i = 0; i < n; ++i) {
    if (m.pieces[i].type != 1) continue;
    const std::string& p = m.pieces[i].piece;
    const std::vector<size_t> at = char_starts(p);
    for (size_t k = 1; k + 1 < at.size(); ++k) {
      const auto l = normal.find(p.substr(0, at[k])), r = normal.find(p.substr(at[k]));
      if (l != normal.end() && r != normal.end())
        merges.push_back({m.pieces[i].score, i, l->second, r->second, at[k]});
    }
  }
  // Higher score first (SentencePiece's priority); ties by id, then the split point.
  std::sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    return std::tie(b.score, a.id, a.left_len) < std::tie(a.score, b.id, b.left_len);
  });

  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  ojson added = ojson::array();
  for (int i = 0; i < n; ++i)
    if (m.pieces[i].type == 2 || m.pieces[i].type == 3) added.push_back(added_token(i, m.pieces[i].piece));
  j["added_tokens"] = added;
  j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}};
  j["pre_tokenizer"] = nullptr;
  const std::string& bos = m.pieces[m.bos_id].piece;
  const ojson bos_item = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", ojson::array({bos_item, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"pair", ojson::array({bos_item, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                             {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
                             {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
      {"special_tokens", {{bos, {{"id", bos}, {"ids", ojson::array({m.bos_id})}, {"tokens", ojson::array({bos})}}}}}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders", ojson::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                                             {{"type", "ByteFallback"}},
                                             {{"type", "Fuse"}}})}};
  ojson vocab = ojson::object();
  for (int i = 0; i < n; ++i) vocab[m.pieces[i].piece] = i;
  if (int(vocab.size()) != n) refuse("two pieces have the same text");
  ojson mj = ojson::array();
  for (const Merge& g : merges) mj.push_back(ojson::array({m.pieces[g.left].piece, m.pieces[g.right].piece}));
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", m.pieces[m.unk_id].piece},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", mj}};
  return j.dump(2) + "\n";
}

}  // namespace kvt

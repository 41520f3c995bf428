// train/config.cpp — YAML <-> RunConfig through one field registry. Every accepted key is one
// line of kFields; parsing, `--set` overrides, the unknown-key check, to_yaml and config_keys
// all walk that table, so adding a field is adding a line (plus its range check in validate()).
#include "train/config.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <variant>

namespace kvt {
namespace {

// ---- the registry ----------------------------------------------------------------------------

using FieldPtr = std::variant<int*, int64_t*, uint64_t*, float*, bool*, std::string*>;

struct Field {
  std::string_view section;
  std::string_view key;
  FieldPtr (*get)(RunConfig&);

  std::string path() const { return std::string(section) + "." + std::string(key); }
};

#define KVT_FIELD(sec, name) \
  Field { #sec, #name, [](RunConfig& c) -> FieldPtr { return &c.sec.name; } }

// Section order and key order here are the order of to_yaml's output.
constexpr Field kFields[] = {
    KVT_FIELD(model, vocab_size),
    KVT_FIELD(model, d_model),
    KVT_FIELD(model, n_layers),
    KVT_FIELD(model, n_heads),
    KVT_FIELD(model, n_kv_heads),
    KVT_FIELD(model, d_ff),
    KVT_FIELD(model, max_seq_len),
    KVT_FIELD(model, rope_theta),
    KVT_FIELD(model, norm_eps),
    KVT_FIELD(model, tie_embeddings),
    KVT_FIELD(model, init_std),
    KVT_FIELD(model, kv_sharing),
    KVT_FIELD(model, storage_layers),
    KVT_FIELD(model, fusion_init),
    KVT_FIELD(model, lrkv_rank),

    KVT_FIELD(train, batch_size),
    KVT_FIELD(train, seq_len),
    KVT_FIELD(train, grad_accum),
    KVT_FIELD(train, global_batch),
    KVT_FIELD(train, steps),
    KVT_FIELD(train, lr),
    KVT_FIELD(train, min_lr_ratio),
    KVT_FIELD(train, warmup_steps),
    KVT_FIELD(train, weight_decay),
    KVT_FIELD(train, decay_embeddings),
    KVT_FIELD(train, beta1),
    KVT_FIELD(train, beta2),
    KVT_FIELD(train, eps),
    KVT_FIELD(train, grad_clip),
    KVT_FIELD(train, eval_every),
    KVT_FIELD(train, eval_batches),
    KVT_FIELD(train, seed),
    KVT_FIELD(train, backend),
    KVT_FIELD(train, threads),
    KVT_FIELD(train, resume),
    KVT_FIELD(train, init_from),

    KVT_FIELD(data, train),
    KVT_FIELD(data, val),
    KVT_FIELD(data, tokenizer),

    KVT_FIELD(output, dir),
    KVT_FIELD(output, checkpoint_every),
    KVT_FIELD(output, keep_last),
    KVT_FIELD(output, keep_every),
};

#undef KVT_FIELD

const Field* find_field(std::string_view section, std::string_view key) {
  for (const Field& f : kFields)
    if (f.section == section && f.key == key) return &f;
  return nullptr;
}

bool is_section(std::string_view name) {
  for (const Field& f : kFields)
    if (f.section == name) return true;
  return false;
}

std::string section_list() {
  std::string out;
  std::string_view last;
  for (const Field& f : kFields) {
    if (f.section == last) continue;
    if (!out.empty()) out += ", ";
    out += f.section;
    last = f.section;
  }
  return out;
}

// ---- errors ------------------------------------------------------------------------------------

[[noreturn]] void fail(const std::string& source, const std::string& msg) {
  throw std::invalid_argument(source + ": " + msg);
}

// Where a value came from, appended to type errors: the override that set it, or its line.
struct Origin {
  const std::string& source;
  const std::map<std::string, std::string>& overridden;  // key path -> override text

  std::string where(const std::string& path, const YAML::Node& node) const {
    if (auto it = overridden.find(path); it != overridden.end())
      return " (override '" + it->second + "')";
    const YAML::Mark m = node.Mark();
    if (m.is_null()) return "";
    return " (line " + std::to_string(m.line + 1) + ")";
  }
};

// A quoted scalar (or one tagged !!str) is a string even if it looks like a number.
bool is_string_scalar(const YAML::Node& n) {
  return n.IsScalar() && (n.Tag() == "!" || n.Tag() == "tag:yaml.org,2002:str");
}

std::string describe(const YAML::Node& n) {
  if (n.IsNull()) return "null";
  if (n.IsSequence()) return "a sequence";
  if (n.IsMap()) return "a mapping";
  if (is_string_scalar(n)) return "string \"" + n.Scalar() + "\"";
  return "'" + n.Scalar() + "'";
}

// ---- scalars -----------------------------------------------------------------------------------

std::string format_float(float v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);  // shortest text that round-trips
  (void)ec;
  return std::string(buf, end);
}

template <class T>
std::string format_value(const T& v) {
  if constexpr (std::is_same_v<T, float>) {
    return format_float(v);
  } else if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_same_v<T, std::string>) {
    // Double-quoted YAML string: escape what YAML requires, keep UTF-8 as is.
    std::string out = "\"";
    for (unsigned char ch : v) {
      switch (ch) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        case '\r': out += "\\r"; break;
        default:
          if (ch < 0x20 || ch == 0x7f) {
            char esc[8];
            std::snprintf(esc, sizeof esc, "\\x%02x", ch);
            out += esc;
          } else {
            out += static_cast<char>(ch);
          }
      }
    }
    return out + "\"";
  } else {
    return std::to_string(v);
  }
}

// Parses node into *dst with the strictness a config needs: integers are decimal and in range,
// floats finite, bools true/false, and a quoted scalar never counts as a number or bool.
template <class T>
void assign(T* dst, const YAML::Node& node, const std::string& path, const Origin& origin) {
  auto bad = [&](const std::string& expected) {
    fail(origin.source, path + ": expected " + expected + ", got " + describe(node) +
                            origin.where(path, node));
  };

  if constexpr (std::is_same_v<T, std::string>) {
    if (node.IsNull()) {
      dst->clear();
      return;
    }
    if (!node.IsScalar()) bad("a string");
    *dst = node.Scalar();
    return;
  } else {
    if (!node.IsScalar() || is_string_scalar(node)) {
      if constexpr (std::is_same_v<T, bool>) bad("true or false");
      else if constexpr (std::is_same_v<T, float>) bad("a number");
      else bad("an integer");
    }
    const std::string& s = node.Scalar();
    if constexpr (std::is_same_v<T, bool>) {
      if (s == "true" || s == "True" || s == "TRUE") *dst = true;
      else if (s == "false" || s == "False" || s == "FALSE") *dst = false;
      else bad("true or false");
    } else {
      const char* b = s.data();
      const char* e = b + s.size();
      if (b != e && *b == '+') ++b;  // YAML allows an explicit plus sign
      T v{};
      std::from_chars_result r;
      if constexpr (std::is_same_v<T, float>) r = std::from_chars(b, e, v, std::chars_format::general);
      else r = std::from_chars(b, e, v);
      if constexpr (std::is_same_v<T, float>) {
        if (r.ec != std::errc() || r.ptr != e || !std::isfinite(v)) bad("a finite number");
      } else {
        if (r.ec == std::errc::result_out_of_range)
          bad("an integer in [" + std::to_string(std::numeric_limits<T>::min()) + ", " +
              std::to_string(std::numeric_limits<T>::max()) + "]");
        if (std::is_unsigned_v<T> && !s.empty() && s[0] == '-') bad("a non-negative integer");
        if (r.ec != std::errc() || r.ptr != e) bad("an integer");
      }
      *dst = v;
    }
  }
}

// ---- tree -> struct ----------------------------------------------------------------------------

std::string key_text(const YAML::Node& key, const std::string& source, const std::string& parent) {
  if (!key.IsScalar())
    fail(source, "keys must be plain names; found " + describe(key) +
                     (parent.empty() ? " at the top level" : " in section " + parent));
  return key.Scalar();
}

RunConfig from_tree(const YAML::Node& root, const Origin& origin) {
  const std::string& source = origin.source;
  RunConfig cfg;
  if (root.IsNull()) return cfg;  // an empty document: every key takes its default
  if (!root.IsMap())
    fail(source, "the top level must be a mapping with sections " + section_list() + ", got " +
                     describe(root));

  std::set<std::string> seen;
  for (const auto& sec : root) {
    const std::string name = key_text(sec.first, source, "");
    if (!is_section(name))
      fail(source, "unknown key " + name + " (sections are " + section_list() + ")" +
                       origin.where(name, sec.first));
    if (!seen.insert(name).second)
      fail(source, "duplicate key " + name + origin.where(name, sec.first));
    const YAML::Node& body = sec.second;
    if (body.IsNull()) continue;  // `train:` with nothing under it
    if (!body.IsMap())
      fail(source, name + ": expected a mapping of keys, got " + describe(body) +
                       origin.where(name, body));
    for (const auto& kv : body) {
      const std::string key = key_text(kv.first, source, name);
      const std::string path = name + "." + key;
      const Field* f = find_field(name, key);
      if (!f) fail(source, "unknown key " + path + origin.where(path, kv.first));
      if (!seen.insert(path).second)
        fail(source, "duplicate key " + path + origin.where(path, kv.first));
      std::visit([&](auto* dst) { assign(dst, kv.second, path, origin); }, f->get(cfg));
    }
  }
  return cfg;
}

// ---- overrides ---------------------------------------------------------------------------------

// Applies `section.key=value` (value parsed as YAML) to the tree; records which paths it set.
void apply_override(YAML::Node& root, const std::string& text, const std::string& source,
                    std::map<std::string, std::string>& overridden) {
  const std::string what = "override '" + text + "'";
  const size_t eq = text.find('=');
  if (eq == std::string::npos) fail(source, what + ": expected section.key=value (no '=')");
  const std::string path = text.substr(0, eq);
  const size_t dot = path.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == path.size())
    fail(source, what + ": expected section.key=value (sections are " + section_list() + ")");
  const std::string section = path.substr(0, dot);
  const std::string key = path.substr(dot + 1);
  if (!find_field(section, key)) fail(source, what + ": unknown key " + path);

  YAML::Node value;
  try {
    value = YAML::Load(text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail(source, what + ": the value is not valid YAML: " + e.msg);
  }

  if (!root.IsMap() && !root.IsNull())
    fail(source, "the top level must be a mapping with sections " + section_list() + ", got " +
                     describe(root));
  const YAML::Node& croot = root;  // const lookups do not insert keys
  const YAML::Node existing = croot[section];
  if (existing && !existing.IsMap() && !existing.IsNull())
    fail(source, section + ": expected a mapping of keys, got " + describe(existing));
  if (!existing || existing.IsNull()) root[section] = YAML::Node(YAML::NodeType::Map);
  root[section][key] = value;
  overridden[path] = text;
}

// ---- validation --------------------------------------------------------------------------------

void validate(RunConfig& cfg, const std::string& source) {
  try {
    cfg.model.resolve();
  } catch (const std::invalid_argument& e) {
    fail(source, e.what());
  }

  auto check = [&](bool ok, const char* path, const std::string& rule, const auto& value) {
    if (!ok) fail(source, std::string(path) + ": must be " + rule + ", got " + format_value(value));
  };

  const TrainConfig& t = cfg.train;
  check(t.batch_size >= 1, "train.batch_size", ">= 1", t.batch_size);
  check(t.seq_len >= 1, "train.seq_len", ">= 1", t.seq_len);
  if (t.seq_len > cfg.model.max_seq_len)
    fail(source, "train.seq_len: " + std::to_string(t.seq_len) + " exceeds model.max_seq_len " +
                     std::to_string(cfg.model.max_seq_len));
  check(t.grad_accum >= 1, "train.grad_accum", ">= 1", t.grad_accum);
  check(t.global_batch >= 0, "train.global_batch", ">= 0 (0 = batch_size x grad_accum x ranks)",
        t.global_batch);
  if (t.global_batch > 0 && t.global_batch % t.grad_accum != 0)
    fail(source, "train.global_batch: " + std::to_string(t.global_batch) +
                     " is not divisible by train.grad_accum " + std::to_string(t.grad_accum));
  check(t.steps >= 1, "train.steps", ">= 1", t.steps);
  check(t.lr > 0, "train.lr", "> 0", t.lr);
  check(t.min_lr_ratio >= 0 && t.min_lr_ratio <= 1, "train.min_lr_ratio", "in [0, 1]",
        t.min_lr_ratio);
  check(t.warmup_steps >= 0, "train.warmup_steps", ">= 0", t.warmup_steps);
  check(t.weight_decay >= 0, "train.weight_decay", ">= 0", t.weight_decay);
  check(t.beta1 >= 0 && t.beta1 < 1, "train.beta1", "in [0, 1)", t.beta1);
  check(t.beta2 >= 0 && t.beta2 < 1, "train.beta2", "in [0, 1)", t.beta2);
  check(t.eps > 0, "train.eps", "> 0", t.eps);
  check(t.grad_clip >= 0, "train.grad_clip", ">= 0 (0 disables clipping)", t.grad_clip);
  check(t.eval_every >= 0, "train.eval_every", ">= 0 (0 disables periodic evals)", t.eval_every);
  check(t.eval_batches >= 1, "train.eval_batches", ">= 1", t.eval_batches);
  check(t.backend == "cpu" || t.backend == "cuda", "train.backend", "cpu or cuda", t.backend);
  check(t.threads >= 0, "train.threads", ">= 0 (0 = automatic)", t.threads);
  check(t.resume == "never" || t.resume == "auto", "train.resume", "never or auto", t.resume);

  check(!cfg.data.train.empty(), "data.train", "a non-empty glob of training shards",
        cfg.data.train);

  const OutputConfig& o = cfg.output;
  check(!o.dir.empty(), "output.dir", "a non-empty directory path", o.dir);
  check(o.checkpoint_every >= 0, "output.checkpoint_every", ">= 0 (0 = only at the end)",
        o.checkpoint_every);
  check(o.keep_last >= 1, "output.keep_last", ">= 1", o.keep_last);
  check(o.keep_every >= 0, "output.keep_every", ">= 0 (0 = none)", o.keep_every);
}

}  // namespace

// ---- public API --------------------------------------------------------------------------------

RunConfig parse_run_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                           const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail(source, "YAML syntax error at line " + std::to_string(e.mark.line + 1) + ", column " +
                     std::to_string(e.mark.column + 1) + ": " + e.msg);
  }

  std::map<std::string, std::string> overridden;
  for (const std::string& o : overrides) apply_override(root, o, source, overridden);

  RunConfig cfg = from_tree(root, Origin{source, overridden});
  validate(cfg, source);
  return cfg;
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open config file: ") + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail(path, std::string("cannot read config file: ") + std::strerror(errno));
  return parse_run_config(text.str(), overrides, path);
}

std::string to_yaml(const RunConfig& cfg) {
  // The registry hands out mutable pointers; nothing below writes through them.
  RunConfig& c = const_cast<RunConfig&>(cfg);
  std::string out = "# kvtrain run config (resolved; every key)\n";
  std::string_view section;
  for (const Field& f : kFields) {
    if (f.section != section) {
      section = f.section;
      out += std::string(section) + ":\n";
    }
    out += "  " + std::string(f.key) + ": ";
    out += std::visit([](const auto* v) { return format_value(*v); }, f.get(c));
    out += "\n";
  }
  return out;
}

std::string config_hash(const RunConfig& cfg) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64 offset basis
  for (unsigned char ch : to_yaml(cfg)) {
    h ^= ch;
    h *= 1099511628211ull;  // FNV-1a 64 prime
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  for (const Field& f : kFields) keys.push_back(f.path());
  return keys;
}

}  // namespace kvt

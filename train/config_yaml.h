// train/config_yaml.h — the YAML machinery behind every kvtrain config file (the run config of
// train/config.h, the gate config of train/gate_config.h). A config is a table of fields
// (section, key, typed member); parsing, `--set section.key=value` overrides, the unknown-key and
// type checks (errors name the file, the key path and the line or override) and the resolved
// YAML text all walk that table, so adding a field is adding a line.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace kvt::config_yaml {

using FieldPtr = std::variant<int*, int64_t*, uint64_t*, float*, bool*, std::string*>;

// One field of one config object.
struct BoundField {
  std::string_view section, key;
  FieldPtr ptr;
  std::string path() const { return std::string(section) + "." + std::string(key); }
};

// A field of a config type; a constexpr table of these is the config's schema.
template <class Cfg>
struct FieldDef {
  std::string_view section, key;
  FieldPtr (*get)(Cfg&);
};

template <class Cfg, size_t N>
std::vector<BoundField> bind(const FieldDef<Cfg> (&defs)[N], Cfg& cfg) {
  std::vector<BoundField> out;
  out.reserve(N);
  for (const FieldDef<Cfg>& d : defs) out.push_back({d.section, d.key, d.get(cfg)});
  return out;
}

template <class Cfg, size_t N>
std::vector<std::string> key_paths(const FieldDef<Cfg> (&defs)[N]) {
  std::vector<std::string> out;
  for (const FieldDef<Cfg>& d : defs) out.push_back(std::string(d.section) + "." + std::string(d.key));
  return out;
}

// Throws std::invalid_argument("<source>: <msg>").
[[noreturn]] void fail(const std::string& source, const std::string& msg);

// Parses yaml_text, applies the overrides, and assigns every key present to its field (absent
// keys keep the values the fields hold). Unknown sections or keys, duplicates, wrong types and
// out-of-range numbers throw std::invalid_argument naming source, the key path and its line.
void parse_into(std::span<const BoundField> fields, const std::string& yaml_text,
                const std::vector<std::string>& overrides, const std::string& source);

// The whole text of a config file; throws std::invalid_argument naming the path.
std::string read_text_file(const std::string& path);

// Every field as YAML, sections in table order, after a one-line comment.
std::string to_yaml(std::span<const BoundField> fields, const std::string& comment);

// FNV-1a 64 of a text, as 16 hex digits.
std::string fnv1a_hex(const std::string& text);

std::string format_float(float v);

// A value as to_yaml writes it (strings double-quoted and escaped).
template <class T>
std::string format_value(const T& v) {
  if constexpr (std::is_same_v<T, float>) {
    return format_float(v);
  } else if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_same_v<T, std::string>) {
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

// check(ok, source, "train.lr", "> 0", value): throws "<source>: train.lr: must be > 0, got <value>".
template <class T>
void check(bool ok, const std::string& source, const char* path, const std::string& rule,
           const T& value) {
  if (!ok) fail(source, std::string(path) + ": must be " + rule + ", got " + format_value(value));
}

}  // namespace kvt::config_yaml

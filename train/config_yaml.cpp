// train/config_yaml.cpp — parsing and printing of config files over a field table
// (train/config_yaml.h).
#include "train/config_yaml.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

namespace kvt::config_yaml {

void fail(const std::string& source, const std::string& msg) {
  throw std::invalid_argument(source + ": " + msg);
}

std::string format_float(float v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);  // shortest text that round-trips
  (void)ec;
  return std::string(buf, end);
}


namespace {

const BoundField* find_field(std::span<const BoundField> fields, std::string_view section,
                             std::string_view key) {
  for (const BoundField& f : fields)
    if (f.section == section && f.key == key) return &f;
  return nullptr;
}

bool is_section(std::span<const BoundField> fields, std::string_view name) {
  for (const BoundField& f : fields)
    if (f.section == name) return true;
  return false;
}

std::string section_list(std::span<const BoundField> fields) {
  std::string out;
  std::string_view last;
  for (const BoundField& f : fields) {
    if (f.section == last) continue;
    if (!out.empty()) out += ", ";
    out += f.section;
    last = f.section;
  }
  return out;
}

// ---- errors ------------------------------------------------------------------------------------

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

void from_tree(std::span<const BoundField> fields, const YAML::Node& root, const Origin& origin) {
  const std::string& source = origin.source;
  if (root.IsNull()) return;  // an empty document: every key keeps its default
  if (!root.IsMap())
    fail(source, "the top level must be a mapping with sections " + section_list(fields) + ", got " +
                     describe(root));

  std::set<std::string> seen;
  for (const auto& sec : root) {
    const std::string name = key_text(sec.first, source, "");
    if (!is_section(fields, name))
      fail(source, "unknown key " + name + " (sections are " + section_list(fields) + ")" +
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
      const BoundField* f = find_field(fields, name, key);
      if (!f) fail(source, "unknown key " + path + origin.where(path, kv.first));
      if (!seen.insert(path).second)
        fail(source, "duplicate key " + path + origin.where(path, kv.first));
      std::visit([&](auto* dst) { assign(dst, kv.second, path, origin); }, f->ptr);
    }
  }
}

// ---- overrides ---------------------------------------------------------------------------------

// Applies `section.key=value` (value parsed as YAML) to the tree; records which paths it set.
void apply_override(std::span<const BoundField> fields, YAML::Node& root, const std::string& text, const std::string& source,
                    std::map<std::string, std::string>& overridden) {
  const std::string what = "override '" + text + "'";
  const size_t eq = text.find('=');
  if (eq == std::string::npos) fail(source, what + ": expected section.key=value (no '=')");
  const std::string path = text.substr(0, eq);
  const size_t dot = path.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == path.size())
    fail(source, what + ": expected section.key=value (sections are " + section_list(fields) + ")");
  const std::string section = path.substr(0, dot);
  const std::string key = path.substr(dot + 1);
  if (!find_field(fields, section, key)) fail(source, what + ": unknown key " + path);

  YAML::Node value;
  try {
    value = YAML::Load(text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail(source, what + ": the value is not valid YAML: " + e.msg);
  }

  if (!root.IsMap() && !root.IsNull())
    fail(source, "the top level must be a mapping with sections " + section_list(fields) + ", got " +
                     describe(root));
  const YAML::Node& croot = root;  // const lookups do not insert keys
  const YAML::Node existing = croot[section];
  if (existing && !existing.IsMap() && !existing.IsNull())
    fail(source, section + ": expected a mapping of keys, got " + describe(existing));
  if (!existing || existing.IsNull()) root[section] = YAML::Node(YAML::NodeType::Map);
  root[section][key] = value;
  overridden[path] = text;
}

}  // namespace

void parse_into(std::span<const BoundField> fields, const std::string& yaml_text,
                const std::vector<std::string>& overrides, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail(source, "YAML syntax error at line " + std::to_string(e.mark.line + 1) + ", column " +
                     std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  std::map<std::string, std::string> overridden;
  for (const std::string& o : overrides) apply_override(fields, root, o, source, overridden);
  from_tree(fields, root, Origin{source, overridden});
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open config file: ") + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail(path, std::string("cannot read config file: ") + std::strerror(errno));
  return text.str();
}

std::string to_yaml(std::span<const BoundField> fields, const std::string& comment) {
  std::string out = "# " + comment + "\n";
  std::string_view section;
  for (const BoundField& f : fields) {
    if (f.section != section) {
      section = f.section;
      out += std::string(section) + ":\n";
    }
    out += "  " + std::string(f.key) + ": ";
    out += std::visit([](const auto* v) { return format_value(*v); }, f.ptr);
    out += "\n";
  }
  return out;
}

std::string fnv1a_hex(const std::string& text) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64 offset basis
  for (unsigned char ch : text) {
    h ^= ch;
    h *= 1099511628211ull;  // FNV-1a 64 prime
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace kvt::config_yaml

// tests/gguf_writer.h — a small GGUF writer for tests, independent of the reader (data/gguf.h):
// Builder lays out header, metadata, tensor infos and aligned data as the format says.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "data/gguf.h"

namespace kvt::gguf_writer {

struct Bytes {
  std::string b;
  template <typename T>
  Bytes& put(T v) {
    char tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T));
    b.append(tmp, sizeof(T));
    return *this;
  }
  Bytes& u8(uint8_t v) { return put(v); }
  Bytes& u16(uint16_t v) { return put(v); }
  Bytes& u32(uint32_t v) { return put(v); }
  Bytes& u64(uint64_t v) { return put(v); }
  Bytes& str(const std::string& s) {
    u64(s.size());
    b += s;
    return *this;
  }
};

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type;
  std::string data;
  std::optional<uint64_t> offset;  // default: packed, aligned
};

struct Builder {
  std::string magic = "GGUF";
  uint32_t version = 3;
  uint32_t alignment = 32;  // the data layout's alignment (write general.alignment to change it)
  std::vector<std::string> kvs;  // encoded key + type + value
  std::vector<TensorSpec> tensors;
  std::vector<size_t> info_pos;  // byte offset of each tensor info, filled by build()
  size_t data_pos = 0;

  void kv(const std::string& key, GgufType t, const std::string& value) {
    Bytes e;
    e.str(key).u32(static_cast<uint32_t>(t));
    kvs.push_back(e.b + value);
  }
  std::string build() {
    Bytes out;
    out.b = magic;
    out.u32(version).u64(tensors.size()).u64(kvs.size());
    for (const std::string& k : kvs) out.b += k;
    uint64_t next = 0;
    std::vector<uint64_t> offs;
    for (const TensorSpec& t : tensors) {
      info_pos.push_back(out.b.size());
      out.str(t.name).u32(static_cast<uint32_t>(t.ne.size()));
      for (uint64_t n : t.ne) out.u64(n);
      const uint64_t off = t.offset ? *t.offset : next;
      out.u32(t.type).u64(off);
      offs.push_back(off);
      next = (off + t.data.size() + alignment - 1) / alignment * alignment;
    }
    while (out.b.size() % alignment) out.b.push_back('\0');
    data_pos = out.b.size();
    for (size_t i = 0; i < tensors.size(); ++i) {
      const size_t at = data_pos + offs[i];
      if (out.b.size() < at) out.b.resize(at, '\0');
      if (out.b.size() < at + tensors[i].data.size()) out.b.resize(at + tensors[i].data.size(), '\0');
      std::memcpy(out.b.data() + at, tensors[i].data.data(), tensors[i].data.size());
    }
    return out.b;
  }
};

inline std::string enc_u32(uint32_t v) { return Bytes().u32(v).b; }
inline std::string enc_str(const std::string& s) { return Bytes().str(s).b; }
// An ARRAY value of strings (element type, count, elements).
inline Bytes string_array(const std::vector<std::string>& v) {
  Bytes b;
  b.u32(static_cast<uint32_t>(GgufType::STRING)).u64(v.size());
  for (const auto& s : v) b.str(s);
  return b;
}


// Writes `bytes` to a temporary file whose name carries the process id and `name`; its path.
inline std::string write_temp(const std::string& name, const std::string& bytes) {
  const std::filesystem::path p = std::filesystem::temp_directory_path() /
                                  ("kvt_" + std::to_string(::getpid()) + "_" + name + ".gguf");
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return p.string();
}

// f() must throw a std::runtime_error of one line naming `path` and containing `what`.
template <typename F>
void expect_file_error(F f, const std::string& path, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << path << ": no error, expected: " << what;
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find(what), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

}  // namespace kvt::gguf_writer

// data/gguf.h — a reader of llama.cpp's GGUF files, versions 2 and 3 (docs/design.md,
// "Importing models").
//
// Layout (little-endian):
//   "GGUF", uint32 version, uint64 tensor_count, uint64 metadata_kv_count
//   metadata_kv_count × { string key, uint32 value type, value }
//   tensor_count × { string name, uint32 n_dims (<= 4), n_dims × uint64 ne (ne[0] the row
//                    length), uint32 ggml type, uint64 offset (from the data section) }
//   padding to a multiple of general.alignment (u32, default 32), then the data section.
// A string is uint64 length + bytes; an array is uint32 element type + uint64 count + elements.
// The file is memory-mapped and fully validated on open; every length is checked against the
// file size before anything is allocated. Errors are one-line std::runtime_error naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "data/gguf_quant.h"

namespace kvt {

// GGUF metadata value types; the numbers are also GgufValue::v's alternative indices.
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
const char* gguf_type_name(GgufType t);

struct GgufValue;
struct GgufArray {
  GgufType elem_type = GgufType::U8;  // kept for empty arrays
  std::vector<GgufValue> items;
};

struct GgufValue {
  std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string,
               GgufArray, uint64_t, int64_t, double>
      v;
  GgufType type() const { return static_cast<GgufType>(v.index()); }
};

struct GgufTensorInfo {
  std::string name;
  uint32_t n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] innermost (row length)
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // from the data section start
  uint64_t n_bytes = 0;
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t n_rows() const { return ne[1] * ne[2] * ne[3]; }
};

class GgufFile {
 public:
  static GgufFile open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // absolute file offset
  uint64_t file_size() const { return size_; }

  // Metadata in file order; find returns nullptr when the key is absent.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const;
  // Typed lookups; they throw "<file>: key '<k>' missing" or "... is <type>, expected <type>".
  // Integer getters accept any integer type whose value fits; get_f32 accepts f32 and f64.
  uint32_t get_u32(const std::string& key) const;
  uint64_t get_u64(const std::string& key) const;
  int64_t get_i64(const std::string& key) const;
  float get_f32(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<float> get_f32_array(const std::string& key) const;
  std::vector<int64_t> get_i64_array(const std::string& key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* tensor(const std::string& name) const;  // nullptr when absent
  // The tensor's raw bytes (n_bytes of them) inside the mapping.
  const uint8_t* tensor_data(const GgufTensorInfo& t) const;
  // The tensor dequantized to float, row-major [ne3][ne2][ne1][ne0].
  std::vector<float> read_f32(const GgufTensorInfo& t) const;

 private:
  GgufFile() = default;
  std::string path_;
  std::shared_ptr<const uint8_t> map_;  // munmap on release
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace kvt

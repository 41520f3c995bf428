// tools/safetensors.h — a small reader and writer of the safetensors format (Hugging Face), used
// by `kvtrain export` and by the Python oracle tests (tests/tools/refdump.cpp).
//
// File layout:
//   [8 bytes]  N, the header length, unsigned little-endian
//   [N bytes]  JSON header: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
//              ..., "__metadata__": {"<key>": "<string value>", ...}}, padded with spaces so
//              that 8 + N is a multiple of 8
//   [rest]     the raw little-endian tensor bytes; offsets are relative to the start of this
//              block, tensors are contiguous, without holes or overlaps
// The writer orders tensors (header keys and data) by name, so a file is a deterministic
// function of its contents. The reader checks every offset against the file and the shape, and
// its errors name the file and the tensor.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kvt {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian bytes; this reader/writer copies them as is");

enum class DType { F32, F64, I32, BF16, F16 };

size_t dtype_size(DType t);            // bytes per element
const char* dtype_name(DType t);       // "F32", "F64", "I32", "BF16", "F16"
// Parses a safetensors dtype name; throws std::invalid_argument for any other.
DType dtype_from_name(const std::string& name);

// bfloat16 conversions: round to nearest even (NaN stays NaN), and the exact widening.
uint16_t float_to_bf16(float x);
float bf16_to_float(uint16_t b);

// Elements of a shape (1 for a scalar, shape []); throws on a negative dimension.
size_t shape_numel(const std::vector<int64_t>& shape);

class SafetensorsWriter {
 public:
  // Copies the bytes (numel(shape) * dtype_size(dtype) of them). Throws std::invalid_argument on
  // a duplicate or empty name, or a name starting with "__metadata__".
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data);
  // Like add(), without copying: `data` must stay valid until write() returns. For large
  // exports (the parameter buffer of a big model).
  void add_view(const std::string& name, DType dtype, std::vector<int64_t> shape,
                const void* data);
  void add_f32(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v);
  void add_f64(const std::string& name, std::vector<int64_t> shape, const std::vector<double>& v);
  void add_i32(const std::string& name, std::vector<int64_t> shape,
               const std::vector<int32_t>& v);
  // Stores float values as BF16 (rounded to nearest even).
  void add_bf16(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v);
  // String-to-string metadata ("__metadata__"); "format" defaults to "pt" (what Hugging Face's
  // loaders expect).
  void set_metadata(const std::string& key, const std::string& value);

  size_t size() const { return tensors_.size(); }
  // Writes `path` through a temporary file in the same directory and a rename, so a reader never
  // sees a half-written file. Throws std::runtime_error naming the path on any I/O error.
  void write(const std::string& path) const;

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<std::byte> owned;
    const std::byte* data = nullptr;  // owned.data() or the caller's memory
    size_t nbytes = 0;
  };
  Entry& insert(const std::string& name, DType dtype, std::vector<int64_t> shape);
  std::map<std::string, Entry> tensors_;
  std::map<std::string, std::string> metadata_{{"format", "pt"}};
};

// One tensor of a file that was read: a view into the reader's data block.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;
  size_t numel() const { return shape_numel(shape); }
};

class SafetensorsReader {
 public:
  // Reads and validates the whole file. Throws std::runtime_error whose message starts with the
  // path (and names the tensor where one is at fault): missing or short file, header length past
  // the end of the file, bad JSON, unknown dtype, a byte range that does not match its shape,
  // runs past the data block, overlaps another or leaves a hole.
  explicit SafetensorsReader(const std::string& path);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // Throws std::runtime_error naming the file and the tensor when absent.
  const TensorView& tensor(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The metadata value, or throws naming the file and the key.
  const std::string& metadata(const std::string& key) const;

  // Typed copies. to_f32 converts F32, BF16, F16 and F64 (rounded) tensors; the others insist on
  // their exact dtype. expected_shape, when given, must match (else an error naming the tensor).
  std::vector<float> to_f32(const std::string& name,
                            const std::vector<int64_t>* expected_shape = nullptr) const;
  std::vector<double> f64(const std::string& name) const;
  std::vector<int32_t> i32(const std::string& name) const;

 private:
  [[noreturn]] void fail(const std::string& what) const;
  const TensorView& typed(const std::string& name, DType want) const;
  std::string path_;
  std::vector<std::byte> data_;  // the data block (everything after the header)
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace kvt

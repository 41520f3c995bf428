#include "tools/safetensors.h"

#include "data/error_text.h"
#include "data/gguf_quant.h"

#include "data/file_commit.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace kvt {

namespace {

using json = nlohmann::json;

// Hugging Face's loader refuses headers above 100 MB; so do we (a corrupt length would otherwise
// ask for an absurd allocation).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

size_t checked_mul(size_t a, size_t b, const std::string& what) {
  size_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw std::invalid_argument(what + ": size overflows");
  return r;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::BF16: return 2;
    case DType::F16: return 2;
  }
  throw std::logic_error("unknown DType");
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I32: return "I32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
  }
  throw std::logic_error("unknown DType");
}

DType dtype_from_name(const std::string& name) {
  if (name == "F32") return DType::F32;
  if (name == "F64") return DType::F64;
  if (name == "I32") return DType::I32;
  if (name == "BF16") return DType::BF16;
  if (name == "F16") return DType::F16;
  throw std::invalid_argument("unsupported dtype \"" + name + "\" (supported: F32, F64, I32, BF16, F16)");
}

uint16_t float_to_bf16(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu) != 0)
    return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN, sign kept
  uint32_t rounding = 0x7FFFu + ((u >> 16) & 1u);        // round to nearest, ties to even
  return static_cast<uint16_t>((u + rounding) >> 16);
}

float bf16_to_float(uint16_t b) { return ggml_bf16_to_float(b); }  // one conversion: data/gguf_quant.h

size_t shape_numel(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(shape));
    n = checked_mul(n, static_cast<size_t>(d), "shape " + shape_str(shape));
  }
  return n;
}

// ---- writer ---------------------------------------------------------------------------------

SafetensorsWriter::Entry& SafetensorsWriter::insert(const std::string& name, DType dtype,
                                                    std::vector<int64_t> shape) {
  if (name.empty()) throw std::invalid_argument("safetensors: empty tensor name");
  if (name == kMetadataKey)
    throw std::invalid_argument("safetensors: tensor name " + name + " is reserved");
  if (tensors_.count(name)) throw std::invalid_argument("safetensors: duplicate tensor " + name);
  Entry e;
  e.dtype = dtype;
  e.nbytes = checked_mul(shape_numel(shape), dtype_size(dtype), "tensor " + name);
  e.shape = std::move(shape);
  return tensors_.emplace(name, std::move(e)).first->second;
}

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            const void* data) {
  Entry& e = insert(name, dtype, std::move(shape));
  e.owned.resize(e.nbytes);
  if (e.nbytes) std::memcpy(e.owned.data(), data, e.nbytes);
  e.data = e.owned.data();
}

void SafetensorsWriter::add_view(const std::string& name, DType dtype,
                                 std::vector<int64_t> shape, const void* data) {
  Entry& e = insert(name, dtype, std::move(shape));
  e.data = static_cast<const std::byte*>(data);
}

namespace {
template <typename T>
void check_count(const std::string& name, const std::vector<int64_t>& shape,
                 const std::vector<T>& v) {
  if (shape_numel(shape) != v.size())
    throw std::invalid_argument("safetensors: tensor " + name + " has " +
                                std::to_string(v.size()) + " values but shape " +
                                shape_str(shape));
}
}  // namespace

void SafetensorsWriter::add_f32(const std::string& name, std::vector<int64_t> shape,
                                const std::vector<float>& v) {
  check_count(name, shape, v);
  add(name, DType::F32, std::move(shape), v.data());
}

void SafetensorsWriter::add_f64(const std::string& name, std::vector<int64_t> shape,
                                const std::vector<double>& v) {
  check_count(name, shape, v);
  add(name, DType::F64, std::move(shape), v.data());
}

void SafetensorsWriter::add_i32(const std::string& name, std::vector<int64_t> shape,
                                const std::vector<int32_t>& v) {
  check_count(name, shape, v);
  add(name, DType::I32, std::move(shape), v.data());
}

void SafetensorsWriter::add_bf16(const std::string& name, std::vector<int64_t> shape,
                                 const std::vector<float>& v) {
  check_count(name, shape, v);
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = float_to_bf16(v[i]);
  add(name, DType::BF16, std::move(shape), b.data());
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

void SafetensorsWriter::write(const std::string& path) const {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, e] : tensors_) {  // std::map: sorted by name
    header[name] = {{"dtype", dtype_name(e.dtype)},
                    {"shape", e.shape},
                    {"data_offsets", {offset, offset + e.nbytes}}};
    offset += e.nbytes;
  }
  if (!metadata_.empty()) header[kMetadataKey] = metadata_;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // 8 + N stays a multiple of 8
  const uint64_t n = text.size();

  // Through data/file_commit.h: the temporary is removed on every failure, and a full disk
  // names the file, the bytes it needed and the bytes free.
  uint64_t total = 8 + n;
  for (const auto& [name, e] : tensors_) total += e.nbytes;
  AtomicFile file(path);
  {
    auto closer = [](std::FILE* f) {
      if (f) std::fclose(f);
    };
    std::unique_ptr<std::FILE, decltype(closer)> f(std::fopen(file.tmp_path().c_str(), "wb"), closer);
    if (!f) throw_write_error(path, "cannot create " + file.tmp_path(), errno, total);
    auto put = [&](const void* p, size_t bytes) {
      if (bytes && std::fwrite(p, 1, bytes, f.get()) != bytes) throw_write_error(path, "write failed", errno, total);
    };
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    put(len, 8);
    put(text.data(), text.size());
    for (const auto& [name, e] : tensors_) put(e.data, e.nbytes);
    if (std::fflush(f.get()) != 0) throw_write_error(path, "write failed", errno, total);
    if (std::fclose(f.release()) != 0) throw_write_error(path, "write failed", errno, total);
  }
  file.commit();
}

// ---- reader ---------------------------------------------------------------------------------

void SafetensorsReader::fail(const std::string& what) const {
  throw std::runtime_error(path_ + ": " + one_line(what));  // names from the file: one line
}

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(std::string("cannot open: ") + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const auto end = in.tellg();
  if (end < 0) fail("cannot determine the file size");
  const uint64_t file_size = static_cast<uint64_t>(end);
  in.seekg(0);
  if (file_size < 8)
    fail("not a safetensors file: " + std::to_string(file_size) +
         " bytes, shorter than the 8-byte header length");
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(len[i]) << (8 * i);
  if (n > kMaxHeaderBytes)
    fail("header length " + std::to_string(n) + " exceeds the limit of " +
         std::to_string(kMaxHeaderBytes) + " bytes (not a safetensors file?)");
  if (n > file_size - 8)
    fail("header length " + std::to_string(n) + " runs past the end of the file (" +
         std::to_string(file_size) + " bytes; truncated?)");
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  if (!in) fail("short read of the header");

  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail("header is not a JSON object");

  const uint64_t data_size = file_size - 8 - n;
  struct Range {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Range> ranges;
  for (const auto& [key, val] : header.items()) {
    if (key == kMetadataKey) {
      if (!val.is_object()) fail("__metadata__ is not a JSON object");
      for (const auto& [mk, mv] : val.items()) {
        if (!mv.is_string()) fail("__metadata__ value of \"" + mk + "\" is not a string");
        metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor " + key + ": ";
    if (!val.is_object()) fail(where + "entry is not a JSON object");
    if (!val.contains("dtype") || !val["dtype"].is_string()) fail(where + "missing string dtype");
    if (!val.contains("shape") || !val["shape"].is_array()) fail(where + "missing array shape");
    if (!val.contains("data_offsets") || !val["data_offsets"].is_array() ||
        val["data_offsets"].size() != 2)
      fail(where + "data_offsets must be an array [begin, end]");
    TensorView t;
    t.name = key;
    try {
      t.dtype = dtype_from_name(val["dtype"].get<std::string>());
    } catch (const std::invalid_argument& e) {
      fail(where + e.what());
    }
    // Entries are named by index, not by dump(): dump() recurses, and [[[...]]] nested 10^5
    // deep would overflow the stack.
    auto entry = [](const json& d) { return d.is_number() ? d.dump() : std::string(d.type_name()); };
    for (size_t i = 0; i < val["shape"].size(); ++i) {
      const json& d = val["shape"][i];
      if (!d.is_number_unsigned())
        fail(where + "shape[" + std::to_string(i) + "] = " + entry(d) +
             " is not a non-negative integer");
      uint64_t v = d.get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail(where + "shape dimension too large");
      t.shape.push_back(static_cast<int64_t>(v));
    }
    for (size_t i = 0; i < 2; ++i)
      if (!val["data_offsets"][i].is_number_unsigned())
        fail(where + "data_offsets[" + std::to_string(i) + "] = " + entry(val["data_offsets"][i]) +
             " is not a non-negative integer");
    const uint64_t b = val["data_offsets"][0].get<uint64_t>();
    const uint64_t e = val["data_offsets"][1].get<uint64_t>();
    if (e < b) fail(where + "data_offsets [" + std::to_string(b) + ", " + std::to_string(e) +
                    "] end before they begin");
    size_t expect = 0;
    try {
      expect = checked_mul(shape_numel(t.shape), dtype_size(t.dtype), "tensor " + key);
    } catch (const std::invalid_argument& ex) {
      fail(ex.what());
    }
    if (e - b != expect)
      fail(where + "data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + "] hold " +
           std::to_string(e - b) + " bytes, but " + dtype_name(t.dtype) + " " +
           shape_str(t.shape) + " needs " + std::to_string(expect));
    if (e > data_size)
      fail(where + "data_offsets [" + std::to_string(b) + ", " + std::to_string(e) +
           "] run past the data block of " + std::to_string(data_size) +
           " bytes (truncated file?)");
    t.nbytes = expect;
    ranges.push_back({b, e, key});
    tensors_.emplace(key, std::move(t));
  }

  // The tensors must tile the data block exactly: no overlap, no hole, nothing after.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t at = 0;
  for (const auto& r : ranges) {
    if (r.begin < at) fail("tensor " + r.name + ": data_offsets overlap another tensor's bytes");
    if (r.begin > at)
      fail("tensor " + r.name + ": hole of " + std::to_string(r.begin - at) +
           " bytes before its data_offsets");
    at = r.end;
  }
  if (at != data_size)
    fail(std::to_string(data_size - at) + " bytes after the last tensor's data (the tensors" +
         " cover " + std::to_string(at) + " of " + std::to_string(data_size) + ")");

  data_.resize(data_size);
  if (data_size) {
    in.read(reinterpret_cast<char*>(data_.data()), static_cast<std::streamsize>(data_size));
    if (!in) fail("short read of the tensor data");
  }
  for (const auto& r : ranges) {
    TensorView& t = tensors_.at(r.name);
    t.data = data_.data() + r.begin;
  }
}

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> out;
  for (const auto& [name, t] : tensors_) out.push_back(name);
  return out;
}

const TensorView& SafetensorsReader::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("no tensor named " + name);
  return it->second;
}

const std::string& SafetensorsReader::metadata(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) fail("no __metadata__ key " + key);
  return it->second;
}

const TensorView& SafetensorsReader::typed(const std::string& name, DType want) const {
  const TensorView& t = tensor(name);
  if (t.dtype != want)
    fail("tensor " + name + ": dtype " + dtype_name(t.dtype) + ", expected " + dtype_name(want));
  return t;
}

std::vector<float> SafetensorsReader::to_f32(const std::string& name,
                                             const std::vector<int64_t>* expected_shape) const {
  const TensorView& t = tensor(name);
  if (expected_shape && *expected_shape != t.shape)
    fail("tensor " + name + ": shape " + shape_str(t.shape) + ", expected " +
         shape_str(*expected_shape));
  const size_t n = t.numel();
  std::vector<float> out(n);
  switch (t.dtype) {
    case DType::F32:
      if (n) std::memcpy(out.data(), t.data, n * 4);
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, t.data + 2 * i, 2);
        out[i] = bf16_to_float(b);
      }
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = ggml_half_to_float(h);
      }
      break;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, t.data + 8 * i, 8);
        out[i] = static_cast<float>(d);
      }
      break;
    default:
      fail("tensor " + name + ": dtype " + dtype_name(t.dtype) + " is not a float type");
  }
  return out;
}

std::vector<double> SafetensorsReader::f64(const std::string& name) const {
  const TensorView& t = typed(name, DType::F64);
  std::vector<double> out(t.numel());
  if (t.nbytes) std::memcpy(out.data(), t.data, t.nbytes);
  return out;
}

std::vector<int32_t> SafetensorsReader::i32(const std::string& name) const {
  const TensorView& t = typed(name, DType::I32);
  std::vector<int32_t> out(t.numel());
  if (t.nbytes) std::memcpy(out.data(), t.data, t.nbytes);
  return out;
}

}  // namespace kvt

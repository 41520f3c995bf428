// data/gguf.cpp — the GGUF parser (layout in data/gguf.h).
#include "data/gguf.h"

#include "data/error_text.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

namespace kvt {

namespace {

constexpr uint32_t kDefaultAlignment = 32;
constexpr int kMaxArrayDepth = 8;
// Counts are bounded by the bytes left, but an entry in memory is larger than its smallest
// encoding (a 1-byte u8 becomes a 40-byte GgufValue): reserve at most this many up front, so a
// wrong count in a large file is an error after one entry, not a 40x-the-file allocation.
constexpr uint64_t kMaxReserve = 1 << 16;
uint64_t reserve_of(uint64_t n) { return n < kMaxReserve ? n : kMaxReserve; }

// `what` may quote keys and names from the file: one_line keeps the message on one line.
std::runtime_error fail(const std::string& path, const std::string& what) {
  return std::runtime_error(path + ": " + one_line(what));
}

// A bounds-checked little-endian reader over the mapping. `where` names the part being read,
// so a short file says "truncated in tensor info 3".
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* p, uint64_t size)
      : path_(path), p_(p), size_(size) {}
  std::string where = "header";

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  void need(uint64_t n) const {
    if (n > left())
      throw fail(path_, "truncated in " + where + " (needs " + std::to_string(n) +
                            " bytes at offset " + std::to_string(pos_) + ", file size " +
                            std::to_string(size_) + ")");
  }
  template <typename T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));  // the host is little-endian (x86-64, aarch64)
    pos_ += sizeof(T);
    return v;
  }
  std::string str() {
    const uint64_t n = get<uint64_t>();
    need(n);  // before allocating: a length of 2^60 is an error here, not a bad_alloc
    std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// Smallest encoding of one value of type t (to bound array counts by the bytes left).
uint64_t min_value_bytes(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: case GgufType::STRING: return 8;
    case GgufType::ARRAY: return 12;
  }
  return 1;
}

GgufType check_type(const std::string& path, Cursor& c, uint32_t t) {
  if (t > static_cast<uint32_t>(GgufType::F64))
    throw fail(path, "unknown value type " + std::to_string(t) + " in " + c.where);
  return static_cast<GgufType>(t);
}

GgufValue read_value(const std::string& path, Cursor& c, GgufType t, int depth) {
  GgufValue v;
  switch (t) {
    case GgufType::U8: v.v = c.get<uint8_t>(); break;
    case GgufType::I8: v.v = c.get<int8_t>(); break;
    case GgufType::U16: v.v = c.get<uint16_t>(); break;
    case GgufType::I16: v.v = c.get<int16_t>(); break;
    case GgufType::U32: v.v = c.get<uint32_t>(); break;
    case GgufType::I32: v.v = c.get<int32_t>(); break;
    case GgufType::F32: v.v = c.get<float>(); break;
    case GgufType::BOOL: {
      const uint8_t b = c.get<uint8_t>();
      if (b > 1) throw fail(path, "bool value " + std::to_string(b) + " in " + c.where);
      v.v = b != 0;
      break;
    }
    case GgufType::STRING: v.v = c.str(); break;
    case GgufType::U64: v.v = c.get<uint64_t>(); break;
    case GgufType::I64: v.v = c.get<int64_t>(); break;
    case GgufType::F64: v.v = c.get<double>(); break;
    case GgufType::ARRAY: {
      if (depth >= kMaxArrayDepth)
        throw fail(path, "arrays nested deeper than " + std::to_string(kMaxArrayDepth) + " in " +
                             c.where);
      GgufArray a;
      a.elem_type = check_type(path, c, c.get<uint32_t>());
      const uint64_t n = c.get<uint64_t>();
      if (n > c.left() / min_value_bytes(a.elem_type))
        throw fail(path, "truncated in " + c.where + " (array of " + std::to_string(n) + " " +
                             gguf_type_name(a.elem_type) + " at offset " +
                             std::to_string(c.pos()) + ", " + std::to_string(c.left()) +
                             " bytes left)");
      a.items.reserve(reserve_of(n));
      for (uint64_t i = 0; i < n; ++i) a.items.push_back(read_value(path, c, a.elem_type, depth + 1));
      v.v = std::move(a);
      break;
    }
  }
  return v;
}

// Integer value of v when it has an integer type (bool excluded).
bool as_int(const GgufValue& v, __int128& out) {
  return std::visit(
      [&](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          out = static_cast<__int128>(x);
          return true;
        } else {
          return false;
        }
      },
      v.v);
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  static const char* const names[] = {"u8",  "i8",     "u16",   "i16", "u32", "i32", "f32",
                                      "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : "unknown";
}

GgufFile GgufFile::open(const std::string& path) {
  GgufFile f;
  f.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw fail(path, std::string("cannot stat: ") + std::strerror(e));
  }
  f.size_ = static_cast<uint64_t>(st.st_size);
  if (f.size_ > 0) {
    void* p = ::mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int e = errno;
    ::close(fd);
    if (p == MAP_FAILED) throw fail(path, std::string("cannot map: ") + std::strerror(e));
    const uint64_t n = f.size_;
    f.map_ = std::shared_ptr<const uint8_t>(static_cast<const uint8_t*>(p),
                                            [n](const uint8_t* q) { ::munmap(const_cast<uint8_t*>(q), n); });
  } else {
    ::close(fd);
  }

  Cursor c(path, f.map_.get(), f.size_);
  c.need(4);
  if (std::memcmp(f.map_.get(), "GGUF", 4) != 0) throw fail(path, "wrong magic (not a GGUF file)");
  c.get<uint32_t>();
  f.version_ = c.get<uint32_t>();
  if (f.version_ != 2 && f.version_ != 3)
    throw fail(path, "unsupported version " + std::to_string(f.version_) + " (reads 2 and 3)");
  const uint64_t n_tensors = c.get<uint64_t>();
  const uint64_t n_kv = c.get<uint64_t>();
  // Each KV takes at least 8 (key length) + 4 (type) + 1 bytes, each tensor info 8 + 4 + 4 + 8.
  if (n_kv > c.left() / 13)
    throw fail(path, "metadata count " + std::to_string(n_kv) + " exceeds what the file size " +
                         std::to_string(f.size_) + " can hold");
  if (n_tensors > c.left() / 24)
    throw fail(path, "tensor count " + std::to_string(n_tensors) + " exceeds what the file size " +
                         std::to_string(f.size_) + " can hold");

  std::unordered_map<std::string, size_t> kv_index;
  f.kv_.reserve(reserve_of(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    c.where = "metadata key " + std::to_string(i);
    std::string key = c.str();
    c.where = "metadata key " + std::to_string(i) + " '" + key + "'";
    const GgufType t = check_type(path, c, c.get<uint32_t>());
    GgufValue v = read_value(path, c, t, 0);
    if (!kv_index.emplace(key, f.kv_.size()).second) throw fail(path, "duplicate key '" + key + "'");
    f.kv_.emplace_back(std::move(key), std::move(v));
  }
  if (const GgufValue* a = f.find("general.alignment")) {
    if (a->type() != GgufType::U32)
      throw fail(path, std::string("general.alignment is ") + gguf_type_name(a->type()) +
                           ", expected u32");
    const uint32_t al = std::get<uint32_t>(a->v);
    if (al == 0 || (al & (al - 1)) != 0)
      throw fail(path, "general.alignment " + std::to_string(al) + " is not a power of two");
    f.alignment_ = al;
  } else {
    f.alignment_ = kDefaultAlignment;
  }

  std::unordered_set<std::string> names;
  f.tensors_.reserve(reserve_of(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    c.where = "tensor info " + std::to_string(i);
    GgufTensorInfo t;
    t.name = c.str();
    const std::string tn = "tensor '" + t.name + "'";
    t.n_dims = c.get<uint32_t>();
    if (t.n_dims > 4)
      throw fail(path, tn + ": " + std::to_string(t.n_dims) + " dimensions (at most 4)");
    int64_t count = 1;  // product of the nonzero dimensions, so ne1·ne2·ne3 cannot overflow either
    for (uint32_t d = 0; d < t.n_dims; ++d) {
      const uint64_t ne = c.get<uint64_t>();
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (ne != 0 && count > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(ne)))
        throw fail(path, tn + ": element count overflows (dimension " + std::to_string(d) + " is " +
                             std::to_string(ne) + ")");
      t.ne[d] = static_cast<int64_t>(ne);
      if (ne != 0) count *= t.ne[d];
    }
    const uint32_t type = c.get<uint32_t>();
    if (!ggml_type_supported(type)) {
      const char* name = ggml_type_name(type);
      if (name)
        throw fail(path, "unsupported ggml type " + std::to_string(type) + " (" + name +
                             ") for " + tn);
      throw fail(path, "unknown ggml type " + std::to_string(type) + " for " + tn);
    }
    t.type = static_cast<GgmlType>(type);
    t.offset = c.get<uint64_t>();
    size_t row;
    try {
      row = ggml_row_bytes(t.type, t.ne[0]);
    } catch (const std::runtime_error& e) {
      throw fail(path, tn + ": " + e.what());
    }
    // rows · row <= size (checked below) keeps this product from overflowing when it matters.
    const uint64_t rows = static_cast<uint64_t>(t.n_rows());
    if (row != 0 && rows > f.size_ / row)
      throw fail(path, tn + ": " + std::to_string(rows) + " rows of " + std::to_string(row) +
                           " bytes exceed the file size " + std::to_string(f.size_));
    t.n_bytes = rows * row;
    if (t.offset % f.alignment_ != 0)
      throw fail(path, tn + ": offset " + std::to_string(t.offset) +
                           " is not a multiple of the alignment " + std::to_string(f.alignment_));
    if (!names.insert(t.name).second) throw fail(path, "duplicate tensor name '" + t.name + "'");
    f.tensors_.push_back(std::move(t));
  }

  const uint64_t end_infos = c.pos();
  f.data_offset_ = (end_infos + f.alignment_ - 1) / f.alignment_ * f.alignment_;
  for (const GgufTensorInfo& t : f.tensors_) {
    const uint64_t avail = f.size_ >= f.data_offset_ ? f.size_ - f.data_offset_ : 0;
    if (f.data_offset_ > f.size_ || t.offset > avail || t.n_bytes > avail - t.offset)
      throw fail(path, "tensor '" + t.name + "': data [" + std::to_string(t.offset) + ", " +
                           std::to_string(t.offset + t.n_bytes) +
                           ") past the end of the file (size " + std::to_string(f.size_) +
                           ", data section at " + std::to_string(f.data_offset_) + ")");
  }
  return f;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  for (const auto& [k, v] : kv_)
    if (k == key) return &v;
  return nullptr;
}

namespace {

const GgufValue& must_find(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.find(key);
  if (!v) throw fail(f.path(), "key '" + key + "' missing");
  return *v;
}

std::runtime_error wrong_type(const GgufFile& f, const std::string& key, const GgufValue& v,
                              const char* expected) {
  std::string got = gguf_type_name(v.type());
  if (v.type() == GgufType::ARRAY)
    got += std::string(" of ") + gguf_type_name(std::get<GgufArray>(v.v).elem_type);
  return fail(f.path(), "key '" + key + "' is " + got + ", expected " + expected);
}

template <typename T>
T int_in_range(const GgufFile& f, const std::string& key, const GgufValue& v, const char* name) {
  __int128 x;
  if (!as_int(v, x)) throw wrong_type(f, key, v, name);
  if (x < static_cast<__int128>(std::numeric_limits<T>::min()) ||
      x > static_cast<__int128>(std::numeric_limits<T>::max()))
    throw fail(f.path(), "key '" + key + "' value out of range for " + name);
  return static_cast<T>(x);
}

const GgufArray& array_of(const GgufFile& f, const std::string& key, const GgufValue& v,
                          const char* expected) {
  if (v.type() != GgufType::ARRAY) throw wrong_type(f, key, v, expected);
  return std::get<GgufArray>(v.v);
}

}  // namespace

uint32_t GgufFile::get_u32(const std::string& key) const {
  return int_in_range<uint32_t>(*this, key, must_find(*this, key), "u32");
}
uint64_t GgufFile::get_u64(const std::string& key) const {
  return int_in_range<uint64_t>(*this, key, must_find(*this, key), "u64");
}
int64_t GgufFile::get_i64(const std::string& key) const {
  return int_in_range<int64_t>(*this, key, must_find(*this, key), "i64");
}
float GgufFile::get_f32(const std::string& key) const {
  const GgufValue& v = must_find(*this, key);
  if (v.type() == GgufType::F32) return std::get<float>(v.v);
  if (v.type() == GgufType::F64) return static_cast<float>(std::get<double>(v.v));
  throw wrong_type(*this, key, v, "f32");
}
bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = must_find(*this, key);
  if (v.type() != GgufType::BOOL) throw wrong_type(*this, key, v, "bool");
  return std::get<bool>(v.v);
}
const std::string& GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = must_find(*this, key);
  if (v.type() != GgufType::STRING) throw wrong_type(*this, key, v, "string");
  return std::get<std::string>(v.v);
}
std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue& v = must_find(*this, key);
  const GgufArray& a = array_of(*this, key, v, "array of string");
  if (a.elem_type != GgufType::STRING) throw wrong_type(*this, key, v, "array of string");
  std::vector<std::string> out;
  out.reserve(a.items.size());
  for (const GgufValue& x : a.items) out.push_back(std::get<std::string>(x.v));
  return out;
}
std::vector<float> GgufFile::get_f32_array(const std::string& key) const {
  const GgufValue& v = must_find(*this, key);
  const GgufArray& a = array_of(*this, key, v, "array of f32");
  std::vector<float> out;
  out.reserve(a.items.size());
  for (const GgufValue& x : a.items) {
    if (x.type() == GgufType::F32) out.push_back(std::get<float>(x.v));
    else if (x.type() == GgufType::F64) out.push_back(static_cast<float>(std::get<double>(x.v)));
    else throw wrong_type(*this, key, v, "array of f32");
  }
  return out;
}
std::vector<int64_t> GgufFile::get_i64_array(const std::string& key) const {
  const GgufValue& v = must_find(*this, key);
  const GgufArray& a = array_of(*this, key, v, "array of integers");
  std::vector<int64_t> out;
  out.reserve(a.items.size());
  for (const GgufValue& x : a.items) out.push_back(int_in_range<int64_t>(*this, key, x, "i64"));
  return out;
}

const GgufTensorInfo* GgufFile::tensor(const std::string& name) const {
  for (const GgufTensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const uint8_t* GgufFile::tensor_data(const GgufTensorInfo& t) const {
  return map_.get() + data_offset_ + t.offset;
}

std::vector<float> GgufFile::read_f32(const GgufTensorInfo& t) const {
  const GgufTensorInfo* own = tensor(t.name);
  if (!own || own->offset != t.offset || own->n_bytes != t.n_bytes)
    throw fail(path_, "tensor '" + t.name + "' is not a tensor of this file");
  // A zero dimension: no values (and no loop over ne1·ne2·ne3 rows of nothing, up to 2^63 of them).
  if (t.n_elements() == 0) return {};
  std::vector<float> out(static_cast<size_t>(t.n_elements()));
  const int64_t rows = t.n_rows();
  const size_t row_bytes = t.n_bytes / (rows > 0 ? static_cast<uint64_t>(rows) : 1);
  const uint8_t* src = tensor_data(t);
  for (int64_t r = 0; r < rows; ++r)
    dequantize_row(t.type, src + static_cast<size_t>(r) * row_bytes, out.data() + r * t.ne[0],
                   t.ne[0]);
  return out;
}

}  // namespace kvt

// train/checkpoint.cpp — HDF5 checkpoint writer and reader. Layout and protocol:
// docs/checkpoint_format.md.
#include "train/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "model/transformer.h"
#include "train/sha256.h"

#ifndef KVT_VERSION
#define KVT_VERSION "unknown"
#endif

namespace fs = std::filesystem;

namespace kvt {
namespace {

// ---- HDF5 handles and errors ------------------------------------------------------------------

// Owns one hid_t and closes it with the matching H5?close.
class H5Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Handle() = default;
  H5Handle(hid_t id, Closer close) : id_(id), close_(close) {}
  H5Handle(H5Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  H5Handle& operator=(H5Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      close_ = o.close_;
    }
    return *this;
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  ~H5Handle() { reset(); }

  hid_t get() const { return id_; }
  hid_t release() { return std::exchange(id_, H5I_INVALID_HID); }  // caller closes it
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

// Turns off HDF5's printing of its error stack for the lifetime of the object: our exceptions
// carry the message instead.
class QuietH5Errors {
 public:
  QuietH5Errors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietH5Errors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietH5Errors(const QuietH5Errors&) = delete;
  QuietH5Errors& operator=(const QuietH5Errors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// The innermost entry of the current HDF5 error stack ("checksum verification failed", ...).
// Call right after the failing HDF5 call: the next call clears the stack.
std::string h5_error_detail() {
  std::string innermost;
  auto walk = [](unsigned, const H5E_error2_t* err, void* out) -> herr_t {
    auto* s = static_cast<std::string*>(out);
    char minor[256] = "";
    H5Eget_msg(err->min_num, nullptr, minor, sizeof minor);
    *s = std::string(err->desc ? err->desc : "") + (minor[0] ? std::string(" (") + minor + ")" : "");
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk, &innermost);
  return innermost.empty() ? "HDF5 error" : innermost;
}

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw std::runtime_error(file + ": " + what);
}

// Throws "<file>: <what>: <HDF5 detail>" when an HDF5 call reports failure (negative result).
hid_t check_id(hid_t id, const std::string& file, const std::string& what) {
  if (id < 0) fail(file, what + ": " + h5_error_detail());
  return id;
}
void check_status(herr_t status, const std::string& file, const std::string& what) {
  if (status < 0) fail(file, what + ": " + h5_error_detail());
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Fixed-length, null-padded UTF-8 string type of exactly `len` bytes (at least 1: HDF5's minimum).
H5Handle string_type(size_t len, const std::string& file) {
  H5Handle t(check_id(H5Tcopy(H5T_C_S1), file, "H5Tcopy"), H5Tclose);
  check_status(H5Tset_size(t.get(), std::max<size_t>(1, len)), file, "H5Tset_size");
  check_status(H5Tset_strpad(t.get(), H5T_STR_NULLPAD), file, "H5Tset_strpad");
  check_status(H5Tset_cset(t.get(), H5T_CSET_UTF8), file, "H5Tset_cset");
  return t;
}

std::string strip_nul_padding(std::string s) {
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

// ---- writing ----------------------------------------------------------------------------------

constexpr hsize_t kMaxChunkElements = hsize_t(1) << 20;  // 4 MiB of float32 per chunk

// Chunk = the whole dataset, shrunk from the outermost dimension inwards until it holds at most
// kMaxChunkElements (Fletcher32 needs a chunked layout; a chunk is also the unit it checks).
std::vector<hsize_t> chunk_dims(const std::vector<hsize_t>& dims) {
  std::vector<hsize_t> chunk = dims;
  auto count = [&] {
    hsize_t n = 1;
    for (hsize_t c : chunk) n *= c;
    return n;
  };
  for (size_t i = 0; i < chunk.size() && count() > kMaxChunkElements; ++i) {
    hsize_t rest = count() / chunk[i];
    chunk[i] = std::max<hsize_t>(1, kMaxChunkElements / rest);
  }
  return chunk;
}

class Writer {
 public:
  explicit Writer(std::string file) : file_(std::move(file)) {}
  const std::string& file() const { return file_; }

  H5Handle create_group(hid_t parent, const std::string& name) {
    // Track creation order so that readers without a table list tensors in the table's order.
    H5Handle gcpl(check_id(H5Pcreate(H5P_GROUP_CREATE), file_, "H5Pcreate"), H5Pclose);
    check_status(H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED),
                 file_, "H5Pset_link_creation_order");
    return H5Handle(check_id(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT),
                             file_, "cannot create group " + name),
                    H5Gclose);
  }

  // A chunked dataset with Fletcher32, written in full from `data` (memory type mem_type).
  void dataset(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type,
               const std::vector<hsize_t>& dims, const void* data) {
    const std::string what = "dataset " + name;
    H5Handle space(check_id(H5Screate_simple(int(dims.size()), dims.data(), nullptr), file_, what),
                   H5Sclose);
    H5Handle dcpl(check_id(H5Pcreate(H5P_DATASET_CREATE), file_, what), H5Pclose);
    std::vector<hsize_t> chunk = chunk_dims(dims);
    check_status(H5Pset_chunk(dcpl.get(), int(chunk.size()), chunk.data()), file_, what + ": H5Pset_chunk");
    check_status(H5Pset_fletcher32(dcpl.get()), file_, what + ": H5Pset_fletcher32");
    H5Handle dset(check_id(H5Dcreate2(loc, name.c_str(), file_type, space.get(), H5P_DEFAULT,
                                      dcpl.get(), H5P_DEFAULT),
                           file_, "cannot create " + what),
                  H5Dclose);
    check_status(H5Dwrite(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), file_,
                 "cannot write " + what);
  }

  void string_dataset(hid_t loc, const std::string& name, const std::string& value) {
    H5Handle t = string_type(value.size(), file_);
    std::string padded = value;
    padded.resize(std::max<size_t>(1, value.size()), '\0');
    dataset(loc, name, t.get(), t.get(), {1}, padded.data());
  }

  template <class T>
  void scalar_dataset(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type, T value) {
    dataset(loc, name, file_type, mem_type, {1}, &value);
  }

  void string_attribute(hid_t loc, const std::string& name, const std::string& value) {
    H5Handle t = string_type(value.size(), file_);
    std::string padded = value;
    padded.resize(std::max<size_t>(1, value.size()), '\0');
    attribute(loc, name, t.get(), t.get(), padded.data());
  }

  void attribute(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type, const void* value) {
    const std::string what = "attribute " + name;
    H5Handle space(check_id(H5Screate(H5S_SCALAR), file_, what), H5Sclose);
    H5Handle attr(check_id(H5Acreate2(loc, name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                           file_, "cannot create " + what),
                  H5Aclose);
    check_status(H5Awrite(attr.get(), mem_type, value), file_, "cannot write " + what);
  }

 private:
  std::string file_;
};

std::string utc_now_iso8601() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void write_checkpoint_file(const std::string& path, const ParamTable& table, const CheckpointState& s) {
  QuietH5Errors quiet;
  Writer w(path);
  H5Handle fapl(check_id(H5Pcreate(H5P_FILE_ACCESS), path, "H5Pcreate"), H5Pclose);
  check_status(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_LATEST), path,
               "H5Pset_libver_bounds");
  check_status(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), path, "H5Pset_fclose_degree");
  H5Handle file(check_id(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), path,
                         "cannot create file"),
                H5Fclose);
  const hid_t root = file.get();
  const std::string version = s.kvtrain_version.empty() ? KVT_VERSION : s.kvtrain_version;
  const std::string time = s.utc_time.empty() ? utc_now_iso8601() : s.utc_time;
  const int32_t format_version = kCheckpointFormatVersion;
  const int32_t world_size = s.world_size;

  // Attributes for people and h5dump; the same values in checksummed datasets under /meta.
  w.string_attribute(root, "format", s.format);
  w.attribute(root, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, &format_version);
  w.attribute(root, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &s.step);
  w.attribute(root, "tokens_seen", H5T_STD_I64LE, H5T_NATIVE_INT64, &s.tokens_seen);
  w.attribute(root, "world_size", H5T_STD_I32LE, H5T_NATIVE_INT32, &world_size);
  w.string_attribute(root, "utc_time", time);
  w.string_attribute(root, "kvtrain_version", version);
  {
    H5Handle meta = w.create_group(root, "meta");
    w.string_dataset(meta.get(), "format", s.format);
    w.scalar_dataset(meta.get(), "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, format_version);
    w.scalar_dataset(meta.get(), "step", H5T_STD_I64LE, H5T_NATIVE_INT64, s.step);
    w.scalar_dataset(meta.get(), "tokens_seen", H5T_STD_I64LE, H5T_NATIVE_INT64, s.tokens_seen);
    w.scalar_dataset(meta.get(), "world_size", H5T_STD_I32LE, H5T_NATIVE_INT32, world_size);
    w.string_dataset(meta.get(), "utc_time", time);
    w.string_dataset(meta.get(), "kvtrain_version", version);
  }
  w.string_dataset(root, "config", s.config_yaml);

  auto write_tensors = [&](hid_t group, const std::vector<float>& buf) {
    for (const ParamInfo& p : table.entries()) {
      std::vector<hsize_t> dims(p.shape.begin(), p.shape.end());
      w.dataset(group, p.name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, dims, buf.data() + p.offset);
    }
  };
  {
    H5Handle model = w.create_group(root, "model");
    write_tensors(model.get(), s.params);
  }
  {
    H5Handle opt = w.create_group(root, "optimizer");
    H5Handle m = w.create_group(opt.get(), "m");
    write_tensors(m.get(), s.adam_m);
    H5Handle v = w.create_group(opt.get(), "v");
    write_tensors(v.get(), s.adam_v);
    w.scalar_dataset(opt.get(), "step", H5T_STD_I64LE, H5T_NATIVE_INT64, s.adam_step);
  }
  {
    H5Handle loader = w.create_group(root, "loader");
    w.scalar_dataset(loader.get(), "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, s.loader_seed);
    w.scalar_dataset(loader.get(), "next_sample", H5T_STD_U64LE, H5T_NATIVE_UINT64, s.loader_next_sample);
  }
  {
    H5Handle rng = w.create_group(root, "rng");
    w.scalar_dataset(rng.get(), "state", H5T_STD_U64LE, H5T_NATIVE_UINT64, s.rng_state);
  }
  if (!s.texts.empty()) {
    H5Handle text = w.create_group(root, "text");
    for (const auto& [name, value] : s.texts) w.string_dataset(text.get(), name, value);
  }
  check_status(H5Fflush(root, H5F_SCOPE_GLOBAL), path, "H5Fflush");
  // Close with a checked call: a failure on the last metadata write (disk full) must throw.
  check_status(H5Fclose(file.release()), path, "cannot close file");
}

// ---- files, fsync, sidecars -------------------------------------------------------------------

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) fail(path, std::string("cannot open for fsync: ") + std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) fail(path, std::string("fsync failed: ") + std::strerror(err));
}

void rename_or_throw(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0)
    fail(from, "cannot rename to " + to + ": " + std::strerror(errno));
}

// Writes dir/name atomically: dir/.name.tmp, fsync, rename, fsync dir.
void write_text_atomic(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string tmp = dir + "/." + name + ".tmp", final_path = dir + "/" + name;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(tmp, "cannot create");
    out << text;
    out.flush();
    if (!out) fail(tmp, "write failed");
  }
  fsync_path(tmp, false);
  rename_or_throw(tmp, final_path);
  fsync_path(dir, true);
}

std::string sidecar_path(const std::string& ckpt) { return ckpt + ".sha256"; }

// Parses a sha256sum line "<64 hex>  <file name>"; returns {hex, name} or throws naming `path`.
std::pair<std::string, std::string> read_hash_line(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "missing (cannot open)");
  std::string line;
  std::getline(in, line);
  std::istringstream ss(line);
  std::string hex, name;
  ss >> hex >> name;
  const bool hex_ok = hex.size() == 64 && std::all_of(hex.begin(), hex.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
  if (!hex_ok || name.empty()) fail(path, "malformed (expected '<sha256 hex>  <file name>')");
  if (!name.empty() && name[0] == '*') name.erase(0, 1);  // sha256sum's binary-mode marker
  return {hex, name};
}

// Whole-file SHA-256 against the sidecar; throws naming the checkpoint on any mismatch. Returns
// the hash.
std::string verify_sidecar(const std::string& path) {
  if (!fs::exists(path)) fail(path, "no such checkpoint file");
  std::pair<std::string, std::string> expected;
  try {
    expected = read_hash_line(sidecar_path(path));
  } catch (const std::exception& e) {
    fail(path, std::string("checksum sidecar unusable: ") + e.what());
  }
  const std::string actual = sha256_file_hex(path);
  if (actual != expected.first)
    fail(path, "SHA-256 mismatch (file " + actual + ", sidecar " + expected.first +
                   "): the file is damaged or incomplete");
  return actual;
}

struct StepFile {
  int64_t step;
  std::string name;  // file name inside run_dir
};

// ckpt_<digits>.h5 only: temporaries start with '.' and end in .tmp, sidecars in .sha256.
std::optional<int64_t> parse_checkpoint_name(const std::string& name) {
  const std::string prefix = "ckpt_", suffix = ".h5";
  if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoll(digits);
}

std::vector<StepFile> checkpoint_files(const std::string& run_dir) {
  std::vector<StepFile> out;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return out;
  for (const fs::directory_entry& e : fs::directory_iterator(run_dir)) {
    const std::string name = e.path().filename().string();
    if (auto step = parse_checkpoint_name(name); step && e.is_regular_file()) out.push_back({*step, name});
  }
  std::sort(out.begin(), out.end(), [](const StepFile& a, const StepFile& b) {
    return a.step != b.step ? a.step > b.step : a.name < b.name;
  });
  return out;
}

// Leftovers of a writer that was killed: .ckpt_*.tmp, .latest.tmp, sidecar temporaries.
void remove_stale_temporaries(const std::string& run_dir) {
  for (const fs::directory_entry& e : fs::directory_iterator(run_dir)) {
    const std::string name = e.path().filename().string();
    const bool ours = name.rfind(".ckpt_", 0) == 0 || name == ".latest.tmp";
    if (ours && name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) fs::remove(e.path());
  }
}

void prune(const std::string& run_dir, int64_t written_step, const RetentionPolicy& policy) {
  // Newest first; checkpoints above the step just written (an abandoned timeline) are left alone.
  std::vector<StepFile> files = checkpoint_files(run_dir);
  int newer_kept = 0;
  bool removed_any = false;
  for (const StepFile& f : files) {
    if (f.step > written_step) continue;
    const bool keep = f.step == written_step || newer_kept < policy.keep_last ||
                      (policy.keep_every > 0 && f.step % policy.keep_every == 0);
    if (newer_kept < policy.keep_last) ++newer_kept;
    if (keep) continue;
    const std::string path = run_dir + "/" + f.name;
    if (std::remove(path.c_str()) != 0) fail(path, std::string("cannot delete: ") + std::strerror(errno));
    removed_any = true;
    checkpoint_fault_point("during_prune");
    std::remove(sidecar_path(path).c_str());
  }
  // Sidecars whose checkpoint is gone (a prune that was interrupted between the two deletions).
  for (const fs::directory_entry& e : fs::directory_iterator(run_dir)) {
    const std::string name = e.path().filename().string();
    const std::string suffix = ".sha256";
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        parse_checkpoint_name(name.substr(0, name.size() - suffix.size())) &&
        !fs::exists(run_dir + "/" + name.substr(0, name.size() - suffix.size()))) {
      fs::remove(e.path());
      removed_any = true;
    }
  }
  if (removed_any) fsync_path(run_dir, true);
}

// ---- reading ----------------------------------------------------------------------------------

class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {
    H5Handle fapl(check_id(H5Pcreate(H5P_FILE_ACCESS), path_, "H5Pcreate"), H5Pclose);
    check_status(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), path_, "H5Pset_fclose_degree");
    file_ = H5Handle(check_id(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, fapl.get()), path_,
                              "not a readable HDF5 file"),
                     H5Fclose);
  }
  const std::string& path() const { return path_; }
  hid_t file() const { return file_.get(); }

  // True when every link of the absolute path `obj` exists; throws when HDF5 cannot tell (a
  // damaged group, e.g. a metadata checksum failure), so damage is never reported as "missing".
  bool exists(const std::string& obj) const {
    for (size_t pos = obj.find('/', 1);; pos = obj.find('/', pos + 1)) {
      const std::string prefix = obj.substr(0, pos);
      const htri_t found = H5Lexists(file_.get(), prefix.c_str(), H5P_DEFAULT);
      if (found < 0) fail(path_, "cannot look up " + prefix + ": " + h5_error_detail());
      if (found == 0) return false;
      if (pos == std::string::npos) return true;
    }
  }

  H5Handle open_dataset(const std::string& name) const {
    if (!exists(name)) fail(path_, "missing dataset " + name);
    return H5Handle(check_id(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT), path_,
                             "cannot open dataset " + name),
                    H5Dclose);
  }

  std::vector<int64_t> shape_of(hid_t dset, const std::string& name) const {
    H5Handle space(check_id(H5Dget_space(dset), path_, "dataspace of " + name), H5Sclose);
    int rank = H5Sget_simple_extent_ndims(space.get());
    if (rank < 0) fail(path_, "cannot read the shape of " + name + ": " + h5_error_detail());
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    if (rank > 0 && H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
      fail(path_, "cannot read the shape of " + name + ": " + h5_error_detail());
    return std::vector<int64_t>(dims.begin(), dims.end());
  }

  void check_type(hid_t dset, const std::string& name, H5T_class_t cls, size_t size) const {
    H5Handle t(check_id(H5Dget_type(dset), path_, "type of " + name), H5Tclose);
    if (H5Tget_class(t.get()) != cls || (size && H5Tget_size(t.get()) != size))
      fail(path_, name + " has an unexpected element type");
  }

  // A float32 tensor of exactly `shape`, read into out[0, numel).
  void tensor(const std::string& name, const std::vector<int64_t>& shape, float* out) const {
    H5Handle d = open_dataset(name);
    std::vector<int64_t> got = shape_of(d.get(), name);
    if (got != shape)
      fail(path_, name + " has shape " + shape_string(got) + " but the model expects " + shape_string(shape));
    check_type(d.get(), name, H5T_FLOAT, 4);
    check_status(H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), path_,
                 "cannot read " + name);
  }

  template <class T>
  T scalar(const std::string& name, hid_t mem_type, H5T_class_t cls) const {
    H5Handle d = open_dataset(name);
    if (shape_of(d.get(), name) != std::vector<int64_t>{1})
      fail(path_, name + " should hold exactly one value");
    check_type(d.get(), name, cls, 0);
    T value{};
    check_status(H5Dread(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value), path_,
                 "cannot read " + name);
    return value;
  }

  std::string string(const std::string& name) const {
    H5Handle d = open_dataset(name);
    if (shape_of(d.get(), name) != std::vector<int64_t>{1})
      fail(path_, name + " should hold exactly one string");
    H5Handle t(check_id(H5Dget_type(d.get()), path_, "type of " + name), H5Tclose);
    if (H5Tget_class(t.get()) != H5T_STRING || H5Tis_variable_str(t.get()) != 0)
      fail(path_, name + " is not a fixed-length string");
    std::string buf(H5Tget_size(t.get()), '\0');
    check_status(H5Dread(d.get(), t.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), path_,
                 "cannot read " + name);
    return strip_nul_padding(std::move(buf));
  }

  // Names of the links in a group, in creation order when tracked, else by name.
  std::vector<std::string> links(const std::string& group) const {
    if (!exists(group)) fail(path_, "missing group " + group);
    H5Handle g(check_id(H5Gopen2(file_.get(), group.c_str(), H5P_DEFAULT), path_, "cannot open group " + group),
               H5Gclose);
    std::vector<std::string> names;
    auto collect = [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
      static_cast<std::vector<std::string>*>(out)->push_back(name);
      return 0;
    };
    if (H5Literate(g.get(), H5_INDEX_CRT_ORDER, H5_ITER_INC, nullptr, collect, &names) < 0) {
      names.clear();
      check_status(H5Literate(g.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect, &names), path_,
                   "cannot list group " + group);
    }
    return names;
  }

  // Format name and version from the checksummed /meta datasets.
  // /meta/format must be `expected` (a kvtrain file of another kind is named as such).
  void check_format(const std::string& expected) const {
    const std::string format = string("/meta/format");
    if (format != expected) {
      if (format == kCheckpointFormatName || format == kGatesFormatName)
        fail(path_, "is a " + format + " file, expected a " + expected + " file (" +
                        (format == kGatesFormatName ? "Fast KVzip gates, see kvtrain gates"
                                                    : "a model checkpoint, see kvtrain train") + ")");
      fail(path_, "not a kvtrain checkpoint (/meta/format is '" + format + "')");
    }
    check_version();
  }
  // Either kind of kvtrain file (verify, inspect).
  void check_any_format() const {
    const std::string format = string("/meta/format");
    if (format != kCheckpointFormatName && format != kGatesFormatName)
      fail(path_, "not a kvtrain checkpoint (/meta/format is '" + format + "')");
    check_version();
  }
  void check_version() const {
    const int32_t version = scalar<int32_t>("/meta/format_version", H5T_NATIVE_INT32, H5T_INTEGER);
    if (version != kCheckpointFormatVersion)
      fail(path_, "checkpoint format_version " + std::to_string(version) + " is not supported (this kvtrain reads " +
                      std::to_string(kCheckpointFormatVersion) + ")");
  }

  // Every link of `group` must name a parameter of the table.
  void check_no_unknown(const std::string& group, const ParamTable& table) const {
    for (const std::string& name : links(group))
      if (!table.contains(name))
        fail(path_, group + "/" + name + " is not a parameter of the model (checkpoint from a different config?)");
  }

 private:
  std::string path_;
  H5Handle file_;
};

void read_tensors(const Reader& r, const std::string& group, const ParamTable& table, std::vector<float>& out) {
  out.assign(table.total(), 0.0f);
  for (const ParamInfo& p : table.entries()) r.tensor(group + "/" + p.name, p.shape, out.data() + p.offset);
  r.check_no_unknown(group, table);
}

// Reads every dataset below `group` in full (HDF5 verifies Fletcher32 on each chunk it reads).
void read_all_datasets(const Reader& r, const std::string& group, size_t* count) {
  for (const std::string& name : r.links(group)) {
    const std::string obj = (group == "/" ? "" : group) + "/" + name;
    H5Handle o(check_id(H5Oopen(r.file(), obj.c_str(), H5P_DEFAULT), r.path(), "cannot open " + obj), H5Oclose);
    const H5I_type_t type = H5Iget_type(o.get());
    if (type == H5I_GROUP) {
      read_all_datasets(r, obj, count);
      continue;
    }
    if (type != H5I_DATASET) continue;  // named datatypes: none are written
    H5Handle d(check_id(H5Dopen2(r.file(), obj.c_str(), H5P_DEFAULT), r.path(), "cannot open " + obj), H5Dclose);
    H5Handle dcpl(check_id(H5Dget_create_plist(d.get()), r.path(), "creation properties of " + obj), H5Pclose);
    bool has_fletcher = false;
    const int nfilters = H5Pget_nfilters(dcpl.get());
    for (int i = 0; i < nfilters; ++i) {
      unsigned flags = 0, config = 0;
      size_t nelmts = 0;
      if (H5Pget_filter2(dcpl.get(), unsigned(i), &flags, &nelmts, nullptr, 0, nullptr, &config) == H5Z_FILTER_FLETCHER32)
        has_fletcher = true;
    }
    if (!has_fletcher) fail(r.path(), obj + " has no Fletcher32 checksum");
    H5Handle t(check_id(H5Dget_type(d.get()), r.path(), "type of " + obj), H5Tclose);
    H5Handle space(check_id(H5Dget_space(d.get()), r.path(), "dataspace of " + obj), H5Sclose);
    const hssize_t n = H5Sget_simple_extent_npoints(space.get());
    if (n < 0) fail(r.path(), "cannot read the size of " + obj);
    std::vector<char> buf(size_t(n) * H5Tget_size(t.get()));
    check_status(H5Dread(d.get(), t.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), r.path(),
                 "cannot read " + obj);
    ++*count;
  }
}

std::optional<std::pair<std::string, std::string>> read_latest_pointer(const std::string& run_dir,
                                                                       std::vector<std::string>* skipped) {
  const std::string latest = run_dir + "/latest";
  if (!fs::exists(latest)) return std::nullopt;
  try {
    return read_hash_line(latest);
  } catch (const std::exception& e) {
    if (skipped) skipped->push_back(e.what());
    return std::nullopt;
  }
}

}  // namespace

// ---- public API -------------------------------------------------------------------------------

void checkpoint_fault_point(const char* point) {
  const char* want = std::getenv("KVT_FAULT");
  if (want && std::strcmp(want, point) == 0) _exit(77);
}

std::string checkpoint_file_name(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "ckpt_%08lld.h5", static_cast<long long>(step));
  return buf;
}

namespace {
// Checks the state against the table, then writes dir/name atomically (temporary, fsync, sidecar,
// rename, fsync the directory). Returns the sidecar's line "<sha256>  <name>\n".
std::string write_committed(const std::string& dir, const std::string& name, const ParamTable& table,
                            const CheckpointState& state) {
  const std::string final_path = dir + "/" + name;
  if (state.step < 0) fail(final_path, "negative step " + std::to_string(state.step));
  for (const auto* buf : {&state.params, &state.adam_m, &state.adam_v})
    if (buf->size() != table.total())
      fail(final_path, "state buffer holds " + std::to_string(buf->size()) + " floats, the parameter table " +
                           std::to_string(table.total()));
  for (const ParamInfo& p : table.entries()) {
    if (p.name.empty() || p.name.find('/') != std::string::npos || p.name == "." || p.name == "..")
      fail(final_path, "parameter name '" + p.name + "' cannot be an HDF5 link name");
    if (p.shape.empty() || std::any_of(p.shape.begin(), p.shape.end(), [](int64_t d) { return d <= 0; }))
      fail(final_path, "parameter " + p.name + " has shape " + shape_string(p.shape) +
                           " (checkpoints need rank >= 1 and positive sizes)");
  }

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) fail(dir, "cannot create the run directory: " + ec.message());
  remove_stale_temporaries(dir);

  const std::string tmp = dir + "/." + name + ".tmp";
  write_checkpoint_file(tmp, table, state);
  fsync_path(tmp, false);
  checkpoint_fault_point("after_tmp_write");

  const std::string hex = sha256_file_hex(tmp);
  const std::string hash_line = hex + "  " + name + "\n";  // `sha256sum -c` format
  write_text_atomic(dir, name + ".sha256", hash_line);
  checkpoint_fault_point("before_rename");

  rename_or_throw(tmp, final_path);
  fsync_path(dir, true);
  return hash_line;
}
}  // namespace

std::string checkpoint_write_atomic(const std::string& run_dir, const ParamTable& table,
                                    const CheckpointState& state, const RetentionPolicy& policy) {
  const std::string name = checkpoint_file_name(state.step);
  if (policy.keep_last < 1)
    fail(run_dir + "/" + name, "retention keep_last must be at least 1 (got " + std::to_string(policy.keep_last) + ")");
  if (policy.keep_every < 0) fail(run_dir + "/" + name, "retention keep_every must be >= 0");
  const std::string hash_line = write_committed(run_dir, name, table, state);
  checkpoint_fault_point("before_latest");
  write_text_atomic(run_dir, "latest", hash_line);
  prune(run_dir, state.step, policy);
  return run_dir + "/" + name;
}

std::string checkpoint_write_file_atomic(const std::string& dir, const std::string& file_name,
                                         const ParamTable& table, const CheckpointState& state) {
  if (file_name.empty() || file_name.find('/') != std::string::npos || file_name == "latest" ||
      parse_checkpoint_name(file_name))
    fail(dir + "/" + file_name, "not a name for a file beside the run's checkpoints");
  write_committed(dir, file_name, table, state);
  return dir + "/" + file_name;
}

const std::string* find_text(const NamedTexts& texts, const std::string& name) {
  for (const auto& [n, v] : texts)
    if (n == name) return &v;
  return nullptr;
}

CheckpointState checkpoint_read(const std::string& path, const ParamTable& expected,
                                const std::string& format) {
  verify_sidecar(path);
  QuietH5Errors quiet;
  Reader r(path);
  r.check_format(format);
  CheckpointState s;
  s.format = format;
  s.step = r.scalar<int64_t>("/meta/step", H5T_NATIVE_INT64, H5T_INTEGER);
  s.tokens_seen = r.scalar<int64_t>("/meta/tokens_seen", H5T_NATIVE_INT64, H5T_INTEGER);
  s.world_size = r.scalar<int32_t>("/meta/world_size", H5T_NATIVE_INT32, H5T_INTEGER);
  s.utc_time = r.string("/meta/utc_time");
  s.kvtrain_version = r.string("/meta/kvtrain_version");
  s.config_yaml = r.string("/config");
  read_tensors(r, "/model", expected, s.params);
  read_tensors(r, "/optimizer/m", expected, s.adam_m);
  read_tensors(r, "/optimizer/v", expected, s.adam_v);
  s.adam_step = r.scalar<int64_t>("/optimizer/step", H5T_NATIVE_INT64, H5T_INTEGER);
  s.loader_seed = r.scalar<uint64_t>("/loader/seed", H5T_NATIVE_UINT64, H5T_INTEGER);
  s.loader_next_sample = r.scalar<uint64_t>("/loader/next_sample", H5T_NATIVE_UINT64, H5T_INTEGER);
  s.rng_state = r.scalar<uint64_t>("/rng/state", H5T_NATIVE_UINT64, H5T_INTEGER);
  if (r.exists("/text"))
    for (const std::string& name : r.links("/text")) s.texts.emplace_back(name, r.string("/text/" + name));
  return s;
}

CheckpointWeights read_model_weights(const std::string& path, const ParamTable& table) {
  const std::string sha256 = verify_sidecar(path);
  QuietH5Errors quiet;
  Reader r(path);
  r.check_format(kCheckpointFormatName);
  CheckpointWeights w;
  w.sha256 = sha256;
  w.step = r.scalar<int64_t>("/meta/step", H5T_NATIVE_INT64, H5T_INTEGER);
  w.config_yaml = r.string("/config");
  read_tensors(r, "/model", table, w.params);
  return w;
}

std::string read_checkpoint_config(const std::string& path) {
  verify_sidecar(path);
  QuietH5Errors quiet;
  Reader r(path);
  r.check_format(kCheckpointFormatName);
  return r.string("/config");
}

ModelCheckpoint load_model_checkpoint(const std::string& path) {
  ModelCheckpoint m;
  m.path = path;
  m.config = parse_run_config(read_checkpoint_config(path), {}, path + ": /config");
  CheckpointWeights w = read_model_weights(path, build_param_table(m.config.model));
  m.sha256 = std::move(w.sha256);
  m.step = w.step;
  m.params = std::move(w.params);
  return m;
}

std::vector<std::string> list_checkpoints(const std::string& run_dir) {
  std::vector<std::string> out;
  for (const StepFile& f : checkpoint_files(run_dir)) out.push_back(run_dir + "/" + f.name);
  return out;
}

std::optional<std::string> find_latest_valid(const std::string& run_dir, const ParamTable& table,
                                             std::vector<std::string>* skipped,
                                             const std::string& format) {
  // `latest` is written after the checkpoint is committed, so the newest committed file is at
  // least as new as the one it names; it is still checked that it exists.
  if (auto latest = read_latest_pointer(run_dir, skipped); latest && !fs::exists(run_dir + "/" + latest->second))
    if (skipped) skipped->push_back(run_dir + "/latest: names " + latest->second + ", which does not exist");
  for (const std::string& path : list_checkpoints(run_dir)) {
    try {
      checkpoint_read(path, table, format);
      return path;
    } catch (const std::exception& e) {
      if (skipped) skipped->push_back(e.what());
    }
  }
  return std::nullopt;
}

bool checkpoint_verify(const std::string& path, std::string* why) {
  try {
    verify_sidecar(path);
    QuietH5Errors quiet;
    Reader r(path);
    r.check_any_format();
    size_t datasets = 0;
    read_all_datasets(r, "/", &datasets);
    // The optimizer moments must mirror the model tensors one for one.
    const std::vector<std::string> model = r.links("/model");
    for (const char* group : {"/optimizer/m", "/optimizer/v"}) {
      const std::vector<std::string> names = r.links(group);
      const std::set<std::string> have(names.begin(), names.end()), want(model.begin(), model.end());
      for (const std::string& name : want)
        if (!have.count(name)) fail(path, std::string("missing dataset ") + group + "/" + name);
      for (const std::string& name : have)
        if (!want.count(name)) fail(path, std::string(group) + "/" + name + " has no tensor /model/" + name);
      for (const std::string& name : model) {
        H5Handle a = r.open_dataset("/model/" + name), b = r.open_dataset(std::string(group) + "/" + name);
        if (r.shape_of(a.get(), name) != r.shape_of(b.get(), name))
          fail(path, std::string(group) + "/" + name + " and /model/" + name + " differ in shape");
      }
    }
    for (const char* scalar : {"/meta/step", "/meta/tokens_seen", "/optimizer/step"})
      r.scalar<int64_t>(scalar, H5T_NATIVE_INT64, H5T_INTEGER);
    for (const char* scalar : {"/loader/seed", "/loader/next_sample", "/rng/state"})
      r.scalar<uint64_t>(scalar, H5T_NATIVE_UINT64, H5T_INTEGER);
    r.string("/config");
    if (why) *why = "ok: SHA-256 matches, " + std::to_string(datasets) + " datasets read with Fletcher32 verified";
    return true;
  } catch (const std::exception& e) {
    if (why) *why = e.what();
    return false;
  }
}

CheckpointSummary read_checkpoint_summary(const std::string& path) {
  QuietH5Errors quiet;
  Reader r(path);
  CheckpointSummary s;
  s.format = r.string("/meta/format");
  s.format_version = r.scalar<int32_t>("/meta/format_version", H5T_NATIVE_INT32, H5T_INTEGER);
  s.step = r.scalar<int64_t>("/meta/step", H5T_NATIVE_INT64, H5T_INTEGER);
  s.tokens_seen = r.scalar<int64_t>("/meta/tokens_seen", H5T_NATIVE_INT64, H5T_INTEGER);
  s.world_size = r.scalar<int32_t>("/meta/world_size", H5T_NATIVE_INT32, H5T_INTEGER);
  s.utc_time = r.string("/meta/utc_time");
  s.kvtrain_version = r.string("/meta/kvtrain_version");
  s.config_yaml = r.string("/config");
  for (const std::string& name : r.links("/model")) {
    H5Handle d = r.open_dataset("/model/" + name);
    CheckpointTensor t;
    t.name = name;
    t.shape = r.shape_of(d.get(), name);
    t.numel = 1;
    for (int64_t dim : t.shape) t.numel *= size_t(dim);
    s.tensors.push_back(std::move(t));
  }
  if (r.exists("/text"))
    for (const std::string& name : r.links("/text")) s.texts.emplace_back(name, r.string("/text/" + name));
  return s;
}


}  // namespace kvt

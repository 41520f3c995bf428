// train/h5_io.h — the HDF5 layer of checkpoints (docs/checkpoint_format.md): owned handles, HDF5
// failures turned into exceptions naming the file, and a writer and a reader of the few object
// kinds a checkpoint holds (chunked Fletcher32 datasets, fixed-length UTF-8 strings, scalar
// attributes). Nothing here knows the checkpoint layout (train/checkpoint.cpp does).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kvt {

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
  QuietH5Errors();
  ~QuietH5Errors();
  QuietH5Errors(const QuietH5Errors&) = delete;
  QuietH5Errors& operator=(const QuietH5Errors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// The innermost entry of the current HDF5 error stack ("checksum verification failed", ...).
// Call right after the failing HDF5 call: the next call clears the stack.
std::string h5_error_detail();

// Throws std::runtime_error "<file>: <what>".
[[noreturn]] void h5_fail(const std::string& file, const std::string& what);
// Throw "<file>: <what>: <HDF5 detail>" when an HDF5 call reports failure (negative result).
hid_t check_id(hid_t id, const std::string& file, const std::string& what);
void check_status(herr_t status, const std::string& file, const std::string& what);

// "[2, 4, 3]".
std::string shape_string(const std::vector<int64_t>& shape);

// Creates objects in an open file; every failure throws naming `file` and the object.
class H5Writer {
 public:
  explicit H5Writer(std::string file) : file_(std::move(file)) {}
  const std::string& file() const { return file_; }

  // A group that tracks creation order, so readers without a table list tensors in write order.
  H5Handle create_group(hid_t parent, const std::string& name);
  // A chunked dataset with Fletcher32, written in full from `data` (memory type mem_type).
  void dataset(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type,
               const std::vector<hsize_t>& dims, const void* data);
  void string_dataset(hid_t loc, const std::string& name, const std::string& value);
  template <class T>
  void scalar_dataset(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type, T value) {
    dataset(loc, name, file_type, mem_type, {1}, &value);
  }
  void string_attribute(hid_t loc, const std::string& name, const std::string& value);
  void attribute(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type, const void* value);

 private:
  std::string file_;
};

// An HDF5 file opened read-only; every failure throws naming the file and the object.
class H5Reader {
 public:
  explicit H5Reader(std::string path);
  const std::string& path() const { return path_; }
  hid_t file() const { return file_.get(); }

  // True when every link of the absolute path `obj` exists; throws when HDF5 cannot tell (a
  // damaged group, e.g. a metadata checksum failure), so damage is never reported as "missing".
  bool exists(const std::string& obj) const;
  H5Handle open_dataset(const std::string& name) const;
  std::vector<int64_t> shape_of(hid_t dset, const std::string& name) const;
  void check_type(hid_t dset, const std::string& name, H5T_class_t cls, size_t size) const;
  // A float32 tensor of exactly `shape`, read into out[0, numel).
  void tensor(const std::string& name, const std::vector<int64_t>& shape, float* out) const;
  template <class T>
  T scalar(const std::string& name, hid_t mem_type, H5T_class_t cls) const {
    H5Handle d = open_dataset(name);
    if (shape_of(d.get(), name) != std::vector<int64_t>{1})
      h5_fail(path_, name + " should hold exactly one value");
    check_type(d.get(), name, cls, 0);
    T value{};
    check_status(H5Dread(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value), path_,
                 "cannot read " + name);
    return value;
  }
  int64_t int64(const std::string& name) const { return scalar<int64_t>(name, H5T_NATIVE_INT64, H5T_INTEGER); }
  uint64_t uint64(const std::string& name) const { return scalar<uint64_t>(name, H5T_NATIVE_UINT64, H5T_INTEGER); }
  int32_t int32(const std::string& name) const { return scalar<int32_t>(name, H5T_NATIVE_INT32, H5T_INTEGER); }
  std::string string(const std::string& name) const;
  // Names of the links in a group, in creation order when tracked, else by name.
  std::vector<std::string> links(const std::string& group) const;
  // Reads every dataset below `group` in full (HDF5 verifies Fletcher32 on each chunk it reads);
  // a dataset without Fletcher32 is an error. Adds the datasets read to *count.
  void read_all_datasets(const std::string& group, size_t* count) const;

 private:
  std::string path_;
  H5Handle file_;
};

}  // namespace kvt

// train/h5_io.cpp — HDF5 handles, errors, writer and reader (train/h5_io.h).
#include "train/h5_io.h"

#include <algorithm>
#include <stdexcept>

namespace kvt {
namespace {
// HDF5 closes what is still open at exit. A file whose close failed (a full disk) stays
// half-closed in the library, and closing it again at exit crashes inside HDF5 (SIGSEGV in
// H5F__close_cb, HDF5 1.10). The process has already reported the failure and removed the file, so
// skip HDF5's exit handler; this must precede every other HDF5 call, hence a static initialiser.
[[maybe_unused]] const bool kNoHdf5Atexit = (H5dont_atexit(), true);
}  // namespace

QuietH5Errors::QuietH5Errors() {
  H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}
QuietH5Errors::~QuietH5Errors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }

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

void h5_fail(const std::string& file, const std::string& what) { throw std::runtime_error(file + ": " + what); }

hid_t check_id(hid_t id, const std::string& file, const std::string& what) {
  if (id < 0) h5_fail(file, what + ": " + h5_error_detail());
  return id;
}
void check_status(herr_t status, const std::string& file, const std::string& what) {
  if (status < 0) h5_fail(file, what + ": " + h5_error_detail());
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

// Fixed-length, null-padded UTF-8 string type of exactly `len` bytes (at least 1: HDF5's minimum).
H5Handle string_type(size_t len, const std::string& file) {
  H5Handle t(check_id(H5Tcopy(H5T_C_S1), file, "H5Tcopy"), H5Tclose);
  check_status(H5Tset_size(t.get(), std::max<size_t>(1, len)), file, "H5Tset_size");
  check_status(H5Tset_strpad(t.get(), H5T_STR_NULLPAD), file, "H5Tset_strpad");
  check_status(H5Tset_cset(t.get(), H5T_CSET_UTF8), file, "H5Tset_cset");
  return t;
}

std::string padded(const std::string& value) {
  std::string p = value;
  p.resize(std::max<size_t>(1, value.size()), '\0');
  return p;
}

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

}  // namespace

// ---- writing ----------------------------------------------------------------------------------

H5Handle H5Writer::create_group(hid_t parent, const std::string& name) {
  H5Handle gcpl(check_id(H5Pcreate(H5P_GROUP_CREATE), file_, "H5Pcreate"), H5Pclose);
  check_status(H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED),
               file_, "H5Pset_link_creation_order");
  return H5Handle(check_id(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT),
                           file_, "cannot create group " + name),
                  H5Gclose);
}

void H5Writer::dataset(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type,
                       const std::vector<hsize_t>& dims, const void* data) {
  const std::string what = "dataset " + name;
  H5Handle space(check_id(H5Screate_simple(int(dims.size()), dims.data(), nullptr), file_, what), H5Sclose);
  H5Handle dcpl(check_id(H5Pcreate(H5P_DATASET_CREATE), file_, what), H5Pclose);
  std::vector<hsize_t> chunk = chunk_dims(dims);
  check_status(H5Pset_chunk(dcpl.get(), int(chunk.size()), chunk.data()), file_, what + ": H5Pset_chunk");
  check_status(H5Pset_fletcher32(dcpl.get()), file_, what + ": H5Pset_fletcher32");
  H5Handle dset(check_id(H5Dcreate2(loc, name.c_str(), file_type, space.get(), H5P_DEFAULT, dcpl.get(),
                                    H5P_DEFAULT),
                         file_, "cannot create " + what),
                H5Dclose);
  check_status(H5Dwrite(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), file_,
               "cannot write " + what);
}

void H5Writer::string_dataset(hid_t loc, const std::string& name, const std::string& value) {
  H5Handle t = string_type(value.size(), file_);
  const std::string p = padded(value);
  dataset(loc, name, t.get(), t.get(), {1}, p.data());
}

void H5Writer::string_attribute(hid_t loc, const std::string& name, const std::string& value) {
  H5Handle t = string_type(value.size(), file_);
  const std::string p = padded(value);
  attribute(loc, name, t.get(), t.get(), p.data());
}

void H5Writer::attribute(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type,
                         const void* value) {
  const std::string what = "attribute " + name;
  H5Handle space(check_id(H5Screate(H5S_SCALAR), file_, what), H5Sclose);
  H5Handle attr(check_id(H5Acreate2(loc, name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                         file_, "cannot create " + what),
                H5Aclose);
  check_status(H5Awrite(attr.get(), mem_type, value), file_, "cannot write " + what);
}

// ---- reading ----------------------------------------------------------------------------------

H5Reader::H5Reader(std::string path) : path_(std::move(path)) {
  H5Handle fapl(check_id(H5Pcreate(H5P_FILE_ACCESS), path_, "H5Pcreate"), H5Pclose);
  check_status(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), path_, "H5Pset_fclose_degree");
  file_ = H5Handle(check_id(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, fapl.get()), path_, "not a readable HDF5 file"),
                   H5Fclose);
}

bool H5Reader::exists(const std::string& obj) const {
  for (size_t pos = obj.find('/', 1);; pos = obj.find('/', pos + 1)) {
    const std::string prefix = obj.substr(0, pos);
    const htri_t found = H5Lexists(file_.get(), prefix.c_str(), H5P_DEFAULT);
    if (found < 0) h5_fail(path_, "cannot look up " + prefix + ": " + h5_error_detail());
    if (found == 0) return false;
    if (pos == std::string::npos) return true;
  }
}

H5Handle H5Reader::open_dataset(const std::string& name) const {
  if (!exists(name)) h5_fail(path_, "missing dataset " + name);
  return H5Handle(check_id(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT), path_, "cannot open dataset " + name),
                  H5Dclose);
}

std::vector<int64_t> H5Reader::shape_of(hid_t dset, const std::string& name) const {
  H5Handle space(check_id(H5Dget_space(dset), path_, "dataspace of " + name), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) h5_fail(path_, "cannot read the shape of " + name + ": " + h5_error_detail());
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0 && H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
    h5_fail(path_, "cannot read the shape of " + name + ": " + h5_error_detail());
  return std::vector<int64_t>(dims.begin(), dims.end());
}

void H5Reader::check_type(hid_t dset, const std::string& name, H5T_class_t cls, size_t size) const {
  H5Handle t(check_id(H5Dget_type(dset), path_, "type of " + name), H5Tclose);
  if (H5Tget_class(t.get()) != cls || (size && H5Tget_size(t.get()) != size))
    h5_fail(path_, name + " has an unexpected element type");
}

void H5Reader::tensor(const std::string& name, const std::vector<int64_t>& shape, float* out) const {
  H5Handle d = open_dataset(name);
  std::vector<int64_t> got = shape_of(d.get(), name);
  if (got != shape)
    h5_fail(path_, name + " has shape " + shape_string(got) + " but the model expects " + shape_string(shape));
  check_type(d.get(), name, H5T_FLOAT, 4);
  check_status(H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), path_, "cannot read " + name);
}

std::string H5Reader::string(const std::string& name) const {
  H5Handle d = open_dataset(name);
  if (shape_of(d.get(), name) != std::vector<int64_t>{1}) h5_fail(path_, name + " should hold exactly one string");
  H5Handle t(check_id(H5Dget_type(d.get()), path_, "type of " + name), H5Tclose);
  if (H5Tget_class(t.get()) != H5T_STRING || H5Tis_variable_str(t.get()) != 0)
    h5_fail(path_, name + " is not a fixed-length string");
  std::string buf(H5Tget_size(t.get()), '\0');
  check_status(H5Dread(d.get(), t.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), path_, "cannot read " + name);
  while (!buf.empty() && buf.back() == '\0') buf.pop_back();  // null padding
  return buf;
}

std::vector<std::string> H5Reader::links(const std::string& group) const {
  if (!exists(group)) h5_fail(path_, "missing group " + group);
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

void H5Reader::read_all_datasets(const std::string& group, size_t* count) const {
  for (const std::string& name : links(group)) {
    const std::string obj = (group == "/" ? "" : group) + "/" + name;
    H5Handle o(check_id(H5Oopen(file(), obj.c_str(), H5P_DEFAULT), path_, "cannot open " + obj), H5Oclose);
    const H5I_type_t type = H5Iget_type(o.get());
    if (type == H5I_GROUP) {
      read_all_datasets(obj, count);
      continue;
    }
    if (type != H5I_DATASET) continue;  // named datatypes: none are written
    H5Handle d(check_id(H5Dopen2(file(), obj.c_str(), H5P_DEFAULT), path_, "cannot open " + obj), H5Dclose);
    H5Handle dcpl(check_id(H5Dget_create_plist(d.get()), path_, "creation properties of " + obj), H5Pclose);
    bool has_fletcher = false;
    const int nfilters = H5Pget_nfilters(dcpl.get());
    for (int i = 0; i < nfilters; ++i) {
      unsigned flags = 0, config = 0;
      size_t nelmts = 0;
      if (H5Pget_filter2(dcpl.get(), unsigned(i), &flags, &nelmts, nullptr, 0, nullptr, &config) ==
          H5Z_FILTER_FLETCHER32)
        has_fletcher = true;
    }
    if (!has_fletcher) h5_fail(path_, obj + " has no Fletcher32 checksum");
    H5Handle t(check_id(H5Dget_type(d.get()), path_, "type of " + obj), H5Tclose);
    H5Handle space(check_id(H5Dget_space(d.get()), path_, "dataspace of " + obj), H5Sclose);
    const hssize_t n = H5Sget_simple_extent_npoints(space.get());
    if (n < 0) h5_fail(path_, "cannot read the size of " + obj);
    std::vector<char> buf(size_t(n) * H5Tget_size(t.get()));
    check_status(H5Dread(d.get(), t.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), path_, "cannot read " + obj);
    ++*count;
  }
}

}  // namespace kvt

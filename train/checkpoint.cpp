// train/checkpoint.cpp — a checkpoint's state to and from its file: the layout of
// docs/checkpoint_format.md (format versions 1 and 2). The HDF5 layer is train/h5_io.h, the commit
// protocol train/checkpoint_commit.h, the run directory's files train/run_dir.h.
#include "train/checkpoint.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <unistd.h>

#include "data/file_commit.h"
#include "model/transformer.h"
#include "train/checkpoint_commit.h"
#include "train/h5_io.h"

#ifndef KVT_VERSION
#define KVT_VERSION "unknown"
#endif

namespace fs = std::filesystem;

namespace kvt {
namespace {

std::string utc_now_iso8601() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Writes the checkpoint file at `path` (a temporary of the commit).
void write_checkpoint_file(const std::string& path, const ParamTable& table, const CheckpointState& s) {
  QuietH5Errors quiet;
  H5Writer w(path);
  H5Handle fapl(check_id(H5Pcreate(H5P_FILE_ACCESS), path, "H5Pcreate"), H5Pclose);
  check_status(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_LATEST), path, "H5Pset_libver_bounds");
  check_status(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), path, "H5Pset_fclose_degree");
  H5Handle file(check_id(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), path, "cannot create file"),
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
    w.scalar_dataset(meta.get(), "global_batch", H5T_STD_I64LE, H5T_NATIVE_INT64, s.global_batch);
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
  if (!s.adam_m.empty()) {  // a weights-only checkpoint (an imported model) has no /optimizer
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
  if (!s.texts.empty()) {
    H5Handle text = w.create_group(root, "text");
    for (const auto& [name, value] : s.texts) w.string_dataset(text.get(), name, value);
  }
  check_status(H5Fflush(root, H5F_SCOPE_GLOBAL), path, "H5Fflush");
  // Close with a checked call: a failure on the last metadata write (disk full) must throw.
  check_status(H5Fclose(file.release()), path, "cannot close file");
}

// ---- reading ----------------------------------------------------------------------------------

// /meta/format must be `expected` (a kvtrain file of another kind is named as such), or either
// kind when `expected` is empty. Returns the format version (1 or 2).
int check_format(const H5Reader& r, const std::string& expected) {
  const std::string format = r.string("/meta/format");
  const bool ours = format == kCheckpointFormatName || format == kGatesFormatName;
  if (!ours) h5_fail(r.path(), "not a kvtrain checkpoint (/meta/format is '" + format + "')");
  if (!expected.empty() && format != expected)
    h5_fail(r.path(), "is a " + format + " file, expected a " + expected + " file (" +
                          (format == kGatesFormatName ? "Fast KVzip gates, see kvtrain gates"
                                                      : "a model checkpoint, see kvtrain train") + ")");
  const int32_t version = r.int32("/meta/format_version");
  if (version < kOldestCheckpointFormatVersion || version > kCheckpointFormatVersion)
    h5_fail(r.path(), "checkpoint format_version " + std::to_string(version) +
                          " is not supported (this kvtrain reads " + std::to_string(kOldestCheckpointFormatVersion) +
                          " to " + std::to_string(kCheckpointFormatVersion) + ")");
  return version;
}

// Sequences per optimizer step. Version 2 stores it; a version-1 model checkpoint derives it from
// its resolved config (batch_size x grad_accum x world_size), a version-1 gate file from
// gates.contexts_per_step (not stored either: 0, which restore does not compare).
int64_t read_global_batch(const H5Reader& r, int version, const std::string& format, int world_size) {
  if (version >= 2) return r.int64("/meta/global_batch");
  if (format != kCheckpointFormatName) return 0;
  const RunConfig c = parse_run_config(r.string("/config"), {}, r.path() + ": /config");
  return static_cast<int64_t>(c.train.batch_size) * c.train.grad_accum * world_size;
}

void read_tensors(const H5Reader& r, const std::string& group, const ParamTable& table, std::vector<float>& out) {
  out.assign(table.total(), 0.0f);
  for (const ParamInfo& p : table.entries()) r.tensor(group + "/" + p.name, p.shape, out.data() + p.offset);
  for (const std::string& name : r.links(group))
    if (!table.contains(name))
      h5_fail(r.path(), group + "/" + name + " is not a parameter of the model (checkpoint from a different config?)");
}

NamedTexts read_texts(const H5Reader& r) {
  NamedTexts texts;
  if (r.exists("/text"))
    for (const std::string& name : r.links("/text")) texts.emplace_back(name, r.string("/text/" + name));
  return texts;
}

// Checks the state against the table (what HDF5 would reject later, named now).
void check_writable(const std::string& final_path, const ParamTable& table, const CheckpointState& state) {
  if (state.step < 0) h5_fail(final_path, "negative step " + std::to_string(state.step));
  const bool weights_only = state.adam_m.empty() && state.adam_v.empty();
  for (const auto* buf : {&state.params, &state.adam_m, &state.adam_v})
    if (buf->size() != table.total() && !(weights_only && buf != &state.params))
      h5_fail(final_path, "state buffer holds " + std::to_string(buf->size()) + " floats, the parameter table " +
                              std::to_string(table.total()));
  for (const ParamInfo& p : table.entries()) {
    if (p.name.empty() || p.name.find('/') != std::string::npos || p.name == "." || p.name == "..")
      h5_fail(final_path, "parameter name '" + p.name + "' cannot be an HDF5 link name");
    if (p.shape.empty() || std::any_of(p.shape.begin(), p.shape.end(), [](int64_t d) { return d <= 0; }))
      h5_fail(final_path, "parameter " + p.name + " has shape " + shape_string(p.shape) +
                              " (checkpoints need rank >= 1 and positive sizes)");
  }
}

// Writes dir/name atomically with its sidecar. Returns the sidecar's line "<sha256>  <name>\n".
std::string write_committed(const std::string& dir, const std::string& name, const ParamTable& table,
                            const CheckpointState& state) {
  const std::string final_path = dir + "/" + name;
  check_writable(final_path, table, state);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) h5_fail(dir, "cannot create the run directory: " + ec.message());
  remove_stale_temporaries(dir);
  // The file's size, for the message of a full disk: three float32 buffers (one without
  // optimizer state) and about 64 kB of metadata and texts.
  const uint64_t buffers = state.adam_m.empty() ? 1 : 3;
  uint64_t bytes = buffers * table.total() * sizeof(float) + state.config_yaml.size() + (uint64_t(64) << 10);
  for (const auto& t : state.texts) bytes += t.second.size();
  return commit_with_sidecar(
      final_path, [&](const std::string& tmp) { write_checkpoint_file(tmp, table, state); }, bytes);
}

}  // namespace

void checkpoint_fault_point(const char* point) {
  const char* want = std::getenv("KVT_FAULT");
  if (want && std::strcmp(want, point) == 0) _exit(77);
}

std::string checkpoint_write_atomic(const std::string& run_dir, const ParamTable& table,
                                    const CheckpointState& state, const RetentionPolicy& policy) {
  const std::string name = checkpoint_file_name(state.step);
  if (policy.keep_last < 1)
    h5_fail(run_dir + "/" + name, "retention keep_last must be at least 1 (got " + std::to_string(policy.keep_last) + ")");
  if (policy.keep_every < 0) h5_fail(run_dir + "/" + name, "retention keep_every must be >= 0");
  const std::string hash_line = write_committed(run_dir, name, table, state);
  checkpoint_fault_point("before_latest");
  write_latest(run_dir, hash_line);
  prune(run_dir, state.step, policy);
  return run_dir + "/" + name;
}

std::string checkpoint_write_file_atomic(const std::string& dir, const std::string& file_name,
                                         const ParamTable& table, const CheckpointState& state) {
  if (file_name.empty() || file_name.find('/') != std::string::npos || file_name == "latest" ||
      parse_checkpoint_name(file_name))
    h5_fail(dir + "/" + file_name, "not a name for a file beside the run's checkpoints");
  write_committed(dir, file_name, table, state);
  return dir + "/" + file_name;
}

const std::string* find_text(const NamedTexts& texts, const std::string& name) {
  for (const auto& [n, v] : texts)
    if (n == name) return &v;
  return nullptr;
}

CheckpointState checkpoint_read(const std::string& path, const ParamTable& expected, const std::string& format) {
  verify_sidecar(path);
  QuietH5Errors quiet;
  H5Reader r(path);
  CheckpointState s;
  s.format_version = check_format(r, format);
  s.format = format;
  s.step = r.int64("/meta/step");
  s.tokens_seen = r.int64("/meta/tokens_seen");
  s.world_size = r.int32("/meta/world_size");
  s.global_batch = read_global_batch(r, s.format_version, format, s.world_size);
  s.utc_time = r.string("/meta/utc_time");
  s.kvtrain_version = r.string("/meta/kvtrain_version");
  s.config_yaml = r.string("/config");
  read_tensors(r, "/model", expected, s.params);
  if (!r.exists("/optimizer"))
    h5_fail(path, "has no optimizer state (/optimizer): a weights-only checkpoint such as an imported "
                  "model cannot be resumed; start a run from it with train.init_from");
  read_tensors(r, "/optimizer/m", expected, s.adam_m);
  read_tensors(r, "/optimizer/v", expected, s.adam_v);
  s.adam_step = r.int64("/optimizer/step");
  s.loader_seed = r.uint64("/loader/seed");
  s.loader_next_sample = r.uint64("/loader/next_sample");
  s.texts = read_texts(r);
  return s;
}

CheckpointWeights read_model_weights(const std::string& path, const ParamTable& table) {
  const std::string sha256 = verify_sidecar(path);
  QuietH5Errors quiet;
  H5Reader r(path);
  check_format(r, kCheckpointFormatName);
  CheckpointWeights w;
  w.sha256 = sha256;
  w.step = r.int64("/meta/step");
  w.config_yaml = r.string("/config");
  read_tensors(r, "/model", table, w.params);
  return w;
}

std::string read_checkpoint_config(const std::string& path) {
  verify_sidecar(path);
  QuietH5Errors quiet;
  H5Reader r(path);
  check_format(r, kCheckpointFormatName);
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

bool checkpoint_verify(const std::string& path, std::string* why) {
  try {
    verify_sidecar(path);
    QuietH5Errors quiet;
    H5Reader r(path);
    const int version = check_format(r, "");
    size_t datasets = 0;
    r.read_all_datasets("/", &datasets);
    // The optimizer moments, when there are any, must mirror the model tensors one for one.
    const std::vector<std::string> model = r.links("/model");
    const bool has_optimizer = r.exists("/optimizer");
    for (const char* group : {"/optimizer/m", "/optimizer/v"}) {
      if (!has_optimizer) break;
      const std::vector<std::string> names = r.links(group);
      const std::set<std::string> have(names.begin(), names.end()), want(model.begin(), model.end());
      for (const std::string& name : want)
        if (!have.count(name)) h5_fail(path, std::string("missing dataset ") + group + "/" + name);
      for (const std::string& name : have)
        if (!want.count(name)) h5_fail(path, std::string(group) + "/" + name + " has no tensor /model/" + name);
      for (const std::string& name : model) {
        H5Handle a = r.open_dataset("/model/" + name), b = r.open_dataset(std::string(group) + "/" + name);
        if (r.shape_of(a.get(), name) != r.shape_of(b.get(), name))
          h5_fail(path, std::string(group) + "/" + name + " and /model/" + name + " differ in shape");
      }
    }
    for (const char* scalar : {"/meta/step", "/meta/tokens_seen"}) r.int64(scalar);
    if (has_optimizer) r.int64("/optimizer/step");
    if (version >= 2) r.int64("/meta/global_batch");
    for (const char* scalar : {"/loader/seed", "/loader/next_sample"}) r.uint64(scalar);
    if (version == 1) r.uint64("/rng/state");  // version 1 stored the seed again there
    r.string("/config");
    if (why)
      *why = "ok: SHA-256 matches, " + std::to_string(datasets) + " datasets read with Fletcher32 verified" +
             (has_optimizer ? "" : "; weights only, no optimizer state");
    return true;
  } catch (const std::exception& e) {
    if (why) *why = e.what();
    return false;
  }
}

CheckpointSummary read_checkpoint_summary(const std::string& path) {
  QuietH5Errors quiet;
  H5Reader r(path);
  CheckpointSummary s;
  s.format = r.string("/meta/format");
  s.format_version = r.int32("/meta/format_version");
  s.step = r.int64("/meta/step");
  s.tokens_seen = r.int64("/meta/tokens_seen");
  s.world_size = r.int32("/meta/world_size");
  if (s.format_version >= 2) s.global_batch = r.int64("/meta/global_batch");
  s.utc_time = r.string("/meta/utc_time");
  s.kvtrain_version = r.string("/meta/kvtrain_version");
  s.config_yaml = r.string("/config");
  s.has_optimizer = r.exists("/optimizer");
  for (const std::string& name : r.links("/model")) {
    H5Handle d = r.open_dataset("/model/" + name);
    CheckpointTensor t;
    t.name = name;
    t.shape = r.shape_of(d.get(), name);
    t.numel = 1;
    for (int64_t dim : t.shape) t.numel *= size_t(dim);
    s.tensors.push_back(std::move(t));
  }
  s.texts = read_texts(r);
  return s;
}

}  // namespace kvt

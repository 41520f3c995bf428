// train/checkpoint.h — HDF5 checkpoints that never lose a run (docs/design.md, "Checkpoints";
// docs/checkpoint_format.md).
//
// One file per checkpoint, run_dir/ckpt_<step, 8 digits>.h5, next to a sha256sum-style sidecar
// ckpt_<step>.h5.sha256; run_dir/latest names the newest committed one with its hash. Writing is
// atomic (temporary name, fsync, rename, fsync the directory); reading verifies the whole-file
// SHA-256 first, then every dataset's Fletcher32 checksum and shape. Only rank 0 calls the writer.
// Format version 2 writes /meta/global_batch and no /rng/state; version-1 files still load.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/params.h"
#include "train/config.h"
#include "train/run_dir.h"

namespace kvt {

// (name, text) pairs stored as /text/<name>; find_text gives the text of a name, or null.
using NamedTexts = std::vector<std::pair<std::string, std::string>>;
const std::string* find_text(const NamedTexts& texts, const std::string& name);

// Everything a resumed run needs. params, adam_m and adam_v are laid out by the ParamTable:
// tensor i at [offset, offset + numel).
struct CheckpointState {
  std::string format = "kvtrain-checkpoint";  // kCheckpointFormatName, or kGatesFormatName
  int format_version = 0;     // as read (1 or 2); the writer always writes kCheckpointFormatVersion
  int64_t step = 0;           // optimizer steps completed
  int64_t tokens_seen = 0;
  int world_size = 1;
  // Sequences per optimizer step (all ranks and micro-steps; gates: contexts per step). Version 1
  // did not store it: read back from a model checkpoint's config, 0 for a version-1 gate file.
  int64_t global_batch = 0;
  std::string config_yaml;    // the resolved run config (to_yaml)
  // adam_m and adam_v both empty: a weights-only checkpoint (`kvtrain import`), written without
  // /optimizer; checkpoint_read refuses to resume from one, read_model_weights reads it.
  std::vector<float> params, adam_m, adam_v;
  int64_t adam_step = 0;
  // The loader's position: its seed and the global sample index the next step starts at (the
  // epoch is next_sample / windows). Nothing else draws random numbers after init.
  uint64_t loader_seed = 0, loader_next_sample = 0;
  std::string kvtrain_version;
  std::string utc_time;       // ISO 8601, e.g. 2025-01-31T12:00:00Z
  // Further named texts, stored as string datasets /text/<name> (gates: the frozen model's
  // config and checksum).
  NamedTexts texts;
};

inline constexpr int kCheckpointFormatVersion = 2;        // what the writer writes
inline constexpr int kOldestCheckpointFormatVersion = 1;  // the oldest the reader reads
inline constexpr const char* kCheckpointFormatName = "kvtrain-checkpoint";
// Fast KVzip gate files (gates.h5 and a gate run's ckpt_<step>.h5): the same layout, with the gate
// parameter table under /model (train/gate_trainer.h).
inline constexpr const char* kGatesFormatName = "kvtrain-gates";

// Writes run_dir/ckpt_<step>.h5 atomically, updates `latest`, then prunes by the policy (never the
// checkpoint just written, never before it is committed). Creates run_dir if needed. Returns the
// path written. Throws std::runtime_error naming the file on any failure; on a full disk, one line
// "<file>: no space left on device (needs N, M free)", the temporary removed and the earlier
// checkpoints and `latest` untouched.
std::string checkpoint_write_atomic(const std::string& run_dir, const ParamTable& table,
                                    const CheckpointState& state, const RetentionPolicy& policy);
// Writes dir/file_name (and its .sha256 sidecar) with the same atomic protocol, leaving `latest`
// and other checkpoints alone (gates.h5 next to a gate run's checkpoints). Returns the path.
std::string checkpoint_write_file_atomic(const std::string& dir, const std::string& file_name,
                                         const ParamTable& table, const CheckpointState& state);

// Verifies the whole-file SHA-256 against the sidecar, then reads everything, checking each
// dataset against `expected` (missing, wrong shape, unknown parameters are errors naming the file,
// the dataset and both shapes). A file of another format (/meta/format) is an error naming both.
CheckpointState checkpoint_read(const std::string& path, const ParamTable& expected,
                                const std::string& format = kCheckpointFormatName);

// Weights only (for train.init_from: a new run with a fresh optimizer), checksum verified.
struct CheckpointWeights {
  std::string sha256;  // of the whole file, verified against its sidecar
  int64_t step = 0;
  std::string config_yaml;
  std::vector<float> params;  // laid out by the table passed in
};
CheckpointWeights read_model_weights(const std::string& path, const ParamTable& table);

// The resolved config stored in a checkpoint (checksum verified), e.g. to build its ParamTable.
std::string read_checkpoint_config(const std::string& path);

// A trained model read back from its checkpoint (checksum verified): the resolved run config and
// the weights, laid out by build_param_table(config.model) (generate, export, eval, gates).
struct ModelCheckpoint {
  std::string path, sha256;
  int64_t step = 0;
  RunConfig config;
  std::vector<float> params;
};
ModelCheckpoint load_model_checkpoint(const std::string& path);

// The newest checkpoint of run_dir that verifies and reads against `table`, or nullopt if none
// does. Each damaged checkpoint passed over adds one message ("<path>: <why>") to *skipped.
std::optional<std::string> find_latest_valid(const std::string& run_dir, const ParamTable& table,
                                             std::vector<std::string>* skipped,
                                             const std::string& format = kCheckpointFormatName);

// Without a table: whole-file checksum, format attributes, every dataset readable (Fletcher32
// checked) and every /model tensor matched by /optimizer/m and /optimizer/v of the same shape.
bool checkpoint_verify(const std::string& path, std::string* why);

// What `kvtrain inspect` prints; read without verification (call checkpoint_verify for that).
struct CheckpointTensor {
  std::string name;
  std::vector<int64_t> shape;
  size_t numel = 0;
};
struct CheckpointSummary {
  std::string format;
  int format_version = 0;
  int64_t step = 0, tokens_seen = 0;
  int world_size = 0;
  int64_t global_batch = 0;  // 0 when not stored (version 1)
  std::string utc_time, kvtrain_version, config_yaml;
  bool has_optimizer = true;  // false for a weights-only checkpoint (an imported model)
  std::vector<CheckpointTensor> tensors;  // /model, in the order written (the table's order)
  NamedTexts texts;  // /text/<name>
};
CheckpointSummary read_checkpoint_summary(const std::string& path);

// Crash-safety tests: when the environment variable KVT_FAULT equals `point`, the process ends
// at once with _exit(77), as if killed there. Points used by the writer: after_tmp_write,
// before_rename, before_latest, during_prune.
void checkpoint_fault_point(const char* point);

}  // namespace kvt

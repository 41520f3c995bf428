// train/run_dir.h — the files of a run directory (docs/checkpoint_format.md): checkpoint names
// ckpt_<step, 8 digits>.h5, retention (prune), stale temporaries of a killed writer, and the
// `latest` pointer as read back.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kvt {

struct RetentionPolicy {
  int keep_last = 3;       // newest checkpoints kept (>= 1)
  int64_t keep_every = 0;  // also keep steps that are multiples of this; 0 = none
};

// "ckpt_00000042.h5": the step zero-padded to 8 digits so names sort like steps.
std::string checkpoint_file_name(int64_t step);
// The step of a name ckpt_<digits>.h5, or nullopt (temporaries, sidecars, other files).
std::optional<int64_t> parse_checkpoint_name(const std::string& name);

// Checkpoint files of run_dir (full paths), newest step first. Temporary files are never listed.
std::vector<std::string> list_checkpoints(const std::string& run_dir);

// Removes the leftovers of a writer that was killed: .ckpt_*.tmp, .latest.tmp, .gates.h5*.tmp.
void remove_stale_temporaries(const std::string& run_dir);

// Deletes checkpoints (and their sidecars) the policy does not keep, never `written_step` and
// never a newer one (an abandoned timeline); also sidecars whose checkpoint is gone. Fault point:
// during_prune.
void prune(const std::string& run_dir, int64_t written_step, const RetentionPolicy& policy);

// run_dir/latest as {hex, name}; nullopt when absent or unreadable (then *skipped says why).
std::optional<std::pair<std::string, std::string>> read_latest_pointer(const std::string& run_dir,
                                                                       std::vector<std::string>* skipped);

}  // namespace kvt

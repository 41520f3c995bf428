// train/run_dir.cpp — checkpoint names, retention and the newest valid checkpoint
// (train/run_dir.h, train/checkpoint.h).
#include "train/run_dir.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "data/file_commit.h"
#include "train/checkpoint.h"
#include "train/checkpoint_commit.h"

namespace fs = std::filesystem;

namespace kvt {
namespace {

struct StepFile {
  int64_t step;
  std::string name;  // file name inside run_dir
};

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

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::string checkpoint_file_name(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "ckpt_%08lld.h5", static_cast<long long>(step));
  return buf;
}

std::optional<int64_t> parse_checkpoint_name(const std::string& name) {
  const std::string prefix = "ckpt_", suffix = ".h5";
  if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      !ends_with(name, suffix))
    return std::nullopt;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoll(digits);
}

std::vector<std::string> list_checkpoints(const std::string& run_dir) {
  std::vector<std::string> out;
  for (const StepFile& f : checkpoint_files(run_dir)) out.push_back(run_dir + "/" + f.name);
  return out;
}

void remove_stale_temporaries(const std::string& run_dir) {
  for (const fs::directory_entry& e : fs::directory_iterator(run_dir)) {
    const std::string name = e.path().filename().string();
    const bool ours = name.rfind(".ckpt_", 0) == 0 || name.rfind(".gates.h5", 0) == 0 || name == ".latest.tmp";
    if (ours && ends_with(name, ".tmp")) fs::remove(e.path());
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
    if (std::remove(path.c_str()) != 0)
      throw std::runtime_error(path + ": cannot delete: " + std::strerror(errno));
    removed_any = true;
    checkpoint_fault_point("during_prune");
    std::remove(sidecar_path(path).c_str());
  }
  // Sidecars whose checkpoint is gone (a prune that was interrupted between the two deletions).
  const std::string suffix = ".sha256";
  for (const fs::directory_entry& e : fs::directory_iterator(run_dir)) {
    const std::string name = e.path().filename().string();
    if (!ends_with(name, suffix)) continue;
    const std::string ckpt = name.substr(0, name.size() - suffix.size());
    if (parse_checkpoint_name(ckpt) && !fs::exists(run_dir + "/" + ckpt)) {
      fs::remove(e.path());
      removed_any = true;
    }
  }
  if (removed_any) fsync_path(run_dir, true);
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

std::optional<std::string> find_latest_valid(const std::string& run_dir, const ParamTable& table,
                                             std::vector<std::string>* skipped, const std::string& format) {
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

}  // namespace kvt

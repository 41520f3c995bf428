// data/loader.cpp — glob expansion and the epoch-permuted window loader.
#include "data/loader.h"

#include <glob.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "kernels/common/rng.h"

namespace kvt {

namespace {
constexpr uint64_t kEpochPermutationPurpose = 2;  // derive_seed purpose id for data order
}

std::vector<std::string> expand_glob(const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &g);
  std::vector<std::string> files;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  if (rc == GLOB_NOMATCH || (rc == 0 && files.empty()))
    throw std::runtime_error("no file matches the pattern '" + pattern + "'");
  if (rc == GLOB_ABORTED)
    throw std::runtime_error("no file matches the pattern '" + pattern +
                             "' (a directory in it is missing or unreadable)");
  if (rc != 0)
    throw std::runtime_error("cannot expand the pattern '" + pattern + "' (glob error " +
                             std::to_string(rc) + ")");
  std::sort(files.begin(), files.end());
  return files;
}

WindowLoader::WindowLoader(const std::vector<std::string>& files, int seq_len, int vocab_size,
                           uint64_t seed, bool shuffle, uint64_t max_windows)
    : files_(files), seq_len_(seq_len), seed_(seed), shuffle_(shuffle) {
  if (seq_len < 1) throw std::runtime_error("loader: bad seq_len " + std::to_string(seq_len));
  if (files.empty()) throw std::runtime_error("loader: no shard files given");
  const uint64_t wlen = static_cast<uint64_t>(seq_len) + 1;
  shards_.reserve(files.size());
  first_window_.reserve(files.size() + 1);
  for (const auto& f : files) {
    shards_.emplace_back(f, vocab_size);
    first_window_.push_back(num_windows_);
    num_windows_ += shards_.back().size() / wlen;
    total_tokens_ += shards_.back().size();
  }
  first_window_.push_back(num_windows_);
  if (num_windows_ == 0) {
    std::string names;
    for (const auto& f : files) names += (names.empty() ? "" : ", ") + f;
    throw std::runtime_error("loader: no window of seq_len + 1 = " + std::to_string(wlen) +
                             " tokens fits in any shard (" + std::to_string(total_tokens_) +
                             " tokens in " + names + ")");
  }
  all_windows_ = num_windows_;
  if (max_windows > 0) num_windows_ = std::min(num_windows_, max_windows);
}

const std::vector<uint64_t>& WindowLoader::permutation(uint64_t epoch) {
  if (epoch != cached_epoch_) {
    // Fisher-Yates, driven by an RNG seeded from (seed, epoch) alone: any rank, at any time,
    // rebuilds the same order without state.
    perm_.resize(num_windows_);
    std::iota(perm_.begin(), perm_.end(), uint64_t{0});
    Rng rng(derive_seed(seed_, kEpochPermutationPurpose, epoch));
    for (uint64_t i = num_windows_ - 1; i > 0; --i) std::swap(perm_[i], perm_[rng.below(i + 1)]);
    cached_epoch_ = epoch;
  }
  return perm_;
}

uint64_t WindowLoader::window_of_sample(uint64_t g) {
  const uint64_t within = g % num_windows_;
  return shuffle_ ? permutation(g / num_windows_)[within] : within;
}

void WindowLoader::read_window(uint64_t w, int32_t* out) const {
  if (w >= num_windows_)
    throw std::runtime_error("loader: window " + std::to_string(w) + " out of range (" +
                             std::to_string(num_windows_) + " windows)");
  w = w * all_windows_ / num_windows_;  // the spread subset (w itself when all are used)
  // The shard holding w: the last one whose first window is <= w.
  const auto it = std::upper_bound(first_window_.begin(), first_window_.end(), w);
  const size_t s = static_cast<size_t>(it - first_window_.begin()) - 1;
  const size_t wlen = static_cast<size_t>(seq_len_) + 1;
  shards_[s].read((w - first_window_[s]) * wlen, wlen, out);
}

void WindowLoader::read_samples(uint64_t g0, int n, int32_t* out) {
  if (n < 0) throw std::runtime_error("loader: negative sample count " + std::to_string(n));
  const size_t wlen = static_cast<size_t>(seq_len_) + 1;
  for (int i = 0; i < n; ++i)
    read_window(window_of_sample(g0 + static_cast<uint64_t>(i)),
                out + static_cast<size_t>(i) * wlen);
}

void split_inputs_targets(const int32_t* windows, int n, int T, int32_t* inputs, int32_t* targets) {
  const size_t t = static_cast<size_t>(T);
  for (size_t b = 0; b < static_cast<size_t>(n); ++b) {
    const int32_t* w = windows + b * (t + 1);
    std::memcpy(inputs + b * t, w, t * sizeof(int32_t));
    std::memcpy(targets + b * t, w + 1, t * sizeof(int32_t));
  }
}

}  // namespace kvt

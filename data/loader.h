// data/loader.h — the distributed, resumable window loader (docs/design.md, "Data").
//
// The training stream is cut into non-overlapping windows of seq_len + 1 tokens (inputs are the
// first seq_len, targets the last seq_len); windows never cross a shard boundary and the tail of a
// shard shorter than a window is dropped. Epoch e visits every window once, in a permutation
// drawn from (seed, e). Sample g of the run is window perm_e[g mod count] with e = g / count.
//
// Distributed semantics: in optimizer step s with global batch Gb = B * grad_accum * world,
// micro-step m of rank r reads the B global samples starting at
//     s * Gb + (m * world + r) * B
// Every rank therefore reads a disjoint slice of the same global sequence, and reading 2B samples
// at once equals reading them as two calls of B: two ranks with batch B see exactly what one rank
// with batch 2B sees. The loader keeps no position: its seed and the next global sample are all a
// checkpoint needs, and a resume on any world size that divides Gb continues the same sequence
// with no sample repeated or skipped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/shard.h"

namespace kvt {

// Files matching a glob pattern, sorted; throws naming the pattern when nothing matches.
std::vector<std::string> expand_glob(const std::string& pattern);

class WindowLoader {
 public:
  // Opens (and validates) every shard. Throws when no shard holds a full window.
  // max_windows > 0: only that many windows, spread evenly over all of them (window w reads
  // window floor(w x all / max_windows) of the shards), e.g. a fixed training set of contexts.
  WindowLoader(const std::vector<std::string>& files, int seq_len, int vocab_size, uint64_t seed,
               bool shuffle, uint64_t max_windows = 0);

  uint64_t num_windows() const { return num_windows_; }
  int seq_len() const { return seq_len_; }
  int window_len() const { return seq_len_ + 1; }
  uint64_t seed() const { return seed_; }
  uint64_t epoch_of(uint64_t sample) const { return sample / num_windows_; }
  uint64_t tokens() const { return total_tokens_; }  // in all shards, tails included
  const std::vector<std::string>& files() const { return files_; }

  // Window index (0 .. num_windows-1, in shard order) that global sample g reads.
  uint64_t window_of_sample(uint64_t g);
  // Copies window w (seq_len + 1 tokens) to out.
  void read_window(uint64_t w, int32_t* out) const;
  // Fills out[n * (seq_len + 1)] with global samples g0 .. g0 + n - 1 (may cross epochs).
  void read_samples(uint64_t g0, int n, int32_t* out);

 private:
  const std::vector<uint64_t>& permutation(uint64_t epoch);

  std::vector<std::string> files_;
  std::vector<Shard> shards_;
  std::vector<uint64_t> first_window_;  // first global window index of each shard, + total
  int seq_len_;
  uint64_t seed_;
  bool shuffle_;
  uint64_t num_windows_ = 0, all_windows_ = 0;
  uint64_t total_tokens_ = 0;
  uint64_t cached_epoch_ = UINT64_MAX;
  std::vector<uint64_t> perm_;  // permutation of cached_epoch_ (empty without shuffle)
};

// Splits n windows of T + 1 tokens into inputs [n, T] = w[0:T] and targets [n, T] = w[1:T+1].
void split_inputs_targets(const int32_t* windows, int n, int T, int32_t* inputs,
                          int32_t* targets);

}  // namespace kvt

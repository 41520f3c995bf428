// train/context_cache.h — the gate trainer's optional on-disk cache of each context's KVzip
// targets and gate inputs (gates.cache_dir). Every file is written through data/file_commit.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvt {

// One file per context, <dir>/<split>_<window>.bin: a header of 8 int64 (magic, P, C, layers,
// decisions, 0, 0, 0), the gate inputs [layers, P, C] and the targets [layers, decisions, P], all
// little-endian float32. <dir>/KEY says what they were computed from (the model's SHA-256, the
// context length, the repeat prompt's ids, the shards); a directory with another KEY is an error,
// never reused. Files are written to a temporary name and renamed, so a killed run leaves none
// half-written; a file of the wrong size is an error naming it.
class ContextCache {
 public:
  // Creates dir and its KEY, or checks that an existing KEY equals `key` (throws naming gates.cache_dir).
  ContextCache(std::string dir, const std::string& key, int64_t P, int64_t C, int64_t layers, int64_t M);
  // Reads context `name` into hidden [layers, P, C] and targets [layers, M, P]; false when absent.
  bool load(const std::string& name, std::vector<float>& hidden, std::vector<float>& targets) const;
  void store(const std::string& name, const std::vector<float>& hidden, const std::vector<float>& targets) const;

 private:
  static constexpr int64_t kMagic = 0x6b767a6970637478;  // "kvzipctx"
  std::string dir_;
  int64_t header_[8];
};

}  // namespace kvt

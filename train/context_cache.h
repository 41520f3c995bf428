// train/context_cache.h — the gate trainer's optional on-disk cache of each context's KVzip
// targets and gate inputs (gates.cache_dir). Every file is written through data/file_commit.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvt {

// One file per context, <dir>/<split>_<window>.bin: a header of 8 int64 (magic, P, C, layers,
// decisions, 0, 0, 0), the gate inputs [layers, P, C] in bfloat16 and the targets
// [layers, decisions, P] in float32, little-endian: 2 L P C + 4 L M P bytes (SmolLM2-135M, 1024
// tokens: 35.4 MB + 0.4 MB, where float32 inputs took 71 MB). The trainer rounds the gate inputs
// to bfloat16 whether or not it caches, so a run with the cache equals one without, bitwise.
// <dir>/KEY says what they were computed from (the digest of the model's weights, the context
// length, the repeat prompt's ids, the shards); a directory with another KEY is an error, never
// reused. Files are written to a temporary name and renamed, so a killed run leaves none
// half-written; a file of the wrong size is an error naming it.
class ContextCache {
 public:
  // Creates dir and its KEY, or checks that an existing KEY equals `key` or one of `also` (an
  // older form of the same key; throws naming gates.cache_dir).
  ContextCache(std::string dir, const std::string& key, int64_t P, int64_t C, int64_t layers, int64_t M,
               const std::vector<std::string>& also = {});
  // Reads context `name` into hidden [layers, P, C] (bf16 bits) and targets [layers, M, P];
  // false when absent.
  bool load(const std::string& name, std::vector<uint16_t>& hidden, std::vector<float>& targets) const;
  void store(const std::string& name, const std::vector<uint16_t>& hidden,
             const std::vector<float>& targets) const;
  // Bytes of one context file.
  int64_t file_bytes() const;

 private:
  static constexpr int64_t kMagic = 0x6b767a6970313678;  // "kvzip16x": bf16 gate inputs
  std::string dir_;
  int64_t header_[8];
};

}  // namespace kvt

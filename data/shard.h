// data/shard.h — llm.c token shards (docs/design.md, "Data").
//
// Layout: a header of 256 int32 (1024 bytes), then the tokens, little-endian.
//   header[0] = 20240520, header[1] = 1: uint16 tokens (vocab <= 65536)
//   header[0] = 20240801, header[1] = 7: uint32 tokens
//   header[2] = number of tokens
// The file size must equal 1024 + token_size * count exactly, so data prepared for llm.c works here
// unchanged and a truncated or appended-to file is caught on open.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace kvt {

inline constexpr int32_t kShardMagicU16 = 20240520;
inline constexpr int32_t kShardMagicU32 = 20240801;
inline constexpr int32_t kShardVersionU16 = 1;
inline constexpr int32_t kShardVersionU32 = 7;
inline constexpr size_t kShardHeaderInts = 256;
inline constexpr size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);

// The version `prepare --format auto` picks: uint16 when every id fits, else uint32.
inline int32_t shard_version_for_vocab(int64_t vocab_size) {
  return vocab_size <= 65536 ? kShardVersionU16 : kShardVersionU32;
}

// Writes a shard (via a temporary file renamed into place). version 1 (uint16) requires every
// token < 65536; version 7 (uint32) takes any. Throws std::runtime_error naming the path.
void write_shard(const std::string& path, std::span<const uint32_t> tokens, int32_t version);

// A read-only, memory-mapped shard, fully validated on open against vocab_size: magic, version,
// exact file size, and every token < vocab_size. Errors name the file and the byte offset.
class Shard {
 public:
  Shard(const std::string& path, int64_t vocab_size);
  ~Shard();
  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&& other) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::string& path() const { return path_; }
  int32_t version() const { return version_; }
  size_t token_bytes() const { return token_bytes_; }  // 2 or 4
  size_t size() const { return count_; }                // number of tokens

  uint32_t operator[](size_t i) const {
    return token_bytes_ == 2 ? reinterpret_cast<const uint16_t*>(data_)[i]
                             : reinterpret_cast<const uint32_t*>(data_)[i];
  }
  // Copies tokens [begin, begin + n) to out (bounds-checked).
  void read(size_t begin, size_t n, int32_t* out) const;

 private:
  void release() noexcept;

  std::string path_;
  void* map_ = nullptr;  // the whole file
  size_t map_bytes_ = 0;
  const unsigned char* data_ = nullptr;  // first token
  size_t count_ = 0;
  size_t token_bytes_ = 0;
  int32_t version_ = 0;
};

}  // namespace kvt

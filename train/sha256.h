// train/sha256.h — SHA-256 (FIPS 180-4), small and self-contained: the whole-file checksum of
// checkpoints (DESIGN.md §7). Output matches `sha256sum`.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace kvt {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  // Pads, returns the 32-byte digest. The object must not be updated afterwards.
  std::array<uint8_t, 32> finish();

 private:
  void compress(const uint8_t* block);  // one 64-byte block into state_

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;      // bytes in buffer_
  uint64_t total_bytes_ = 0;
};

// Lower-case hexadecimal, 64 characters.
std::string to_hex(const std::array<uint8_t, 32>& digest);
std::string sha256_hex(const void* data, size_t n);
// SHA-256 of a whole file, streamed; throws std::runtime_error naming the file if it cannot be read.
std::string sha256_file_hex(const std::string& path);

}  // namespace kvt

// train/checkpoint_commit.h — committing a checkpoint file (docs/checkpoint_format.md): the
// whole-file SHA-256 (libcrypto), its sha256sum-style sidecar <file>.sha256, the `latest` pointer,
// and the atomic write protocol of data/file_commit.h with the crash-test fault points.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace kvt {

// Lower-case hex SHA-256 (64 characters), matching `sha256sum`.
std::string sha256_hex(const void* data, size_t n);
// SHA-256 of a whole file, streamed; throws std::runtime_error naming the file if it cannot be read.
std::string sha256_file_hex(const std::string& path);

std::string sidecar_path(const std::string& file);  // file + ".sha256"

// Parses a sha256sum line "<64 hex>  <file name>" from `path`; returns {hex, name} or throws naming
// `path`.
std::pair<std::string, std::string> read_hash_line(const std::string& path);

// Whole-file SHA-256 of `path` against its sidecar; throws naming the file on any mismatch.
// Returns the hash.
std::string verify_sidecar(const std::string& path);

// Commits `path` with its sidecar: write(tmp) writes the temporary, which is fsynced and hashed,
// then the sidecar (atomic), then the rename and a directory fsync. On any failure the temporary
// is removed and the previous files are left as they were; when the disk is full (errno ENOSPC,
// or less free than `bytes_needed`, the expected size) the error is the one line
// "<temporary>: no space left on device (needs N, M free)". Returns the sidecar's line
// "<sha256>  <name>\n". Fault points: after_tmp_write, before_rename.
std::string commit_with_sidecar(const std::string& path, const std::function<void(const std::string&)>& write,
                                uint64_t bytes_needed);

// Points dir/latest at a committed checkpoint (its sidecar line), atomically.
void write_latest(const std::string& dir, const std::string& hash_line);

}  // namespace kvt

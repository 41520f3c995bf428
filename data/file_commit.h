// data/file_commit.h — the one way kvtrain writes a file that must never be seen half-written:
// checkpoints, gate files, the gate context cache, shards, prepare's outputs, exports.
//
// Protocol: write dir/.<name>.tmp, fsync it, rename it to dir/<name>, fsync dir. A reader sees
// the old file or the new one, never a torn one. The temporary is removed on every failure path
// (RAII), so a full disk or an exception leaves nothing behind.
//
// Write errors are reported as one line naming the file; ENOSPC (and EDQUOT) also give the bytes
// the write needed and the bytes free on that filesystem:
//   "runs/x/.ckpt_00000010.h5.tmp: no space left on device (needs 12.3 MB, 4.1 MB free)"
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kvt {

// A temporary file beside `path` that becomes `path` on commit(). Nothing is opened here: the
// caller writes tmp_path() with whatever writer it has (stdio, ofstream, HDF5).
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // removes the temporary unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& path() const { return path_; }
  const std::string& tmp_path() const { return tmp_; }
  // fsync the temporary, rename it to path(), fsync the directory. Throws naming the file.
  void commit();

 private:
  std::string path_, tmp_;
  bool committed_ = false;
};

// dir/.<name>.tmp for path dir/<name>: the temporary name AtomicFile uses (and cleanup looks for).
std::string temporary_path_for(const std::string& path);

// The whole file; throws "<path>: cannot open" / "<path>: read error".
std::string read_whole_file(const std::string& path);

// Writes `bytes` to `path` through an AtomicFile.
void write_file_atomic(const std::string& path, std::string_view bytes);

// fsync a file or a directory; throws naming the path.
void fsync_path(const std::string& path, bool directory);

// Bytes free for an unprivileged writer on the filesystem holding `path` (or its nearest existing
// parent); 0 when unknown.
uint64_t free_bytes(const std::string& path);

// "12.3 MB" (decimal units, one decimal), for messages.
std::string format_bytes(uint64_t bytes);

// Throws std::runtime_error "<path>: <what>: <strerror(err)>"; for ENOSPC/EDQUOT the message is
// "<path>: no space left on device (needs <bytes_needed>, <free> free)" (the needs part only when
// bytes_needed > 0).
[[noreturn]] void throw_write_error(const std::string& path, const std::string& what, int err,
                                    uint64_t bytes_needed = 0);

}  // namespace kvt

// data/shard.cpp — writing and mmap-reading llm.c token shards.
#include "data/shard.h"

#include "data/file_commit.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

namespace kvt {

static_assert(std::endian::native == std::endian::little, "shards are little-endian");

namespace {

std::runtime_error shard_error(const std::string& path, const std::string& what) {
  return std::runtime_error("shard " + path + ": " + what);
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// Index of the first token >= limit in tokens[0, n), or n. Chunked max so the common (valid)
// case is a vectorised pass; only a chunk with a bad token is scanned element by element.
template <typename T>
size_t first_token_at_least(const T* tokens, size_t n, uint64_t limit) {
  constexpr size_t kChunk = 4096;
  for (size_t c = 0; c < n; c += kChunk) {
    const size_t e = std::min(n, c + kChunk);
    T m = 0;
    for (size_t i = c; i < e; ++i) m = std::max(m, tokens[i]);
    if (static_cast<uint64_t>(m) >= limit) {
      for (size_t i = c; i < e; ++i)
        if (static_cast<uint64_t>(tokens[i]) >= limit) return i;
    }
  }
  return n;
}

}  // namespace

void write_shard(const std::string& path, std::span<const uint32_t> tokens, int32_t version) {
  if (version != kShardVersionU16 && version != kShardVersionU32)
    throw shard_error(path, "cannot write version " + std::to_string(version) +
                                " (1 = uint16 tokens, 7 = uint32 tokens)");
  if (tokens.size() > static_cast<size_t>(INT32_MAX))
    throw shard_error(path, std::to_string(tokens.size()) +
                                " tokens do not fit the int32 count of the header");
  std::vector<int32_t> header(kShardHeaderInts, 0);
  header[0] = version == kShardVersionU16 ? kShardMagicU16 : kShardMagicU32;
  header[1] = version;
  header[2] = static_cast<int32_t>(tokens.size());

  // Through data/file_commit.h: the temporary goes on every failure (a bad token too), and a
  // full disk names the shard, its size and the bytes free.
  const uint64_t total = kShardHeaderBytes + tokens.size() * (version == kShardVersionU16 ? 2 : 4);
  AtomicFile file(path);
  {
    std::unique_ptr<std::FILE, FileCloser> f(std::fopen(file.tmp_path().c_str(), "wb"));
    if (!f) throw_write_error(path, "cannot create " + file.tmp_path(), errno, total);
    auto put = [&](const void* p, size_t bytes) {
      if (bytes && std::fwrite(p, 1, bytes, f.get()) != bytes) throw_write_error(path, "write failed", errno, total);
    };
    put(header.data(), header.size() * sizeof(int32_t));
    if (version == kShardVersionU16) {
      std::vector<uint16_t> buf;
      constexpr size_t kChunk = size_t(1) << 20;
      for (size_t c = 0; c < tokens.size(); c += kChunk) {
        const size_t e = std::min(tokens.size(), c + kChunk);
        buf.resize(e - c);
        for (size_t i = c; i < e; ++i) {
          if (tokens[i] > 0xFFFF)
            throw shard_error(path, "token " + std::to_string(tokens[i]) + " at index " +
                                        std::to_string(i) +
                                        " does not fit uint16 (version 1); use version 7");
          buf[i - c] = static_cast<uint16_t>(tokens[i]);
        }
        put(buf.data(), buf.size() * sizeof(uint16_t));
      }
    } else {
      put(tokens.data(), tokens.size() * sizeof(uint32_t));
    }
    if (std::fflush(f.get()) != 0) throw_write_error(path, "write failed", errno, total);
    if (std::fclose(f.release()) != 0) throw_write_error(path, "write failed", errno, total);
  }
  file.commit();
}

Shard::Shard(const std::string& path, int64_t vocab_size) : path_(path) {
  if (vocab_size <= 0) throw shard_error(path, "bad vocab_size " + std::to_string(vocab_size));
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw shard_error(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw shard_error(path, std::string("cannot stat: ") + std::strerror(err));
  }
  const size_t file_bytes = static_cast<size_t>(st.st_size);
  if (file_bytes < kShardHeaderBytes) {
    ::close(fd);
    throw shard_error(path, "truncated header: file has " + std::to_string(file_bytes) +
                                " bytes, ends at byte offset " + std::to_string(file_bytes) +
                                " before the 1024-byte header is complete");
  }
  map_ = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw shard_error(path, std::string("mmap failed: ") + std::strerror(map_err));
  }
  map_bytes_ = file_bytes;

  // From here on the destructor does not run if we throw, so release explicitly.
  try {
    int32_t header[3];
    std::memcpy(header, map_, sizeof(header));
    if (header[0] == kShardMagicU16) {
      token_bytes_ = 2;
      if (header[1] != kShardVersionU16)
        throw shard_error(path, "bad version " + std::to_string(header[1]) +
                                    " at byte offset 4 (magic 20240520 requires version 1)");
    } else if (header[0] == kShardMagicU32) {
      token_bytes_ = 4;
      if (header[1] != kShardVersionU32)
        throw shard_error(path, "bad version " + std::to_string(header[1]) +
                                    " at byte offset 4 (magic 20240801 requires version 7)");
    } else {
      throw shard_error(path, "bad magic " + std::to_string(header[0]) +
                                  " at byte offset 0 (expected 20240520 or 20240801)");
    }
    version_ = header[1];
    if (header[2] < 0)
      throw shard_error(path, "negative token count " + std::to_string(header[2]) +
                                  " at byte offset 8");
    count_ = static_cast<size_t>(header[2]);
    const size_t expected = kShardHeaderBytes + token_bytes_ * count_;
    if (file_bytes < expected)
      throw shard_error(path, "truncated: header declares " + std::to_string(count_) +
                                  " tokens (" + std::to_string(expected) +
                                  " bytes) but the file ends at byte offset " +
                                  std::to_string(file_bytes));
    if (file_bytes > expected)
      throw shard_error(path, "oversized: header declares " + std::to_string(count_) +
                                  " tokens, so the data should end at byte offset " +
                                  std::to_string(expected) + ", but the file has " +
                                  std::to_string(file_bytes) + " bytes");
    data_ = static_cast<const unsigned char*>(map_) + kShardHeaderBytes;

    const uint64_t limit = static_cast<uint64_t>(vocab_size);
    const size_t bad =
        token_bytes_ == 2
            ? first_token_at_least(reinterpret_cast<const uint16_t*>(data_), count_, limit)
            : first_token_at_least(reinterpret_cast<const uint32_t*>(data_), count_, limit);
    if (bad < count_)
      throw shard_error(path, "token " + std::to_string((*this)[bad]) + " >= vocab_size " +
                                  std::to_string(vocab_size) + " at token index " +
                                  std::to_string(bad) + " (byte offset " +
                                  std::to_string(kShardHeaderBytes + bad * token_bytes_) + ")");
  } catch (...) {
    release();
    throw;
  }
}

Shard::~Shard() { release(); }

void Shard::release() noexcept {
  if (map_) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  data_ = nullptr;
}

Shard::Shard(Shard&& o) noexcept
    : path_(std::move(o.path_)),
      map_(std::exchange(o.map_, nullptr)),
      map_bytes_(std::exchange(o.map_bytes_, 0)),
      data_(std::exchange(o.data_, nullptr)),
      count_(std::exchange(o.count_, 0)),
      token_bytes_(o.token_bytes_),
      version_(o.version_) {}

Shard& Shard::operator=(Shard&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    data_ = std::exchange(o.data_, nullptr);
    count_ = std::exchange(o.count_, 0);
    token_bytes_ = o.token_bytes_;
    version_ = o.version_;
  }
  return *this;
}

void Shard::read(size_t begin, size_t n, int32_t* out) const {
  if (begin > count_ || n > count_ - begin)
    throw shard_error(path_, "read of tokens [" + std::to_string(begin) + ", " +
                                 std::to_string(begin + n) + ") past the end (" +
                                 std::to_string(count_) + " tokens)");
  if (token_bytes_ == 2) {
    const uint16_t* t = reinterpret_cast<const uint16_t*>(data_) + begin;
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(t[i]);
  } else {
    const uint32_t* t = reinterpret_cast<const uint32_t*>(data_) + begin;
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(t[i]);
  }
}

}  // namespace kvt

// data/file_commit.cpp — atomic file commit (data/file_commit.h).
#include "data/file_commit.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>

namespace fs = std::filesystem;

namespace kvt {

std::string temporary_path_for(const std::string& path) {
  const fs::path p(path);
  const fs::path dir = p.parent_path();
  std::string tmp_name = ".";  // built by appends: GCC 12 warns (-Wrestrict) on "." + s + ".tmp"
  tmp_name += p.filename().string();
  tmp_name += ".tmp";
  return dir.empty() ? tmp_name : (dir / tmp_name).string();
}

namespace {
std::string directory_of(const std::string& path) {
  const fs::path dir = fs::path(path).parent_path();
  return dir.empty() ? std::string(".") : dir.string();
}
}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(temporary_path_for(path_)) {}

AtomicFile::~AtomicFile() {
  if (!committed_) ::unlink(tmp_.c_str());  // may not exist: nothing to report
}

void AtomicFile::commit() {
  fsync_path(tmp_, false);
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw std::runtime_error(tmp_ + ": cannot rename to " + path_ + ": " + std::strerror(errno));
  committed_ = true;
  fsync_path(directory_of(path_), true);
}

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) throw std::runtime_error(path + ": cannot open for fsync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw_write_error(path, "fsync failed", err);
}

uint64_t free_bytes(const std::string& path) {
  fs::path p = path.empty() ? fs::path(".") : fs::path(path);
  std::error_code ec;
  while (!p.empty() && !fs::exists(p, ec)) p = p.parent_path();
  if (p.empty()) p = ".";
  struct statvfs st {};
  if (::statvfs(p.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000.0 && u < 4) v /= 1000.0, u++;
  char buf[32];
  if (u == 0) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

void throw_write_error(const std::string& path, const std::string& what, int err,
                       uint64_t bytes_needed) {
  if (err == ENOSPC || err == EDQUOT) {
    std::string msg = path + ": no space left on device (";
    if (bytes_needed > 0) msg += "needs " + format_bytes(bytes_needed) + ", ";
    msg += format_bytes(free_bytes(directory_of(path))) + " free)";
    throw std::runtime_error(msg);
  }
  throw std::runtime_error(path + ": " + what + ": " + std::strerror(err));
}

std::string read_whole_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw std::runtime_error(path + ": read error");
  return s;
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFile file(path);
  {
    struct Closer {
      void operator()(std::FILE* f) const { std::fclose(f); }
    };
    std::unique_ptr<std::FILE, Closer> f(std::fopen(file.tmp_path().c_str(), "wb"));
    if (!f) throw_write_error(file.tmp_path(), "cannot create", errno, bytes.size());
    if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f.get()) != bytes.size())
      throw_write_error(file.tmp_path(), "write failed", errno, bytes.size());
    if (std::fflush(f.get()) != 0) throw_write_error(file.tmp_path(), "write failed", errno, bytes.size());
    if (std::fclose(f.release()) != 0)
      throw_write_error(file.tmp_path(), "write failed", errno, bytes.size());
  }
  file.commit();
}

}  // namespace kvt

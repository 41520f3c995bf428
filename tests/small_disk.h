// tests/small_disk.h — a directory on a filesystem of a few megabytes, to make writes fail with
// ENOSPC: a tmpfs mounted for the test's lifetime (needs root, as CI has). Where it cannot be
// mounted, reason() says why and the test skips with it.
#pragma once

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

namespace kvt::test {

class SmallDisk {
 public:
  explicit SmallDisk(size_t bytes) {
    char tmpl[] = "/tmp/kvt_small_disk_XXXXXX";
    if (!::mkdtemp(tmpl)) {
      why_ = std::string("mkdtemp: ") + std::strerror(errno);
      return;
    }
    dir_ = tmpl;
    if (::geteuid() != 0) {
      why_ = "not root: cannot mount a small tmpfs to fill";
      return;
    }
    const std::string opts = "size=" + std::to_string(bytes);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, opts.c_str()) != 0) {
      why_ = std::string("mount tmpfs: ") + std::strerror(errno);
      return;
    }
    mounted_ = true;
  }
  ~SmallDisk() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;

  bool ok() const { return mounted_; }
  const std::string& reason() const { return why_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, why_;
  bool mounted_ = false;
};

}  // namespace kvt::test

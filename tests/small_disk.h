// tests/small_disk.h — a directory on a filesystem of a few megabytes, to make
// writes fail with ENOSPC for real: a tmpfs mounted for the test's lifetime. As root it is
// mounted directly (CI); otherwise the test process first enters a user and mount namespace of
// its own (unprivileged tmpfs mounts are allowed there), and child processes it starts see the
// mount too. Where neither works, ok() is false and reason() says why: the test then fails
// (no skip: the disk-full behaviour must be checked on every machine that runs the tests).
#pragma once

#include <fcntl.h>
#include <sched.h>
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
    if (::geteuid() != 0 && !enter_user_namespace()) return;
    char tmpl[] = "/tmp/kvt_small_disk_XXXXXX";
    if (!::mkdtemp(tmpl)) {
      why_ = std::string("mkdtemp: ") + std::strerror(errno);
      return;
    }
    dir_ = tmpl;
    const std::string opts = "size=" + std::to_string(bytes);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, opts.c_str()) != 0) {
      why_ = std::string("cannot mount a small tmpfs to fill: mount: ") + std::strerror(errno);
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
  // unshare(user + mount namespaces), mapping this uid/gid to root inside them.
  bool enter_user_namespace() {
    const uid_t uid = ::getuid();
    const gid_t gid = ::getgid();
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
      why_ = std::string("not root, and no user namespace for a tmpfs: unshare: ") + std::strerror(errno);
      return false;
    }
    auto write_file = [&](const char* path, const std::string& text) {
      const int fd = ::open(path, O_WRONLY);
      const bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      if (fd >= 0) ::close(fd);
      if (!ok) why_ = std::string("user namespace: cannot write ") + path + ": " + std::strerror(errno);
      return ok;
    };
    return write_file("/proc/self/setgroups", "deny") &&
           write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") &&
           write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1");
  }

  std::string dir_, why_;
  bool mounted_ = false;
};

}  // namespace kvt::test

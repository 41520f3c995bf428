// tests/fuzz/fuzz_file.h — what the three harnesses share: the input as a file (the parsers
// take a path), and the error contract they check.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>

namespace kvt::fuzz {

// The input as the contents of one memfd, reused for every input: its path is
// /proc/self/fd/<n>, nothing touches the disk and nothing is left behind.
inline std::string as_file(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("kvt_fuzz", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, 0) != 0) std::abort();
  for (size_t at = 0; at < size;) {
    const ssize_t n = pwrite(fd, data + at, size - at, static_cast<off_t>(at));
    if (n <= 0) std::abort();
    at += static_cast<size_t>(n);
  }
  return "/proc/self/fd/" + std::to_string(fd);
}

// A rejected input must be a one-line std::runtime_error whose message names the file; any
// other exception (a bad_alloc, nlohmann's type_error, ...) is a finding: abort, so libFuzzer
// keeps the input.
template <typename F>
void expect_clean(const std::string& path, F f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    if (m.find(path) == std::string::npos || m.find('\n') != std::string::npos) {
      std::fprintf(stderr, "error does not name the file or is not one line: %s\n", m.c_str());
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "escaped exception (not a std::runtime_error): %s\n", e.what());
    std::abort();
  }
}

}  // namespace kvt::fuzz

// train/checkpoint_commit.cpp — SHA-256, sidecars, `latest` and the atomic commit of a checkpoint
// (train/checkpoint_commit.h).
#include "train/checkpoint_commit.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>
#include <sstream>
#include <stdexcept>

#include "data/file_commit.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;

namespace kvt {
namespace {

// One EVP SHA-256 context.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      throw std::runtime_error("libcrypto: cannot initialise SHA-256");
  }
  void update(const void* data, size_t n) {
    if (EVP_DigestUpdate(ctx_.get(), data, n) != 1) throw std::runtime_error("libcrypto: SHA-256 update failed");
  }
  std::string hex() {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), digest.data(), &len) != 1)
      throw std::runtime_error("libcrypto: SHA-256 final failed");
    static const char* kHex = "0123456789abcdef";
    std::string s;
    for (unsigned i = 0; i < len; i++) s += {kHex[digest[i] >> 4], kHex[digest[i] & 15]};
    return s;
  }

 private:
  struct Free {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
  };
  std::unique_ptr<EVP_MD_CTX, Free> ctx_;
};

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw std::runtime_error(file + ": " + what);
}

}  // namespace

std::string sha256_hex(const void* data, size_t n) {
  Sha256 h;
  h.update(data, n);
  return h.hex();
}

std::string sha256_file_hex(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open to hash");
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw std::runtime_error(path + ": read error while hashing");
  return h.hex();
}

std::string sidecar_path(const std::string& file) { return file + ".sha256"; }

std::pair<std::string, std::string> read_hash_line(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "missing (cannot open)");
  std::string line;
  std::getline(in, line);
  std::istringstream ss(line);
  std::string hex, name;
  ss >> hex >> name;
  const bool hex_ok = hex.size() == 64 && std::all_of(hex.begin(), hex.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
  if (!hex_ok || name.empty()) fail(path, "malformed (expected '<sha256 hex>  <file name>')");
  if (name[0] == '*') name.erase(0, 1);  // sha256sum's binary-mode marker
  return {hex, name};
}

std::string verify_sidecar(const std::string& path) {
  if (!fs::exists(path)) fail(path, "no such checkpoint file");
  std::pair<std::string, std::string> expected;
  try {
    expected = read_hash_line(sidecar_path(path));
  } catch (const std::exception& e) {
    fail(path, std::string("checksum sidecar unusable: ") + e.what());
  }
  const std::string actual = sha256_file_hex(path);
  if (actual != expected.first)
    fail(path, "SHA-256 mismatch (file " + actual + ", sidecar " + expected.first +
                   "): the file is damaged or incomplete");
  return actual;
}

std::string commit_with_sidecar(const std::string& path, const std::function<void(const std::string&)>& write,
                                uint64_t bytes_needed) {
  AtomicFile file(path);
  try {
    errno = 0;
    write(file.tmp_path());
  } catch (const std::exception& e) {
    // A writer library (HDF5) reports a full disk in its own words; say it in ours.
    const int err = errno;
    if (err == ENOSPC || err == EDQUOT || free_bytes(file.tmp_path()) < bytes_needed)
      throw_write_error(file.tmp_path(), e.what(), ENOSPC, bytes_needed);
    throw;
  }
  fsync_path(file.tmp_path(), false);
  checkpoint_fault_point("after_tmp_write");
  const std::string hash_line =
      sha256_file_hex(file.tmp_path()) + "  " + fs::path(path).filename().string() + "\n";  // `sha256sum -c`
  write_file_atomic(sidecar_path(path), hash_line);
  checkpoint_fault_point("before_rename");
  file.commit();
  return hash_line;
}

void write_latest(const std::string& dir, const std::string& hash_line) {
  write_file_atomic(dir + "/latest", hash_line);
}

}  // namespace kvt

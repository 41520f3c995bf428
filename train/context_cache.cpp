// train/context_cache.cpp — the gate context cache (train/context_cache.h).
#include "train/context_cache.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "data/file_commit.h"

namespace kvt {


ContextCache::ContextCache(std::string dir, const std::string& key, int64_t P, int64_t C, int64_t layers, int64_t M,
                           const std::vector<std::string>& also)
    : dir_(std::move(dir)), header_{kMagic, P, C, layers, M, 0, 0, 0} {
  namespace fs = std::filesystem;
  fs::create_directories(dir_);
  const std::string key_path = dir_ + "/KEY";
  if (fs::exists(key_path)) {
    std::ifstream in(key_path, std::ios::binary);
    const std::string have((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (have != key && std::find(also.begin(), also.end(), have) == also.end())
      throw std::runtime_error("gates.cache_dir " + dir_ + " holds the contexts of another model, context "
                               "length, prompt or data (see its KEY): delete it or choose another directory");
  } else {
    write_file_atomic(key_path, key);
  }
}

int64_t ContextCache::file_bytes() const {
  return static_cast<int64_t>(sizeof header_) + 2 * header_[3] * header_[1] * header_[2] +
         4 * header_[3] * header_[4] * header_[1];
}

bool ContextCache::load(const std::string& name, std::vector<uint16_t>& hidden, std::vector<float>& targets) const {
  const std::string path = dir_ + "/" + name + ".bin";
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  int64_t h[8];
  in.read(reinterpret_cast<char*>(h), sizeof h);
  if (!in || !std::equal(h, h + 8, header_))
    throw std::runtime_error(path + ": not a context of this gate run (header differs); delete gates.cache_dir");
  hidden.resize(static_cast<size_t>(header_[3] * header_[1] * header_[2]));
  targets.resize(static_cast<size_t>(header_[3] * header_[4] * header_[1]));
  in.read(reinterpret_cast<char*>(hidden.data()), static_cast<std::streamsize>(hidden.size() * sizeof(uint16_t)));
  in.read(reinterpret_cast<char*>(targets.data()), static_cast<std::streamsize>(targets.size() * sizeof(float)));
  if (!in || in.peek() != std::char_traits<char>::eof())
    throw std::runtime_error(path + ": truncated or oversized context file; delete gates.cache_dir");
  return true;
}

void ContextCache::store(const std::string& name, const std::vector<uint16_t>& hidden,
                         const std::vector<float>& targets) const {
  std::string bytes(reinterpret_cast<const char*>(header_), sizeof header_);
  bytes.append(reinterpret_cast<const char*>(hidden.data()), hidden.size() * sizeof(uint16_t));
  bytes.append(reinterpret_cast<const char*>(targets.data()), targets.size() * sizeof(float));
  write_file_atomic(dir_ + "/" + name + ".bin", bytes);  // fsync, rename; ENOSPC in one line
}

}  // namespace kvt

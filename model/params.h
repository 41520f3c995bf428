// model/params.h — the parameter table: (name, shape, offset) of every tensor in one contiguous
// buffer. It drives init, the optimizer, all-reduce, checkpoints and export (docs/design.md, "The op interface").
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace kvt {

struct ParamInfo {
  std::string name;            // Hugging Face LLaMA naming, e.g. model.layers.3.self_attn.q_proj.weight
  std::vector<int64_t> shape;  // weights stored [out, in]
  size_t offset = 0;           // in floats, into the parameter (and gradient, moment) buffers
  size_t numel = 0;
  bool weight_decay = false;   // AdamW decoupled decay applies
};

class ParamTable {
 public:
  // Appends a tensor after the previous one; returns its index. Names must be unique.
  size_t add(const std::string& name, std::vector<int64_t> shape, bool weight_decay);
  const std::vector<ParamInfo>& entries() const { return entries_; }
  size_t total() const { return total_; }  // floats in all tensors
  const ParamInfo& at(size_t i) const { return entries_.at(i); }
  // Throws std::out_of_range naming the parameter when absent.
  const ParamInfo& find(const std::string& name) const;
  bool contains(const std::string& name) const;

 private:
  std::vector<ParamInfo> entries_;
  std::unordered_map<std::string, size_t> index_;  // name -> entry (add and find in O(1))
  size_t total_ = 0;
};

}  // namespace kvt

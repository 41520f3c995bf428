#include "model/params.h"

#include <stdexcept>

namespace kvt {

size_t ParamTable::add(const std::string& name, std::vector<int64_t> shape, bool weight_decay) {
  if (contains(name)) throw std::logic_error("duplicate parameter name " + name);
  ParamInfo p;
  p.name = name;
  p.numel = 1;
  for (int64_t d : shape) p.numel *= static_cast<size_t>(d);
  p.shape = std::move(shape);
  p.offset = total_;
  p.weight_decay = weight_decay;
  total_ += p.numel;
  index_.emplace(p.name, entries_.size());
  entries_.push_back(std::move(p));
  return entries_.size() - 1;
}

bool ParamTable::contains(const std::string& name) const { return index_.count(name) != 0; }

const ParamInfo& ParamTable::find(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) throw std::out_of_range("no parameter named " + name);
  return entries_[it->second];
}

}  // namespace kvt

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
  entries_.push_back(std::move(p));
  return entries_.size() - 1;
}

bool ParamTable::contains(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return true;
  return false;
}

const ParamInfo& ParamTable::find(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return e;
  throw std::out_of_range("no parameter named " + name);
}

}  // namespace kvt

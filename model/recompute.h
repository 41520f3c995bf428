// model/recompute.h — which activations the training forward keeps for backward
// (train.recompute; docs/precision.md, "Recomputation").
//   none      every layer's activations are kept (fastest, most memory)
//   attention the attention probabilities (or flash statistics) of each layer are not kept; each
//             layer's attention forward is re-run in its backward
//   block     only each block's input (and the K/V that other layers read) is kept; each block's
//             forward is re-run in its backward
// Gradients are bitwise the same in all three modes.
#pragma once

#include <stdexcept>
#include <string>

namespace kvt {

enum class Recompute { none, attention, block };

inline const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::none: return "none";
    case Recompute::attention: return "attention";
    case Recompute::block: return "block";
  }
  return "?";
}

inline Recompute parse_recompute(const std::string& s) {
  for (Recompute r : {Recompute::none, Recompute::attention, Recompute::block})
    if (s == recompute_name(r)) return r;
  throw std::invalid_argument("unknown recompute mode '" + s + "' (expected none, attention or block)");
}

}  // namespace kvt

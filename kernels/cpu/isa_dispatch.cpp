// The ISA the dispatched CPU kernels run with (kernels/cpu/isa_dispatch.h).
#include "kernels/cpu/isa_dispatch.h"

#include <atomic>
#include <stdexcept>

namespace kvt::cpu {

namespace {
// -1: no override; else the Isa value.
std::atomic<int> g_override{-1};
}  // namespace

Isa active_isa() {
  const int o = g_override.load(std::memory_order_relaxed);
  if (o >= 0) return static_cast<Isa>(o);
  return use_avx512() ? Isa::avx512 : Isa::avx2;
}

void set_isa_override(std::optional<Isa> isa) {
  if (isa == Isa::avx512 && !cpu_features().avx512)
    throw std::runtime_error("set_isa_override(avx512): this CPU has no AVX-512");
  g_override.store(isa ? static_cast<int>(*isa) : -1, std::memory_order_relaxed);
}

}  // namespace kvt::cpu

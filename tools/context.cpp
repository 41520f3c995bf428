#include <stdexcept>

#include "tools/commands.h"

namespace kvt::cli {

namespace {
DistContext* g_ctx = nullptr;
}

void set_dist_context(DistContext* ctx) { g_ctx = ctx; }

DistContext& dist_context() {
  if (!g_ctx) throw std::logic_error("no distributed context: main() must set it");
  return *g_ctx;
}

}  // namespace kvt::cli

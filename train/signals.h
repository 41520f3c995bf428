// train/signals.h — graceful preemption (docs/design.md, "Distribution"). SIGTERM, SIGINT and SIGUSR1 only set a
// flag; the trainer checks it at each step boundary (max-reduced over ranks, so every rank stops
// at the same step), writes a checkpoint and exits 0. A second signal ends the process at once.
#pragma once

#include <cstdint>
#include <string>

namespace kvt {

void install_stop_signals();
// The signal number that requested a stop, or 0.
int stop_signal();
// The line a run prints when it stops early at `step`: by a signal, or as --stop-after asked.
std::string stop_message(int64_t step);

}  // namespace kvt

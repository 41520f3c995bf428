#include "train/signals.h"

#include <csignal>
#include <initializer_list>
#include <unistd.h>

namespace kvt {

namespace {
volatile std::sig_atomic_t g_stop = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_stop) _exit(128 + sig);  // second signal: now
  g_stop = sig;
  const char msg[] = "\nkvtrain: stop requested; finishing the step and checkpointing (signal again to exit now)\n";
  ssize_t rc = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)rc;
}
}  // namespace

// The handler runs on a stack of its own (SA_ONSTACK): a signal that arrives while JIT-generated
// code (oneDNN's GEMM kernels) uses the stack pointer for its own purposes must not push its frame
// wherever that register points. Seen without it: a SIGUSR1 during dnnl_sgemm corrupted the heap.
alignas(64) char g_signal_stack[64 * 1024];

void install_stop_signals() {
  stack_t ss{};
  ss.ss_sp = g_signal_stack;
  ss.ss_size = sizeof g_signal_stack;
  sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGTERM, SIGINT, SIGUSR1}) sigaction(s, &sa, nullptr);
}

int stop_signal() { return g_stop; }

std::string stop_message(int64_t step) {
  const std::string why = stop_signal() ? "stopped by signal " + std::to_string(stop_signal())
                                        : std::string("stopped as asked (--stop-after)");
  return why + " at step " + std::to_string(step) + "; continue with --resume";
}

}  // namespace kvt

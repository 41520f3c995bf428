// train/run_loop.cpp — the run loop (train/run_loop.h).
#include "train/run_loop.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <ostream>

#include "data/file_commit.h"
#include "train/metrics.h"
#include "train/signals.h"

namespace kvt {

std::string format_duration(double s) {
  char b[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600) std::snprintf(b, sizeof b, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else std::snprintf(b, sizeof b, "%ldm%02lds", t / 60, t % 60);
  return b;
}

int64_t run_loop(RunTask& task, const RunLoopOptions& opts, std::ostream& out, bool resume, int64_t stop_after) {
  const bool leader = task.leader();
  if ((resume || opts.auto_resume) && !task.resume_latest(out) && leader)
    out << "no checkpoint in " << opts.dir << "; starting from step 0" << std::endl;
  install_stop_signals();
  std::unique_ptr<MetricsLog> metrics;
  if (leader) {
    std::filesystem::create_directories(opts.dir);
    write_file_atomic(opts.dir + "/config.yaml", opts.config_yaml);
    metrics = std::make_unique<MetricsLog>(opts.dir + "/metrics.jsonl", task.steps_done());
  }
  const int64_t first = task.steps_done(), total = task.total_steps();
  double elapsed = 0;
  while (task.steps_done() < total) {
    const auto t0 = std::chrono::steady_clock::now();
    task.step();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    elapsed += dt;
    const int64_t step = task.steps_done();
    if (leader) {
      const RunReport r = task.step_report(dt);
      metrics->log(r.record);
      const double eta = elapsed / static_cast<double>(step - first) * static_cast<double>(total - step);
      out << r.line << " | ETA " << format_duration(eta) << std::endl;
    }
    const bool last = step == total;
    const bool stop = task.stop_requested() || step == stop_after;
    if ((opts.eval_every > 0 && step % opts.eval_every == 0) || last)
      if (const std::optional<RunReport> e = task.eval(); e && leader) {
        metrics->log(e->record);
        out << e->line << std::endl;
      }
    if (last || stop || (opts.checkpoint_every > 0 && step % opts.checkpoint_every == 0)) {
      const std::string path = task.save();
      if (leader) out << "checkpoint " << path << std::endl;
    }
    if (last) task.finish(out);
    if (stop) {
      if (leader) out << stop_message(step) << std::endl;
      break;
    }
  }
  return task.steps_done();
}

}  // namespace kvt

// train/run_loop.h — the one run loop of both trainers (train/trainer.h, train/gate_trainer.h):
// resume, stop signals, a progress line with ETA per step, metrics.jsonl, eval, checkpoint and
// stop cadence. A trainer supplies the steps through RunTask.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace kvt {

// A metrics.jsonl record and the progress line that says the same.
struct RunReport {
  nlohmann::json record;
  std::string line;
};

class RunTask {
 public:
  virtual ~RunTask() = default;
  virtual int64_t steps_done() const = 0;
  virtual int64_t total_steps() const = 0;
  // Loads the newest valid checkpoint of the run directory; false when there is none.
  virtual bool resume_latest(std::ostream& out) = 0;
  // One optimizer step, then its report given the step's wall time (the loop adds the ETA).
  virtual void step() = 0;
  virtual RunReport step_report(double seconds) const = 0;
  // A held-out evaluation, or nullopt when the run has no validation data. All ranks call it.
  virtual std::optional<RunReport> eval() = 0;
  // Writes ckpt_<step>.h5 (all ranks call it); returns its path.
  virtual std::string save() = 0;
  // After the last step's checkpoint (the gate trainer writes gates.h5).
  virtual void finish(std::ostream&) {}
  // A stop signal arrived (agreed over ranks).
  virtual bool stop_requested() = 0;
  // Rank 0: prints, writes config.yaml and metrics.jsonl.
  virtual bool leader() const { return true; }
};

struct RunLoopOptions {
  std::string dir;          // output.dir
  std::string config_yaml;  // written to dir/config.yaml
  int64_t eval_every = 0, checkpoint_every = 0;
  bool auto_resume = false;  // train.resume / gates.resume: auto
};

// The whole run: resumes when `resume` or opts.auto_resume, then steps to total_steps(),
// evaluating every eval_every steps and at the end, checkpointing every checkpoint_every steps,
// at the end and on a stop (a signal, or step == stop_after > 0). Returns the step it stopped at.
int64_t run_loop(RunTask& task, const RunLoopOptions& opts, std::ostream& out, bool resume, int64_t stop_after);

// "1h05m" or "4m07s": the ETA of progress lines.
std::string format_duration(double seconds);

}  // namespace kvt

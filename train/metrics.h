// train/metrics.h — metrics.jsonl in the run directory: one JSON object per line, a "train"
// record per step and an "eval" record per validation (docs/design.md, "Metrics"). A resumed run continues the
// same file: records after the resume step are dropped first, so no step appears twice.
#pragma once

#include <cstdint>
#include <fstream>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace kvt {

struct StepRecord {
  int64_t step = 0;  // 1-based: the step just completed
  double loss = 0, lr = 0, grad_norm = 0;
  double tokens_per_s = 0, flops_per_s = 0, step_time_s = 0;
  int64_t tokens_seen = 0;
};

class MetricsLog {
 public:
  // Opens path for appending; keeps only records with step <= keep_through_step (pass 0 for a
  // fresh run, which truncates the file).
  MetricsLog(const std::string& path, int64_t keep_through_step);
  void log_step(const StepRecord& r);
  void log_eval(int64_t step, double val_loss, int64_t tokens_seen);
  // Any record (it must hold "kind" and "step"; the gate trainer's records).
  void log(const nlohmann::json& record);

 private:
  void write_line(const std::string& line);
  std::string path_;
  std::ofstream out_;
};

}  // namespace kvt

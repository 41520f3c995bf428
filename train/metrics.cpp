#include "train/metrics.h"

#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace kvt {

MetricsLog::MetricsLog(const std::string& path, int64_t keep_through_step) : path_(path) {
  std::vector<std::string> kept;
  if (keep_through_step > 0) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions*/ false);
      if (j.is_discarded() || !j.contains("step")) continue;  // a torn last line
      if (j["step"].get<int64_t>() <= keep_through_step) kept.push_back(line);
    }
  }
  out_.open(path, std::ios::trunc);
  if (!out_) throw std::runtime_error("cannot open metrics log " + path);
  for (const auto& l : kept) out_ << l << '\n';
  out_.flush();
}

void MetricsLog::write_line(const std::string& line) {
  out_ << line << '\n';
  out_.flush();
  if (!out_) throw std::runtime_error("cannot write metrics log " + path_);
}

void MetricsLog::log_step(const StepRecord& r) {
  nlohmann::json j = {{"kind", "train"},           {"step", r.step},
                      {"loss", r.loss},            {"lr", r.lr},
                      {"grad_norm", r.grad_norm},  {"tokens_seen", r.tokens_seen},
                      {"tokens_per_s", r.tokens_per_s}, {"flops_per_s", r.flops_per_s},
                      {"step_time_s", r.step_time_s}};
  write_line(j.dump());
}

void MetricsLog::log(const nlohmann::json& record) { write_line(record.dump()); }

void MetricsLog::log_eval(int64_t step, double val_loss, int64_t tokens_seen) {
  nlohmann::json j = {{"kind", "eval"}, {"step", step}, {"val_loss", val_loss},
                      {"tokens_seen", tokens_seen}};
  write_line(j.dump());
}

}  // namespace kvt

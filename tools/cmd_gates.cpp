// kvtrain gates --checkpoint ckpt.h5 [--config gates.yaml] [--set k=v ...] [--resume] [--stop-after N]
//
// Trains Fast KVzip eviction gates on the frozen model of a checkpoint, forward-only
// (train/gate_trainer.h): progress line per step, metrics.jsonl, resumable checkpoints and
// gates.h5 in output.dir.
#include <cstdio>
#include <iostream>

#include "model/kv_sharing.h"
#include "tools/commands.h"
#include "tools/memory_check.h"
#include "train/gate_config.h"
#include "train/gate_trainer.h"
#include "train/trainer.h"

namespace kvt::cli {

namespace {
struct GatesArgs {
  std::string checkpoint, config;
  std::vector<std::string> overrides;
  bool resume = false;
  int64_t stop_after = 0;
  bool ignore_memory = false;
};

void print_banner(GateTrainer& tr, int threads) {
  const GateRunConfig& c = tr.config();
  const ModelConfig& m = tr.model().config();
  const std::vector<int> layers = gate_layers(m);
  std::printf("kvtrain %s gates | %s backend | %d thread(s)\n", KVT_VERSION, c.gates.backend.c_str(), threads);
  std::printf("frozen model: %s (step %lld, %zu parameters, no gradient buffer)\n", c.gates.checkpoint.c_str(),
              static_cast<long long>(tr.frozen().step), tr.model().params().total());
  std::printf("%s\n", kv_cache_summary(m).c_str());
  std::printf("gates: %zu storage layers x %d decision(s) per token, %zu parameters | %s, lr %g (%s schedule)\n",
              layers.size(), gate_decisions(m), tr.gates().params().total(), c.gates.optimizer.c_str(),
              c.gates.lr, c.gates.schedule.c_str());
  std::printf("KVzip input: context %d + repeat prompt %zu + context = %zu tokens | %lld steps x %d context(s) | run dir %s\n",
              c.gates.context, tr.repeat_prompt().size(), 2 * static_cast<size_t>(c.gates.context) + tr.repeat_prompt().size(),
              static_cast<long long>(c.gates.steps), c.gates.contexts_per_step, c.output.dir.c_str());
  std::fflush(stdout);
}
}  // namespace

void add_gates(CLI::App& app) {
  auto args = std::make_shared<GatesArgs>();
  CLI::App* sub = app.add_subcommand(
      "gates", "train Fast KVzip eviction gates on a frozen model, forward-only (writes gates.h5)");
  sub->add_option("--checkpoint", args->checkpoint, "the frozen model's checkpoint (sets gates.checkpoint)");
  sub->add_option("--config", args->config, "gate config YAML (configs/gates.yaml); defaults without");
  sub->add_option("--set", args->overrides, "override a key: section.key=value (repeatable)");
  sub->add_flag("--resume", args->resume,
                "continue from the newest valid gate checkpoint of output.dir (same as gates.resume=auto)");
  sub->add_option("--stop-after", args->stop_after, "checkpoint and exit after this step (continue with --resume)")
      ->check(CLI::NonNegativeNumber);
  add_memory_limit_flag(*sub, args->ignore_memory);
  sub->callback([args]() {
    if (dist_context().world() > 1)
      throw std::runtime_error("gates runs as one process: start it without mpirun");
    GateRunConfig cfg = args->config.empty() ? parse_gate_config("", args->overrides, "gate defaults")
                                             : load_gate_config(args->config, args->overrides);
    if (!args->checkpoint.empty()) cfg.gates.checkpoint = args->checkpoint;
    const auto memory = check_gates_memory(cfg, args->ignore_memory);
    const int threads = configure_threads(cfg.gates.threads, 1);
    GateTrainer trainer(cfg);
    print_banner(trainer, threads);
    trainer.run(std::cout, args->resume, args->stop_after);
  });
}

}  // namespace kvt::cli

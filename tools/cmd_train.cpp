// kvtrain train --config X [--set k=v ...]
#include <cstdio>
#include <iostream>

#include "model/kv_sharing.h"
#include "tools/commands.h"
#include "tools/machine_info.h"
#include "tools/memory_check.h"
#include "train/config.h"
#include "train/trainer.h"

namespace kvt::cli {

namespace {
struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  bool resume = false;
  int64_t stop_after = 0;
  bool ignore_memory = false;
};

void print_banner(const RunConfig& cfg, Trainer& tr, int threads, int world) {
  const ModelConfig& m = cfg.model;
  const size_t np = tr.model().params().total();
  std::printf("kvtrain %s | %s backend | %d rank(s) x %d thread(s)\n", KVT_VERSION,
              cfg.train.backend.c_str(), world, threads);
  std::printf("model: %d layers, d_model %d, heads %d (kv %d), head_dim %d, d_ff %d, vocab %d, %s embeddings\n",
              m.n_layers, m.d_model, m.n_heads, m.kv_heads(), m.head_dim(), m.ffn_dim(),
              m.vocab_size, m.tie_embeddings ? "tied" : "untied");
  std::printf("params: %zu (%.2fM) | global batch %lld x %d tokens | %lld steps | run dir %s\n", np,
              np * 1e-6, static_cast<long long>(tr.global_batch()), tr.seq_len(),
              static_cast<long long>(cfg.train.steps), cfg.output.dir.c_str());
  std::printf("%s\n", kv_cache_summary(m).c_str());
  if (cfg.train.backend == "cpu") {
    const MachineInfo mi = machine_info();
    std::printf("%s\n", machine_line(mi).c_str());
    std::fflush(stdout);
    warn_generic_blas(mi, std::cerr);
  }
  std::fflush(stdout);
}
}  // namespace

void add_train(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* sub = app.add_subcommand("train", "train a model from a YAML config");
  sub->add_option("--config", args->config, "YAML config (configs/*.yaml)")->required();
  sub->add_option("--set", args->overrides, "override a key: section.key=value (repeatable)");
  sub->add_flag("--resume", args->resume,
                 "continue from the newest valid checkpoint of output.dir (same as train.resume=auto)");
  sub->add_option("--stop-after", args->stop_after,
                  "checkpoint and exit after this step (continue later with --resume)")
      ->check(CLI::NonNegativeNumber);
  add_memory_limit_flag(*sub, args->ignore_memory);
  sub->callback([args]() {
    DistContext& ctx = dist_context();
    RunConfig cfg = load_run_config(args->config, args->overrides);
    const auto memory = check_train_memory(args->config, cfg, args->ignore_memory);
    const int threads = configure_threads(cfg.train.threads, ctx.local_size());
    auto comm = make_communicator(ctx, cfg.train.backend,
                                  CommOptions{.timeout_s = cfg.train.comm_timeout_s, .abort = {}});
    Trainer trainer(cfg, *comm);
    if (ctx.rank() == 0) print_banner(cfg, trainer, threads, ctx.world());
    trainer.run(std::cout, args->resume, args->stop_after);
  });
}

}  // namespace kvt::cli

// kvtrain bench --config X [--set k=v] [--steps N] [--warmup W]
// Times full training steps (forward + backward + AdamW) on random tokens of the config's shape
// and reports the median step time, tokens/s, achieved GFLOP/s (DESIGN.md §11 FLOPs) and the
// process's peak resident memory. Under mpirun every rank runs the step on its share of the
// global batch and the gradients are all-reduced as in training; rank 0 reports, adding the time
// spent in the all-reduce per step and, separately, the time waiting for the slowest rank first.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kernels/common/rng.h"
#include "tools/commands.h"
#include "train/adamw.h"
#include "train/config.h"
#include "train/trainer.h"

namespace kvt::cli {

namespace {
struct BenchArgs {
  std::string config, json_out;
  std::vector<std::string> overrides;
  int steps = 5, warmup = 1;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void run_bench(const BenchArgs& a) {
  RunConfig cfg = load_run_config(a.config, a.overrides);
  const TrainConfig& t = cfg.train;
  const DistContext& ctx = dist_context();
  const int threads = configure_threads(t.threads, ctx.local_size());
  auto comm = make_communicator(ctx, t.backend);  // picks the GPU before the CUDA Ops exist
  const int world = comm->world();
  cfg.train.batch_size = per_rank_batch_size(t, world);
  auto ops = make_ops(t.backend);
  Transformer model(cfg.model, *ops, t.batch_size, t.seq_len, true, t.decay_embeddings);
  model.init_parameters(t.seed);
  AdamW opt(*ops, model.params(), t);
  const int B = t.batch_size, T = t.seq_len;
  std::vector<int32_t> inputs(static_cast<size_t>(B) * T), targets(inputs.size());
  Rng rng(t.seed + static_cast<uint64_t>(comm->rank()));
  for (size_t i = 0; i < inputs.size(); i++) {
    inputs[i] = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
    targets[i] = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
  }
  std::vector<double> fwd, bwd, upd, total, wait, reduce;
  const size_t np = model.params().total();
  for (int s = 0; s < a.warmup + a.steps; s++) {
    const auto t0 = std::chrono::steady_clock::now();
    model.zero_grads();
    double tf = 0, tb = 0;
    for (int m = 0; m < t.grad_accum; m++) {
      auto t1 = std::chrono::steady_clock::now();
      model.forward(inputs.data(), targets.data(), B, T);
      ops->synchronize();
      tf += seconds_since(t1);
      t1 = std::chrono::steady_clock::now();
      model.backward(1.0f / t.grad_accum);
      ops->synchronize();
      tb += seconds_since(t1);
    }
    double tw = 0, tr = 0;
    if (world > 1) {
      auto t1 = std::chrono::steady_clock::now();
      comm->barrier();  // waiting for the slowest rank, kept out of the all-reduce time
      tw = seconds_since(t1);
      t1 = std::chrono::steady_clock::now();
      comm->allreduce_mean(model.grad_data(), np);
      tr = seconds_since(t1);
    }
    const auto t2 = std::chrono::steady_clock::now();
    ops->sum_squares(model.grad_data(), static_cast<int64_t>(model.params().total()));
    opt.step(model.param_data(), model.grad_data(), t.lr, 1.0f);
    ops->synchronize();
    const double tu = seconds_since(t2), tt = seconds_since(t0);
    if (s >= a.warmup) {
      fwd.push_back(tf);
      bwd.push_back(tb);
      upd.push_back(tu);
      total.push_back(tt);
      wait.push_back(tw);
      reduce.push_back(tr);
    }
  }
  const double step_s = median(total);
  const double tokens = static_cast<double>(B) * T * t.grad_accum * world;  // global
  const double flops = train_flops_per_token(cfg.model, T) * tokens;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  const double peak_mb = ru.ru_maxrss / 1024.0;
  if (comm->rank() != 0) return;
  std::printf("bench %s | %s | params %.2fM | batch %d x %d (accum %d) | %d rank(s) x %d thread(s)\n",
              a.config.c_str(), t.backend.c_str(), model.params().total() * 1e-6, B, T,
              t.grad_accum, world, threads);
  std::printf("step %.1f ms (forward %.1f, backward %.1f, optimizer %.1f; median of %d) | "
              "%.0f tokens/s | %.2f GFLOP/s | peak RSS %.0f MiB (activations %.0f MiB)\n",
              step_s * 1e3, median(fwd) * 1e3, median(bwd) * 1e3, median(upd) * 1e3, a.steps,
              tokens / step_s, flops / step_s * 1e-9, peak_mb, model.activation_bytes() / 1048576.0);
  if (world > 1)
    std::printf("all-reduce %.2f ms/step (%.1f%% of the step; %.1f MiB of gradients) | waiting for "
                "the slowest rank before it %.2f ms/step\n",
                median(reduce) * 1e3, 100.0 * median(reduce) / step_s, np * 4.0 / 1048576.0,
                median(wait) * 1e3);
  if (!a.json_out.empty()) {
    nlohmann::json j = {{"config", a.config}, {"params", model.params().total()},
                        {"batch", B}, {"seq_len", T}, {"threads", threads}, {"ranks", world},
                        {"allreduce_ms", median(reduce) * 1e3}, {"rank_wait_ms", median(wait) * 1e3},
                        {"step_ms", step_s * 1e3}, {"tokens_per_s", tokens / step_s},
                        {"gflops", flops / step_s * 1e-9}, {"peak_rss_mib", peak_mb}};
    std::ofstream(a.json_out) << j.dump(2) << "\n";
  }
}
}  // namespace

void add_bench(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* sub = app.add_subcommand("bench", "time training steps: tokens/s, GFLOP/s, peak memory");
  sub->add_option("--config", args->config, "YAML config")->required();
  sub->add_option("--set", args->overrides, "override a key: section.key=value (repeatable)");
  sub->add_option("--steps", args->steps, "timed steps")->check(CLI::PositiveNumber);
  sub->add_option("--warmup", args->warmup, "untimed steps first")->check(CLI::NonNegativeNumber);
  sub->add_option("--json", args->json_out, "also write the result as JSON");
  sub->callback([args]() { run_bench(*args); });
}

}  // namespace kvt::cli

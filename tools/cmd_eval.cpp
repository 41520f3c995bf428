// kvtrain eval --checkpoint ckpt.h5 [--gates gates.h5] --keep 0.3[,0.5,...] --policy gates[,kvzip,...]
//
// KV eviction at inference (docs/design.md, "Fast KVzip gates", model/eviction.h): for each held-out context (the first
// --contexts windows of --context + --continuation tokens of data.val), chunked prefill with
// eviction after each chunk, then the loss of the continuation and of reconstructing the context
// from the evicted cache, for every (policy, keep ratio). Prints a table: mean losses (per token,
// nats), the kept share of cache entries and the KV bytes the evicted cache still holds, measured
// from the cache's keep-mask. With kvzip in the policies it also reports how sparse the oracle
// KVzip scores are. --json writes one record per row, with the per-context losses too.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/loader.h"
#include "kernels/common/rng.h"
#include "model/eviction.h"
#include "model/gates.h"
#include "model/inference.h"
#include "model/kvzip.h"
#include "model/transformer.h"
#include "tools/commands.h"
#include "tools/eval_args.h"
#include "tools/memory_check.h"
#include "train/checkpoint.h"
#include "train/model_tokenizer.h"
#include "train/gate_config.h"
#include "train/gate_trainer.h"
#include "train/trainer.h"

namespace kvt::cli {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::vector<double> parse_keeps(const std::string& s, const std::string& flag) {
  std::vector<double> out;
  for (const std::string& item : split_list(s)) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size()) throw std::invalid_argument(flag + ": '" + item + "' is not a number");
    if (!(v > 0.0 && v <= 1.0))
      throw std::invalid_argument(flag + ": the keep ratio must be in (0, 1], got " + item);
    out.push_back(v);
  }
  if (out.empty()) throw std::invalid_argument(flag + ": give at least one keep ratio");
  return out;
}

namespace {

// Every context has the same token counts, so the mean of the per-context losses is the
// token-weighted mean.
struct Row {
  EvictPolicy policy;
  double keep;
  std::vector<double> cont_losses{}, rec_losses{};  // per context (mean nats per token)
  int64_t entries = 0, kept = 0;
  size_t bytes = 0, bytes_kept = 0;
};

double mean(const std::vector<double>& v) {
  return v.empty() ? std::nan("") : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

void run_eval(const EvalArgs& a) {
  if (dist_context().world() > 1) throw std::runtime_error("eval runs as one process: start it without mpirun");
  const std::vector<double> keeps = parse_keeps(a.keeps);
  std::vector<EvictPolicy> policies;
  for (const std::string& p : split_list(a.policies)) policies.push_back(parse_evict_policy(p));
  if (policies.empty()) throw std::invalid_argument("--policy: give at least one policy");
  for (auto [ok, what] : {std::pair{a.context >= 1, "--context must be >= 1"},
                          std::pair{a.continuation >= 0, "--continuation must be >= 0"},
                          std::pair{a.contexts >= 1, "--contexts must be >= 1"},
                          std::pair{a.chunk >= 1, "--chunk must be >= 1"},
                          std::pair{a.sinks >= 0 && a.recent >= 0, "--sinks and --recent must be >= 0"}})
    if (!ok) throw std::invalid_argument(what);
  const int threads = configure_threads(a.threads, 1);

  const auto memory = check_eval_memory(a.checkpoint, a.tokenizer, a.prompt, a.context, a.chunk,
                                        std::count(policies.begin(), policies.end(), EvictPolicy::kvzip) > 0,
                                        !a.gates.empty(), a.backend, a.ignore_memory);
  const ModelCheckpoint model = load_model_checkpoint(a.checkpoint);
  const ModelConfig& m = model.config.model;
  const auto tok = checkpoint_tokenizer(a.checkpoint, model.config.data.tokenizer, m.vocab_size, a.tokenizer);
  const std::vector<int32_t> prompt = repeat_prompt_tokens(*tok, a.prompt, m.vocab_size);
  const int P = a.context, N = a.continuation, Q = static_cast<int>(prompt.size());
  if (std::max(P + N, 2 * P + Q) > m.max_seq_len)
    throw std::invalid_argument("--context " + std::to_string(P) + ": context + continuation (" +
                                std::to_string(P + N) + " tokens) and the reconstruction input context + "
                                "repeat prompt + context (" + std::to_string(2 * P + Q) +
                                " tokens) must fit model.max_seq_len " + std::to_string(m.max_seq_len) +
                                " of " + a.checkpoint);

  bool need_gates = false, need_oracle = false;
  for (EvictPolicy p : policies) {
    need_gates |= p == EvictPolicy::gates;
    need_oracle |= p == EvictPolicy::kvzip;
  }
  if (need_gates && a.gates.empty()) throw std::invalid_argument("--policy gates needs --gates FILE (gates.h5)");

  auto ops = make_ops(a.backend);
  InferenceModel inf(m, *ops, model.params, InferenceOptions{std::min(a.chunk, m.max_seq_len)});
  std::unique_ptr<GateModel> gates;
  if (!a.gates.empty()) {
    std::string warning;
    const std::vector<float> g = load_gates(a.gates, model, &warning);
    if (!warning.empty()) std::printf("warning: %s\n", warning.c_str());
    gates = std::make_unique<GateModel>(m, *ops, inf.max_chunk(), /*with_grads=*/false);
    gates->params_from_host(g);
  }
  std::unique_ptr<KvzipScorer> scorer;
  if (need_oracle) scorer = std::make_unique<KvzipScorer>(inf);

  const std::string data = a.data.empty() ? model.config.data.val : a.data;
  if (data.empty()) throw std::invalid_argument(a.checkpoint + ": its config has no data.val; give --data");
  WindowLoader loader(expand_glob(data), P + N - 1, m.vocab_size, 0, /*shuffle=*/false);
  const int n_ctx = static_cast<int>(std::min<uint64_t>(a.contexts, loader.num_windows()));

  std::printf("kvtrain %s eval | %s | %d thread(s) | %d context(s) of %d tokens + %d continuation from %s\n",
              KVT_VERSION, a.checkpoint.c_str(), threads, n_ctx, P, N, data.c_str());
  std::printf("%s\n", kv_cache_summary(m).c_str());
  std::printf("eviction after every %d-token chunk; %d sink and %d recent positions always kept\n",
              inf.max_chunk(), a.sinks, a.recent);

  // Rows: full once (keep 1), every other policy at every keep ratio.
  std::vector<Row> rows;
  for (EvictPolicy p : policies) {
    if (p == EvictPolicy::full) rows.push_back({p, 1.0});
    else
      for (double k : keeps) rows.push_back({p, k});
  }
  std::vector<int32_t> window(static_cast<size_t>(P + N));
  double dense01 = 0, dense05 = 0, oracle_entries = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < n_ctx; c++) {
    loader.read_window(static_cast<uint64_t>(c), window.data());
    const std::span<const int32_t> context(window.data(), P), cont(window.data() + P, N);
    const std::vector<float>* oracle = nullptr;
    if (scorer) {
      scorer->run(context, prompt);
      oracle = &scorer->scores();
      for (float s : *oracle) {
        dense01 += s >= 0.01f;
        dense05 += s >= 0.05f;
      }
      oracle_entries += static_cast<double>(oracle->size());
    }
    for (Row& r : rows) {
      EvictionOptions opt;
      opt.policy = r.policy;
      opt.keep = r.keep;
      opt.sinks = a.sinks;
      opt.recent = a.recent;
      opt.chunk = inf.max_chunk();
      opt.seed = derive_seed(a.seed, static_cast<uint64_t>(c));
      const EvictionResult e = evaluate_eviction(inf, opt, context, cont, prompt, gates.get(), oracle);
      if (N > 0) r.cont_losses.push_back(e.continuation_loss);
      r.rec_losses.push_back(e.reconstruction_loss);
      r.entries += e.entries_total;
      r.kept += e.entries_kept;
      r.bytes += e.kv_bytes;
      r.bytes_kept += e.kv_bytes_kept;
    }
    std::fprintf(stderr, "context %d/%d done (%.0f s)\n", c + 1, n_ctx,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  std::printf("\n%-7s %5s %18s %20s %13s %24s\n", "policy", "keep", "continuation loss",
              "reconstruction loss", "kept entries", "KV bytes kept / context");
  std::ofstream json;
  if (!a.json.empty()) {
    json.open(a.json);
    if (!json) throw std::runtime_error(a.json + ": cannot create");
  }
  for (const Row& r : rows) {
    const double cont = mean(r.cont_losses), rec = mean(r.rec_losses);
    const double kept = static_cast<double>(r.kept) / static_cast<double>(r.entries);
    std::printf("%-7s %5.2f %18.4f %20.4f %12.1f%% %13.0f of %8.0f\n", to_string(r.policy).c_str(), r.keep,
                cont, rec, 100.0 * kept, static_cast<double>(r.bytes_kept) / n_ctx,
                static_cast<double>(r.bytes) / n_ctx);
    if (json.is_open())
      json << nlohmann::json{{"policy", to_string(r.policy)}, {"keep", r.keep},
                             {"continuation_loss", cont}, {"reconstruction_loss", rec},
                             {"kept_entries", kept}, {"kv_bytes_kept", r.bytes_kept / n_ctx},
                             {"kv_bytes", r.bytes / n_ctx}, {"contexts", n_ctx}, {"context", P},
                             {"continuation", N}, {"checkpoint", a.checkpoint}, {"gates", a.gates},
                             {"continuation_losses", r.cont_losses}, {"reconstruction_losses", r.rec_losses}}
                  .dump()
           << "\n";
  }
  if (oracle_entries > 0) {
    std::printf("KVzip targets: %.2f%% of entries >= 0.05, %.2f%% >= 0.01 (%d contexts)\n",
                100.0 * dense05 / oracle_entries, 100.0 * dense01 / oracle_entries, n_ctx);
    if (json.is_open())
      json << nlohmann::json{{"targets_ge_0.05", dense05 / oracle_entries},
                             {"targets_ge_0.01", dense01 / oracle_entries}, {"contexts", n_ctx}}
                  .dump()
           << "\n";
  }
}

}  // namespace

void add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* sub = app.add_subcommand(
      "eval", "evict KV pairs at inference (full, kvzip, gates, streaming, snapkv, random) and measure the losses or run the study's tasks");
  sub->add_option("--checkpoint", a->checkpoint, "model checkpoint (ckpt_<step>.h5)")->required();
  sub->add_option("--gates", a->gates, "gates of this model (gates.h5 of kvtrain gates)");
  sub->add_option("--policy", a->policies, "comma-separated: full, kvzip, gates, streaming (or recent), snapkv, random (default full)");
  sub->add_option("--keep", a->keeps, "comma-separated keep ratios in (0, 1] (default 1.0)");
  sub->add_option("--context", a->context, "context tokens (default 1024)");
  sub->add_option("--continuation", a->continuation, "continuation tokens scored after the context (default 64)");
  sub->add_option("--contexts", a->contexts, "held-out contexts (default 8)");
  sub->add_option("--data", a->data, "shards to read contexts from (default: the checkpoint's data.val)");
  sub->add_option("--chunk", a->chunk, "prefill chunk; eviction runs after each (default 256)");
  sub->add_option("--sinks", a->sinks, "first positions never evicted (default 4)");
  sub->add_option("--recent", a->recent, "last positions never evicted (default 32)");
  sub->add_option("--prompt", a->prompt, "repeat prompt for the reconstruction loss and the kvzip oracle");
  sub->add_option("--tokenizer", a->tokenizer, "a .model, .gguf or tokenizer.json (default: the checkpoint's embedded tokenizer, else its data.tokenizer)");
  sub->add_option("--seed", a->seed, "the random policy's seed (default 0)");
  sub->add_option("--backend", a->backend, "cpu or cuda (default cpu)");
  sub->add_option("--threads", a->threads, "OpenMP threads (default: automatic)");
  sub->add_option("--json", a->json, "write one JSON record per row to this file");
  sub->add_option("--study", a->study,
                  "study mode: write one JSON record per context to this directory (resumable; docs/kvzip.md)");
  sub->add_option("--tasks", a->tasks,
                  "study tasks, comma-separated: reconstruction, continuation, needle, freecopy "
                  "(default reconstruction,continuation,needle)");
  sub->add_option("--depths", a->depths, "needle depths in the context, cycled over contexts (default 0.1,0.5,0.9)");
  sub->add_option("--answer-tokens", a->answer_tokens, "greedy tokens of a needle answer (default 8)");
  sub->add_option("--first-context", a->first_context,
                  "study: start at this context; the earlier ones are another study's (default 0)");
  sub->add_option("--context-step", a->context_step,
                  "study: every S-th context from --first-context, so that S processes share a range (default 1)");
  sub->add_option("--freecopy-contexts", a->freecopy_contexts, "contexts that also run the free copy (default 0)");
  sub->add_option("--freecopy-keep", a->freecopy_keeps, "keep ratios of the free copy (default 0.3)");
  sub->add_option("--freecopy-primer", a->freecopy_primer,
                  "free copy: context tokens given after the prompt before the model copies on (default 16)");
  sub->add_option("--generate", a->generate, "free copy: greedy tokens generated (default 512)");
  sub->add_option("--decode-every", a->decode_every, "free copy: tokens between decode-time evictions (default 128)");
  sub->add_option("--decode-recent", a->decode_recent, "free copy: newest positions never evicted (default 128)");
  sub->add_flag("--memory-probe", a->memory_probe,
                "one context, one policy and keep: print the KV allocation and the peak RSS as one JSON line");
  add_memory_limit_flag(*sub, a->ignore_memory);
  sub->callback([a] {
    if (a->memory_probe) run_memory_probe(*a);
    else if (!a->study.empty()) run_eval_study(*a);
    else run_eval(*a);
  });
}

}  // namespace kvt::cli

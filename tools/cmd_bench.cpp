// kvtrain bench --config X [--set k=v] [--steps N] [--warmup W]
// kvtrain bench --inference [--config X ...] [--checkpoint CKPT ...] [--set k=v] [--contexts 256,1024,max]
//               [--decode-tokens 32] [--repeats 3] [--json FILE]
// Times full training steps (forward + backward + AdamW) on random tokens of the config's shape
// and reports the median step time, tokens/s, achieved GFLOP/s (docs/design.md, "Performance" FLOPs) and the
// process's peak resident memory. Under mpirun every rank runs the step on its share of the
// global batch and the gradients are all-reduced as in training; rank 0 reports, adding the time
// spent in the all-reduce per step and, separately, the time waiting for the slowest rank first.
//
// With --inference it times kvtrain's own inference path (model/inference.h, docs/design.md, "Inference and the KV cache") for
// each config (variant) with random init (train.seed), and each --checkpoint with its weights: prefill of a random prompt of each context
// length (median of --repeats), per-token decode averaged over --decode-tokens steps from that
// context, and the KV bytes measured from the cache; one Markdown table for all configs; and the
// throughput of attention over a 2048-position cache against sgemm (measure_cache_attention).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common/rng.h"
#include "model/inference.h"
#include "model/kv_sharing.h"
#include "model/transformer.h"
#include "tools/commands.h"
#include "tools/machine_info.h"
#include "tools/memory_check.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"

namespace kvt::cli {

namespace {
struct BenchArgs {
  std::string config, json_out;
  std::vector<std::string> configs;  // --config (one for the training bench)
  std::vector<std::string> checkpoints;  // --inference: model checkpoints (e.g. an imported model)
  std::vector<std::string> overrides;
  int steps = 5, warmup = 1;
  bool inference = false;
  std::string contexts = "256,1024,max";
  int decode_tokens = 32, repeats = 3;
  bool ignore_memory = false;
};

std::string loadavg_text() {
  double l[3] = {0, 0, 0};
  if (getloadavg(l, 3) != 3) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", l[0], l[1], l[2]);
  return buf;
}

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
  // picks the GPU before the CUDA Ops exist
  auto comm = make_communicator(ctx, t.backend, CommOptions{.timeout_s = t.comm_timeout_s, .abort = {}});
  const int world = comm->world();
  cfg.train.batch_size = per_rank_batch_size(t, world);
  const auto memory = check_bench_memory(a.config, cfg, a.ignore_memory);
  auto ops = make_ops(t.backend);
  ops->set_precision(parse_precision(t.precision));
  Transformer model(cfg.model, *ops, t.batch_size, t.seq_len, true, t.decay_embeddings,
                    parse_recompute(t.recompute));
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
    model.weights_updated();
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
  const MachineInfo mi = machine_info();
  std::printf("bench %s | %s %s, recompute %s | params %.2fM | batch %d x %d (accum %d) | %d rank(s) x %d thread(s)\n",
              a.config.c_str(), t.backend.c_str(), t.precision.c_str(), t.recompute.c_str(),
              model.params().total() * 1e-6, B, T, t.grad_accum, world, threads);
  std::printf("step %.1f ms (forward %.1f, backward %.1f, optimizer %.1f; median of %d) | "
              "%.0f tokens/s | %.2f GFLOP/s | peak RSS %.0f MiB (activations %.0f MiB)\n",
              step_s * 1e3, median(fwd) * 1e3, median(bwd) * 1e3, median(upd) * 1e3, a.steps,
              tokens / step_s, flops / step_s * 1e-9, peak_mb, model.activation_bytes() / 1048576.0);
  if (t.backend == "cpu") {
    std::printf("%s | load average %s\n", machine_line(mi).c_str(), loadavg_text().c_str());
    std::fflush(stdout);
    warn_generic_blas(mi, std::cerr);
  }
  if (world > 1)
    std::printf("all-reduce %.2f ms/step (%.1f%% of the step; %.1f MiB of gradients) | waiting for "
                "the slowest rank before it %.2f ms/step\n",
                median(reduce) * 1e3, 100.0 * median(reduce) / step_s, np * 4.0 / 1048576.0,
                median(wait) * 1e3);
  if (!a.json_out.empty()) {
    nlohmann::json j = {{"config", a.config}, {"params", model.params().total()},
                        {"backend", t.backend}, {"precision", t.precision}, {"recompute", t.recompute},
                        {"batch", B}, {"seq_len", T}, {"threads", threads}, {"ranks", world},
                        {"allreduce_ms", median(reduce) * 1e3}, {"rank_wait_ms", median(wait) * 1e3},
                        {"step_ms", step_s * 1e3}, {"tokens_per_s", tokens / step_s},
                        {"gflops", flops / step_s * 1e-9}, {"peak_rss_mib", peak_mb},
                        {"cpu", mi.cpu}, {"blas", mi.blas}, {"kernel_isa", mi.kernel_isa},
                        {"generic_blas", mi.generic_blas}, {"loadavg_end", loadavg_text()}};
    std::ofstream(a.json_out) << j.dump(2) << "\n";
  }
}

// ---- bench --inference -------------------------------------------------------------------------

// "256,1024,max" -> {256, 1024, -1} (-1 = the config's max_seq_len), in the given order.
std::vector<int> parse_contexts(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (item.empty()) continue;
    if (item == "max") {
      out.push_back(-1);
      continue;
    }
    size_t used = 0;
    long v = 0;
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < 1 || v > (1L << 30))
      throw std::invalid_argument("--contexts: '" + item +
                                  "' is not a positive integer or 'max' (e.g. 256,1024,max)");
    out.push_back(static_cast<int>(v));
  }
  if (out.empty()) throw std::invalid_argument("--contexts: no context lengths given");
  return out;
}

// A short name for a row: the config file's stem and what its KV cache is.
std::string variant_label(const std::string& path, const ModelConfig& m) {
  std::string kind;
  if (m.lrkv()) {
    kind = "LRKV r=" + std::to_string(m.lrkv_rank);
  } else if (m.kv_sharing != "none") {
    kind = m.kv_sharing;
  } else if (m.n_kv_heads == m.n_heads) {
    kind = "MHA";
  } else if (m.n_kv_heads == 1) {
    kind = "MQA";
  } else {
    kind = "GQA " + std::to_string(m.n_kv_heads) + " KV heads";
  }
  return std::filesystem::path(path).stem().string() + " (" + kind + ")";
}

struct InferenceRow {
  std::string config, variant;
  size_t params = 0;
  int context = 0, decode_start = 0, decode_steps = 0;
  double prefill_ms = 0, decode_ms = 0, decode_median_ms = 0;
  std::vector<double> prefill_runs_ms;
  size_t kv_bytes_per_token = 0, kv_bytes = 0;
};

// Attention over the KV cache (Ops::attention_cache_forward) against a plain sgemm of the same
// multiply-accumulates, timed in the same run: n = 256 new queries of the config's heads at
// positions 1792..2047 over 2048 cached positions per KV head. The attention's FLOPs are its two
// products, 2 * 2 n H S D (every slot is scored, the causal mask zeroes the future ones); the
// sgemm is matmul_forward [n H, D] x [S, D]^T twice (the same 4 n H S D).
struct AttentionThroughput {
  int n = 256, S = 2048, H = 0, Hkv = 0, D = 0;
  double attention_gflops = 0, sgemm_gflops = 0;
};

AttentionThroughput measure_cache_attention(Ops& ops, const ModelConfig& m, int repeats) {
  AttentionThroughput r;
  r.H = m.n_heads, r.Hkv = m.kv_heads(), r.D = m.head_dim();
  const int n = r.n, S = r.S, H = r.H, D = r.D, p0 = S - n;
  Rng rng(7);
  auto random_buffer = [&](size_t count) {
    std::vector<float> h(count);
    for (auto& x : h) x = static_cast<float>(rng.normal());
    Buffer<float> b(ops, count);
    ops.to_device(b.data(), h.data(), count * sizeof(float));
    return b;
  };
  Buffer<float> q = random_buffer(static_cast<size_t>(n) * H * D);
  Buffer<float> kv = random_buffer(static_cast<size_t>(r.Hkv) * S * 2 * D);
  Buffer<float> out(ops, static_cast<size_t>(n) * H * std::max(D, S));
  std::vector<int32_t> hp(static_cast<size_t>(r.Hkv) * S);
  for (size_t i = 0; i < hp.size(); i++) hp[i] = static_cast<int32_t>(i % S);
  Buffer<int32_t> pos(ops, hp.size());
  ops.to_device(pos.data(), hp.data(), hp.size() * sizeof(int32_t));
  const CacheAttnShape shape{n, p0, H, r.Hkv, D, H * D, S, 2 * D, static_cast<int64_t>(S) * 2 * D};
  const double flops = 4.0 * n * H * static_cast<double>(S) * D;
  auto best_seconds = [&](auto&& fn) {
    fn();
    ops.synchronize();
    std::vector<double> t;
    for (int i = 0; i < std::max(repeats, 3); i++) {
      const auto t0 = std::chrono::steady_clock::now();
      fn();
      ops.synchronize();
      t.push_back(seconds_since(t0));
    }
    return median(t);
  };
  r.attention_gflops = flops / best_seconds([&] {
    ops.attention_cache_forward(out.data(), q.data(), kv.data(), kv.data() + D, pos.data(), shape);
  }) * 1e-9;
  r.sgemm_gflops = flops / best_seconds([&] {
    ops.matmul_forward(out.data(), q.data(), kv.data(), static_cast<int64_t>(n) * H, D, S);
    ops.matmul_forward(out.data(), q.data(), kv.data(), static_cast<int64_t>(n) * H, D, S);
  }) * 1e-9;
  return r;
}

// One variant under test: its backend, the randomly initialised model and its inference cache.
struct InferenceSubject {
  std::string path, label;
  ModelConfig model;
  Ops* ops = nullptr;  // shared by all subjects of one backend
  std::unique_ptr<Transformer> transformer;
  std::unique_ptr<InferenceModel> inf;
  std::vector<int32_t> prompt, dec_tokens;
};

void run_inference_bench(const BenchArgs& a) {
  if (dist_context().world() > 1)
    throw std::runtime_error("bench --inference runs as one process: start it without mpirun");
  if (a.decode_tokens < 1) throw std::invalid_argument("--decode-tokens must be >= 1");
  if (a.repeats < 1) throw std::invalid_argument("--repeats must be >= 1");
  const std::vector<int> wanted = parse_contexts(a.contexts);
  std::vector<InferenceRow> rows;
  std::vector<std::string> notes;
  std::string backend;
  int threads = 0;
  // Build every variant first: the timings below interleave them (per repeat and per decode
  // step), so drift in a shared machine's load spreads over all variants instead of favouring
  // the first configs.
  // One Ops per backend, shared by every subject (declared first: destroyed after them).
  std::vector<std::pair<std::string, std::unique_ptr<Ops>>> backends;
  std::vector<InferenceSubject> subs;
  std::vector<int> all_contexts;
  // Configs (random init) first, then checkpoints (their trained or imported weights).
  std::vector<std::pair<std::string, bool>> sources;
  for (const std::string& p : a.configs) sources.emplace_back(p, false);
  for (const std::string& p : a.checkpoints) sources.emplace_back(p, true);
  if (sources.empty()) throw std::invalid_argument("bench --inference: give --config or --checkpoint");
  for (const auto& [path, is_checkpoint] : sources) {
    const RunConfig cfg = is_checkpoint ? parse_run_config(read_checkpoint_config(path), a.overrides, path)
                                        : load_run_config(path, a.overrides);
    InferenceSubject s;
    s.path = path;
    s.model = cfg.model;
    const int L = s.model.max_seq_len;
    if (a.decode_tokens >= L)
      throw std::invalid_argument("--decode-tokens " + std::to_string(a.decode_tokens) +
                                  " must be below model.max_seq_len " + std::to_string(L) +
                                  " of " + path);
    threads = configure_threads(cfg.train.threads, 1);
    backend = cfg.train.backend;
    auto it = std::find_if(backends.begin(), backends.end(),
                           [&](const auto& b) { return b.first == cfg.train.backend; });
    if (it == backends.end()) {
      backends.emplace_back(cfg.train.backend, make_ops(cfg.train.backend));
      it = std::prev(backends.end());
    }
    s.ops = it->second.get();
    // Random init with the model's own seed; the Transformer's activations are sized for one
    // token (it only holds the parameters the InferenceModel shares).
    s.transformer = std::make_unique<Transformer>(s.model, *s.ops, 1, 1, false);
    if (is_checkpoint) s.transformer->params_from_host(load_model_checkpoint(path).params);
    else s.transformer->init_parameters(cfg.train.seed);
    s.inf = std::make_unique<InferenceModel>(*s.transformer);
    s.label = variant_label(path, s.model);
    Rng rng(cfg.train.seed + 1);
    s.prompt.resize(static_cast<size_t>(L));
    for (auto& t : s.prompt) t = static_cast<int32_t>(rng.below(s.model.vocab_size));
    s.dec_tokens.resize(static_cast<size_t>(a.decode_tokens));
    for (auto& t : s.dec_tokens) t = static_cast<int32_t>(rng.below(s.model.vocab_size));
    for (int c : wanted) {
      const int ctx = c < 0 ? L : c;
      if (ctx > L)
        notes.push_back(s.label + ": context " + std::to_string(ctx) + " skipped (above " +
                        "model.max_seq_len " + std::to_string(L) +
                        "; raise it with --set model.max_seq_len=N)");
      else if (std::find(all_contexts.begin(), all_contexts.end(), ctx) == all_contexts.end())
        all_contexts.push_back(ctx);
    }
    // Untimed warm-up: touches the cache, the scratch and the arena once.
    s.inf->prefill(s.prompt.data(), std::min(L, 64));
    s.inf->decode(s.dec_tokens[0]);
    s.ops->synchronize();
    subs.push_back(std::move(s));
  }
  const std::string load_start = loadavg_text();
  const AttentionThroughput att = measure_cache_attention(*subs.front().ops, subs.front().model,
                                                          a.repeats);

  for (const int ctx : all_contexts) {
    std::vector<InferenceSubject*> active;
    for (auto& s : subs)
      if (ctx <= s.model.max_seq_len) active.push_back(&s);
    std::vector<InferenceRow> ctx_rows(active.size());
    for (int rep = 0; rep < a.repeats; rep++) {
      for (size_t k = 0; k < active.size(); k++) {
        InferenceSubject& s = *active[k];
        s.inf->reset();
        s.ops->synchronize();
        const auto t0 = std::chrono::steady_clock::now();
        s.inf->prefill(s.prompt.data(), ctx);
        s.ops->synchronize();
        ctx_rows[k].prefill_runs_ms.push_back(seconds_since(t0) * 1e3);
      }
    }
    for (size_t k = 0; k < active.size(); k++) {
      InferenceSubject& s = *active[k];
      InferenceRow& r = ctx_rows[k];
      const int L = s.model.max_seq_len;
      r.config = s.path;
      r.variant = s.label;
      r.params = s.transformer->params().total();
      r.context = ctx;
      r.prefill_ms = median(r.prefill_runs_ms);
      r.kv_bytes = s.inf->kv_bytes();  // measured from the cache at length ctx
      r.kv_bytes_per_token = r.kv_bytes / static_cast<size_t>(s.inf->length());
      // Decode from position ctx; a full cache has no room, so there the window ends at ctx.
      r.decode_start = std::min(ctx, L - a.decode_tokens);
      if (r.decode_start != ctx) {
        s.inf->reset();
        s.inf->prefill(s.prompt.data(), r.decode_start);
        notes.push_back(s.label + ", context " + std::to_string(ctx) +
                        ": decode timed over positions [" + std::to_string(r.decode_start) + ", " +
                        std::to_string(r.decode_start + a.decode_tokens) +
                        ") (the cache holds model.max_seq_len positions)");
      }
      r.decode_steps = a.decode_tokens;
    }
    std::vector<std::vector<double>> steps(active.size());
    for (int i = 0; i < a.decode_tokens; i++) {
      for (size_t k = 0; k < active.size(); k++) {
        InferenceSubject& s = *active[k];
        const auto t0 = std::chrono::steady_clock::now();
        s.inf->decode(s.dec_tokens[static_cast<size_t>(i)]);
        s.ops->synchronize();
        steps[k].push_back(seconds_since(t0) * 1e3);
      }
    }
    for (size_t k = 0; k < active.size(); k++) {
      InferenceRow& r = ctx_rows[k];
      double sum = 0;
      for (double v : steps[k]) sum += v;
      r.decode_ms = sum / static_cast<double>(steps[k].size());
      r.decode_median_ms = median(steps[k]);
      std::fprintf(stderr, "  %s context %d: prefill %.1f ms, decode %.3f ms/token\n",
                   r.variant.c_str(), ctx, r.prefill_ms, r.decode_ms);
      rows.push_back(std::move(r));
    }
  }
  const std::string load_end = loadavg_text();
  // Side by side: grouped by context (in the order given), configs in the order given.
  std::printf("bench --inference | %s | %d thread(s) | prefill: median of %d | decode: mean of %d "
              "steps | load average %s at start, %s at end\n\n",
              backend.c_str(), threads, a.repeats, a.decode_tokens, load_start.c_str(),
              load_end.c_str());
  const MachineInfo mi = machine_info();
  if (backend == "cpu") {
    std::printf("%s\n\n", machine_line(mi).c_str());
    std::fflush(stdout);
    warn_generic_blas(mi, std::cerr);
  }
  std::printf("| variant | params | context | prefill ms | prefill tokens/s | decode ms/token | "
              "KV bytes/token | KV MiB at context |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : rows)
    std::printf("| %s | %.3fM | %d | %.1f | %.0f | %.3f | %zu | %.2f |\n", r.variant.c_str(),
                r.params * 1e-6, r.context, r.prefill_ms, r.context / (r.prefill_ms * 1e-3),
                r.decode_ms, r.kv_bytes_per_token, r.kv_bytes / 1048576.0);
  std::printf("\nattention over the KV cache (%s heads: H %d, H_kv %d, d_h %d; %d queries over %d "
              "cached positions): %.2f GFLOP/s; plain sgemm of the same FLOPs in this run: %.2f "
              "GFLOP/s; ratio %.2f\n",
              subs.front().label.c_str(), att.H, att.Hkv, att.D, att.n, att.S,
              att.attention_gflops, att.sgemm_gflops, att.attention_gflops / att.sgemm_gflops);
  if (!notes.empty()) {
    std::printf("\n");
    for (const auto& n : notes) std::printf("- %s\n", n.c_str());
  }
  if (!a.json_out.empty()) {
    nlohmann::json j = {{"mode", "inference"}, {"backend", backend}, {"threads", threads},
                        {"repeats", a.repeats}, {"decode_tokens", a.decode_tokens},
                        {"loadavg_start", load_start}, {"loadavg_end", load_end},
                        {"cpu", mi.cpu}, {"blas", mi.blas}, {"kernel_isa", mi.kernel_isa},
                        {"notes", notes}, {"rows", nlohmann::json::array()},
                        {"cache_attention", {{"queries", att.n}, {"cached_positions", att.S},
                                             {"heads", att.H}, {"kv_heads", att.Hkv},
                                             {"head_dim", att.D},
                                             {"attention_gflops", att.attention_gflops},
                                             {"sgemm_gflops", att.sgemm_gflops}}}};
    for (const auto& r : rows)
      j["rows"].push_back({{"config", r.config}, {"variant", r.variant}, {"params", r.params},
                           {"context", r.context}, {"prefill_ms", r.prefill_ms},
                           {"prefill_runs_ms", r.prefill_runs_ms},
                           {"prefill_tokens_per_s", r.context / (r.prefill_ms * 1e-3)},
                           {"decode_start", r.decode_start}, {"decode_steps", r.decode_steps},
                           {"decode_ms_per_token", r.decode_ms},
                           {"decode_median_ms_per_token", r.decode_median_ms},
                           {"kv_bytes_per_token", r.kv_bytes_per_token},
                           {"kv_bytes", r.kv_bytes}});
    std::ofstream(a.json_out) << j.dump(2) << "\n";
  }
}
}  // namespace

void add_bench(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* sub = app.add_subcommand(
      "bench", "time training steps: tokens/s, GFLOP/s, peak memory (--inference: prefill/decode)");
  sub->add_option("--config", args->configs,
                  "YAML config (repeatable with --inference: one table row group per config)");
  sub->add_option("--set", args->overrides, "override a key: section.key=value (repeatable)");
  sub->add_option("--steps", args->steps, "timed steps")->check(CLI::PositiveNumber);
  sub->add_option("--warmup", args->warmup, "untimed steps first")->check(CLI::NonNegativeNumber);
  sub->add_option("--json", args->json_out, "also write the result as JSON");
  sub->add_option("--checkpoint", args->checkpoints,
                  "--inference: a model checkpoint to time with its own weights (repeatable; e.g. an "
                  "imported model)");
  sub->add_flag("--inference", args->inference,
                "time prefill, per-token decode and KV bytes of the inference path instead");
  sub->add_option("--contexts", args->contexts,
                  "--inference: context lengths, comma-separated; 'max' = model.max_seq_len "
                  "(default 256,1024,max)");
  sub->add_option("--decode-tokens", args->decode_tokens,
                  "--inference: decode steps averaged per context (default 32)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--repeats", args->repeats, "--inference: prefill repeats, median (default 3)")
      ->check(CLI::PositiveNumber);
  add_memory_limit_flag(*sub, args->ignore_memory);
  sub->callback([args]() {
    if (args->inference) return run_inference_bench(*args);
    if (args->configs.size() != 1)
      throw std::invalid_argument("bench: give one --config (several only with --inference)");
    args->config = args->configs.front();
    run_bench(*args);
  });
}

}  // namespace kvt::cli

// tools/eval_study.cpp — `kvtrain eval --study DIR` and `--memory-probe` (docs/kvzip.md).
//
// Study: for each held-out context (window c of --data, --context + --continuation tokens, with
// one needle sentence inserted at a sentence boundary near depth d = depths[c mod 3]):
//   oracle KVzip scores (when kvzip is a policy), the needle question without the context (the
//   floor), then for every (policy, keep) condition: compress_context once, then the tasks on
//   the same compressed cache, truncated back to the context between them:
//     reconstruction  [prompt ; context] teacher-forced: NLL and exact-copy prefix
//     continuation    NLL of the next --continuation tokens
//     needle          greedy answer to the question, exact match of the 5-digit code
//     freecopy        (first --freecopy-contexts contexts) the prompt and the context's first
//                     --freecopy-primer tokens, then --generate greedy tokens with decode-time
//                     eviction, scored against the rest of the context
//   and DIR/ctx_<c>.json, written atomically when the context is done; a rerun skips those.
// --first-context K starts at context K (numbering, needle depths and seeds unchanged), so that
// one set of contexts can be split over studies of different policies or tasks (the report pools
// the records of every study by context); --context-step S takes every S-th context from there,
// so that S processes (K, K + 1, ..., K + S - 1) share one range and stop with no gap in it.
// Memory probe: one context, one policy and keep ratio, in a process that loads no oracle; the
// peak RSS is reset (/proc/self/clear_refs) once the weights are in place, so VmHWM is the peak of
// the compression itself.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/file_commit.h"
#include "data/loader.h"
#include "kernels/common/rng.h"
#include "model/decode_eviction.h"
#include "model/eviction.h"
#include "model/eviction_tasks.h"
#include "model/gates.h"
#include "model/inference.h"
#include "model/kvzip.h"
#include "tools/commands.h"
#include "tools/eval_args.h"
#include "tools/memory_check.h"
#include "train/checkpoint.h"
#include "train/gate_files.h"
#include "train/gate_trainer.h"
#include "train/model_tokenizer.h"
#include "train/trainer.h"

namespace kvt::cli {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

constexpr uint64_t kNeedlePurpose = 0x6e6565646c65ull;  // "needle"
const char* kNeedleQuestion =
    "\n<|im_start|>user\nWhat is the access code for the blue door?<|im_end|>\n<|im_start|>assistant\n"
    "The access code for the blue door is";

// The model, its tokenizer, gates and data, shared by the study and the probe.
struct Setup {
  ModelCheckpoint model;
  std::unique_ptr<TextTokenizer> tok;
  std::vector<int32_t> prompt;
  std::unique_ptr<Ops> ops;
  std::unique_ptr<InferenceModel> inf;
  std::unique_ptr<GateModel> gates;
  std::string data;

  explicit Setup(const EvalArgs& a) {
    if (dist_context().world() > 1) throw std::runtime_error("eval runs as one process: start it without mpirun");
    configure_threads(a.threads, 1);
    model = load_model_checkpoint(a.checkpoint);
    const ModelConfig& m = model.config.model;
    tok = checkpoint_tokenizer(a.checkpoint, model.config.data.tokenizer, m.vocab_size, a.tokenizer);
    prompt = repeat_prompt_tokens(*tok, a.prompt, m.vocab_size);
    ops = make_ops(a.backend);
    inf = std::make_unique<InferenceModel>(m, *ops, model.params, InferenceOptions{std::min(a.chunk, m.max_seq_len)});
    if (!a.gates.empty()) {
      std::string warning;
      const std::vector<float> g = load_gates(a.gates, model, &warning);
      if (!warning.empty()) std::fprintf(stderr, "warning: %s\n", warning.c_str());
      gates = std::make_unique<GateModel>(m, *ops, inf->max_chunk(), /*with_grads=*/false);
      gates->params_from_host(g);
    }
    std::vector<float>().swap(model.params);  // the InferenceModel holds its own copy
    data = a.data.empty() ? model.config.data.val : a.data;
    if (data.empty()) throw std::invalid_argument(a.checkpoint + ": its config has no data.val; give --data");
  }
};

// A context with the needle sentence inserted at a sentence boundary near depth x P (the
// nearest position within 64 tokens after a token ending in '.', '!', '?' or a newline; else
// exactly there), cut back to P tokens; the continuation is the text that follows.
struct Needle {
  std::vector<int32_t> context, continuation;
  int position = 0;
  double depth = 0;
  std::string code;
};

Needle make_needle(const TextTokenizer& tok, const std::vector<int32_t>& window, int P, int N, double depth,
                   uint64_t seed, int c) {
  Needle n;
  n.depth = depth;
  n.code = std::to_string(10000 + Rng(derive_seed(seed, kNeedlePurpose, static_cast<uint64_t>(c))).below(90000));
  const std::vector<int32_t> sentence = tok.encode(" The access code for the blue door is " + n.code + ".");
  const int L = static_cast<int>(sentence.size());
  if (L >= P) throw std::invalid_argument("--context " + std::to_string(P) + " is too short for the needle");
  const int want = static_cast<int>(depth * (P - L));
  n.position = want;
  for (int d = 0; d <= 64; d++) {
    bool found = false;
    for (int pos : {want - d, want + d}) {
      if (pos < 1 || pos > P - L) continue;
      const std::string prev = tok.decode(std::span<const int32_t>(&window[pos - 1], 1));
      if (!prev.empty() && (prev.back() == '.' || prev.back() == '!' || prev.back() == '?' || prev.back() == '\n')) {
        n.position = pos, found = true;
        break;
      }
    }
    if (found) break;
  }
  n.context.assign(window.begin(), window.begin() + n.position);
  n.context.insert(n.context.end(), sentence.begin(), sentence.end());
  n.context.insert(n.context.end(), window.begin() + n.position, window.begin() + (P - L));
  n.continuation.assign(window.begin() + (P - L), window.begin() + (P - L + N));
  return n;
}

// The answer is right when its first run of digits is the code.
bool answer_correct(const std::string& out, const std::string& code) {
  size_t i = out.find_first_of("0123456789");
  if (i == std::string::npos) return false;
  size_t j = out.find_first_not_of("0123456789", i);
  return out.substr(i, j == std::string::npos ? std::string::npos : j - i) == code;
}

bool decodes_new_tokens(EvictPolicy p) {
  return p == EvictPolicy::full || p == EvictPolicy::gates || p == EvictPolicy::streaming || p == EvictPolicy::random;
}

int64_t read_status_kb(const char* key) {  // a "Key:   N kB" line of /proc/self/status, or -1
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(std::strlen(key)));
  return -1;
}

}  // namespace

void run_eval_study(const EvalArgs& a) {
  namespace fs = std::filesystem;
  const std::vector<double> keeps = parse_keeps(a.keeps), fkeeps = parse_keeps(a.freecopy_keeps, "--freecopy-keep");
  std::vector<EvictPolicy> policies;
  for (const std::string& p : split_list(a.policies)) policies.push_back(parse_evict_policy(p));
  if (policies.empty()) throw std::invalid_argument("--policy: give at least one policy");
  std::vector<double> depths;
  for (const std::string& d : split_list(a.depths)) {
    size_t used = 0;
    double x = -1;
    try {
      x = std::stod(d, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != d.size() || !(x >= 0 && x <= 1))
      throw std::invalid_argument("--depths: '" + d + "' is not a number in [0, 1]");
    depths.push_back(x);
  }
  if (depths.empty()) throw std::invalid_argument("--depths: give at least one depth");
  bool want_rec = false, want_cont = false, want_needle = false, want_free = false;
  for (const std::string& t : split_list(a.tasks)) {
    if (t == "reconstruction") want_rec = true;
    else if (t == "continuation") want_cont = true;
    else if (t == "needle") want_needle = true;
    else if (t == "freecopy") want_free = true;
    else throw std::invalid_argument("--tasks: unknown task '" + t + "' (reconstruction, continuation, needle, freecopy)");
  }
  for (auto [ok, what] : {std::pair{a.context >= 16, "--context must be >= 16"},
                          std::pair{a.continuation >= 1, "--continuation must be >= 1 in study mode"},
                          std::pair{a.contexts >= 1, "--contexts must be >= 1"},
                          std::pair{a.first_context >= 0 && a.first_context < a.contexts,
                                    "--first-context must be in [0, --contexts)"},
                          std::pair{a.context_step >= 1, "--context-step must be >= 1"},
                          std::pair{a.freecopy_primer >= 0 && a.freecopy_primer < a.context,
                                    "--freecopy-primer must be in [0, --context)"},
                          std::pair{a.generate >= 1 && a.decode_every >= 1, "--generate and --decode-every must be >= 1"}})
    if (!ok) throw std::invalid_argument(what);
  bool need_oracle = false, need_gates = false;
  for (EvictPolicy p : policies) {
    need_oracle = need_oracle || p == EvictPolicy::kvzip;
    need_gates = need_gates || p == EvictPolicy::gates;
  }
  if (need_gates && a.gates.empty()) throw std::invalid_argument("--policy gates needs --gates FILE (gates.h5)");
  const auto memory = check_eval_memory(a.checkpoint, a.tokenizer, a.prompt, a.context, a.chunk, need_oracle,
                                        !a.gates.empty(), a.backend, a.ignore_memory);

  Setup s(a);
  InferenceModel& inf = *s.inf;
  const ModelConfig& m = inf.config();
  const int P = a.context, N = a.continuation, Q = static_cast<int>(s.prompt.size());
  if (std::max({P + N, 2 * P + Q, P + Q + a.generate}) > m.max_seq_len)
    throw std::invalid_argument("--context " + std::to_string(P) + ": context + prompt + context (" +
                                std::to_string(2 * P + Q) + "), context + continuation and context + prompt + " +
                                "--generate must fit model.max_seq_len " + std::to_string(m.max_seq_len));
  const std::vector<int32_t> question = s.tok->encode(kNeedleQuestion, /*parse_special=*/true);
  std::vector<int32_t> stop;
  for (const char* t : {"<|im_end|>", "<|endoftext|>"}) {
    const std::vector<int32_t> id = s.tok->encode(t, true);
    if (id.size() == 1) stop.push_back(id[0]);
  }
  WindowLoader loader(expand_glob(s.data), P + N - 1, m.vocab_size, 0, /*shuffle=*/false);
  const int n_ctx = static_cast<int>(std::min<uint64_t>(a.contexts, loader.num_windows()));
  std::unique_ptr<KvzipScorer> scorer;
  if (need_oracle) scorer = std::make_unique<KvzipScorer>(inf);

  // meta.json: what the records were made with; a rerun must match it.
  json meta = {{"checkpoint", a.checkpoint}, {"gates", a.gates}, {"data", s.data}, {"context", P},
               {"continuation", N}, {"policies", split_list(a.policies)}, {"keeps", keeps},
               {"tasks", split_list(a.tasks)}, {"depths", depths}, {"generate", a.generate},
               {"freecopy_contexts", a.freecopy_contexts}, {"freecopy_keeps", fkeeps},
               {"freecopy_primer", a.freecopy_primer},
               {"prompt_tokens", Q}, {"chunk", inf.max_chunk()}, {"sinks", a.sinks}, {"recent", a.recent},
               {"decode_every", a.decode_every}, {"decode_recent", a.decode_recent}, {"seed", a.seed},
               {"first_context", a.first_context}, {"context_step", a.context_step},
               {"kvtrain", KVT_VERSION}};
  fs::create_directories(a.study);
  const std::string meta_path = a.study + "/meta.json";
  if (fs::exists(meta_path)) {
    std::ifstream in(meta_path);
    json have = json::parse(in, nullptr, /*allow_exceptions=*/false);
    json mine = meta, theirs = have;
    if (have.is_object() && !have.contains("context_step")) theirs["context_step"] = 1;  // older records
    for (json* j : {&mine, &theirs}) j->erase("contexts"), j->erase("threads");
    if (have.is_discarded() || mine != theirs)
      throw std::invalid_argument(meta_path + ": the study there was made with other options; use another --study");
  }
  meta["contexts"] = n_ctx;
  meta["threads"] = configure_threads(a.threads, 1);
  write_file_atomic(meta_path, meta.dump(1) + "\n");

  std::fprintf(stderr, "kvtrain eval --study %s | %d context(s) of %d tokens | %zu policies x %zu keeps\n",
               a.study.c_str(), n_ctx, P, policies.size(), keeps.size());
  std::vector<int32_t> window(static_cast<size_t>(P + N));
  const auto t_all = Clock::now();
  int done_now = 0;
  for (int c = a.first_context; c < n_ctx; c += a.context_step) {
    char name[32];
    std::snprintf(name, sizeof name, "/ctx_%05d.json", c);
    const std::string path = a.study + name;
    if (fs::exists(path)) continue;
    loader.read_window(static_cast<uint64_t>(c), window.data());
    const Needle nd = make_needle(*s.tok, window, P, N, depths[c % depths.size()], a.seed, c);
    json rec = {{"context", c}, {"tokens", P}, {"depth", nd.depth}, {"needle_position", nd.position},
                {"answer", nd.code}, {"no_context", nullptr}, {"oracle_seconds", nullptr}};
    std::vector<float> oracle;
    if (scorer) {
      const auto t0 = Clock::now();
      scorer->run(nd.context, s.prompt);
      oracle = scorer->scores();
      rec["oracle_seconds"] = since(t0);
    }
    if (want_needle) {
      inf.reset();
      const std::string out = s.tok->decode(greedy_answer(inf, question, a.answer_tokens, stop));
      rec["no_context"] = {{"needle_correct", answer_correct(out, nd.code)}, {"needle_output", out}};
    }
    json results = json::array();
    for (EvictPolicy p : policies)
      for (double keep : p == EvictPolicy::full ? std::vector<double>{1.0} : keeps) {
        const auto t0 = Clock::now();
        EvictionOptions opt;
        opt.policy = p;
        opt.keep = keep;
        opt.sinks = a.sinks;
        opt.recent = a.recent;
        opt.chunk = inf.max_chunk();
        opt.seed = derive_seed(a.seed, static_cast<uint64_t>(c));
        Evictor ev(inf, opt);
        const CompressResult cr = compress_context(inf, ev, nd.context, s.gates.get(), scorer ? &oracle : nullptr);
        json r = {{"policy", to_string(p)}, {"keep", keep}, {"entries_kept", cr.entries_kept},
                  {"entries_total", cr.entries_total}, {"kv_bytes_kept", cr.kv_bytes_kept},
                  {"kv_alloc_bytes", cr.kv_alloc_bytes}, {"kv_peak_bytes", cr.kv_peak_bytes},
                  {"reconstruction_nll", nullptr}, {"copy_prefix", nullptr}, {"continuation_nll", nullptr},
                  {"needle_correct", nullptr}, {"needle_output", nullptr}, {"prefill_seconds", cr.seconds},
                  {"gate_seconds", cr.gate_seconds}, {"freecopy", nullptr}};
        if (want_rec) {
          const Reconstruction rc = reconstruct(inf, s.prompt, nd.context);
          r["reconstruction_nll"] = rc.nll;
          r["copy_prefix"] = rc.copy_prefix;
          r["copy_accuracy"] = rc.copy_accuracy;
        }
        if (want_cont) r["continuation_nll"] = continuation_nll(inf, cr.last_logits, nd.continuation);
        if (want_needle) {
          const std::string out = s.tok->decode(greedy_answer(inf, question, a.answer_tokens, stop));
          r["needle_correct"] = answer_correct(out, nd.code);
          r["needle_output"] = out;
        }
        const bool free_keep = p == EvictPolicy::full ||
                               std::find(fkeeps.begin(), fkeeps.end(), keep) != fkeeps.end();
        if (want_free && c < a.freecopy_contexts && decodes_new_tokens(p) && free_keep) {
          std::unique_ptr<DecodeEvictor> dec;
          if (p != EvictPolicy::full) {
            ev.set_window(4, a.decode_recent);
            dec = std::make_unique<DecodeEvictor>(inf, ev, s.gates.get(), a.decode_every);
          }
          const FreeCopy fc = free_copy(inf, s.prompt, nd.context, a.generate, dec.get(), a.freecopy_primer);
          r["freecopy"] = {{"generated", fc.tokens.size()}, {"text", s.tok->decode(fc.tokens)},
                           {"copy_prefix", fc.copy_prefix},
                           {"match_rate", fc.match_rate}, {"lcs_rate", fc.lcs_rate},
                           {"decode_seconds", fc.decode_seconds},
                           {"decode_gate_seconds", fc.gate_seconds}, {"evictions", fc.evictions}};
        }
        r["seconds"] = since(t0);
        results.push_back(r);
      }
    rec["results"] = results;
    // decoded text may end inside a UTF-8 character: replace what is not valid
    write_file_atomic(path, rec.dump(1, ' ', false, json::error_handler_t::replace) + "\n");
    done_now++;
    const double el = since(t_all);
    std::fprintf(stderr, "context %d/%d done (%.0f s this run, %.1f s per context)\n", c + 1, n_ctx, el,
                 el / done_now);
  }
}

void run_memory_probe(const EvalArgs& a) {
  const std::vector<double> keeps = parse_keeps(a.keeps);
  const std::vector<std::string> pol = split_list(a.policies);
  if (keeps.size() != 1 || pol.size() != 1)
    throw std::invalid_argument("--memory-probe takes one --policy and one --keep");
  const EvictPolicy p = parse_evict_policy(pol[0]);
  if (p == EvictPolicy::kvzip) throw std::invalid_argument("--memory-probe loads no oracle: policy kvzip is not probed");
  if (p == EvictPolicy::gates && a.gates.empty()) throw std::invalid_argument("--policy gates needs --gates FILE (gates.h5)");
  const int64_t load_kb = read_status_kb("VmHWM:");
  Setup s(a);
  InferenceModel& inf = *s.inf;
  const int P = a.context;
  if (P > inf.capacity())
    throw std::invalid_argument("--context " + std::to_string(P) + " exceeds model.max_seq_len " +
                                std::to_string(inf.capacity()));
  WindowLoader loader(expand_glob(s.data), P - 1, inf.config().vocab_size, 0, /*shuffle=*/false);
  std::vector<int32_t> ctx(static_cast<size_t>(P));
  loader.read_window(0, ctx.data());
  const int64_t before_kb = read_status_kb("VmHWM:");
  std::ofstream("/proc/self/clear_refs") << "5";  // peak RSS := current RSS (Linux >= 4.0)
  const int64_t reset_kb = read_status_kb("VmHWM:");
  EvictionOptions opt;
  opt.policy = p;
  opt.keep = keeps[0];
  opt.sinks = a.sinks;
  opt.recent = a.recent;
  opt.chunk = inf.max_chunk();
  opt.seed = a.seed;
  Evictor ev(inf, opt);
  const CompressResult cr = compress_context(inf, ev, ctx, s.gates.get(), nullptr);
  const int64_t peak_kb = read_status_kb("VmHWM:"), rss_kb = read_status_kb("VmRSS:");
  const json j = {{"policy", to_string(p)}, {"keep", keeps[0]}, {"context", P},
                  {"entries_kept", cr.entries_kept}, {"entries_total", cr.entries_total},
                  {"kv_bytes_kept", cr.kv_bytes_kept}, {"kv_alloc_bytes", cr.kv_alloc_bytes},
                  {"kv_peak_bytes", cr.kv_peak_bytes}, {"vmhwm_bytes", peak_kb * 1024},
                  {"vmrss_bytes", rss_kb * 1024}, {"vmhwm_load_bytes", before_kb * 1024},
                  {"vmhwm_reset", reset_kb < before_kb}, {"vmhwm_at_start_bytes", load_kb * 1024},
                  {"prefill_seconds", cr.seconds}, {"gate_seconds", cr.gate_seconds}};
  std::printf("%s\n", j.dump().c_str());
}

}  // namespace kvt::cli

// tools/memory_check.cpp — memory available to this process and the refusal of runs that do not
// fit (tools/memory_check.h).
#include "tools/memory_check.h"

#include <charconv>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "data/file_commit.h"
#include "tools/commands.h"
#include "train/checkpoint.h"
#include "train/gate_trainer.h"
#include "train/model_tokenizer.h"
#include "train/trainer.h"

namespace kvt {

namespace fs = std::filesystem;

namespace {

std::string_view trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// A whole unsigned decimal number, or nullopt.
std::optional<uint64_t> to_u64(std::string_view s) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::optional<std::string> read_small_file(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// One cgroup directory's room: limit - (usage - inactive file cache); nullopt when unlimited or
// unreadable.
std::optional<uint64_t> cgroup_room(const fs::path& dir, bool v2) {
  const auto limit_text = read_small_file(dir / (v2 ? "memory.max" : "memory.limit_in_bytes"));
  const auto usage_text = read_small_file(dir / (v2 ? "memory.current" : "memory.usage_in_bytes"));
  if (!limit_text || !usage_text) return std::nullopt;
  try {
    std::optional<uint64_t> limit = parse_cgroup_limit(*limit_text);
    const auto stat = read_small_file(dir / "memory.stat");
    if (!v2 && stat) {  // v1 folds the ancestors' limits into hierarchical_memory_limit
      const uint64_t h = parse_memory_stat(*stat, "hierarchical_memory_limit");
      if (h > 0 && h < (uint64_t{1} << 62)) limit = limit ? std::min(*limit, h) : h;
    }
    if (!limit) return std::nullopt;
    uint64_t used = parse_cgroup_counter(*usage_text);
    const uint64_t cache = stat ? parse_memory_stat(*stat, v2 ? "inactive_file" : "total_inactive_file") : 0;
    used = used > cache ? used - cache : 0;
    return *limit > used ? *limit - used : 0;
  } catch (const std::exception&) {
    return std::nullopt;  // a malformed file: this source is left out
  }
}

void take_min(MemoryAvailable& a, uint64_t bytes, const std::string& source) {
  if (!a.known || bytes < a.bytes) a = {true, bytes, source};
}

}  // namespace

std::optional<uint64_t> parse_meminfo_available(std::string_view meminfo) {
  std::istringstream in{std::string(meminfo)};
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::string_view rest = trim(std::string_view(line).substr(13));
    uint64_t mult = 1;
    if (rest.size() > 2 && rest.substr(rest.size() - 2) == "kB") {
      mult = 1024;
      rest = trim(rest.substr(0, rest.size() - 2));
    }
    const auto v = to_u64(rest);
    if (!v || *v > UINT64_MAX / mult) return std::nullopt;
    return *v * mult;
  }
  return std::nullopt;
}

std::optional<uint64_t> parse_cgroup_limit(std::string_view text) {
  const std::string_view t = trim(text);
  if (t == "max") return std::nullopt;
  const auto v = to_u64(t);
  if (!v) throw std::invalid_argument("not a cgroup memory limit: \"" + std::string(t) + "\"");
  if (*v >= (uint64_t{1} << 62)) return std::nullopt;  // v1's "no limit" (PAGE_COUNTER_MAX pages)
  return v;
}

uint64_t parse_cgroup_counter(std::string_view text) {
  const std::string_view t = trim(text);
  const auto v = to_u64(t);
  if (!v) throw std::invalid_argument("not a cgroup memory counter: \"" + std::string(t) + "\"");
  return *v;
}

uint64_t parse_memory_stat(std::string_view stat, std::string_view key) {
  std::istringstream in{std::string(stat)};
  for (std::string line; std::getline(in, line);) {
    const std::string_view l(line);
    if (l.size() > key.size() && l.substr(0, key.size()) == key && l[key.size()] == ' ')
      if (const auto v = to_u64(trim(l.substr(key.size() + 1)))) return *v;
  }
  return 0;
}

MemoryAvailable memory_available_from(std::string_view meminfo, std::string_view proc_self_cgroup,
                                      const std::string& cgroup_root) {
  MemoryAvailable a;
  if (const auto m = parse_meminfo_available(meminfo)) take_min(a, *m, "MemAvailable");
  // /proc/self/cgroup lines are "id:controllers:path"; "0::path" is the v2 hierarchy.
  std::istringstream in{std::string(proc_self_cgroup)};
  for (std::string line; std::getline(in, line);) {
    const size_t c1 = line.find(':'), c2 = c1 == std::string::npos ? c1 : line.find(':', c1 + 1);
    if (c2 == std::string::npos) continue;
    const std::string controllers = line.substr(c1 + 1, c2 - c1 - 1);
    const std::string path = line.substr(c2 + 1);
    bool v2 = false;
    fs::path mount;
    if (line.substr(0, c1) == "0" && controllers.empty()) {
      v2 = true;  // pure v2 at the root, or the hybrid layout's unified/
      mount = fs::exists(fs::path(cgroup_root) / "cgroup.controllers") ? fs::path(cgroup_root)
                                                                        : fs::path(cgroup_root) / "unified";
    } else {
      std::istringstream cs(controllers);
      bool memory = false;
      for (std::string c; std::getline(cs, c, ',');) memory = memory || c == "memory";
      if (!memory) continue;
      mount = fs::path(cgroup_root) / controllers;
    }
    // From the process's cgroup up to the mount's root (inside a container the path may not
    // exist under the mount: then only its root is seen).
    fs::path dir = mount / fs::path(path).relative_path();
    std::error_code ec;
    while (!fs::is_directory(dir, ec) && dir != mount && dir.has_parent_path()) dir = dir.parent_path();
    for (;;) {
      if (const auto room = cgroup_room(dir, v2))
        take_min(a, *room, std::string("cgroup ") + (v2 ? "" : "v1 ") + dir.string() + " limit minus usage");
      if (dir == mount || !dir.has_parent_path() || dir.parent_path() == dir) break;
      dir = dir.parent_path();
    }
  }
  return a;
}

MemoryAvailable memory_available() {
  if (const char* env = std::getenv("KVT_MEMORY_AVAILABLE_BYTES")) {
    const auto v = to_u64(trim(env));
    if (!v)
      throw std::invalid_argument(std::string("KVT_MEMORY_AVAILABLE_BYTES: not a byte count: \"") + env + "\"");
    return {true, *v, "KVT_MEMORY_AVAILABLE_BYTES"};
  }
  const auto meminfo = read_small_file("/proc/meminfo");
  const auto cgroup = read_small_file("/proc/self/cgroup");
  return memory_available_from(meminfo.value_or(""), cgroup.value_or(""), "/sys/fs/cgroup");
}

// ---- refusal ------------------------------------------------------------------------------------

namespace {
std::string& allocation_text() {
  static std::string text;
  return text;
}
}  // namespace

AllocationScope::AllocationScope(std::string what) : previous_(std::move(allocation_text())) {
  allocation_text() = std::move(what);
}

AllocationScope::~AllocationScope() {
  // Left by an exception: keep the text for main()'s report of a std::bad_alloc.
  if (std::uncaught_exceptions() == 0) allocation_text() = std::move(previous_);
}

const std::string& AllocationScope::current() { return allocation_text(); }

std::string memory_breakdown(const MemoryEstimate& e) {
  std::string s;
  auto part = [&](const std::string& name, uint64_t bytes, const std::string& tail = "") {
    if (bytes > 0) s += (s.empty() ? "" : ", ") + name + " " + format_bytes(bytes) + tail;
  };
  part("params", e.params);
  part("grads", e.grads);
  part(e.optimizer_name.empty() ? "optimizer" : e.optimizer_name, e.optimizer);
  part("KV cache", e.kv_cache);
  part("activations", e.activations,
       e.batch > 0 ? " at batch " + std::to_string(e.batch) + " x seq " + std::to_string(e.seq) : "");
  part(e.what == "train" ? "checkpoint copies" : "host copies", e.host_copies);
  return s;
}

namespace {
uint64_t needed(const MemoryEstimate& e, int ranks, bool device_backend) {
  const uint64_t one = device_backend ? e.host_copies : e.total();
  const uint64_t n = static_cast<uint64_t>(std::max(ranks, 1));
  return one > UINT64_MAX / n ? UINT64_MAX : one * n;
}
}  // namespace

std::string memory_shortfall(const MemoryEstimate& e, int ranks, bool device_backend,
                             const MemoryAvailable& avail) {
  const uint64_t need = needed(e, ranks, device_backend);
  if (!avail.known || need <= avail.bytes) return "";
  std::string s = "the run needs " + format_bytes(need) + " (";
  if (ranks > 1) s += std::to_string(ranks) + " ranks on this node x ";
  s += device_backend ? "host copies " + format_bytes(e.host_copies) + "; device memory is not checked"
                      : memory_breakdown(e);
  return s + "), " + format_bytes(avail.bytes) + " available (" + avail.source + ")";
}

std::unique_ptr<AllocationScope> check_memory(const std::string& subject, const MemoryEstimate& e,
                                              int ranks, bool device_backend,
                                              const std::string& reduce, bool ignore) {
  if (!ignore) {
    const std::string why = memory_shortfall(e, ranks, device_backend, memory_available());
    if (!why.empty())
      throw std::runtime_error(subject + ": " + why + "; " + reduce + ", or pass --ignore-memory-limit");
  }
  return std::make_unique<AllocationScope>(e.what + " of " + subject + " (estimated " +
                                           format_bytes(e.total()) + ": " + memory_breakdown(e) + ")");
}

namespace cli {

void add_memory_limit_flag(CLI::App& sub, bool& flag) {
  sub.add_flag("--ignore-memory-limit", flag,
               "run even when the memory estimate exceeds the memory available (for machines whose "
               "memory grows on demand)");
}

namespace {
// What to shrink: the activations' shape when they are most of it, else the model.
std::string reduce_hint(const MemoryEstimate& e, const std::string& shape_keys) {
  if (e.activations >= e.total() / 2) return "reduce " + shape_keys;
  return "reduce model.n_layers or model.d_model (the parameters and their copies dominate)";
}

bool device(const std::string& backend) { return backend != "cpu"; }

// The checkpoint's run config, or nullopt when it cannot be read (the command reports that).
std::optional<RunConfig> checkpoint_config(const std::string& checkpoint) {
  try {
    return parse_run_config(read_checkpoint_config(checkpoint), {}, checkpoint + ": /config");
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// The repeat prompt's length with the checkpoint's tokenizer (override: a --tokenizer or the gate
// config's data.tokenizer), or nullopt when the command itself will name the problem.
std::optional<int> prompt_length(const std::string& checkpoint, const RunConfig& cfg, const std::string& override_path,
                                 const std::string& text) {
  try {
    const auto tok = checkpoint_tokenizer(checkpoint, cfg.data.tokenizer, cfg.model.vocab_size, override_path);
    return static_cast<int>(repeat_prompt_tokens(*tok, text, cfg.model.vocab_size).size());
  } catch (const std::exception&) {
    return std::nullopt;
  }
}
}  // namespace

std::unique_ptr<AllocationScope> check_train_memory(const std::string& config_path, const RunConfig& cfg,
                                                    bool ignore) {
  const DistContext& ctx = dist_context();
  int B = 0;
  try {
    B = per_rank_batch_size(cfg.train, ctx.world());
  } catch (const std::exception&) {
    return nullptr;  // the trainer names the bad train.global_batch
  }
  const MemoryEstimate e = estimate_train_memory(cfg.model, B, cfg.train.seq_len);
  return check_memory(config_path, e, ctx.local_size(), device(cfg.train.backend),
                      reduce_hint(e, "train.batch_size or train.seq_len (raise train.grad_accum to keep the "
                                     "global batch)"),
                      ignore);
}

std::unique_ptr<AllocationScope> check_bench_memory(const std::string& config_path, const RunConfig& cfg,
                                                    bool ignore) {
  const MemoryEstimate e = estimate_bench_memory(cfg.model, cfg.train.batch_size, cfg.train.seq_len);
  return check_memory(config_path, e, dist_context().local_size(), device(cfg.train.backend),
                      reduce_hint(e, "train.batch_size or train.seq_len"), ignore);
}

std::unique_ptr<AllocationScope> check_gates_memory(const GateRunConfig& g, bool ignore) {
  const std::string& checkpoint = g.gates.checkpoint;
  const auto cfg = checkpoint_config(checkpoint);
  if (!cfg || g.gates.context < 2) return nullptr;
  const auto Q = prompt_length(checkpoint, *cfg, g.data.tokenizer, g.gates.repeat_prompt);
  if (!Q || 2 * g.gates.context + *Q > cfg->model.max_seq_len) return nullptr;
  const MemoryEstimate e = estimate_gates_memory(cfg->model, g.gates.context, *Q, g.gates.optimizer == "adamw",
                                                 !g.gates.cache_dir.empty());
  return check_memory(checkpoint, e, 1, device(g.gates.backend), reduce_hint(e, "gates.context"), ignore);
}

std::unique_ptr<AllocationScope> check_generate_memory(const std::string& checkpoint,
                                                       const std::string& backend, bool ignore) {
  const auto cfg = checkpoint_config(checkpoint);
  if (!cfg) return nullptr;
  const MemoryEstimate e = estimate_generate_memory(cfg->model);
  return check_memory(checkpoint, e, 1, device(backend),
                      "use a smaller model (the KV cache holds model.max_seq_len positions)", ignore);
}

std::unique_ptr<AllocationScope> check_eval_memory(const std::string& checkpoint, const std::string& tokenizer,
                                                   const std::string& prompt, int context, int chunk,
                                                   bool oracle, bool with_gates, const std::string& backend,
                                                   bool ignore) {
  const auto cfg = checkpoint_config(checkpoint);
  if (!cfg || context < 1 || chunk < 1) return nullptr;
  int oracle_T = 0;
  if (oracle) {
    const auto Q = prompt_length(checkpoint, *cfg, tokenizer, prompt);
    if (!Q) return nullptr;
    oracle_T = 2 * context + *Q;
    if (oracle_T > cfg->model.max_seq_len) return nullptr;  // eval names the lengths
  }
  const MemoryEstimate e = estimate_eval_memory(cfg->model, oracle_T, chunk, with_gates);
  return check_memory(checkpoint, e, 1, device(backend), reduce_hint(e, "--context or --chunk"), ignore);
}

}  // namespace cli
}  // namespace kvt

// tools/memory_check.h — refuse a run that cannot fit in memory before it allocates anything
// (docs/design.md, "Failures and resources").
//
// Each command that builds a model (train, gates, bench, generate, eval) first forms the estimate
// of model/memory_estimate.h and compares it with the memory available to this process:
//   the smaller of /proc/meminfo's MemAvailable and, for every cgroup from the process's own up
//   to the root, its limit minus its usage (v2: memory.max - memory.current; v1:
//   memory.limit_in_bytes - memory.usage_in_bytes), usage less the reclaimable inactive file
//   cache of memory.stat; "max" (v2) or a v1 limit of 2^62 or more means unlimited.
// KVT_MEMORY_AVAILABLE_BYTES=N replaces the detection (for tests: a fake small machine).
// --ignore-memory-limit skips the refusal (machines whose memory grows on demand: swap,
// overcommitting hosts, ballooning VMs). On a device backend only the host copies count
// (device memory is not checked here).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "model/memory_estimate.h"
#include "train/config.h"
#include "train/gate_config.h"

namespace kvt {

// ---- memory available -------------------------------------------------------------------------

// MemAvailable of a /proc/meminfo text, in bytes; nullopt when absent or malformed.
std::optional<uint64_t> parse_meminfo_available(std::string_view meminfo);
// A cgroup limit file (v2 memory.max, v1 memory.limit_in_bytes): bytes, or nullopt for
// unlimited ("max", or >= 2^62 as v1 writes for no limit). Throws std::invalid_argument on
// anything else.
std::optional<uint64_t> parse_cgroup_limit(std::string_view text);
// A cgroup counter file (memory.current, memory.usage_in_bytes): bytes; throws on malformed.
uint64_t parse_cgroup_counter(std::string_view text);
// The value of `key` in a memory.stat text ("inactive_file 1234" lines); 0 when absent.
uint64_t parse_memory_stat(std::string_view stat, std::string_view key);

struct MemoryAvailable {
  bool known = false;
  uint64_t bytes = 0;
  std::string source;  // "MemAvailable", "cgroup /sys/fs/cgroup/x limit 8.0 GB", ...
};

// The detection above over a given /proc/meminfo text, /proc/self/cgroup text and cgroup
// filesystem root (normally "/sys/fs/cgroup"): the unit the tests drive with sample trees.
// Unreadable or malformed sources are left out; none known gives known = false.
MemoryAvailable memory_available_from(std::string_view meminfo, std::string_view proc_self_cgroup,
                                      const std::string& cgroup_root);
// This process: KVT_MEMORY_AVAILABLE_BYTES when set (throws naming it when not a number), else
// memory_available_from the live files.
MemoryAvailable memory_available();

// ---- refusal ------------------------------------------------------------------------------------

// While alive, names what the command is allocating; a std::bad_alloc that escapes the command
// is reported by main() with this text (the scope keeps it when left by an exception).
class AllocationScope {
 public:
  explicit AllocationScope(std::string what);
  ~AllocationScope();
  AllocationScope(const AllocationScope&) = delete;
  AllocationScope& operator=(const AllocationScope&) = delete;
  // The innermost live scope's text, or the one an exception left; empty when none.
  static const std::string& current();

 private:
  std::string previous_;
};

// "params 1.2 GB, grads 1.2 GB, AdamW 2.4 GB, activations 43.4 GB at batch 16 x seq 1024,
// checkpoint copies 3.6 GB": the non-zero parts of an estimate.
std::string memory_breakdown(const MemoryEstimate& e);

// "the run needs 48.2 GB (params ..., ...), 23.1 GB available (MemAvailable)" when `e` x ranks
// does not fit in `avail`; empty when it fits or avail is unknown.
std::string memory_shortfall(const MemoryEstimate& e, int ranks, bool device_backend,
                             const MemoryAvailable& avail);

// Throws "<subject>: <shortfall>; <reduce>, or pass --ignore-memory-limit" unless it fits or
// `ignore`; returns the scope that names the allocation for a later std::bad_alloc.
std::unique_ptr<AllocationScope> check_memory(const std::string& subject, const MemoryEstimate& e,
                                              int ranks, bool device_backend,
                                              const std::string& reduce, bool ignore);

namespace cli {

// Adds --ignore-memory-limit to a subcommand, setting `flag`.
void add_memory_limit_flag(CLI::App& sub, bool& flag);

// The checks of each command, before it allocates (the scope lives until the command ends).
// train: per rank at the per-rank batch, times the ranks on this node.
std::unique_ptr<AllocationScope> check_train_memory(const std::string& config_path, const RunConfig& cfg,
                                                    bool ignore);
std::unique_ptr<AllocationScope> check_bench_memory(const std::string& config_path, const RunConfig& cfg,
                                                    bool ignore);
// gates, generate, eval read the checkpoint's config first. When that fails, they check
// nothing and return no scope: the command's own validation then reports the problem.
std::unique_ptr<AllocationScope> check_gates_memory(const GateRunConfig& cfg, bool ignore);
std::unique_ptr<AllocationScope> check_generate_memory(const std::string& checkpoint,
                                                       const std::string& backend, bool ignore);
std::unique_ptr<AllocationScope> check_eval_memory(const std::string& checkpoint, const std::string& tokenizer,
                                                   const std::string& prompt, int context, int chunk,
                                                   bool oracle, bool with_gates, const std::string& backend,
                                                   bool ignore);

}  // namespace cli
}  // namespace kvt

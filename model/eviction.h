// model/eviction.h — KV eviction at inference (docs/design.md, "Fast KVzip gates"): chunked prefill of a context with
// eviction after each chunk, then the losses the model still reaches from the evicted cache.
//
// After each prefill chunk every cache entry (storage layer, mask head, position) of the filled
// positions has a score. With E entries per position and len positions filled, the budget is
// round(keep x len x E) entries; the first `sinks` positions and the last `recent` positions are
// never evicted (counted inside the budget); the rest of the budget goes to the highest-scoring
// entries still kept, with one threshold across all layers and heads (ties: the newer position,
// then the lower layer, then the lower head). An evicted entry never comes back. A layer that
// reads another layer's cache sees a position only where every source it reads kept it
// (InferenceModel's keep-mask).
//
// Scores by policy:  full       no eviction
//                    gates      the Fast KVzip gates of each storage layer (model/gates.h)
//                    kvzip      oracle KVzip scores of the whole context (model/kvzip.h)
//                    streaming  StreamingLLM: the position (keeps the sinks and the most recent
//                               tokens); "recent" is accepted as its old name
//                    snapkv     SnapKV: the attention the last `snapkv_window` context tokens give
//                               each entry, summed over those queries, averaged over the G query
//                               heads of its KV head (LRKV: over all heads), the max over the layers
//                               that read it, then max-pooled over `snapkv_pool` positions; it
//                               needs the end of the context, so it evicts once, after the prefill
//                    random     uniform, seeded per (layer, head, position)
// Every policy applies the one threshold across layers and heads above (budgets differ across
// layers and heads). With compact, evicted entries are freed (InferenceModel::compact) after each
// eviction, so the cache's allocation follows the budget during the prefill.
// Evaluation (evaluate_eviction): the continuation is then prefilled on the evicted cache (its own
// entries are not evicted) and its loss measured (the first continuation token is predicted by the
// last context logits, computed before the last eviction, as in generation); the cache is
// truncated back to the context, and [repeat prompt ; context] is prefilled: the reconstruction
// loss is that of the context tokens. model/eviction_tasks.h has the study's tasks.
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "model/gates.h"
#include "model/inference.h"

namespace kvt {

enum class EvictPolicy { full, gates, kvzip, streaming, snapkv, random };
// "full" | "gates" | "kvzip" | "streaming" (or "recent") | "snapkv" | "random"; throws
// std::invalid_argument listing them.
EvictPolicy parse_evict_policy(const std::string& name);
std::string to_string(EvictPolicy p);

struct EvictionOptions {
  EvictPolicy policy = EvictPolicy::full;
  double keep = 1.0;   // retained fraction of the cache entries, in (0, 1]
  int sinks = 4;       // first positions never evicted
  int recent = 32;     // last positions never evicted
  int chunk = 256;     // prefill chunk: eviction runs after each (snapkv: once, at the end)
  uint64_t seed = 0;   // the random policy's scores
  int snapkv_window = 32, snapkv_pool = 7;
  bool compact = true; // free evicted entries (false: the keep-mask only)
};

// Applies the budget rule to an InferenceModel's keep-mask. Scores are [E, capacity], entry
// index e = storage index x mask_heads + head (storage layers in gate_layers order).
class Evictor {
 public:
  Evictor(InferenceModel& model, const EvictionOptions& opt);
  std::span<float> scores(int storage_index, int head);  // [capacity], to fill
  // Evicts down to the budget for positions [0, len); returns the entries evicted now.
  int64_t evict(int len);
  int64_t kept_entries(int len) const;
  int entries_per_position() const { return E_; }
  const EvictionOptions& options() const { return opt_; }
  // The positions never evicted from now on: the first `sinks` and the last `recent`.
  void set_window(int sinks, int recent);
  // The first query position that no longer sees an entry: the length at which it was evicted,
  // or INT_MAX (the time-dependent mask a dense reference needs to replay the eviction).
  int visible_until(int storage_index, int head, int pos) const;

 private:
  InferenceModel& m_;
  EvictionOptions opt_;
  std::vector<int> layers_;
  int M_, E_, cap_;
  std::vector<float> score_;   // [E, cap]
  std::vector<int> until_;     // [E, cap]
};

// Prefills the context from an empty cache with the policy's scores and eviction (after each
// chunk; snapkv once at the end), then compacts (opt.compact). gates: required for gates; oracle
// [E, P] for kvzip. Throws std::invalid_argument for a missing score source, std::length_error
// when the context exceeds max_seq_len.
struct CompressResult {
  std::vector<float> last_logits;               // [V] of the last context token
  int64_t entries_total = 0, entries_kept = 0;  // of the context, after the last eviction
  size_t kv_bytes = 0, kv_bytes_kept = 0;       // every position's entries / the kept ones
  size_t kv_alloc_bytes = 0, kv_peak_bytes = 0; // the cache's allocation after, and its peak
  double seconds = 0, gate_seconds = 0;         // the whole prefill; the gates' share of it
};
CompressResult compress_context(InferenceModel& model, Evictor& ev, std::span<const int32_t> context,
                                GateModel* gates, const std::vector<float>* oracle);

struct EvictionResult {
  double continuation_loss = 0, reconstruction_loss = 0;  // mean nats per token
  int continuation_tokens = 0, reconstruction_tokens = 0;
  int64_t entries_total = 0, entries_kept = 0;  // of the context, after the last eviction
  size_t kv_bytes = 0, kv_bytes_kept = 0;       // measured from the cache after the context
};

// One context. gates: required for EvictPolicy::gates; oracle [E, P] for EvictPolicy::kvzip.
// Throws std::invalid_argument for a keep ratio outside (0, 1] or a missing score source,
// std::length_error when context + continuation or context + prompt + context exceeds
// max_seq_len.
EvictionResult evaluate_eviction(InferenceModel& model, const EvictionOptions& opt,
                                 std::span<const int32_t> context,
                                 std::span<const int32_t> continuation,
                                 std::span<const int32_t> prompt, GateModel* gates,
                                 const std::vector<float>* oracle);

}  // namespace kvt

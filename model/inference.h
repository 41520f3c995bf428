// model/inference.h — kvtrain's own inference path (docs/design.md, "Inference and the KV
// cache"): a KV cache per variant that stores exactly what the method stores (model/kv_cache.h),
// chunked prefill and one-token decode at absolute positions, and eviction: a keep-mask that
// readers skip, and compact(), which frees the entries the mask dropped.
//
// Every layer follows the layer plan the training forward uses (model/layer_plan.h). A storage
// layer appends its new entries to its cache heads; a layer reads the entries of the layers in
// its plan: own or reused entries in place, FusedKV's fusion (kv_fuse) and LRKV's rebuild
// (lrkv_expand, then RoPE) into one scratch buffer reused by every layer (working memory, not
// cache: kv_bytes() does not count it). The attention itself is Ops::attention_cache_forward,
// one call per KV head over that head's entry list (its own length once compacted), one op on
// every backend; model/ holds no kernel and never branches on the backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "kernels/ops.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/kv_sharing.h"
#include "model/layer_plan.h"
#include "model/params.h"

namespace kvt {

class Transformer;

struct InferenceOptions {
  // Most tokens one forward pass processes; prefill splits longer inputs into chunks of this
  // size (results do not depend on it beyond float rounding). 0 = min(max_seq_len, 256).
  int max_chunk = 0;
};

class InferenceModel {
 public:
  // Shares the model's parameter buffer and backend (no copy): the Transformer must outlive
  // this object, and later changes to its parameters are seen by the next forward.
  explicit InferenceModel(Transformer& model, InferenceOptions opt = {});
  // Owns a copy of host_params, laid out by build_param_table(cfg), uploaded to `ops`.
  InferenceModel(const ModelConfig& cfg, Ops& ops, std::span<const float> host_params,
                 InferenceOptions opt = {});
  ~InferenceModel();
  InferenceModel(const InferenceModel&) = delete;
  InferenceModel& operator=(const InferenceModel&) = delete;

  const ModelConfig& config() const { return cfg_; }
  Ops& ops() const { return ops_; }
  const ParamTable& params() const { return table_; }
  std::vector<float> params_to_host() const;  // the weights it runs (a host copy)
  int length() const { return len_; }              // positions filled: the next one is length()
  int capacity() const { return cfg_.max_seq_len; }
  int max_chunk() const { return chunk_; }

  // Appends tokens at positions [length(), length() + n) and returns logits: of the last token
  // ([V]) by default, of all n tokens ([n, V], row i = position length() + i) with all_logits.
  // Throws std::length_error when length() + n exceeds max_seq_len (the cache is unchanged),
  // std::out_of_range for a token outside [0, vocab_size).
  std::vector<float> prefill(const int32_t* tokens, int n, bool all_logits = false);
  std::vector<float> prefill(std::span<const int32_t> tokens, bool all_logits = false) {
    return prefill(tokens.data(), static_cast<int>(tokens.size()), all_logits);
  }
  // Like prefill with all_logits, but hands the logits over chunk by chunk instead of keeping
  // [n, V]: f(i, logits, rows) gets host logits [rows, V] of tokens [i, i + rows).
  using LogitsSink = std::function<void(int first, const float* logits, int rows)>;
  void prefill_rows(const int32_t* tokens, int n, const LogitsSink& f);
  // One token at position length(); returns its logits [V].
  std::vector<float> decode(int32_t token);
  // Empties the cache (length 0) and keeps every position again.
  void reset();
  // Drops positions [len, length()): the next token goes to position len, and those positions
  // are kept again. Throws std::out_of_range unless 0 <= len <= length().
  void truncate(int len);

  // Called during forward with the normalised hidden state entering each storage layer's
  // attention: h is [n, d_model] in backend memory for positions [pos0, pos0 + n), valid during
  // the call only (the Fast KVzip gates score new KV pairs from it). Empty = none.
  using HiddenObserver = std::function<void(int layer, const float* h, int pos0, int n)>;
  void set_hidden_observer(HiddenObserver f) { observer_ = std::move(f); }

  // Attention probabilities that the queries at positions [q_begin, q_end) give the cache
  // entries, reduced per entry (Ops::attention_cache_score: max over those queries and the
  // G query heads of the KV head, or their sum): during every forward chunk that holds such
  // queries, for every layer and every head read (KV head; LRKV: query head), f gets host arrays
  // of count entries: the position of each entry the head reads (-1: not visible) and its
  // score. KVzip targets (max) and SnapKV (sum) come from here.
  struct AttentionProbe {
    int q_begin = 0, q_end = 0;
    bool sum = false;
    std::function<void(int layer, int head, const int32_t* pos, const float* score, int count)> f;
  };
  void set_attention_probe(AttentionProbe p) { probe_ = std::move(p); }

  // ---- keep-mask (eviction) ---------------------------------------------------------------
  // One flag per (storage layer, mask head, position), all kept initially. mask_heads() is H_kv,
  // or 1 for LRKV (one decision per token and layer: the shared part is freed only with the whole
  // token). An evicted entry is skipped by every attention that reads it: its own layer and every
  // layer that reuses or fuses it; a reusing or fusing layer sees position p of KV head g only
  // where every source it reads kept (g, p). A query that sees no position gets a zero attention
  // output. Positions may be marked before they are filled. Throws std::out_of_range for a
  // layer that stores nothing, a head outside [0, mask_heads()) or a position outside
  // [0, max_seq_len).
  int mask_heads() const;
  void set_keep(int layer, int head, int pos, bool keep);
  bool kept(int layer, int head, int pos) const;
  // Whether reading layer `layer` (any layer) sees position pos of KV head `kv_head`.
  bool visible(int layer, int kv_head, int pos) const;
  // Frees the entries the keep-mask dropped (model/kv_cache.h); returns how many. The logits
  // that follow equal the keep-mask's to float rounding.
  int64_t compact();
  const KvCache& cache() const { return *cache_; }

  // ---- cache accounting (measured from the allocation) -------------------------------------
  size_t kv_capacity_bytes() const;  // the cache's allocation now (every entry list rounded up
                                     // to whole blocks of KvCache::kBlock rows)
  size_t kv_peak_bytes() const;      // the most it allocated at once since the last reset()
  size_t kv_bytes_per_token() const; // bytes of one position over every storage layer and head
  size_t kv_bytes() const;           // used: length() x kv_bytes_per_token()
  // Bytes of the filled entries still kept by the mask (what an evicting cache would hold).
  size_t kv_bytes_kept() const;

 private:
  void setup(InferenceOptions opt);
  void check_input(const int32_t* tokens, int n) const;
  // Forwards one chunk; hands the logits of its last out_rows tokens to sink (host [rows, V]).
  void forward_chunk(const int32_t* tokens, int n, int out_rows,
                     const std::function<void(const float*, int)>& sink);
  void store(const LayerPlan& ly, int p0, int n);
  void attend(const LayerPlan& ly, int p0, int n);
  // The K/V rows head r of layer ly reads: pointers, row stride and the visible positions into
  // host_pos_ (returns the row count), gathered into scratch_ when not read in place.
  struct HeadRead {
    const float *k = nullptr, *v = nullptr;
    int ld = 0, rows = 0;
  };
  HeadRead gather(const LayerPlan& ly, int r);
  void check_storage(int layer, int head, int pos) const;

  ModelConfig cfg_;
  Ops& ops_;
  ParamTable table_;
  Buffer<float> own_params_;
  const float* P_ = nullptr;
  int chunk_ = 0;
  int len_ = 0;

  std::vector<LayerPlan> plan_;
  size_t wte_ = 0, normf_ = 0, head_ = 0;
  std::unique_ptr<KvCache> cache_;
  // activations for one chunk, the rebuilt K/V scratch and the RoPE tables
  Buffer<float> arena_;
  Buffer<int32_t> tokens_, pos_;
  std::vector<int32_t> host_pos_;
  float *x_ = nullptr, *ln_ = nullptr, *rstd_ = nullptr, *qkv_ = nullptr,
        *atty_ = nullptr, *tmp_ = nullptr, *gate_up_ = nullptr, *swi_ = nullptr,
        *logits_ = nullptr, *scratch_ = nullptr, *rope_cos_ = nullptr, *rope_sin_ = nullptr,
        *head_out_ = nullptr, *score_ = nullptr;
  HiddenObserver observer_;
  AttentionProbe probe_;
  std::vector<float> host_score_, host_logits_;
};

}  // namespace kvt

// model/inference.h — kvtrain's own inference path (DESIGN.md §9): a KV cache per variant that
// stores exactly what the method stores, chunked prefill and one-token decode at absolute
// positions, and eviction through a keep-mask. docs/inference.md describes the cache contents,
// how bytes are counted and the mask semantics.
//
// The cache, per storage layer l (model/kv_sharing.h), one block [max_seq_len, W_l]:
//   MHA/GQA/MQA storage layer:  [K | V], post-RoPE K, W = 2 H_kv d_h
//   LRKV layer:                  [X W_shared^K | X W_shared^V | X U^K | X U^V] (pre-RoPE),
//                                W = 2 d_h + 2 H r
// Reusing layers (cla, yoco, fusedkv_lite) read their sources' blocks; fusedkv layers fuse the
// first and last storage layers' cached K/V with their fusion weights at every read; LRKV layers
// rebuild K_h = K_shared + Z_h B_h^T (and V_h) for every cached position and rotate K_h at every
// read. Those rebuilt K/V live in one scratch buffer, reused by every layer: working memory, not
// cache (kv_bytes() does not count it).
//
// Ops used: embedding, rmsnorm, matmul, rope (pos0 = first new position), kv_fuse, lrkv_expand,
// swiglu, residual. Attention of a chunk of new queries against the cache (with the keep-mask)
// is a plain loop over host memory: on the CPU backend it reads the backend buffers directly;
// on any other backend it copies q and the cached K/V rows it reads to the host and the result
// back (correct, not fast: a device kernel for masked decode attention is future work). No op
// was added to kernels/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "kernels/ops.h"
#include "model/config.h"
#include "model/kv_sharing.h"
#include "model/params.h"

namespace kvt {

class Transformer;

struct InferenceOptions {
  // Most tokens one forward pass processes; prefill splits longer inputs into chunks of this
  // size (results do not depend on it beyond float rounding). 0 = min(max_seq_len, 256).
  int max_chunk = 0;
  // Route attention through host staging copies even on the CPU backend (what non-CPU backends
  // do), so tests exercise that path.
  bool stage_through_host = false;
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
  const ParamTable& params() const { return table_; }
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

  // ---- cache accounting (measured from the allocation) -------------------------------------
  size_t kv_capacity_bytes() const;  // the whole cache allocation (max_seq_len positions)
  size_t kv_bytes_per_token() const; // kv_capacity_bytes() / max_seq_len
  size_t kv_bytes() const;           // used: length() x kv_bytes_per_token()
  // Bytes of the filled entries still kept by the mask (what an evicting cache would hold).
  size_t kv_bytes_kept() const;

 private:
  struct Layer;
  void setup(InferenceOptions opt);
  void forward_chunk(const int32_t* tokens, int n, bool all_logits, std::vector<float>* out);
  void attend(int l, const float* q, const float* k, int ldk, const float* v, int ldv, int n,
              int kv_heads, float* out);

  ModelConfig cfg_;
  Ops& ops_;
  ParamTable table_;
  Buffer<float> own_params_;
  const float* P_ = nullptr;
  int chunk_ = 0;
  bool host_direct_ = true;  // attention reads backend memory in place (CPU backend)
  int len_ = 0;

  std::vector<Layer> layers_;
  size_t wte_ = 0, normf_ = 0, head_ = 0;
  Buffer<float> cache_;  // every storage layer's block
  size_t cache_floats_per_pos_ = 0;
  // activations for one chunk and the rebuilt K/V scratch
  Buffer<float> arena_;
  Buffer<int32_t> tokens_;
  float *x_ = nullptr, *ln_ = nullptr, *rstd_ = nullptr, *q_ = nullptr, *atty_ = nullptr,
        *tmp_ = nullptr, *gate_up_ = nullptr, *swi_ = nullptr, *logits_ = nullptr,
        *scratch_ = nullptr, *rope_cos_ = nullptr, *rope_sin_ = nullptr;
  std::vector<uint8_t> keep_;  // [L, mask_heads, max_seq_len]
  HiddenObserver observer_;
};

}  // namespace kvt

// model/inference.cpp — KV cache per variant, chunked prefill and decode (model/inference.h).
//
// One chunk of n new tokens at positions [p0, p0 + n), x the residual stream [n, C], for each
// layer of the layer plan:
//   a = RMSNorm(x) ; [q | kv] = a [Wq; own K/V block]^T ; q = RoPE_p0(q)
//   storage layer:  K part rotated (RoPE_p0), then every head's [K_g | V_g] appended to its cache
//                   entries (LRKV: the row [ks | vs | zk | zv] appended, kept pre-RoPE)
//   K, V read:      own / reuse: the cache entries of the plan's K and V layers, in place;
//                   fused: kv_fuse(entries_first, entries_last) over [0, p0+n) -> scratch;
//                   LRKV: lrkv_expand(entries) over [0, p0+n) -> scratch, K rotated from pos 0
//   y = attention_cache_forward(q, K, V, visible positions) ; x += y Wo^T ; x += MLP(RMSNorm(x))
// Only the logits asked for are computed (the last row, or all n).
#include "model/inference.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "model/transformer.h"

namespace kvt {

InferenceModel::InferenceModel(Transformer& model, InferenceOptions opt)
    : cfg_(model.config()), ops_(model.ops()) {
  table_ = build_param_table(cfg_);
  if (table_.total() != model.params().total())
    throw std::logic_error("InferenceModel: the model's parameter table differs from the config's");
  P_ = model.param_data();
  setup(opt);
}

InferenceModel::InferenceModel(const ModelConfig& cfg, Ops& ops, std::span<const float> host_params,
                               InferenceOptions opt)
    : cfg_(cfg), ops_(ops) {
  cfg_.resolve();
  table_ = build_param_table(cfg_);
  if (host_params.size() != table_.total())
    throw std::invalid_argument("InferenceModel: " + std::to_string(host_params.size()) +
                                " parameter values given, the config needs " +
                                std::to_string(table_.total()));
  own_params_ = Buffer<float>(ops_, table_.total());
  ops_.to_device(own_params_.data(), host_params.data(), own_params_.bytes());
  P_ = own_params_.data();
  setup(opt);
}

InferenceModel::~InferenceModel() = default;

void InferenceModel::setup(InferenceOptions opt) {
  const int T = cfg_.max_seq_len;
  const int64_t C = cfg_.d_model, H = cfg_.n_heads, Hkv = cfg_.kv_heads(), D = cfg_.head_dim(),
                F = cfg_.ffn_dim(), V = cfg_.vocab_size;
  chunk_ = opt.max_chunk > 0 ? std::min(opt.max_chunk, T) : std::min(T, 256);
  plan_ = build_layer_plan(table_, cfg_);
  cache_ = std::make_unique<KvCache>(ops_, cfg_, plan_);
  wte_ = table_.find("model.embed_tokens.weight").offset;
  normf_ = table_.find("model.norm.weight").offset;
  head_ = cfg_.tie_embeddings ? wte_ : table_.find("lm_head.weight").offset;
  int max_proj = 0;
  bool need_scratch = false;
  for (const LayerPlan& ly : plan_) {
    max_proj = std::max(max_proj, ly.proj);
    need_scratch = need_scratch || ly.lrkv || ly.fused();
  }

  // Activations of one chunk, the rebuilt-K/V scratch ([K|V] rows per head, laid out as cache
  // entries) and the RoPE tables in one arena.
  const int64_t N = chunk_, heads_read = cfg_.lrkv() ? H : Hkv,
                slots = cache_->slots_per_head();
  Arena arena;
  arena.take(x_, N * C);
  arena.take(ln_, N * C);
  arena.take(rstd_, N);
  arena.take(qkv_, N * max_proj);
  arena.take(atty_, N * H * D);
  arena.take(tmp_, N * C);
  arena.take(gate_up_, N * 2 * F);
  arena.take(swi_, N * F);
  arena.take(logits_, N * V);
  if (need_scratch) arena.take(scratch_, heads_read * slots * 2 * D);
  arena.take(rope_cos_, static_cast<int64_t>(T) * (D / 2));
  arena.take(rope_sin_, static_cast<int64_t>(T) * (D / 2));
  arena_ = arena.carve(ops_);
  tokens_ = Buffer<int32_t>(ops_, static_cast<size_t>(N));
  pos_ = Buffer<int32_t>(ops_, static_cast<size_t>(heads_read) * T);
  host_pos_.assign(static_cast<size_t>(heads_read) * T, -1);
  upload_rope_tables(ops_, cfg_, rope_cos_, rope_sin_);
  len_ = 0;
}

void InferenceModel::reset() {
  len_ = 0;
  cache_->keep_all();
}

void InferenceModel::truncate(int len) {
  if (len < 0 || len > len_)
    throw std::out_of_range("truncate: length " + std::to_string(len) + " outside [0, " +
                            std::to_string(len_) + "]");
  cache_->keep_range(len, len_);
  len_ = len;
}

// ---- keep-mask ------------------------------------------------------------------------------

int InferenceModel::mask_heads() const { return cfg_.lrkv() ? 1 : cfg_.kv_heads(); }

namespace {
void check_mask_index(const ModelConfig& cfg, int layer, int head, int heads, int pos,
                      bool storage) {
  if (layer < 0 || layer >= cfg.n_layers)
    throw std::out_of_range("keep-mask: layer " + std::to_string(layer) + " outside [0, " +
                            std::to_string(cfg.n_layers) + ")");
  if (!storage)
    throw std::out_of_range("keep-mask: layer " + std::to_string(layer) +
                            " stores no K/V (it reads another layer's cache; mask that one)");
  if (head < 0 || head >= heads)
    throw std::out_of_range("keep-mask: head " + std::to_string(head) + " outside [0, " +
                            std::to_string(heads) + ")");
  if (pos < 0 || pos >= cfg.max_seq_len)
    throw std::out_of_range("keep-mask: position " + std::to_string(pos) + " outside [0, " +
                            std::to_string(cfg.max_seq_len) + ")");
}
}  // namespace

void InferenceModel::check_storage(int layer, int head, int pos) const {
  check_mask_index(cfg_, layer, head, mask_heads(), pos,
                   layer >= 0 && layer < cfg_.n_layers && plan_[layer].stores());
}

void InferenceModel::set_keep(int layer, int head, int pos, bool keep) {
  check_storage(layer, head, pos);
  cache_->set_kept(layer, head, pos, keep);
}

bool InferenceModel::kept(int layer, int head, int pos) const {
  check_storage(layer, head, pos);
  return cache_->kept(layer, head, pos);
}

bool InferenceModel::visible(int layer, int kv_head, int pos) const {
  const int mh = cfg_.lrkv() ? 0 : kv_head;
  const auto [kl, vl] = plan_.at(layer).reads();  // reuse: K and V sources; fused: first and last
  return cache_->kept(kl, mh, pos) && cache_->kept(vl, mh, pos);
}

// ---- accounting -----------------------------------------------------------------------------

size_t InferenceModel::kv_capacity_bytes() const { return cache_->capacity_bytes(); }
size_t InferenceModel::kv_bytes_per_token() const {
  size_t floats = 0;
  for (const LayerPlan& ly : plan_) floats += static_cast<size_t>(ly.kv_width);
  return floats * sizeof(float);
}
size_t InferenceModel::kv_bytes() const { return static_cast<size_t>(len_) * kv_bytes_per_token(); }
size_t InferenceModel::kv_bytes_kept() const { return cache_->kept_floats(len_) * sizeof(float); }

// ---- forward --------------------------------------------------------------------------------

std::vector<float> InferenceModel::prefill(const int32_t* tokens, int n, bool all_logits) {
  if (n < 1) throw std::invalid_argument("prefill: no tokens given");
  if (static_cast<int64_t>(len_) + n > cfg_.max_seq_len)
    throw std::length_error(std::to_string(n) + " tokens at position " + std::to_string(len_) +
                            " exceed model.max_seq_len " + std::to_string(cfg_.max_seq_len) +
                            " (the cache holds at most that many positions)");
  for (int i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= cfg_.vocab_size)
      throw std::out_of_range("token id " + std::to_string(tokens[i]) + " at index " +
                              std::to_string(i) + " outside [0, " +
                              std::to_string(cfg_.vocab_size) + ")");
  std::vector<float> out;
  out.reserve(static_cast<size_t>(all_logits ? n : 1) * cfg_.vocab_size);
  for (int i = 0; i < n; i += chunk_) {
    const int m = std::min(chunk_, n - i);
    const bool last_chunk = i + m == n;
    forward_chunk(tokens + i, m, all_logits, all_logits || last_chunk ? &out : nullptr);
  }
  return out;
}

std::vector<float> InferenceModel::decode(int32_t token) { return prefill(&token, 1, false); }

void InferenceModel::forward_chunk(const int32_t* tokens, int n, bool all_logits,
                                   std::vector<float>* out) {
  const int p0 = len_;  // new positions [p0, p0 + n)
  const int C = cfg_.d_model, H = cfg_.n_heads, D = cfg_.head_dim(), F = cfg_.ffn_dim(),
            V = cfg_.vocab_size, HD = H * D;
  const float* P = P_;
  ops_.to_device(tokens_.data(), tokens, static_cast<size_t>(n) * sizeof(int32_t));
  ops_.embedding_forward(x_, tokens_.data(), P + wte_, n, C);
  for (const LayerPlan& ly : plan_) {
    ops_.rmsnorm_forward(ln_, rstd_, x_, P + ly.ln1, n, C, cfg_.norm_eps);
    if (observer_ && ly.stores()) observer_(ly.layer, ln_, p0, n);
    ops_.matmul_forward(qkv_, ln_, P + ly.q, n, C, ly.proj);
    ops_.rope_forward(qkv_, ly.proj, 1, n, H, D, p0, rope_cos_, rope_sin_);
    if (ly.stores()) store(ly, p0, n);
    attend(ly, p0, n);
    ops_.matmul_forward(tmp_, atty_, P + ly.o, n, HD, C);
    ops_.residual_forward(x_, x_, tmp_, static_cast<int64_t>(n) * C);
    ops_.rmsnorm_forward(ln_, rstd_, x_, P + ly.ln2, n, C, cfg_.norm_eps);
    ops_.matmul_forward(gate_up_, ln_, P + ly.gate_up, n, C, 2 * F);
    ops_.swiglu_forward(swi_, gate_up_, n, F);
    ops_.matmul_forward(tmp_, swi_, P + ly.down, n, F, C);
    ops_.residual_forward(x_, x_, tmp_, static_cast<int64_t>(n) * C);
  }
  len_ = p0 + n;
  if (!out) return;
  const int rows = all_logits ? n : 1;
  const float* xs = x_ + static_cast<size_t>(n - rows) * C;
  ops_.rmsnorm_forward(ln_, rstd_, xs, P + normf_, rows, C, cfg_.norm_eps);
  ops_.matmul_forward(logits_, ln_, P + head_, rows, C, V);
  const size_t old = out->size();
  out->resize(old + static_cast<size_t>(rows) * V);
  ops_.to_host(out->data() + old, logits_, static_cast<size_t>(rows) * V * sizeof(float));
}

// Appends the chunk's entries of a storage layer: its K/V block sits in qkv_ after q.
void InferenceModel::store(const LayerPlan& ly, int p0, int n) {
  const int H = cfg_.n_heads, Hkv = cfg_.kv_heads(), D = cfg_.head_dim(), HD = H * D;
  const int W = cache_->width(ly.layer);
  const float* kv = qkv_ + HD;
  if (ly.lrkv) {  // one row [ks | vs | zk | zv] per position, pre-RoPE
    ops_.copy_rows(cache_->entries(ly.layer, 0) + static_cast<int64_t>(p0) * W, W, kv, ly.proj, n,
                   W);
    return;
  }
  ops_.rope_forward(qkv_ + HD, ly.proj, 1, n, Hkv, D, p0, rope_cos_, rope_sin_);
  for (int g = 0; g < Hkv; g++) {  // entry of head g: [K_g | V_g]
    float* e = cache_->entries(ly.layer, g) + static_cast<int64_t>(p0) * W;
    ops_.copy_rows(e, W, kv + g * D, ly.proj, n, D);
    ops_.copy_rows(e + D, W, kv + (Hkv + g) * D, ly.proj, n, D);
  }
}

// atty_ = attention of the chunk's queries over the entries this layer reads (positions
// [0, p0 + n), those visible through the keep-mask).
void InferenceModel::attend(const LayerPlan& ly, int p0, int n) {
  const int H = cfg_.n_heads, Hkv = cfg_.kv_heads(), D = cfg_.head_dim(), R = cfg_.lrkv_rank;
  const int Tq = p0 + n, heads = ly.lrkv ? H : Hkv;
  const auto [kl, vl] = ly.reads();
  const float *k = cache_->entries(kl, 0), *v = cache_->entries(vl, 0) + D;
  int ld = cache_->width(kl);
  int64_t hs = cache_->head_stride(kl);
  if (ly.lrkv) {
    // Rebuild K_h, V_h of every position from the cached shared parts and latents; rotate K_h.
    const float* e = cache_->entries(ly.layer, 0);
    const int W = cache_->width(ly.layer);
    ld = 2 * D, hs = static_cast<int64_t>(cache_->slots_per_head()) * ld;
    for (int h = 0; h < H; h++) {
      float* o = scratch_ + h * hs;
      ops_.lrkv_expand_forward(o, ld, e, W, e + 2 * D + h * R, W, P_ + ly.k_up + h * D * R, Tq, 1,
                               D, R);
      ops_.lrkv_expand_forward(o + D, ld, e + D, W, e + 2 * D + (H + h) * R, W,
                               P_ + ly.v_up + h * D * R, Tq, 1, D, R);
      ops_.rope_forward(o, ld, 1, Tq, 1, D, 0, rope_cos_, rope_sin_);
    }
    k = scratch_, v = scratch_ + D;
  } else if (ly.fused()) {
    // K = a_first ⊙ K_first + a_last ⊙ K_last (pair-tied weights), V likewise, at read time.
    for (int g = 0; g < Hkv; g++) {
      const float* f = cache_->entries(kl, g);
      const float* l = cache_->entries(vl, g);
      float* o = scratch_ + g * hs;
      ops_.kv_fuse_forward(o, ld, f, ld, l, ld, P_ + ly.fuse_k_first + g * (D / 2),
                           P_ + ly.fuse_k_last + g * (D / 2), Tq, 1, D, true);
      ops_.kv_fuse_forward(o + D, ld, f + D, ld, l + D, ld, P_ + ly.fuse_v_first + g * D,
                           P_ + ly.fuse_v_last + g * D, Tq, 1, D, false);
    }
    k = scratch_, v = scratch_ + D;
  }
  for (int g = 0; g < heads; g++)
    for (int s = 0; s < Tq; s++)
      host_pos_[static_cast<size_t>(g) * Tq + s] = visible(ly.layer, g, s) ? s : -1;
  ops_.to_device(pos_.data(), host_pos_.data(), static_cast<size_t>(heads) * Tq * sizeof(int32_t));
  const CacheAttnShape shape{n, p0, H, heads, D, ly.proj, Tq, ld, hs};
  ops_.attention_cache_forward(atty_, qkv_, k, v, pos_.data(), shape);
}

}  // namespace kvt

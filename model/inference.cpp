// model/inference.cpp — KV cache per variant, chunked prefill and decode (model/inference.h).
//
// One chunk of n new tokens at positions [p0, p0 + n), x the residual stream [n, C], for each
// layer of the layer plan:
//   a = RMSNorm(x) ; [q | kv] = a [Wq; own K/V block]^T ; q = RoPE_p0(q)
//   storage layer:  K part rotated (RoPE_p0), then every head's [K_g | V_g] appended to its entry
//                   list (LRKV: the row [ks | vs | zk | zv] appended, kept pre-RoPE)
//   K, V of head g: own / reuse of one layer: that list, in place (evicted rows: position -1);
//                   reuse of two layers (K from one, V from another) and fused: the positions
//                   both lists hold and keep, gathered (fused: kv_fuse(first, last)) -> scratch;
//                   LRKV: lrkv_expand(list rows) -> scratch, K rotated at each row's position
//   y_g = attention_cache_forward(q_g, K, V, positions) per head ; x += y Wo^T ; x += MLP(RMSNorm(x))
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

std::vector<float> InferenceModel::params_to_host() const {
  std::vector<float> out(table_.total());
  ops_.to_host(out.data(), P_, out.size() * sizeof(float));
  return out;
}

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
    need_scratch = need_scratch || ly.lrkv || ly.fused() || ly.reads()[0] != ly.reads()[1];
  }

  // Activations of one chunk, the rebuilt-K/V scratch ([K|V] rows per head, laid out as cache
  // entries) and the RoPE tables in one arena.
  const int64_t N = chunk_, heads_read = cfg_.lrkv() ? H : Hkv;
  Arena arena;
  arena.take(x_, N * C);
  arena.take(ln_, N * C);
  arena.take(rstd_, N);
  arena.take(qkv_, N * max_proj);
  arena.take(atty_, N * H * D);
  arena.take(head_out_, N * H * D);
  arena.take(score_, T);
  arena.take(tmp_, N * C);
  arena.take(gate_up_, N * 2 * F);
  arena.take(swi_, N * F);
  arena.take(logits_, N * V);
  if (need_scratch) arena.take(scratch_, heads_read * T * 2 * D);
  arena.take(rope_cos_, static_cast<int64_t>(T) * (D / 2));
  arena.take(rope_sin_, static_cast<int64_t>(T) * (D / 2));
  arena_ = arena.carve(ops_);
  tokens_ = Buffer<int32_t>(ops_, static_cast<size_t>(N));
  pos_ = Buffer<int32_t>(ops_, static_cast<size_t>(heads_read) * T);
  host_pos_.assign(static_cast<size_t>(T), -1);
  host_score_.assign(static_cast<size_t>(T), 0.0f);
  upload_rope_tables(ops_, cfg_, rope_cos_, rope_sin_);
  len_ = 0;
}

void InferenceModel::reset() {
  len_ = 0;
  cache_->clear();
}

void InferenceModel::truncate(int len) {
  if (len < 0 || len > len_)
    throw std::out_of_range("truncate: length " + std::to_string(len) + " outside [0, " +
                            std::to_string(len_) + "]");
  cache_->truncate(len);
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

int64_t InferenceModel::compact() { return cache_->compact(); }

// ---- accounting -----------------------------------------------------------------------------

size_t InferenceModel::kv_capacity_bytes() const { return cache_->capacity_bytes(); }
size_t InferenceModel::kv_peak_bytes() const { return cache_->peak_bytes(); }
size_t InferenceModel::kv_bytes_per_token() const {
  size_t floats = 0;
  for (const LayerPlan& ly : plan_) floats += static_cast<size_t>(ly.kv_width);
  return floats * sizeof(float);
}
size_t InferenceModel::kv_bytes() const { return static_cast<size_t>(len_) * kv_bytes_per_token(); }
size_t InferenceModel::kv_bytes_kept() const { return cache_->kept_floats(len_) * sizeof(float); }

// ---- forward --------------------------------------------------------------------------------

void InferenceModel::check_input(const int32_t* tokens, int n) const {
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
}

std::vector<float> InferenceModel::prefill(const int32_t* tokens, int n, bool all_logits) {
  check_input(tokens, n);
  std::vector<float> out;
  out.reserve(static_cast<size_t>(all_logits ? n : 1) * cfg_.vocab_size);
  const auto keep = [&](const float* logits, int rows) {
    out.insert(out.end(), logits, logits + static_cast<size_t>(rows) * cfg_.vocab_size);
  };
  for (int i = 0; i < n; i += chunk_) {
    const int m = std::min(chunk_, n - i);
    forward_chunk(tokens + i, m, all_logits ? m : (i + m == n ? 1 : 0), keep);
  }
  return out;
}

void InferenceModel::prefill_rows(const int32_t* tokens, int n, const LogitsSink& f) {
  check_input(tokens, n);
  for (int i = 0; i < n; i += chunk_) {
    const int m = std::min(chunk_, n - i);
    forward_chunk(tokens + i, m, m, [&](const float* logits, int rows) { f(i, logits, rows); });
  }
}

std::vector<float> InferenceModel::decode(int32_t token) { return prefill(&token, 1, false); }

void InferenceModel::forward_chunk(const int32_t* tokens, int n, int out_rows,
                                   const std::function<void(const float*, int)>& sink) {
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
  if (out_rows == 0) return;
  const float* xs = x_ + static_cast<size_t>(n - out_rows) * C;
  ops_.rmsnorm_forward(ln_, rstd_, xs, P + normf_, out_rows, C, cfg_.norm_eps);
  ops_.matmul_forward(logits_, ln_, P + head_, out_rows, C, V);
  host_logits_.resize(static_cast<size_t>(out_rows) * V);
  ops_.to_host(host_logits_.data(), logits_, host_logits_.size() * sizeof(float));
  sink(host_logits_.data(), out_rows);
}

// Appends the chunk's entries of a storage layer: its K/V block sits in qkv_ after q.
void InferenceModel::store(const LayerPlan& ly, int p0, int n) {
  const int H = cfg_.n_heads, Hkv = cfg_.kv_heads(), D = cfg_.head_dim(), HD = H * D;
  const int W = cache_->width(ly.layer);
  const float* kv = qkv_ + HD;
  if (ly.lrkv) {  // one row [ks | vs | zk | zv] per position, pre-RoPE
    ops_.copy_rows(cache_->append(ly.layer, 0, p0, n), W, kv, ly.proj, n, W);
    return;
  }
  ops_.rope_forward(qkv_ + HD, ly.proj, 1, n, Hkv, D, p0, rope_cos_, rope_sin_);
  for (int g = 0; g < Hkv; g++) {  // entry of head g: [K_g | V_g]
    float* e = cache_->append(ly.layer, g, p0, n);
    ops_.copy_rows(e, W, kv + g * D, ly.proj, n, D);
    ops_.copy_rows(e + D, W, kv + (Hkv + g) * D, ly.proj, n, D);
  }
}

// Runs of a list of row pairs (i, j) -> output rows o = 0, 1, ...: f(i0, j0, o0, len) for each
// maximal run where i, j and o all step by one (each run is one strided op call).
template <typename F>
void for_runs(const std::vector<std::pair<int, int>>& rows, F f) {
  for (size_t a = 0; a < rows.size();) {
    size_t b = a + 1;
    while (b < rows.size() && rows[b].first == rows[b - 1].first + 1 &&
           rows[b].second == rows[b - 1].second + 1)
      b++;
    f(rows[a].first, rows[a].second, static_cast<int>(a), static_cast<int>(b - a));
    a = b;
  }
}

InferenceModel::HeadRead InferenceModel::gather(const LayerPlan& ly, int r) {
  const int D = cfg_.head_dim(), R = cfg_.lrkv_rank, H = cfg_.n_heads, T = cfg_.max_seq_len;
  const auto [kl, vl] = ly.reads();  // reuse: K and V sources; fused: first and last
  const int g = ly.lrkv ? 0 : r;
  float* out = scratch_ ? scratch_ + static_cast<int64_t>(r) * T * 2 * D : nullptr;
  if (ly.lrkv) {
    // Rebuild K_h, V_h of every listed position from its shared parts and latents; rotate K_h
    // at each run of consecutive positions.
    const float* e = cache_->entries(ly.layer, 0);
    const std::vector<int32_t>& pos = cache_->positions(ly.layer, 0);
    const int W = cache_->width(ly.layer), rows = static_cast<int>(pos.size()), h = r;
    ops_.lrkv_expand_forward(out, 2 * D, e, W, e + 2 * D + h * R, W, P_ + ly.k_up + h * D * R, rows,
                             1, D, R);
    ops_.lrkv_expand_forward(out + D, 2 * D, e + D, W, e + 2 * D + (H + h) * R, W,
                             P_ + ly.v_up + h * D * R, rows, 1, D, R);
    for (int a = 0; a < rows;) {
      int b = a + 1;
      while (b < rows && pos[b] == pos[b - 1] + 1) b++;
      ops_.rope_forward(out + static_cast<int64_t>(a) * 2 * D, 2 * D, 1, b - a, 1, D, pos[a],
                        rope_cos_, rope_sin_);
      a = b;
    }
    for (int i = 0; i < rows; i++) host_pos_[i] = visible(ly.layer, 0, pos[i]) ? pos[i] : -1;
    return {out, out + D, 2 * D, rows};
  }
  const std::vector<int32_t>& pk = cache_->positions(kl, g);
  if (!ly.fused() && kl == vl) {  // one list, read in place
    const int rows = static_cast<int>(pk.size());
    for (int i = 0; i < rows; i++) host_pos_[i] = visible(ly.layer, g, pk[i]) ? pk[i] : -1;
    const float* k = cache_->entries(kl, g);
    return {k, k + D, cache_->width(kl), rows};
  }
  // Two lists: the positions both hold and keep (each list is in increasing position).
  const std::vector<int32_t>& pv = cache_->positions(vl, g);
  std::vector<std::pair<int, int>> both;
  for (size_t i = 0, j = 0; i < pk.size() && j < pv.size();) {
    if (pk[i] < pv[j]) i++;
    else if (pv[j] < pk[i]) j++;
    else {
      if (visible(ly.layer, g, pk[i])) {
        host_pos_[both.size()] = pk[i];
        both.emplace_back(static_cast<int>(i), static_cast<int>(j));
      }
      i++, j++;
    }
  }
  const float *ek = cache_->entries(kl, g), *ev = cache_->entries(vl, g);
  const int wk = cache_->width(kl), wv = cache_->width(vl);
  for_runs(both, [&](int i, int j, int o, int len) {
    float* dst = out + static_cast<int64_t>(o) * 2 * D;
    const float *fk = ek + static_cast<int64_t>(i) * wk, *lv = ev + static_cast<int64_t>(j) * wv;
    if (ly.fused()) {  // K = a_first ⊙ K_first + a_last ⊙ K_last (pair-tied weights), V likewise
      ops_.kv_fuse_forward(dst, 2 * D, fk, wk, lv, wv, P_ + ly.fuse_k_first + g * (D / 2),
                           P_ + ly.fuse_k_last + g * (D / 2), len, 1, D, true);
      ops_.kv_fuse_forward(dst + D, 2 * D, fk + D, wk, lv + D, wv, P_ + ly.fuse_v_first + g * D,
                           P_ + ly.fuse_v_last + g * D, len, 1, D, false);
    } else {  // K from one layer, V from another
      ops_.copy_rows(dst, 2 * D, fk, wk, len, D);
      ops_.copy_rows(dst + D, 2 * D, lv + D, wv, len, D);
    }
  });
  return {out, out + D, 2 * D, static_cast<int>(both.size())};
}

// atty_ = attention of the chunk's queries over the entries this layer reads, one call per head
// read (KV head; LRKV: query head) over its own entry list; the probe, if its query range meets
// the chunk, gets each head's scores.
void InferenceModel::attend(const LayerPlan& ly, int p0, int n) {
  const int H = cfg_.n_heads, D = cfg_.head_dim(), T = cfg_.max_seq_len;
  const int heads = ly.lrkv ? H : cfg_.kv_heads(), G = H / heads;
  const int t0 = std::max(probe_.q_begin - p0, 0), t1 = std::min(probe_.q_end - p0, n);
  const bool probing = probe_.f && t0 < t1;
  for (int r = 0; r < heads; r++) {
    const HeadRead hr = gather(ly, r);
    int32_t* pos = pos_.data() + static_cast<int64_t>(r) * T;
    const float* q = qkv_ + r * G * D;
    const CacheAttnShape shape{n, p0, G, 1, D, ly.proj, hr.rows, hr.ld, 0};
    if (hr.rows == 0) {  // nothing visible: zero output
      ops_.zero(head_out_, static_cast<size_t>(n) * G * D * sizeof(float));
    } else {
      ops_.to_device(pos, host_pos_.data(), static_cast<size_t>(hr.rows) * sizeof(int32_t));
      ops_.attention_cache_forward(head_out_, q, hr.k, hr.v, pos, shape);
    }
    ops_.copy_rows(atty_ + r * G * D, static_cast<int64_t>(H) * D, head_out_, G * D, n, G * D);
    if (probing && hr.rows > 0) {
      ops_.attention_cache_score(score_, q, hr.k, pos, shape, t0, t1, probe_.sum);
      ops_.to_host(host_score_.data(), score_, static_cast<size_t>(hr.rows) * sizeof(float));
      probe_.f(ly.layer, r, host_pos_.data(), host_score_.data(), hr.rows);
    }
  }
}

}  // namespace kvt

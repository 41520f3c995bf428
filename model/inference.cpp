// model/inference.cpp — KV cache per variant, chunked prefill and decode (model/inference.h).
//
// One chunk of n new tokens at positions [p0, p0 + n), x the residual stream [n, C]:
//   a = RMSNorm(x) ; q = RoPE_p0(a Wq^T)
//   storage layer:  cache_l[p0 : p0+n] = a [Wk;Wv]^T, K part rotated (RoPE_p0) in place
//                   (LRKV: a [Wk_sh;Wv_sh;Uk;Uv]^T, kept pre-RoPE)
//   K, V read:      own: cache_l;  reuse: K of cache_{k_layer}, V of cache_{v_layer};
//                   fused: kv_fuse(cache_first, cache_last) over positions [0, p0+n) -> scratch;
//                   LRKV: lrkv_expand(cache_l) over [0, p0+n) -> scratch, K rotated from pos 0
//   y = MaskedCausalAttn(q, K, V) (host loop) ; x += y Wo^T ; x += MLP(RMSNorm(x))
// Only the logits asked for are computed (the last row, or all n).
#include "model/inference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "model/transformer.h"

namespace kvt {

// A layer's parameter offsets (kv_width: floats per position of a storage layer's cache block,
// 0 for a layer that reads another's) plus where its K/V live.
struct InferenceModel::Layer : LayerParamOffsets {
  KvSource src;
  size_t kv = 0;         // the K/V block of the input projection (after q_proj)
  size_t cache_off = 0;  // storage layers: float offset of the layer's block in cache_
};

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
  const int L = cfg_.n_layers, T = cfg_.max_seq_len;
  const int64_t C = cfg_.d_model, H = cfg_.n_heads, D = cfg_.head_dim(), F = cfg_.ffn_dim(),
                V = cfg_.vocab_size;
  chunk_ = opt.max_chunk > 0 ? std::min(opt.max_chunk, T) : std::min(T, 256);
  host_direct_ = ops_.name() == "cpu" && !opt.stage_through_host;

  // Parameter offsets (layer_param_offsets checks that the cached projections, [Wk;Wv] or LRKV's
  // [Wk_sh;Wv_sh;Uk;Uv], are one matrix right after q_proj) and cache blocks.
  layers_.assign(L, Layer{});
  size_t cache_floats = 0;
  bool need_scratch = false;
  for (int l = 0; l < L; l++) {
    Layer& ly = layers_[l];
    static_cast<LayerParamOffsets&>(ly) = layer_param_offsets(table_, cfg_, l);
    ly.src = kv_source_of_layer(cfg_, l);
    ly.kv = ly.q + static_cast<size_t>(H * D * C);
    if (cfg_.lrkv() || ly.src.kind == KvSource::Kind::fused) need_scratch = true;
    if (ly.kv_width > 0) {
      ly.cache_off = cache_floats * static_cast<size_t>(T);
      cache_floats += static_cast<size_t>(ly.kv_width);
    }
  }
  cache_floats_per_pos_ = cache_floats;
  cache_ = Buffer<float>(ops_, cache_floats * static_cast<size_t>(T));
  wte_ = table_.find("model.embed_tokens.weight").offset;
  normf_ = table_.find("model.norm.weight").offset;
  head_ = cfg_.tie_embeddings ? wte_ : table_.find("lm_head.weight").offset;

  // Activations of one chunk, the rebuilt-K/V scratch and the RoPE tables in one arena.
  const int64_t N = chunk_;
  int64_t total = 0;
  std::vector<std::pair<float**, int64_t>> slots;
  auto take = [&](float*& dst, int64_t n) {
    slots.push_back({&dst, total});
    total += (n + 15) / 16 * 16;
  };
  take(x_, N * C);
  take(ln_, N * C);
  take(rstd_, N);
  take(q_, N * H * D);
  take(atty_, N * H * D);
  take(tmp_, N * C);
  take(gate_up_, N * 2 * F);
  take(swi_, N * F);
  take(logits_, N * V);
  if (need_scratch) take(scratch_, static_cast<int64_t>(T) * 2 * H * D);
  take(rope_cos_, static_cast<int64_t>(T) * (D / 2));
  take(rope_sin_, static_cast<int64_t>(T) * (D / 2));
  arena_ = Buffer<float>(ops_, static_cast<size_t>(total));
  for (auto& [dst, off] : slots) *dst = arena_.data() + off;
  tokens_ = Buffer<int32_t>(ops_, static_cast<size_t>(N));

  // RoPE tables: the formula of Transformer::build_rope_tables (angle in double).
  const int half = static_cast<int>(D / 2);
  std::vector<float> c(static_cast<size_t>(T) * half), s(c.size());
  for (int pos = 0; pos < T; pos++)
    for (int j = 0; j < half; j++) {
      const double inv_freq =
          std::pow(static_cast<double>(cfg_.rope_theta), -2.0 * j / cfg_.head_dim());
      const double ang = pos * inv_freq;
      c[static_cast<size_t>(pos) * half + j] = static_cast<float>(std::cos(ang));
      s[static_cast<size_t>(pos) * half + j] = static_cast<float>(std::sin(ang));
    }
  ops_.to_device(rope_cos_, c.data(), c.size() * sizeof(float));
  ops_.to_device(rope_sin_, s.data(), s.size() * sizeof(float));

  keep_.assign(static_cast<size_t>(L) * mask_heads() * T, 1);
  len_ = 0;
}

void InferenceModel::reset() {
  len_ = 0;
  std::fill(keep_.begin(), keep_.end(), uint8_t{1});
}

void InferenceModel::truncate(int len) {
  if (len < 0 || len > len_)
    throw std::out_of_range("truncate: length " + std::to_string(len) + " outside [0, " +
                            std::to_string(len_) + "]");
  const size_t rows = keep_.size() / cfg_.max_seq_len;
  for (size_t r = 0; r < rows; r++)
    std::fill(keep_.begin() + r * cfg_.max_seq_len + len, keep_.begin() + r * cfg_.max_seq_len + len_,
              uint8_t{1});
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

void InferenceModel::set_keep(int layer, int head, int pos, bool keep) {
  check_mask_index(cfg_, layer, head, mask_heads(), pos,
                   layer >= 0 && layer < cfg_.n_layers && layers_[layer].kv_width > 0);
  keep_[(static_cast<size_t>(layer) * mask_heads() + head) * cfg_.max_seq_len + pos] = keep;
}

bool InferenceModel::kept(int layer, int head, int pos) const {
  check_mask_index(cfg_, layer, head, mask_heads(), pos,
                   layer >= 0 && layer < cfg_.n_layers && layers_[layer].kv_width > 0);
  return keep_[(static_cast<size_t>(layer) * mask_heads() + head) * cfg_.max_seq_len + pos];
}

bool InferenceModel::visible(int layer, int kv_head, int pos) const {
  const int mh = cfg_.lrkv() ? 0 : kv_head;
  auto k = [&](int s) {
    return keep_[(static_cast<size_t>(s) * mask_heads() + mh) * cfg_.max_seq_len + pos] != 0;
  };
  const KvSource& src = layers_.at(layer).src;
  if (src.kind == KvSource::Kind::own) return k(layer);
  return k(src.k_layer) && k(src.v_layer);  // reuse: K and V sources; fused: first and last
}

// ---- accounting -----------------------------------------------------------------------------

size_t InferenceModel::kv_capacity_bytes() const { return cache_.bytes(); }
size_t InferenceModel::kv_bytes_per_token() const { return cache_.bytes() / cfg_.max_seq_len; }
size_t InferenceModel::kv_bytes() const { return static_cast<size_t>(len_) * kv_bytes_per_token(); }

size_t InferenceModel::kv_bytes_kept() const {
  size_t floats = 0;
  const int mh = mask_heads();
  for (int l = 0; l < cfg_.n_layers; l++) {
    const Layer& ly = layers_[l];
    if (ly.kv_width == 0) continue;
    const size_t per_entry = static_cast<size_t>(ly.kv_width / mh);  // 2 d_h (a KV head) or all of W
    for (int h = 0; h < mh; h++)
      for (int p = 0; p < len_; p++)
        floats += keep_[(static_cast<size_t>(l) * mh + h) * cfg_.max_seq_len + p] ? per_entry : 0;
  }
  return floats * sizeof(float);
}

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
  const int p0 = len_, Tq = len_ + n;  // new positions [p0, Tq)
  const int C = cfg_.d_model, H = cfg_.n_heads, Hkv = cfg_.kv_heads(), D = cfg_.head_dim(),
            R = cfg_.lrkv_rank, F = cfg_.ffn_dim(), V = cfg_.vocab_size, HD = H * D;
  const float* P = P_;
  float* cache = cache_.data();
  ops_.to_device(tokens_.data(), tokens, static_cast<size_t>(n) * sizeof(int32_t));
  ops_.embedding_forward(x_, tokens_.data(), P + wte_, n, C);
  for (int l = 0; l < cfg_.n_layers; l++) {
    const Layer& ly = layers_[l];
    ops_.rmsnorm_forward(ln_, rstd_, x_, P + ly.ln1, n, C, cfg_.norm_eps);
    if (observer_ && ly.kv_width > 0) observer_(l, ln_, p0, n);
    ops_.matmul_forward(q_, ln_, P + ly.q, n, C, HD);
    ops_.rope_forward(q_, HD, 1, n, H, D, p0, rope_cos_, rope_sin_);
    if (ly.kv_width > 0) {  // store this chunk's rows
      float* rows = cache + ly.cache_off + static_cast<size_t>(p0) * ly.kv_width;
      ops_.matmul_forward(rows, ln_, P + ly.kv, n, C, ly.kv_width);
      if (!cfg_.lrkv()) ops_.rope_forward(rows, ly.kv_width, 1, n, Hkv, D, p0, rope_cos_, rope_sin_);
    }
    const float *k = nullptr, *v = nullptr;
    int ldk = 0, ldv = 0, kv_heads = Hkv;
    if (cfg_.lrkv()) {
      // Rebuild K_h, V_h for every position from the cached shared parts and latents; rotate K.
      const float* blk = cache + ly.cache_off;
      const int W = ly.kv_width;
      ops_.lrkv_expand_forward(scratch_, 2 * HD, blk, W, blk + 2 * D, W, P + ly.k_up, Tq, H, D, R);
      ops_.lrkv_expand_forward(scratch_ + HD, 2 * HD, blk + D, W, blk + 2 * D + H * R, W,
                               P + ly.v_up, Tq, H, D, R);
      ops_.rope_forward(scratch_, 2 * HD, 1, Tq, H, D, 0, rope_cos_, rope_sin_);
      k = scratch_, v = scratch_ + HD, ldk = ldv = 2 * HD, kv_heads = H;
    } else if (ly.src.kind == KvSource::Kind::own) {
      k = cache + ly.cache_off, v = k + Hkv * D, ldk = ldv = ly.kv_width;
    } else if (ly.src.kind == KvSource::Kind::reuse) {
      const Layer& a = layers_[ly.src.k_layer];
      const Layer& b = layers_[ly.src.v_layer];
      k = cache + a.cache_off, ldk = a.kv_width;
      v = cache + b.cache_off + Hkv * D, ldv = b.kv_width;
    } else {  // fused: K = a_first ⊙ K_first + a_last ⊙ K_last, V likewise, read time
      const Layer& f = layers_[ly.src.first()];
      const Layer& g = layers_[ly.src.last()];
      const float* kf = cache + f.cache_off;
      const float* kl = cache + g.cache_off;
      const int ldo = 2 * Hkv * D;
      ops_.kv_fuse_forward(scratch_, ldo, kf, f.kv_width, kl, g.kv_width, P + ly.fuse_k_first,
                           P + ly.fuse_k_last, Tq, Hkv, D, true);
      ops_.kv_fuse_forward(scratch_ + Hkv * D, ldo, kf + Hkv * D, f.kv_width, kl + Hkv * D, g.kv_width,
                           P + ly.fuse_v_first, P + ly.fuse_v_last, Tq, Hkv, D, false);
      k = scratch_, v = scratch_ + Hkv * D, ldk = ldv = ldo;
    }
    attend(l, q_, k, ldk, v, ldv, n, kv_heads, atty_);
    ops_.matmul_forward(tmp_, atty_, P + ly.o, n, HD, C);
    ops_.residual_forward(x_, x_, tmp_, static_cast<int64_t>(n) * C);
    ops_.rmsnorm_forward(ln_, rstd_, x_, P + ly.ln2, n, C, cfg_.norm_eps);
    ops_.matmul_forward(gate_up_, ln_, P + ly.gate_up, n, C, 2 * F);
    ops_.swiglu_forward(swi_, gate_up_, n, F);
    ops_.matmul_forward(tmp_, swi_, P + ly.down, n, F, C);
    ops_.residual_forward(x_, x_, tmp_, static_cast<int64_t>(n) * C);
  }
  len_ = Tq;
  if (!out) return;
  const int rows = all_logits ? n : 1;
  const float* xs = x_ + static_cast<size_t>(n - rows) * C;
  ops_.rmsnorm_forward(ln_, rstd_, xs, P + normf_, rows, C, cfg_.norm_eps);
  ops_.matmul_forward(logits_, ln_, P + head_, rows, C, V);
  const size_t old = out->size();
  out->resize(old + static_cast<size_t>(rows) * V);
  ops_.to_host(out->data() + old, logits_, static_cast<size_t>(rows) * V * sizeof(float));
}

// out[t, h*D : (h+1)*D] = sum_{s <= p0+t, visible} softmax_s(q[t,h]·k[s,g] / sqrt(D)) v[s,g],
// g = h / (H / kv_heads); zero when no position is visible. Positions [0, p0 + n) of k and v.
void InferenceModel::attend(int l, const float* q, const float* k, int ldk, const float* v,
                            int ldv, int n, int kv_heads, float* out) {
  const int H = cfg_.n_heads, D = cfg_.head_dim(), HD = H * D, G = H / kv_heads;
  const int p0 = len_, Tq = len_ + n;
  std::vector<uint8_t> vis(static_cast<size_t>(kv_heads) * Tq);
  for (int g = 0; g < kv_heads; g++)
    for (int s = 0; s < Tq; s++) vis[static_cast<size_t>(g) * Tq + s] = visible(l, g, s);

  // Host views of the inputs and output (copies unless the backend memory is the host's).
  std::vector<float> hq, hk, hv, ho;
  const float *Q = q, *K = k, *Vv = v;
  float* O = out;
  if (!host_direct_) {
    const size_t kn = static_cast<size_t>(Tq - 1) * ldk + static_cast<size_t>(kv_heads) * D;
    const size_t vn = static_cast<size_t>(Tq - 1) * ldv + static_cast<size_t>(kv_heads) * D;
    hq.resize(static_cast<size_t>(n) * HD);
    hk.resize(kn);
    hv.resize(vn);
    ho.resize(hq.size());
    ops_.to_host(hq.data(), q, hq.size() * sizeof(float));
    ops_.to_host(hk.data(), k, kn * sizeof(float));
    ops_.to_host(hv.data(), v, vn * sizeof(float));
    Q = hq.data(), K = hk.data(), Vv = hv.data(), O = ho.data();
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel for collapse(2) schedule(static)
  for (int t = 0; t < n; t++)
    for (int h = 0; h < H; h++) {
      const int g = h / G, p = p0 + t;
      const float* qv = Q + static_cast<size_t>(t) * HD + static_cast<size_t>(h) * D;
      const uint8_t* vg = vis.data() + static_cast<size_t>(g) * Tq;
      float* o = O + static_cast<size_t>(t) * HD + static_cast<size_t>(h) * D;
      std::vector<float> w(static_cast<size_t>(p) + 1);
      float mx = -std::numeric_limits<float>::infinity();
      for (int s = 0; s <= p; s++) {
        if (!vg[s]) continue;
        const float* kv = K + static_cast<size_t>(s) * ldk + static_cast<size_t>(g) * D;
        float dot = 0.0f;
        for (int d = 0; d < D; d++) dot += qv[d] * kv[d];
        w[s] = dot * scale;
        mx = std::max(mx, w[s]);
      }
      for (int d = 0; d < D; d++) o[d] = 0.0f;
      if (mx == -std::numeric_limits<float>::infinity()) continue;  // nothing visible
      float sum = 0.0f;
      for (int s = 0; s <= p; s++) {
        if (!vg[s]) continue;
        w[s] = std::exp(w[s] - mx);
        sum += w[s];
      }
      const float inv = 1.0f / sum;
      for (int s = 0; s <= p; s++) {
        if (!vg[s]) continue;
        const float a = w[s] * inv;
        const float* vv = Vv + static_cast<size_t>(s) * ldv + static_cast<size_t>(g) * D;
        for (int d = 0; d < D; d++) o[d] += a * vv[d];
      }
    }
  if (!host_direct_) ops_.to_device(out, ho.data(), ho.size() * sizeof(float));
}

}  // namespace kvt

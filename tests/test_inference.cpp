// Tests of the inference path (model/inference.h, docs/design.md, "Inference and the KV cache") on the CPU backend:
//  * for every variant (MHA, GQA, MQA, cla, yoco, fusedkv_lite, fusedkv, lrkv): prefill + decode
//    logits equal Transformer::forward's to 1e-5 max abs (fp32, logits of magnitude ~1: init_std
//    0.2 makes |logit| up to ~3); prefill in chunks of 1, 7 and whole agree to 1e-5; the
//    host-staging attention path (what non-CPU backends run) agrees too;
//  * keep-mask: an independent double-precision reference written here (plain loops, its own
//    RoPE, projections, fusion and LRKV expansion, its own visibility rule) with positions
//    masked out of attention equals the cache with those entries evicted, to 1e-4; the reference
//    is itself checked against Transformer::forward without a mask, and the mask is checked to
//    change the logits (so the comparison could fail);
//  * kv_bytes: hand-computed literals per variant after 10 tokens;
//  * bad input: prompts longer than max_seq_len, a full cache, masks on layers that store nothing;
//  * sampling (greedy, top-k, top-p, seeds) and `kvtrain generate` end to end on a checkpoint
//    trained for 2 steps by the kvtrain binary on a corpus and tokenizer made by `kvtrain prepare`:
//    greedy output is deterministic and equals the argmax chain of the inference API (and of the
//    full forward); the cache-full stop and the too-long prompt error.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common/rng.h"
#include "model/inference.h"
#include "data/tokenizer.h"
#include "model/kv_sharing.h"
#include "model/sampling.h"
#include "model/transformer.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "model_checks.h"
#include "reference_forward.h"

namespace kvt {
namespace {

struct Variant {
  const char* name;
  std::string scheme;
  int layers, kv_heads, storage, rank;
  size_t bytes_10_tokens;  // hand-computed: 10 tokens x values/token x 4 bytes
};

// V 53, d 24, 4 heads of d_h 6, F 40, max_seq_len 32.
//  none MHA L2:        2 L Hkv d_h   = 2*2*4*6  = 96 values  -> 10*96*4  = 3840
//  GQA  L2 Hkv2:                     = 2*2*2*6  = 48         -> 1920
//  MQA  L2 Hkv1:                     = 2*2*1*6  = 24         -> 960
//  cla  L3 (stores 0, 2):  2 n Hkv d_h = 2*2*4*6 = 96        -> 3840
//  yoco L4 n2:                       = 2*2*4*6  = 96         -> 3840
//  fusedkv_lite L4 n3:               = 2*3*4*6  = 144        -> 5760
//  fusedkv L4 n2 Hkv2:               = 2*2*2*6  = 48         -> 1920
//  lrkv L2 r2:  2 L (d_h + H r)      = 2*2*(6+8) = 56        -> 2240
const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"mha", "none", 2, 4, 0, 0, 3840},          {"gqa", "none", 2, 2, 0, 0, 1920},
      {"mqa", "none", 2, 1, 0, 0, 960},           {"cla", "cla", 3, 4, 0, 0, 3840},
      {"yoco", "yoco", 4, 4, 2, 0, 3840},         {"fusedkv_lite", "fusedkv_lite", 4, 4, 3, 0, 5760},
      {"fusedkv", "fusedkv", 4, 2, 2, 0, 1920},   {"lrkv", "none", 2, 4, 0, 2, 2240},
  };
  return v;
}

ModelConfig config_of(const Variant& v, bool tied = true) {
  ModelConfig c = testutil::small_variant_config({v.name, v.scheme, v.layers, v.kv_heads, v.storage, v.rank},
                                                 53, 24, 40, 32);
  c.tie_embeddings = tied;
  c.resolve();
  return c;
}

std::vector<int32_t> random_tokens(int n, int V, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(r.below(V));
  return t;
}

double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}
double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float x : a) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

// Full-forward logits [T, V] of a model with seeded random weights.
struct Fixture {
  ModelConfig cfg;
  std::unique_ptr<Ops> ops = make_ops("cpu");
  std::unique_ptr<Transformer> model;
  std::vector<int32_t> tokens;
  std::vector<float> full;  // [T, V]
  Fixture(const Variant& v, int T, bool tied = true) : cfg(config_of(v, tied)) {
    model = std::make_unique<Transformer>(cfg, *ops, 1, T, false);
    model->init_parameters(1000 + v.layers * 7 + v.kv_heads);
    tokens = random_tokens(T, cfg.vocab_size, 77);
    model->forward(tokens.data(), nullptr, 1, T);
    full = model->logits_to_host();
  }
};

constexpr double kTol = 1e-5;  // fp32 cache path vs fp32 full forward, |logits| ~ 1

// ---- cached decode equals the full forward -----------------------------------------------------

TEST(Inference, PrefillThenDecodeMatchesFullForwardEveryVariant) {
  const int T = 20, P = 12;
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    Fixture f(v, T);
    const int V = f.cfg.vocab_size;
    ASSERT_GT(max_abs(f.full), 0.5) << "logits too small for the tolerance to mean anything";
    InferenceModel inf(*f.model);
    const std::vector<float> pre = inf.prefill(f.tokens.data(), P, /*all_logits=*/true);
    ASSERT_EQ(pre.size(), static_cast<size_t>(P) * V);
    EXPECT_LE(max_abs_diff(pre.data(), f.full.data(), pre.size()), kTol);
    for (int t = P; t < T; t++) {
      const std::vector<float> lg = inf.decode(f.tokens[t]);
      ASSERT_EQ(lg.size(), static_cast<size_t>(V));
      EXPECT_LE(max_abs_diff(lg.data(), f.full.data() + static_cast<size_t>(t) * V, V), kTol)
          << "decode at position " << t;
    }
    EXPECT_EQ(inf.length(), T);
    // prefill's default returns the last token's logits only
    inf.reset();
    const std::vector<float> last = inf.prefill(f.tokens.data(), P);
    ASSERT_EQ(last.size(), static_cast<size_t>(V));
    EXPECT_LE(max_abs_diff(last.data(), f.full.data() + static_cast<size_t>(P - 1) * V, V), kTol);
  }
}

TEST(Inference, UntiedHeadAndOwnedParameters) {
  const Variant v{"gqa-untied", "none", 2, 2, 0, 0, 0};
  const int T = 9;
  Fixture f(v, T, /*tied=*/false);
  const std::vector<float> host = f.model->params_to_host();
  InferenceModel inf(f.cfg, *f.ops, host);  // owns an uploaded copy
  const std::vector<float> lg = inf.prefill(f.tokens.data(), T, true);
  EXPECT_LE(max_abs_diff(lg.data(), f.full.data(), lg.size()), kTol);
  EXPECT_THROW(InferenceModel(f.cfg, *f.ops, std::span<const float>(host.data(), host.size() - 1)),
               std::invalid_argument);
}

TEST(Inference, ChunkSizesAgree) {
  const int T = 23;
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    Fixture f(v, T);
    const int V = f.cfg.vocab_size;
    // (a) chunking by the caller: pieces of 1, 7 and the whole prompt
    for (int piece : {1, 7, T}) {
      SCOPED_TRACE("caller chunk " + std::to_string(piece));
      InferenceModel inf(*f.model);
      std::vector<float> all;
      for (int i = 0; i < T; i += piece) {
        const int m = std::min(piece, T - i);
        const std::vector<float> lg = inf.prefill(f.tokens.data() + i, m, true);
        all.insert(all.end(), lg.begin(), lg.end());
      }
      ASSERT_EQ(all.size(), static_cast<size_t>(T) * V);
      EXPECT_LE(max_abs_diff(all.data(), f.full.data(), all.size()), kTol);
    }
    // (b) chunking inside one prefill call (max_chunk)
    for (int chunk : {1, 7, T}) {
      SCOPED_TRACE("max_chunk " + std::to_string(chunk));
      InferenceModel inf(*f.model, InferenceOptions{chunk});
      EXPECT_EQ(inf.max_chunk(), chunk);
      const std::vector<float> lg = inf.prefill(f.tokens.data(), T, true);
      EXPECT_LE(max_abs_diff(lg.data(), f.full.data(), lg.size()), kTol);
      const std::vector<float> last = inf.prefill(f.tokens.data(), 0 + 1);  // one more token
      EXPECT_EQ(last.size(), static_cast<size_t>(V));
    }
  }
}

// ---- cache layout ------------------------------------------------------------------------------

// Per (storage layer, head): its own list in whole blocks of KvCache::kBlock rows; compact()
// frees what the flags drop and keeps the rows of what stays; truncate and clear.
TEST(KvCacheLayout, ListsGrowByBlocksAndCompactToWhatTheyKeep) {
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    ModelConfig cfg = config_of(v);
    cfg.max_seq_len = 150;
    auto ops = make_ops("cpu");
    const std::vector<LayerPlan> plan = build_layer_plan(build_param_table(cfg), cfg);
    KvCache cache(*ops, cfg, plan);
    EXPECT_EQ(cache.heads(), cfg.lrkv() ? 1 : cfg.kv_heads());
    EXPECT_EQ(cache.capacity_bytes(), 0u);
    // row value of (layer, head, position, column)
    const auto value = [](int l, int h, int p, int c) { return static_cast<float>(p * 1000 + l * 100 + h * 10 + c % 10); };
    size_t floats = 0;
    for (int l = 0; l < cfg.n_layers; l++) {
      EXPECT_EQ(cache.width(l) > 0, plan[l].stores());
      if (!plan[l].stores()) continue;
      const int W = cache.width(l);
      EXPECT_EQ(W * cache.heads(), plan[l].kv_width);
      for (int h = 0; h < cache.heads(); h++)
        for (auto [p0, n] : {std::pair{0, 60}, std::pair{60, 40}}) {
          std::vector<float> rows(static_cast<size_t>(n) * W);
          for (int i = 0; i < n; i++)
            for (int c = 0; c < W; c++) rows[static_cast<size_t>(i) * W + c] = value(l, h, p0 + i, c);
          ops->to_device(cache.append(l, h, p0, n), rows.data(), rows.size() * sizeof(float));
        }
      for (int h = 0; h < cache.heads(); h++) {
        EXPECT_EQ(cache.count(l, h), 100);
        EXPECT_EQ(cache.allocated_rows(l, h), 128);
        floats += 128 * static_cast<size_t>(W);
      }
    }
    EXPECT_EQ(cache.capacity_bytes(), floats * sizeof(float));
    EXPECT_THROW(cache.append(plan[0].stores() ? 0 : 1, 0, 99, 1), std::logic_error);  // not after 99
    // Non-uniform budgets: head h of layer l keeps the positions p with (p + l) % (h + 2) != 0,
    // and layer 0 head 0 only the first 10.
    const auto keeps = [](int l, int h, int p) { return (l == 0 && h == 0) ? p < 10 : (p + l) % (h + 2) != 0; };
    int64_t dropped = 0;
    for (int l = 0; l < cfg.n_layers; l++)
      for (int h = 0; plan[l].stores() && h < cache.heads(); h++)
        for (int p = 0; p < 100; p++)
          if (!keeps(l, h, p)) cache.set_kept(l, h, p, false), dropped++;
    EXPECT_EQ(cache.compact(), dropped);
    floats = 0;
    for (int l = 0; l < cfg.n_layers; l++) {
      if (!plan[l].stores()) continue;
      const int W = cache.width(l);
      for (int h = 0; h < cache.heads(); h++) {
        std::vector<int32_t> want;
        for (int p = 0; p < 100; p++)
          if (keeps(l, h, p)) want.push_back(p);
        EXPECT_EQ(cache.positions(l, h), want);
        EXPECT_EQ(cache.allocated_rows(l, h), (cache.count(l, h) + 63) / 64 * 64);
        floats += static_cast<size_t>(cache.allocated_rows(l, h)) * W;
        std::vector<float> rows(want.size() * W);
        ops->to_host(rows.data(), cache.entries(l, h), rows.size() * sizeof(float));
        bool same = true;
        for (size_t i = 0; i < want.size(); i++)
          for (int c = 0; c < W; c++) same = same && rows[i * W + c] == value(l, h, want[i], c);
        EXPECT_TRUE(same) << "layer " << l << " head " << h << ": rows moved wrongly";
      }
    }
    EXPECT_EQ(cache.capacity_bytes(), floats * sizeof(float));
    EXPECT_LT(cache.capacity_bytes(), cache.peak_bytes());
    EXPECT_EQ(cache.compact(), 0);  // nothing more to drop
    cache.truncate(50);
    for (int l = 0; l < cfg.n_layers; l++)
      for (int h = 0; plan[l].stores() && h < cache.heads(); h++) {
        EXPECT_TRUE(cache.positions(l, h).empty() || cache.positions(l, h).back() < 50);
        EXPECT_TRUE(cache.kept(l, h, 60));  // kept again after truncation
      }
    cache.clear();
    EXPECT_EQ(cache.capacity_bytes(), 0u);
    EXPECT_EQ(cache.peak_bytes(), 0u);
  }
}

// ---- KV bytes ----------------------------------------------------------------------------------

TEST(Inference, KvBytesEqualHandComputedNumbers) {
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    Fixture f(v, 10);
    InferenceModel inf(*f.model);
    EXPECT_EQ(inf.kv_bytes(), 0u);
    EXPECT_EQ(inf.kv_capacity_bytes(), 0u);  // the cache allocates as it fills
    inf.prefill(f.tokens.data(), 7);
    // one block of KvCache::kBlock entries per list
    EXPECT_EQ(inf.kv_capacity_bytes(), v.bytes_10_tokens / 10 * KvCache::kBlock);
    inf.prefill(f.tokens.data() + 7, 2);
    inf.decode(f.tokens[9]);
    EXPECT_EQ(inf.kv_bytes(), v.bytes_10_tokens);
    EXPECT_EQ(inf.kv_bytes_per_token() * 10, v.bytes_10_tokens);
    EXPECT_EQ(static_cast<int64_t>(inf.kv_bytes_per_token()),
              kv_cache_per_token(f.cfg).bytes_fp32);  // agrees with the config's accounting
    EXPECT_EQ(inf.kv_bytes_kept(), v.bytes_10_tokens);
  }
  // Eviction accounting: GQA, evict KV head 1 of layer 0 at positions 0..3:
  // 4 entries x 2 d_h x 4 bytes = 192 fewer bytes kept.
  Fixture f(variants()[1], 10);
  InferenceModel inf(*f.model);
  inf.prefill(f.tokens.data(), 10);
  for (int p = 0; p < 4; p++) inf.set_keep(0, 1, p, false);
  EXPECT_EQ(inf.kv_bytes(), 1920u);
  EXPECT_EQ(inf.kv_bytes_kept(), 1920u - 192u);
  // LRKV: one decision per (layer, position), a whole row of 2 d_h + 2 H r = 28 values = 112 bytes
  Fixture g(variants()[7], 10);
  InferenceModel lr(*g.model);
  lr.prefill(g.tokens.data(), 10);
  EXPECT_EQ(lr.mask_heads(), 1);
  lr.set_keep(1, 0, 3, false);
  EXPECT_EQ(lr.kv_bytes_kept(), 2240u - 112u);
}

// ---- keep-mask vs an independent reference -----------------------------------------------------

// keep[l][g][s]: the mask of storage layer l (g over mask heads: H_kv, or 1 for LRKV).
using Mask = std::vector<std::vector<std::vector<bool>>>;

std::vector<double> reference_logits(const ModelConfig& cfg, const ParamTable& table,
                                     const std::vector<float>& prm, const std::vector<int32_t>& tok,
                                     const Mask& keep) {
  return testutil::reference_logits(cfg, table, prm, tok,
                                     [&](int l, int g, int s, int) { return keep[l][g][s]; });
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); i++) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

TEST(Inference, KeepMaskEqualsDenseAttentionWithPositionsMaskedOut) {
  const int T = 18;
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    Fixture f(v, T);
    const std::vector<float> prm = f.model->params_to_host();
    const ParamTable& table = f.model->params();
    const int L = f.cfg.n_layers, mh = f.cfg.lrkv() ? 1 : f.cfg.kv_heads();
    Mask all(L, std::vector<std::vector<bool>>(mh, std::vector<bool>(T, true)));
    // The reference itself: without a mask it is the full forward.
    const std::vector<double> ref_dense = reference_logits(f.cfg, table, prm, f.tokens, all);
    ASSERT_LE(max_abs_diff(f.full, ref_dense), 1e-4);

    // Random evictions on storage layers (about 35%), never position 0 of head 0 of layer 0.
    Mask keep = all;
    Rng r(5 + v.layers);
    InferenceModel inf(*f.model, InferenceOptions{7});
    for (int l = 0; l < L; l++) {
      if (!is_storage_layer(f.cfg, l)) {
        EXPECT_THROW(inf.set_keep(l, 0, 0, false), std::out_of_range);
        continue;
      }
      for (int g = 0; g < mh; g++)
        for (int s = 1; s < T; s++)
          if (r.uniform() < 0.35) {
            keep[l][g][s] = false;
            inf.set_keep(l, g, s, false);
            EXPECT_FALSE(inf.kept(l, g, s));
          }
    }
    const std::vector<double> ref = reference_logits(f.cfg, table, prm, f.tokens, keep);
    ASSERT_GT(max_abs_diff(f.full, ref), 1e-2) << "the mask must change the logits";
    std::vector<float> got = inf.prefill(f.tokens.data(), 11, true);
    for (int t = 11; t < T; t++) {
      const std::vector<float> lg = inf.decode(f.tokens[t]);
      got.insert(got.end(), lg.begin(), lg.end());
    }
    EXPECT_LE(max_abs_diff(got, ref), 1e-4);
    // Visibility of a reusing layer = AND over its sources.
    for (int l = 0; l < L; l++) {
      const KvSource s = kv_source_of_layer(f.cfg, l);
      for (int g = 0; g < f.cfg.kv_heads(); g++)
        for (int p = 0; p < T; p++) {
          const int mg = f.cfg.lrkv() ? 0 : g;
          const bool want = s.kind == KvSource::Kind::own
                                ? keep[l][mg][p]
                                : keep[s.k_layer][mg][p] && keep[s.v_layer][mg][p];
          EXPECT_EQ(inf.visible(l, g, p), want);
        }
    }
    // reset() keeps everything again
    inf.reset();
    const std::vector<float> dense = inf.prefill(f.tokens.data(), T, true);
    EXPECT_LE(max_abs_diff(dense.data(), f.full.data(), dense.size()), kTol);
  }
}

// The compacting cache: the entries the mask drops are freed, and the logits that follow equal
// the keep-mask path's to 1e-5, for every variant, after two rounds of eviction (one after the
// prefill, one during decode), including reusing layers that see a position only where all their
// sources kept it.
TEST(Inference, CompactedCacheGivesTheKeepMaskLogits) {
  const int T = 24;
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    Fixture f(v, T);
    const int L = f.cfg.n_layers;
    InferenceModel masked(*f.model, InferenceOptions{5}), compacted(*f.model, InferenceOptions{5});
    const int mh = masked.mask_heads();
    Rng r(11 + v.layers);
    const auto evict = [&](int upto) {
      int64_t n = 0;
      for (int l = 0; l < L; l++)
        for (int g = 0; is_storage_layer(f.cfg, l) && g < mh; g++)
          for (int s = 1; s < upto; s++)
            if (masked.kept(l, g, s) && r.uniform() < 0.3) {
              masked.set_keep(l, g, s, false);
              compacted.set_keep(l, g, s, false);
              n++;
            }
      return n;
    };
    std::vector<float> a = masked.prefill(f.tokens.data(), 12, true);
    std::vector<float> b = compacted.prefill(f.tokens.data(), 12, true);
    EXPECT_LE(max_abs_diff(a.data(), b.data(), a.size()), kTol);
    const int64_t first = evict(12);
    ASSERT_GT(first, 0);
    EXPECT_EQ(compacted.compact(), first);
    EXPECT_EQ(compacted.kv_bytes_kept(), masked.kv_bytes_kept());
    for (int l = 0; l < L; l++)  // each list holds exactly the positions it keeps
      for (int g = 0; is_storage_layer(f.cfg, l) && g < mh; g++) {
        std::vector<int32_t> want;
        for (int s = 0; s < 12; s++)
          if (masked.kept(l, g, s)) want.push_back(s);
        EXPECT_EQ(compacted.cache().positions(l, g), want);
      }
    double worst = 0, moved = 0;
    for (int t = 12; t < T; t++) {
      if (t == 18) {
        const int64_t second = evict(18);
        EXPECT_EQ(compacted.compact(), second);
      }
      const std::vector<float> x = masked.decode(f.tokens[t]), y = compacted.decode(f.tokens[t]);
      worst = std::max(worst, max_abs_diff(x.data(), y.data(), x.size()));
      moved = std::max(moved, max_abs_diff(x.data(), f.full.data() + static_cast<size_t>(t) * f.cfg.vocab_size, x.size()));
    }
    EXPECT_LE(worst, kTol);
    EXPECT_GT(moved, 1e-2) << "the eviction must change the logits";
    // truncate then prefill again on the compacted cache: still the masked path's logits
    masked.truncate(14), compacted.truncate(14);
    a = masked.prefill(f.tokens.data() + 14, 6, true);
    b = compacted.prefill(f.tokens.data() + 14, 6, true);
    EXPECT_LE(max_abs_diff(a.data(), b.data(), a.size()), kTol);
  }
}

// The attention probe (max over a query range) equals the probabilities the training forward
// keeps, for every variant, with the full cache: per reading layer and head read.
TEST(Inference, AttentionProbeEqualsTheForwardsProbabilities) {
  const int T = 20, q0 = 12, q1 = 20;
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    Fixture f(v, T);
    const int H = f.cfg.n_heads, heads = f.cfg.lrkv() ? H : f.cfg.kv_heads(), G = H / heads;
    std::vector<std::vector<float>> got(static_cast<size_t>(f.cfg.n_layers) * heads, std::vector<float>(T, -1.0f));
    InferenceModel inf(*f.model, InferenceOptions{7});
    for (bool sum : {false, true}) {
      inf.reset();
      inf.set_attention_probe({q0, q1, sum, [&](int layer, int head, const int32_t* pos, const float* s, int n) {
                                 auto& row = got[static_cast<size_t>(layer) * heads + head];
                                 for (int i = 0; i < n; i++)
                                   if (pos[i] >= 0) row[pos[i]] = sum ? (row[pos[i]] < 0 ? 0 : row[pos[i]]) + s[i] : std::max(row[pos[i]], s[i]);
                               }});
      for (auto& row : got) std::fill(row.begin(), row.end(), -1.0f);
      inf.prefill(f.tokens.data(), T);
      double worst = 0;
      for (int l = 0; l < f.cfg.n_layers; l++) {
        std::vector<float> probs(static_cast<size_t>(H) * T * T);
        f.ops->to_host(probs.data(), f.model->attention_probs(l), probs.size() * sizeof(float));
        for (int r = 0; r < heads; r++)
          for (int i = 0; i < T; i++) {
            double want = 0;
            for (int h = r * G; h < (r + 1) * G; h++)
              for (int t = q0; t < q1; t++) {
                const double p = probs[(static_cast<size_t>(h) * T + t) * T + i];
                want = sum ? want + p : std::max(want, p);
              }
            worst = std::max(worst, std::fabs(want - got[static_cast<size_t>(l) * heads + r][i]));
          }
      }
      EXPECT_LE(worst, 1e-5) << (sum ? "sum" : "max");
    }
  }
}

TEST(Inference, EveryPositionEvictedGivesZeroAttention) {
  // With layer 0's every entry evicted, a 1-layer MHA model's attention output is zero, so the
  // logits equal those of a model whose o_proj is zero.
  const Variant v{"mha1", "none", 1, 4, 0, 0, 0};
  Fixture f(v, 6);
  InferenceModel inf(*f.model);
  for (int g = 0; g < 4; g++)
    for (int p = 0; p < 6; p++) inf.set_keep(0, g, p, false);
  const std::vector<float> got = inf.prefill(f.tokens.data(), 6, true);
  std::vector<float> prm = f.model->params_to_host();
  const ParamInfo& o = f.model->params().find("model.layers.0.self_attn.o_proj.weight");
  std::fill(prm.begin() + o.offset, prm.begin() + o.offset + o.numel, 0.0f);
  f.model->params_from_host(prm);
  f.model->forward(f.tokens.data(), nullptr, 1, 6);
  const std::vector<float> want = f.model->logits_to_host();
  EXPECT_LE(max_abs_diff(got.data(), want.data(), got.size()), kTol);
  EXPECT_GT(max_abs_diff(want.data(), f.full.data(), want.size()), 1e-2);
}

// ---- bad input ---------------------------------------------------------------------------------

TEST(Inference, PromptsLongerThanMaxSeqLenAreClearErrors) {
  Fixture f(variants()[0], 8);
  InferenceModel inf(*f.model);
  const std::vector<int32_t> long_prompt = random_tokens(33, 53, 3);  // max_seq_len 32
  try {
    inf.prefill(long_prompt.data(), 33);
    FAIL() << "no error";
  } catch (const std::length_error& e) {
    EXPECT_NE(std::string(e.what()).find("max_seq_len 32"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("33 tokens"), std::string::npos) << e.what();
  }
  EXPECT_EQ(inf.length(), 0);
  inf.prefill(long_prompt.data(), 30);
  EXPECT_THROW(inf.prefill(long_prompt.data(), 3), std::length_error);
  EXPECT_EQ(inf.length(), 30);  // unchanged by the refused call
  inf.decode(1);
  inf.decode(2);
  EXPECT_EQ(inf.length(), 32);
  EXPECT_THROW(inf.decode(3), std::length_error);
  EXPECT_THROW(inf.prefill(long_prompt.data(), 0), std::invalid_argument);
  inf.reset();
  const int32_t bad[2] = {1, 53};
  EXPECT_THROW(inf.prefill(bad, 2), std::out_of_range);
  EXPECT_THROW(inf.set_keep(0, 4, 0, false), std::out_of_range);   // head
  EXPECT_THROW(inf.set_keep(0, 0, 32, false), std::out_of_range);  // position
  EXPECT_THROW(inf.set_keep(2, 0, 0, false), std::out_of_range);   // layer
}

// ---- sampling ----------------------------------------------------------------------------------

TEST(Sampling, GreedyTopKTopPAndSeeds) {
  const std::vector<float> lg = {0.1f, 2.0f, -1.0f, 2.0f, 1.5f, 0.0f};
  EXPECT_EQ(argmax(lg), 1);  // first of the tied maxima
  Rng r(1);
  SamplingParams greedy;
  EXPECT_EQ(sample_token(lg, greedy, r), 1);
  EXPECT_EQ(r.state(), 1u);  // greedy draws nothing
  SamplingParams k1{1.5f, 1, 1.0f};
  for (int i = 0; i < 20; i++) EXPECT_EQ(sample_token(lg, k1, r), 1);
  SamplingParams p_small{1.0f, 0, 0.05f};  // the top token alone holds more than 5%
  for (int i = 0; i < 20; i++) EXPECT_EQ(sample_token(lg, p_small, r), 1);
  // top-k 3 = {1, 3, 4}: only those, each seen
  SamplingParams k3{1.0f, 3, 1.0f};
  std::vector<int> seen(lg.size());
  for (int i = 0; i < 600; i++) seen[sample_token(lg, k3, r)]++;
  EXPECT_EQ(seen[0] + seen[2] + seen[5], 0);
  EXPECT_GT(seen[1], 0);
  EXPECT_GT(seen[3], 0);
  EXPECT_GT(seen[4], 0);
  // top-p 0.8 at T = 1: probs of 1, 3 are 0.33 each, 4: 0.20 -> {1, 3, 4} (0.86 >= 0.8)
  SamplingParams p8{1.0f, 0, 0.8f};
  std::fill(seen.begin(), seen.end(), 0);
  for (int i = 0; i < 600; i++) seen[sample_token(lg, p8, r)]++;
  EXPECT_EQ(seen[0] + seen[2] + seen[5], 0);
  EXPECT_GT(seen[4], 0);
  // the same seed reproduces a draw sequence
  SamplingParams t{0.9f, 0, 1.0f};
  Rng a(42), b(42);
  for (int i = 0; i < 50; i++) EXPECT_EQ(sample_token(lg, t, a), sample_token(lg, t, b));
  EXPECT_THROW((SamplingParams{-1.0f, 0, 1.0f}.validate()), std::invalid_argument);
  EXPECT_THROW((SamplingParams{1.0f, -2, 1.0f}.validate()), std::invalid_argument);
  EXPECT_THROW((SamplingParams{1.0f, 0, 0.0f}.validate()), std::invalid_argument);
  EXPECT_THROW((SamplingParams{1.0f, 0, 1.5f}.validate()), std::invalid_argument);
}

// ---- kvtrain generate --------------------------------------------------------------------------

namespace fs = std::filesystem;

using testutil::CmdResult;
using testutil::run_kvtrain;
std::string quote(const std::string& s) { return "'" + s + "'"; }

std::vector<int32_t> parse_ids(const std::string& out) {
  const size_t at = out.find("generate: ids:");
  std::vector<int32_t> ids;
  if (at == std::string::npos) return ids;
  std::istringstream in(out.substr(at + 14, out.find('\n', at) - at - 14));
  int32_t x;
  while (in >> x) ids.push_back(x);
  return ids;
}
// The output without the timing line (which differs between runs).
std::string without_timings(const std::string& out) {
  std::istringstream in(out);
  std::string line, kept;
  while (std::getline(in, line))
    if (line.find("tokens/s") == std::string::npos) kept += line + "\n";
  return kept;
}

class Generate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("kvt_test_generate_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // A small text with repeated structure (the tokenizer needs some material for 300 pieces).
    testutil::write_word_text((dir_ / "text.txt").string(), 600, 3);
    const CmdResult prep = run_kvtrain("prepare --input " + quote((dir_ / "text.txt").string()) +
                                 " --out " + quote((dir_ / "data").string()) +
                                 " --vocab-size 300 --val-fraction 0.1 --val-block 0");
    ASSERT_EQ(prep.rc, 0) << prep.out;
    std::ofstream(dir_ / "c.yaml")
        << "model: {vocab_size: 300, d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, "
           "max_seq_len: 40, init_std: 0.2}\n"
        << "train: {batch_size: 2, seq_len: 32, steps: 2, warmup_steps: 1, eval_every: 0, threads: 1}\n"
        << "data: {train: '" << (dir_ / "data" / "*train*.bin").string() << "', val: '"
        << (dir_ / "data" / "*val*.bin").string() << "', tokenizer: '"
        << (dir_ / "data" / "tokenizer.model").string() << "'}\n"
        << "output: {dir: '" << (dir_ / "run").string() << "'}\n";
    const CmdResult train = run_kvtrain("train --config " + quote((dir_ / "c.yaml").string()));
    ASSERT_EQ(train.rc, 0) << train.out;
    const auto ck = list_checkpoints((dir_ / "run").string());
    ASSERT_FALSE(ck.empty()) << train.out;
    ckpt_ = ck.front();
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static fs::path dir_;
  static std::string ckpt_;
};
fs::path Generate::dir_;
std::string Generate::ckpt_;

TEST_F(Generate, GreedyIsDeterministicAndEqualsTheArgmaxChain) {
  ASSERT_FALSE(ckpt_.empty());
  const std::string prompt = "the lord said unto";
  const std::string args = "generate --checkpoint " + quote(ckpt_) + " --prompt " + quote(prompt) +
                           " --max-new-tokens 12 --print-ids";
  const CmdResult a = run_kvtrain(args), b = run_kvtrain(args);
  ASSERT_EQ(a.rc, 0) << a.out;
  ASSERT_EQ(b.rc, 0) << b.out;
  EXPECT_EQ(without_timings(a.out), without_timings(b.out));
  EXPECT_NE(a.out.find("tokens/s"), std::string::npos) << a.out;
  EXPECT_NE(a.out.find("KV cache"), std::string::npos) << a.out;
  EXPECT_EQ(a.out.rfind(prompt, 0), 0u) << "the text starts with the prompt: " << a.out;
  const std::vector<int32_t> got = parse_ids(a.out);

  // The argmax chain through the API, from the same checkpoint.
  const RunConfig cfg = parse_run_config(read_checkpoint_config(ckpt_), {}, ckpt_);
  const CheckpointWeights w = read_model_weights(ckpt_, build_param_table(cfg.model));
  const Tokenizer tok(cfg.data.tokenizer);
  std::vector<int32_t> ids{tok.bos_id()};
  for (int32_t t : tok.encode(prompt)) ids.push_back(t);
  auto ops = make_ops("cpu");
  InferenceModel inf(cfg.model, *ops, w.params);
  std::vector<float> lg = inf.prefill(ids);
  std::vector<int32_t> want;
  for (int i = 0; i < 12; i++) {
    want.push_back(argmax(lg));
    if (want.back() == tok.eos_id()) break;
    if (i < 11) lg = inf.decode(want.back());
  }
  EXPECT_EQ(got, want) << a.out;
  // KV bytes printed = positions fed x bytes per token: GQA 2 layers x 2 KV heads x d_h 8 x 2 x 4
  // = 256 bytes/token.
  const size_t fed = ids.size() + want.size() - 1;
  EXPECT_NE(a.out.find("KV cache " + std::to_string(fed * 256) + " bytes used"), std::string::npos)
      << a.out;
  // The same chain from the full forward (no cache) over prompt + generated tokens.
  std::vector<int32_t> seq = ids;
  seq.insert(seq.end(), want.begin(), want.end());
  Transformer full(cfg.model, *ops, 1, static_cast<int>(seq.size()), false);
  full.params_from_host(w.params);
  full.forward(seq.data(), nullptr, 1, static_cast<int>(seq.size()));
  const std::vector<float> fl = full.logits_to_host();
  const int V = cfg.model.vocab_size;
  for (size_t i = 0; i < want.size(); i++) {
    const size_t row = ids.size() - 1 + i;
    EXPECT_EQ(argmax(std::span<const float>(fl.data() + row * V, V)), want[i]) << "token " << i;
  }
}

TEST_F(Generate, SamplingWithASeedRepeats) {
  ASSERT_FALSE(ckpt_.empty());
  const std::string args = "generate --checkpoint " + quote(ckpt_) +
                           " --prompt 'and his people' --max-new-tokens 10 --temperature 0.9 "
                           "--top-k 20 --top-p 0.95 --seed 7 --print-ids";
  const CmdResult a = run_kvtrain(args), b = run_kvtrain(args);
  ASSERT_EQ(a.rc, 0) << a.out;
  EXPECT_EQ(without_timings(a.out), without_timings(b.out));
  EXPECT_FALSE(parse_ids(a.out).empty());
  const CmdResult bad = run_kvtrain("generate --checkpoint " + quote(ckpt_) + " --prompt x --top-p 2");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.out.find("--top-p"), std::string::npos) << bad.out;
}

TEST_F(Generate, StopsAtMaxSeqLenAndRejectsLongPrompts) {
  ASSERT_FALSE(ckpt_.empty());
  const CmdResult full = run_kvtrain("generate --checkpoint " + quote(ckpt_) +
                               " --prompt 'the lord' --max-new-tokens 100 --print-ids");
  ASSERT_EQ(full.rc, 0) << full.out;
  const size_t n = parse_ids(full.out).size();
  if (full.out.find("end of sequence") == std::string::npos) {
    EXPECT_NE(full.out.find("cache is full at model.max_seq_len 40"), std::string::npos) << full.out;
    const Tokenizer tok((dir_ / "data" / "tokenizer.model").string());
    // positions 0..39 hold BOS + prompt + all generated tokens but the last
    EXPECT_EQ(n, 40 - (1 + tok.encode("the lord").size()) + 1) << full.out;
  }
  std::string long_prompt;
  for (int i = 0; i < 60; i++) long_prompt += "water earth ";
  const CmdResult bad = run_kvtrain("generate --checkpoint " + quote(ckpt_) + " --prompt " + quote(long_prompt));
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.out.find("longer than model.max_seq_len 40"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace kvt

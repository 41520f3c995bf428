// Tests of KV eviction at inference (model/eviction.h, docs/design.md, "Fast KVzip gates") on the CPU backend, for
// every variant (MHA, GQA, CLA, YOCO, FusedKV-Lite, FusedKV, LRKV):
//  * chunked prefill with eviction after each chunk equals an independent double-precision dense
//    forward (tests/reference_forward.h) in which query t sees an entry only until the chunk after
//    which it was evicted, and a reusing layer only where every source kept it (to 1e-4, and the
//    eviction is checked to change the logits);
//  * the bookkeeping: the kept share of entries equals the keep ratio after every chunk, the KV
//    bytes the cache reports follow the kept entries, sinks and the recent window are never
//    evicted, an evicted entry never returns, and one threshold separates kept from evicted;
//  * evaluate_eviction: keep 1.0 equals the full cache to 1e-6 for every policy; the full-cache
//    losses equal cross-entropies of Transformer::forward; the gates policy scores exactly what
//    the gates say of the hidden states the model computes;
//  * the free-copy task: greedy tokens after the primer equal an independent greedy, and its
//    scores (copy prefix, match rate, LCS rate) counted by hand;
//  * bad input: keep ratios outside (0, 1], contexts longer than max_seq_len, missing scores.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kernels/common/rng.h"
#include "model/decode_eviction.h"
#include "model/eviction.h"
#include "model/eviction_tasks.h"
#include "model/gates.h"
#include "model/inference.h"
#include "model/kv_sharing.h"
#include "model/kvzip.h"
#include "model/transformer.h"
#include "model_checks.h"
#include "reference_forward.h"

namespace kvt {
namespace {

using Variant = testutil::KvVariant;

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"mha", "none", 2, 4, 0, 0},         {"gqa", "none", 2, 2, 0, 0},
      {"cla", "cla", 3, 2, 0, 0},          {"yoco", "yoco", 4, 4, 2, 0},
      {"fusedkv_lite", "fusedkv_lite", 4, 2, 3, 0}, {"fusedkv", "fusedkv", 4, 2, 2, 0},
      {"lrkv", "none", 2, 4, 0, 2},
  };
  return v;
}

ModelConfig config_of(const Variant& v, int max_seq_len = 64) {
  ModelConfig c = testutil::small_variant_config(v, 41, 32, 40, max_seq_len);
  c.fusion_init = "normal";
  c.resolve();
  return c;
}

struct Model {
  ModelConfig cfg;
  std::unique_ptr<Ops> ops = make_ops("cpu");
  std::unique_ptr<Transformer> net;
  explicit Model(const Variant& v, int max_seq_len = 64) : cfg(config_of(v, max_seq_len)) {
    net = std::make_unique<Transformer>(cfg, *ops, 1, cfg.max_seq_len, false);
    net->init_parameters(17);
  }
};

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); i++) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

EvictionOptions options(double keep, int sinks, int recent) {
  EvictionOptions opt;
  opt.keep = keep;
  opt.sinks = sinks;
  opt.recent = recent;
  return opt;
}

// Random scores for every entry of an evictor of `inf`.
void fill_random_scores(Evictor& ev, const InferenceModel& inf, uint64_t seed) {
  Rng r(seed);
  const int layers = static_cast<int>(gate_layers(inf.config()).size());
  for (int s = 0; s < layers; s++)
    for (int h = 0; h < inf.mask_heads(); h++)
      for (float& x : ev.scores(s, h)) x = static_cast<float>(r.uniform());
}

TEST(Eviction, ChunkedEvictionEqualsDenseAttentionWithEvictedPositionsMasked) {
  const int T = 40, chunk = 8;
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    Model m(v);
    const std::vector<int32_t> tok = testutil::random_tokens(T, m.cfg.vocab_size, 5);
    InferenceModel inf(*m.net, InferenceOptions{chunk}), compacted(*m.net, InferenceOptions{chunk});
    Evictor ev(inf, options(0.4, 2, 3)), ev2(compacted, options(0.4, 2, 3));
    fill_random_scores(ev, inf, 7);
    fill_random_scores(ev2, compacted, 7);
    std::vector<float> got, got_compacted;
    for (int i = 0; i < T; i += chunk) {
      const std::vector<float> lg = inf.prefill(tok.data() + i, chunk, true);
      got.insert(got.end(), lg.begin(), lg.end());
      ev.evict(i + chunk);
      const std::vector<float> lc = compacted.prefill(tok.data() + i, chunk, true);
      got_compacted.insert(got_compacted.end(), lc.begin(), lc.end());
      const int64_t evicted = ev2.evict(i + chunk);
      EXPECT_EQ(compacted.compact(), evicted);  // the same entries, now freed
    }
    const std::vector<float> prm = m.net->params_to_host();
    const std::vector<int> layers = gate_layers(m.cfg);
    auto storage_index = [&](int l) {
      return static_cast<int>(std::find(layers.begin(), layers.end(), l) - layers.begin());
    };
    const std::vector<double> ref = testutil::reference_logits(
        m.cfg, m.net->params(), prm, tok,
        [&](int l, int g, int s, int t) { return t < ev.visible_until(storage_index(l), g, s); });
    EXPECT_LE(max_abs_diff(got, ref), 1e-4);
    EXPECT_LE(max_abs_diff(got_compacted, ref), 1e-4);
    const std::vector<double> dense =
        testutil::reference_logits(m.cfg, m.net->params(), prm, tok, [](int, int, int, int) { return true; });
    EXPECT_GT(max_abs_diff(got, dense), 1e-3) << "eviction must change the logits";
  }
}

TEST(Eviction, KeptShareEqualsTheKeepRatioAndBytesFollowTheKeptEntries) {
  const int T = 60, chunk = 12;
  for (const Variant& v : variants()) {
    for (double keep : {0.9, 0.5, 0.3, 0.25}) {  // 0.25 x 12 = sinks + recent: the least
      SCOPED_TRACE(std::string(v.name) + " keep " + std::to_string(keep));
      Model m(v);
      const std::vector<int32_t> tok = testutil::random_tokens(T, m.cfg.vocab_size, 9);
      InferenceModel inf(*m.net, InferenceOptions{chunk});
      Evictor ev(inf, options(keep, 1, 2));
      const int E = ev.entries_per_position();
      ASSERT_EQ(E, static_cast<int>(gate_layers(m.cfg).size()) * inf.mask_heads());
      fill_random_scores(ev, inf, 11);
      for (int len = chunk; len <= T; len += chunk) {
        inf.prefill(tok.data() + len - chunk, chunk);
        ev.evict(len);
        const int64_t want = std::llround(keep * len * E);
        EXPECT_EQ(ev.kept_entries(len), want) << "after " << len << " positions";
        // Bytes measured from the cache: every entry of these models has the same width, so the
        // kept bytes are the kept share of the bytes of all filled positions.
        EXPECT_EQ(inf.kv_bytes_kept() * static_cast<size_t>(len) * E, inf.kv_bytes() * static_cast<size_t>(want));
      }
    }
  }
}

TEST(Eviction, SinksAndRecentStayEvictedNeverReturnOneThreshold) {
  const int T = 48, chunk = 8;
  Model m(variants()[1]);  // GQA: 2 layers x 2 heads
  const std::vector<int32_t> tok = testutil::random_tokens(T, m.cfg.vocab_size, 13);
  InferenceModel inf(*m.net, InferenceOptions{chunk});
  const EvictionOptions opt = options(0.3, 3, 5);
  Evictor ev(inf, opt);
  fill_random_scores(ev, inf, 15);
  const std::vector<int> layers = gate_layers(m.cfg);
  const int H = inf.mask_heads(), L = static_cast<int>(layers.size());
  std::vector<uint8_t> was_evicted(static_cast<size_t>(L) * H * T, 0);
  for (int len = chunk; len <= T; len += chunk) {
    inf.prefill(tok.data() + len - chunk, chunk);
    ev.evict(len);
    float min_kept = std::numeric_limits<float>::infinity(), max_evicted_now = -1;
    for (int s = 0; s < L; s++)
      for (int h = 0; h < H; h++)
        for (int p = 0; p < len; p++) {
          const bool kept = inf.kept(layers[s], h, p);
          uint8_t& e = was_evicted[(static_cast<size_t>(s) * H + h) * T + p];
          if (p < opt.sinks || p >= len - opt.recent) {
            EXPECT_TRUE(kept) << "sink or recent evicted";
          }
          if (e) {
            EXPECT_FALSE(kept) << "an evicted entry came back";
          }
          if (!kept) e = 1;
          const float sc = ev.scores(s, h)[p];
          if (ev.visible_until(s, h, p) == len) max_evicted_now = std::max(max_evicted_now, sc);
          else if (kept && p >= opt.sinks && p < len - opt.recent) min_kept = std::min(min_kept, sc);
        }
    if (max_evicted_now >= 0) {
      EXPECT_LE(max_evicted_now, min_kept) << "after " << len;
    }
  }
  EXPECT_GT(std::count(was_evicted.begin(), was_evicted.end(), 1), 0) << "nothing was evicted";
}

// Losses of one context under (policy, keep).
EvictionResult run(InferenceModel& inf, EvictPolicy p, double keep, const std::vector<int32_t>& ctx,
                   const std::vector<int32_t>& cont, const std::vector<int32_t>& prompt,
                   GateModel* gates, const std::vector<float>* oracle, int chunk = 8) {
  EvictionOptions opt = options(keep, 2, 4);
  opt.policy = p;
  opt.chunk = chunk;
  opt.seed = 3;
  return evaluate_eviction(inf, opt, ctx, cont, prompt, gates, oracle);
}

// Mean cross-entropy of tokens[from + 1 .. to] given the full forward over tokens[0 .. to - 1].
double forward_nll(const Model& m, const std::vector<int32_t>& tokens, int from, int to) {
  const int T = to;
  Transformer net(m.cfg, *m.ops, 1, T, false);
  net.params_from_host(m.net->params_to_host());
  net.forward(tokens.data(), nullptr, 1, T);
  const std::vector<float> lg = net.logits_to_host();
  const int V = m.cfg.vocab_size;
  double nll = 0;
  for (int t = from; t < to; t++) {
    const float* row = lg.data() + static_cast<size_t>(t - 1) * V;
    double mx = row[0], z = 0;
    for (int i = 0; i < V; i++) mx = std::max(mx, static_cast<double>(row[i]));
    for (int i = 0; i < V; i++) z += std::exp(row[i] - mx);
    nll += std::log(z) + mx - row[tokens[t]];
  }
  return nll / (to - from);
}

TEST(Eviction, FullCacheLossesEqualTheForwardAndKeepOneEqualsFullForEveryPolicy) {
  const int P = 24, N = 6;
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    Model m(v);
    const std::vector<int32_t> ctx = testutil::random_tokens(P, m.cfg.vocab_size, 21),
                               cont = testutil::random_tokens(N, m.cfg.vocab_size, 22),
                               prompt = testutil::random_tokens(3, m.cfg.vocab_size, 23);
    InferenceModel inf(*m.net, InferenceOptions{8});
    const EvictionResult full = run(inf, EvictPolicy::full, 1.0, ctx, cont, prompt, nullptr, nullptr);
    // Continuation: tokens P .. P+N-1 of [ctx ; cont]; reconstruction: the second copy of ctx in
    // [ctx ; prompt ; ctx].
    std::vector<int32_t> cc = ctx, rec = ctx;
    cc.insert(cc.end(), cont.begin(), cont.end());
    rec.insert(rec.end(), prompt.begin(), prompt.end());
    rec.insert(rec.end(), ctx.begin(), ctx.end());
    EXPECT_NEAR(full.continuation_loss, forward_nll(m, cc, P, P + N), 1e-5);
    EXPECT_NEAR(full.reconstruction_loss, forward_nll(m, rec, P + 3, 2 * P + 3), 1e-5);
    EXPECT_EQ(full.entries_kept, full.entries_total);
    EXPECT_EQ(full.kv_bytes_kept, full.kv_bytes);
    EXPECT_EQ(full.kv_bytes, static_cast<size_t>(P) * inf.kv_bytes_per_token());

    GateModel gates(m.cfg, *m.ops, 8, false);
    gates.params_from_host(init_gate_parameters(m.cfg, 4));
    InferenceModel oracle_model(*m.net);
    KvzipScorer scorer(oracle_model);
    scorer.run(ctx, prompt);
    const std::vector<float> oracle = scorer.scores();
    for (EvictPolicy p : {EvictPolicy::gates, EvictPolicy::kvzip, EvictPolicy::streaming, EvictPolicy::snapkv, EvictPolicy::random}) {
      SCOPED_TRACE(to_string(p));
      const EvictionResult one = run(inf, p, 1.0, ctx, cont, prompt, &gates, &oracle);
      EXPECT_NEAR(one.continuation_loss, full.continuation_loss, 1e-6);
      EXPECT_NEAR(one.reconstruction_loss, full.reconstruction_loss, 1e-6);
      EXPECT_EQ(one.entries_kept, one.entries_total);
      const EvictionResult half = run(inf, p, 0.5, ctx, cont, prompt, &gates, &oracle);
      EXPECT_EQ(half.entries_kept, std::llround(0.5 * half.entries_total));
      EXPECT_LT(half.kv_bytes_kept, full.kv_bytes_kept);
      EXPECT_NE(half.reconstruction_loss, full.reconstruction_loss) << "eviction must matter";
    }
  }
}

TEST(Eviction, GatesPolicyScoresTheHiddenStatesTheModelComputes) {
  // The gates see each chunk's attention input through the inference path's observer: evicting
  // by the gates equals evicting by the same gates applied to the full forward's hidden states.
  // One chunk: after an eviction the model's later hidden states (rightly) differ from the full
  // forward's, since layers above read the evicted cache.
  const int P = 28;  // 2 P + 3 <= max_seq_len 64
  for (const Variant& v : {variants()[1], variants()[5], variants()[6]}) {
    SCOPED_TRACE(v.name);
    Model m(v);
    const std::vector<int32_t> ctx = testutil::random_tokens(P, m.cfg.vocab_size, 31),
                               cont = testutil::random_tokens(4, m.cfg.vocab_size, 32),
                               prompt = testutil::random_tokens(3, m.cfg.vocab_size, 33);
    GateModel gates(m.cfg, *m.ops, P, false);
    std::vector<float> g = init_gate_parameters(m.cfg, 8);
    Rng r(9);
    for (float& x : g) x += static_cast<float>(0.3 * r.normal());  // sinks and bias matter too
    gates.params_from_host(g);
    m.net->forward(ctx.data(), nullptr, 1, P);
    const std::vector<int> layers = gate_layers(m.cfg);
    const int M = gate_decisions(m.cfg);
    std::vector<float> scores(layers.size() * M * P);
    for (size_t i = 0; i < layers.size(); i++) {
      const std::vector<float> s = gates.forward(layers[i], m.net->attention_input(layers[i]), P);
      for (int p = 0; p < P; p++)
        for (int h = 0; h < M; h++) scores[(i * M + h) * P + p] = s[static_cast<size_t>(p) * M + h];
    }
    InferenceModel inf(*m.net, InferenceOptions{P});
    const EvictionResult by_gates = run(inf, EvictPolicy::gates, 0.4, ctx, cont, prompt, &gates, nullptr, P);
    const EvictionResult by_scores = run(inf, EvictPolicy::kvzip, 0.4, ctx, cont, prompt, nullptr, &scores, P);
    const EvictionResult none = run(inf, EvictPolicy::full, 1.0, ctx, cont, prompt, nullptr, nullptr, P);
    EXPECT_GT(std::fabs(by_gates.reconstruction_loss - none.reconstruction_loss), 1e-4) << "eviction must matter";
    EXPECT_NEAR(by_gates.continuation_loss, by_scores.continuation_loss, 1e-6);
    EXPECT_NEAR(by_gates.reconstruction_loss, by_scores.reconstruction_loss, 1e-6);
    EXPECT_EQ(by_gates.entries_kept, by_scores.entries_kept);
  }
}

// Decode-time eviction: after a compressed prefill, tokens decoded one at a time with the
// decode evictor re-scoring every 4 tokens (random scores, and the gates) equal the dense
// reference in which query t sees an entry only until the length at which it was evicted; sinks
// and the recent window are never evicted, and the kept share follows the budget at each round.
TEST(Eviction, DecodeTimeEvictionEqualsTheDenseMaskedReference) {
  const int P = 12, T = 36, every = 4, sinks = 1, recent = 4;
  for (const Variant& v : variants()) {
    for (EvictPolicy policy : {EvictPolicy::random, EvictPolicy::gates, EvictPolicy::streaming}) {
      SCOPED_TRACE(std::string(v.name) + " " + to_string(policy));
      Model m(v);
      const std::vector<int32_t> tok = testutil::random_tokens(T, m.cfg.vocab_size, 31);
      InferenceModel inf(*m.net, InferenceOptions{6});
      GateModel gates(m.cfg, *m.ops, 6, false);
      gates.params_from_host(init_gate_parameters(m.cfg, 3));
      EvictionOptions opt = options(0.5, sinks, 2);
      opt.policy = policy;
      opt.chunk = 6;
      opt.seed = 9;
      Evictor ev(inf, opt);
      const CompressResult c = compress_context(inf, ev, std::span<const int32_t>(tok.data(), P), &gates, nullptr);
      EXPECT_EQ(c.entries_kept, std::llround(0.5 * P * ev.entries_per_position()));
      ev.set_window(sinks, recent);
      DecodeEvictor dec(inf, ev, &gates, every);
      std::vector<float> got;
      for (int t = P; t < T; t++) {
        const std::vector<float> lg = inf.decode(tok[t]);
        got.insert(got.end(), lg.begin(), lg.end());
        dec.step();
        if ((t + 1 - P) % every == 0) {  // a round just ran: the budget holds again
          EXPECT_EQ(ev.kept_entries(t + 1), std::llround(0.5 * (t + 1) * ev.entries_per_position()));
        }
      }
      EXPECT_EQ(dec.evictions(), (T - P) / every);
      const std::vector<int> layers = gate_layers(m.cfg);
      for (size_t si = 0; si < layers.size(); si++)
        for (int h = 0; h < inf.mask_heads(); h++)
          for (int p = 0; p < T; p++)
            if (p < sinks || p >= T - recent) {
              EXPECT_TRUE(inf.kept(layers[si], h, p)) << p;
            }
      // the reference: logits of positions P-1 .. T-1 (last context token's row excluded: it is
      // predicted before decode); its mask replays every eviction
      auto storage_index = [&](int l) {
        return static_cast<int>(std::find(layers.begin(), layers.end(), l) - layers.begin());
      };
      const std::vector<float> prm = m.net->params_to_host();
      const std::vector<double> ref = testutil::reference_logits(
          m.cfg, m.net->params(), prm, tok,
          [&](int l, int g, int s, int t) { return t < ev.visible_until(storage_index(l), g, s); });
      const size_t V = static_cast<size_t>(m.cfg.vocab_size);
      const std::vector<double> ref_decode(ref.begin() + P * V, ref.end());
      EXPECT_LE(max_abs_diff(got, ref_decode), 1e-4);
      int64_t evicted_during_decode = 0;
      for (size_t si = 0; si < layers.size(); si++)
        for (int h = 0; h < inf.mask_heads(); h++)
          for (int p = 0; p < T; p++) {
            const int until = ev.visible_until(static_cast<int>(si), h, p);
            evicted_during_decode += until > P && until <= T;
          }
      EXPECT_GT(evicted_during_decode, 0) << "decode-time eviction must evict";
    }
  }
}

// SnapKV's scores equal those computed here from the training forward's attention
// probabilities: per reading layer the sum over the window's queries, averaged over each KV
// head's query heads (LRKV: all heads), the max over the layers that read a storage layer, then
// max-pooled over 3 positions.
TEST(Eviction, SnapKvScoresEqualTheForwardsWindowAttention) {
  const int P = 20, w = 5, pool = 3;
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    Model m(v);
    const std::vector<int32_t> ctx = testutil::random_tokens(P, m.cfg.vocab_size, 51);
    InferenceModel inf(*m.net, InferenceOptions{7});
    EvictionOptions opt = options(1.0, 1, 2);
    opt.policy = EvictPolicy::snapkv;
    opt.snapkv_window = w;
    opt.snapkv_pool = pool;
    Evictor ev(inf, opt);
    compress_context(inf, ev, ctx, nullptr, nullptr);
    Transformer& net = *m.net;
    net.forward(ctx.data(), nullptr, 1, P);
    const int H = m.cfg.n_heads, M = inf.mask_heads(), G = m.cfg.lrkv() ? H : H / m.cfg.kv_heads();
    const std::vector<int> layers = gate_layers(m.cfg);
    std::vector<double> folded(layers.size() * M * P, 0.0);
    for (int l = 0; l < m.cfg.n_layers; l++) {
      std::vector<float> probs(static_cast<size_t>(H) * P * P);
      m.ops->to_host(probs.data(), net.attention_probs(l), probs.size() * sizeof(float));
      std::vector<double> mine(static_cast<size_t>(M) * P, 0.0);
      for (int h = 0; h < H; h++)
        for (int t = P - w; t < P; t++)
          for (int i = 0; i < P; i++)
            mine[static_cast<size_t>(m.cfg.lrkv() ? 0 : h / G) * P + i] += probs[(static_cast<size_t>(h) * P + t) * P + i] / G;
      const KvSource src = kv_source_of_layer(m.cfg, l);
      for (int target : {src.kind == KvSource::Kind::own ? l : src.k_layer, src.kind == KvSource::Kind::own ? l : src.v_layer}) {
        const size_t si = std::find(layers.begin(), layers.end(), target) - layers.begin();
        for (size_t j = 0; j < mine.size(); j++) folded[si * M * P + j] = std::max(folded[si * M * P + j], mine[j]);
      }
    }
    double worst = 0;
    for (size_t si = 0; si < layers.size(); si++)
      for (int h = 0; h < M; h++) {
        const std::span<float> got = ev.scores(static_cast<int>(si), h);
        for (int p = 0; p < P; p++) {
          double want = 0;
          for (int q = std::max(0, p - pool / 2); q <= std::min(P - 1, p + pool / 2); q++)
            want = std::max(want, folded[(si * M + h) * P + q]);
          worst = std::max(worst, std::fabs(want - got[p]));
        }
      }
    EXPECT_LE(worst, 1e-5);
  }
}

TEST(Eviction, CopyScoresCountedByHand) {
  const std::vector<int32_t> target = {5, 6, 7, 8, 9, 10, 11, 12};
  CopyScores same = copy_scores(std::vector<int32_t>{5, 6, 7, 8}, target);
  EXPECT_EQ(same.copy_prefix, 4);
  EXPECT_DOUBLE_EQ(same.match_rate, 1.0);
  EXPECT_DOUBLE_EQ(same.lcs_rate, 1.0);
  // one substitution at position 2: the prefix stops there, 3 of 4 match, LCS 3
  CopyScores sub = copy_scores(std::vector<int32_t>{5, 6, 0, 8}, target);
  EXPECT_EQ(sub.copy_prefix, 2);
  EXPECT_DOUBLE_EQ(sub.match_rate, 0.75);
  EXPECT_DOUBLE_EQ(sub.lcs_rate, 0.75);
  // started one token late: nothing matches in place, the LCS still sees the whole copy
  CopyScores late = copy_scores(std::vector<int32_t>{6, 7, 8, 9}, target);
  EXPECT_EQ(late.copy_prefix, 0);
  EXPECT_DOUBLE_EQ(late.match_rate, 0.0);
  EXPECT_DOUBLE_EQ(late.lcs_rate, 1.0);
  // longer than the target: matches counted over the target's length
  CopyScores over = copy_scores(std::vector<int32_t>{5, 6, 1, 2}, std::vector<int32_t>{5, 6});
  EXPECT_EQ(over.copy_prefix, 2);
  EXPECT_DOUBLE_EQ(over.match_rate, 1.0);
  EXPECT_DOUBLE_EQ(over.lcs_rate, 0.5);
}

TEST(Eviction, FreeCopyGeneratesGreedilyAfterThePrimerAndScoresTheRest) {
  Model m(variants()[1]);
  const int P = 20, G = 8, primer = 5;
  const std::vector<int32_t> ctx = testutil::random_tokens(P, m.cfg.vocab_size, 31),
                             prompt = testutil::random_tokens(3, m.cfg.vocab_size, 32);
  InferenceModel inf(*m.net, InferenceOptions{8});
  inf.prefill(ctx);
  const FreeCopy fc = free_copy(inf, prompt, ctx, G, nullptr, primer);
  // independent greedy: every token from a full prefill of [ctx ; prompt ; ctx[:primer] ; generated]
  std::vector<int32_t> seq = ctx, want;
  seq.insert(seq.end(), prompt.begin(), prompt.end());
  seq.insert(seq.end(), ctx.begin(), ctx.begin() + primer);
  for (int i = 0; i < G; i++) {
    InferenceModel fresh(*m.net);
    const std::vector<float> lg = fresh.prefill(seq);
    want.push_back(argmax_token(lg.data(), m.cfg.vocab_size));
    seq.push_back(want.back());
  }
  EXPECT_EQ(fc.tokens, want);
  EXPECT_EQ(fc.tokens.size(), static_cast<size_t>(G));
  const CopyScores s = copy_scores(want, std::span<const int32_t>(ctx).subspan(primer));
  EXPECT_EQ(fc.copy_prefix, s.copy_prefix);
  EXPECT_DOUBLE_EQ(fc.match_rate, s.match_rate);
  EXPECT_DOUBLE_EQ(fc.lcs_rate, s.lcs_rate);
  EXPECT_THROW(free_copy(inf, prompt, ctx, G, nullptr, P), std::invalid_argument);
}

TEST(Eviction, BadInputIsRejectedWithClearErrors) {
  Model m(variants()[0], 32);
  InferenceModel inf(*m.net);
  const std::vector<int32_t> ctx = testutil::random_tokens(12, m.cfg.vocab_size, 41),
                             prompt = testutil::random_tokens(3, m.cfg.vocab_size, 42);
  for (double keep : {0.0, -0.5, 1.5, std::nan("")}) {
    try {
      run(inf, EvictPolicy::streaming, keep, ctx, {}, prompt, nullptr, nullptr);
      ADD_FAILURE() << "keep " << keep << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("keep ratio must be in (0, 1]"), std::string::npos) << e.what();
    }
  }
  // 2 x 15 + 3 = 33 > 32
  const std::vector<int32_t> long_ctx = testutil::random_tokens(15, m.cfg.vocab_size, 43);
  try {
    run(inf, EvictPolicy::full, 1.0, long_ctx, {}, prompt, nullptr, nullptr);
    ADD_FAILURE() << "a context whose reconstruction input exceeds max_seq_len was accepted";
  } catch (const std::length_error& e) {
    EXPECT_NE(std::string(e.what()).find("max_seq_len 32"), std::string::npos) << e.what();
  }
  EXPECT_THROW(run(inf, EvictPolicy::gates, 0.5, ctx, {}, prompt, nullptr, nullptr), std::invalid_argument);
  const std::vector<float> short_oracle(5, 0.5f);
  EXPECT_THROW(run(inf, EvictPolicy::kvzip, 0.5, ctx, {}, prompt, nullptr, &short_oracle), std::invalid_argument);
  EXPECT_THROW(parse_evict_policy("oracle"), std::invalid_argument);
}

}  // namespace
}  // namespace kvt

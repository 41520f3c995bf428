// Tests of the KV-lean attention variants (docs/design.md, "The model family") on the CPU backend, and of their two
// ops on every backend:
//  * config validation (model.kv_sharing, storage_layers, fusion_init, lrkv_rank) and the
//    sharing map, written out by hand per scheme;
//  * the ops kv_fuse_* and lrkv_expand_* in the op harness (tests/op_cases.h): forward vs a
//    double reference, backward vs finite differences, += convention, determinism; CUDA vs CPU
//    where a GPU is present;
//  * whole-model directional finite differences for every scheme and LRKV, MHA and GQA,
//    n != L/2, odd L for CLA;
//  * invariants with random weights: LRKV equals MHA with k_proj = W_shared + U_h B_h^T;
//    FusedKV with weights (0, 1, 1, 0) equals FusedKV-Lite; causality; accumulation;
//  * parameter counts, FLOPs and KV-cache sizes against numbers computed by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "kernels/common/rng.h"
#include "model/kv_sharing.h"
#include "model/transformer.h"
#include "model_checks.h"
#include "op_cases.h"
#include "train/config.h"

namespace kvt {
namespace {

using namespace kvt::testutil;

using Kind = KvSource::Kind;

// ---- configs -----------------------------------------------------------------------------------

// The tiny shape of tests/test_model.cpp: V 53, d 24, 4 heads of 6, F 40.
ModelConfig variant_config(const std::string& scheme, int n_layers, int n_kv_heads,
                           int storage = 0, int lrkv_rank = 0, bool tied = true) {
  ModelConfig c;
  c.vocab_size = 53;
  c.d_model = 24;
  c.n_layers = n_layers;
  c.n_heads = 4;
  c.n_kv_heads = n_kv_heads;
  c.d_ff = 40;
  c.max_seq_len = 16;
  c.tie_embeddings = tied;
  c.init_std = 0.2f;  // larger than training's 0.02 so every path carries signal
  c.kv_sharing = scheme;
  c.storage_layers = storage;
  c.lrkv_rank = lrkv_rank;
  c.resolve();
  return c;
}

std::string resolve_error(ModelConfig c) {
  try {
    c.resolve();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(VariantConfig, RejectsImpossibleSettingsNamingTheKey) {
  ModelConfig c;
  c.n_layers = 4;
  c.kv_sharing = "fusedkv";
  c.storage_layers = 1;
  EXPECT_NE(resolve_error(c).find("model.storage_layers"), std::string::npos) << resolve_error(c);
  EXPECT_NE(resolve_error(c).find("n >= 2"), std::string::npos) << resolve_error(c);
  c.storage_layers = 5;
  EXPECT_NE(resolve_error(c).find("model.storage_layers"), std::string::npos);
  c.storage_layers = -1;
  EXPECT_NE(resolve_error(c).find("model.storage_layers"), std::string::npos);
  c.kv_sharing = "cla";
  c.storage_layers = 2;  // cla stores the even layers: nothing to choose
  EXPECT_NE(resolve_error(c).find("model.storage_layers"), std::string::npos);
  c.storage_layers = 0;
  c.kv_sharing = "mla";
  EXPECT_NE(resolve_error(c).find("model.kv_sharing"), std::string::npos);
  c.kv_sharing = "none";
  c.fusion_init = "zeros";
  EXPECT_NE(resolve_error(c).find("model.fusion_init"), std::string::npos);
  c.fusion_init = "lite";
  c.lrkv_rank = -2;
  EXPECT_NE(resolve_error(c).find("model.lrkv_rank"), std::string::npos);
  c.lrkv_rank = 8;
  c.n_kv_heads = 2;  // GQA with LRKV
  EXPECT_NE(resolve_error(c).find("model.lrkv_rank"), std::string::npos);
  EXPECT_NE(resolve_error(c).find("n_kv_heads"), std::string::npos);
  c.n_kv_heads = 0;
  c.kv_sharing = "yoco";  // LRKV with cross-layer sharing
  const std::string e = resolve_error(c);
  EXPECT_NE(e.find("model.lrkv_rank"), std::string::npos) << e;
  EXPECT_NE(e.find("kv_sharing yoco"), std::string::npos) << e;
  c.kv_sharing = "none";
  EXPECT_EQ(resolve_error(c), "(no error)");
  EXPECT_EQ(c.storage_layers, 0);
}

TEST(VariantConfig, StorageLayersDefaultToHalf) {
  ModelConfig c;
  c.n_layers = 6;
  c.kv_sharing = "yoco";
  c.resolve();
  EXPECT_EQ(c.storage_layers, 3);
  c.resolve();  // idempotent
  EXPECT_EQ(c.storage_layers, 3);
  ModelConfig one;
  one.n_layers = 1;
  one.kv_sharing = "fusedkv";
  EXPECT_NE(resolve_error(one).find("model.storage_layers"), std::string::npos);
}

TEST(VariantConfig, YamlKeysParseValidateAndRoundTrip) {
  const std::string base = "data:\n  train: x.bin\nmodel:\n  n_layers: 6\n";
  RunConfig c = parse_run_config(base + "  kv_sharing: fusedkv\n  storage_layers: 2\n"
                                        "  fusion_init: lite\n",
                                 {}, "t.yaml");
  EXPECT_EQ(c.model.kv_sharing, "fusedkv");
  EXPECT_EQ(c.model.storage_layers, 2);
  EXPECT_EQ(c.model.fusion_init, "lite");
  EXPECT_EQ(to_yaml(parse_run_config(to_yaml(c), {}, "again")), to_yaml(c));
  RunConfig l = parse_run_config(base, {"model.lrkv_rank=3"}, "t.yaml");
  EXPECT_EQ(l.model.lrkv_rank, 3);
  try {
    parse_run_config(base + "  kv_sharing: fusedkv\n  storage_layers: 7\n", {}, "t.yaml");
    ADD_FAILURE() << "storage_layers 7 > n_layers 6 was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("t.yaml: config key model.storage_layers"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(parse_run_config(base, {"model.kv_sharing=cla", "model.lrkv_rank=4"}, "t.yaml"),
               std::invalid_argument);
}

// configs/tiny_*.yaml of the comparison: tiny.yaml with one change of attention scheme, each at
// half the MHA KV cache (1024 -> 512 values per token).
TEST(VariantConfig, ShippedTinyVariantsDifferFromTinyOnlyInTheScheme) {
  const std::string dir = std::string(KVT_SOURCE_DIR) + "/configs/";
  const RunConfig tiny = load_run_config(dir + "tiny.yaml");
  EXPECT_EQ(kv_cache_per_token(tiny.model).values, 1024);
  struct Want {
    const char* file;
    const char* scheme;
    int kv_heads, rank;
  };
  for (const Want w : {Want{"tiny_cla.yaml", "cla", 4, 0}, Want{"tiny_yoco.yaml", "yoco", 4, 0},
                       Want{"tiny_fusedkv_lite.yaml", "fusedkv_lite", 4, 0},
                       Want{"tiny_fusedkv.yaml", "fusedkv", 4, 0},
                       Want{"tiny_lrkv.yaml", "none", 4, 8},
                       Want{"tiny_gqa_half.yaml", "none", 2, 0}}) {
    SCOPED_TRACE(w.file);
    const RunConfig v = load_run_config(dir + w.file);
    EXPECT_EQ(v.model.kv_sharing, w.scheme);
    EXPECT_EQ(v.model.kv_heads(), w.kv_heads);
    EXPECT_EQ(v.model.lrkv_rank, w.rank);
    EXPECT_EQ(kv_cache_per_token(v.model).values, 512);
    RunConfig same = v;
    same.model.kv_sharing = tiny.model.kv_sharing;
    same.model.storage_layers = tiny.model.storage_layers;
    same.model.fusion_init = tiny.model.fusion_init;
    same.model.lrkv_rank = tiny.model.lrkv_rank;
    same.model.n_kv_heads = tiny.model.n_kv_heads;
    same.output.dir = tiny.output.dir;
    EXPECT_EQ(to_yaml(same), to_yaml(tiny));
    EXPECT_NE(v.output.dir, tiny.output.dir);
  }
}

// ---- the sharing map, written out by hand ----------------------------------------------------

struct Src {
  Kind kind;
  int k, v;
};

void expect_map(const ModelConfig& c, const std::vector<Src>& want) {
  ASSERT_EQ(static_cast<int>(want.size()), c.n_layers);
  for (int l = 0; l < c.n_layers; l++) {
    const KvSource s = kv_source_of_layer(c, l);
    EXPECT_EQ(s.kind, want[l].kind) << c.kv_sharing << " layer " << l;
    if (want[l].kind != Kind::own) {
      EXPECT_EQ(s.k_layer, want[l].k) << c.kv_sharing << " layer " << l;
      EXPECT_EQ(s.v_layer, want[l].v) << c.kv_sharing << " layer " << l;
    }
  }
}

TEST(KvSharingMap, EverySchemeByHand) {
  const Src own{Kind::own, -1, -1};
  expect_map(variant_config("none", 3, 0), {own, own, own});
  // cla, odd L: even layers store, layer i reads i-1.
  expect_map(variant_config("cla", 5, 0),
             {own, {Kind::reuse, 0, 0}, own, {Kind::reuse, 2, 2}, own});
  // yoco, n = 4 of 6 (n != L/2): layers 4, 5 read layer 3.
  expect_map(variant_config("yoco", 6, 2, 4),
             {own, own, own, own, {Kind::reuse, 3, 3}, {Kind::reuse, 3, 3}});
  // fusedkv_lite, n = 4: K of layer 3, V of layer 0.
  expect_map(variant_config("fusedkv_lite", 6, 0, 4),
             {own, own, own, own, {Kind::reuse, 3, 0}, {Kind::reuse, 3, 0}});
  // fusedkv, n = 3 of 5: fuse layers 0 (first) and 2 (last).
  const ModelConfig f = variant_config("fusedkv", 5, 2, 3);
  expect_map(f, {own, own, own, {Kind::fused, 0, 2}, {Kind::fused, 0, 2}});
  EXPECT_EQ(kv_source_of_layer(f, 3).first(), 0);
  EXPECT_EQ(kv_source_of_layer(f, 3).last(), 2);
  EXPECT_THROW(kv_source_of_layer(f, 5), std::out_of_range);

  EXPECT_EQ(storage_layer_count(variant_config("cla", 5, 0)), 3);
  EXPECT_EQ(storage_layer_count(variant_config("yoco", 6, 2, 4)), 4);
  EXPECT_EQ(storage_layer_count(variant_config("none", 3, 0)), 3);
  EXPECT_EQ(storage_layer_count(variant_config("none", 2, 0, 0, 2)), 2);  // LRKV
  EXPECT_TRUE(has_kv_consumers(f, 0));
  EXPECT_FALSE(has_kv_consumers(f, 1));
  EXPECT_TRUE(has_kv_consumers(f, 2));
  EXPECT_FALSE(has_kv_consumers(variant_config("cla", 5, 0), 4));  // last even layer, odd L
}

// ---- parameter counts, FLOPs, KV-cache sizes by hand ------------------------------------------

// Tiny shape: embed 53*24 = 1272, final norm 24. Per layer: norms 48, q 576, o 576,
// MLP 3*40*24 = 2880; k+v: MHA 2*24*24 = 1152, GQA (2 KV heads of 6) 576.
// A storage layer: MHA 5232, GQA 4656; a reusing layer: 4080 (+ fusion weights).
TEST(VariantParams, CountsByHand) {
  // cla, L = 3, MHA: layers 0, 2 store (2 x 5232), layer 1 reuses (4080).
  EXPECT_EQ(build_param_table(variant_config("cla", 3, 0)).total(), size_t{1272 + 10464 + 4080 + 24});
  // yoco, L = 4, n = 3, GQA: 3 x 4656 + 4080.
  EXPECT_EQ(build_param_table(variant_config("yoco", 4, 2, 3)).total(), size_t{1296 + 13968 + 4080});
  // fusedkv_lite, L = 4, n = 2, MHA: 2 x 5232 + 2 x 4080.
  EXPECT_EQ(build_param_table(variant_config("fusedkv_lite", 4, 0)).total(),
            size_t{1296 + 10464 + 8160});
  // fusedkv, L = 5, n = 3, GQA: 3 x 4656 + 2 x (4080 + fusion 2*3 + 2*3 + 2*6 + 2*6 = 36).
  EXPECT_EQ(build_param_table(variant_config("fusedkv", 5, 2, 3)).total(),
            size_t{1296 + 13968 + 2 * 4116});
  // LRKV r = 2, L = 2: k_shared, v_shared 2 x 6*24 = 288, k_down, v_down 2 x 8*24 = 384,
  // k_up, v_up 2 x 4*6*2 = 96 -> 48 + 576 + 288 + 384 + 96 + 576 + 2880 = 4848 per layer.
  EXPECT_EQ(build_param_table(variant_config("none", 2, 0, 0, 2)).total(), size_t{1296 + 2 * 4848});
  // Untied LRKV adds the LM head.
  EXPECT_EQ(build_param_table(variant_config("none", 2, 0, 0, 2, false)).total(),
            size_t{1296 + 2 * 4848 + 1272});
}

TEST(VariantParams, NamesShapesAndDecay) {
  const ParamTable f = build_param_table(variant_config("fusedkv", 5, 2, 3));
  EXPECT_TRUE(f.contains("model.layers.2.self_attn.k_proj.weight"));
  EXPECT_FALSE(f.contains("model.layers.3.self_attn.k_proj.weight"));
  EXPECT_FALSE(f.contains("model.layers.3.self_attn.v_proj.weight"));
  EXPECT_TRUE(f.contains("model.layers.3.self_attn.q_proj.weight"));
  EXPECT_FALSE(f.contains("model.layers.2.self_attn.fuse_k_first"));
  const ParamInfo& kf = f.find("model.layers.4.self_attn.fuse_k_first");
  EXPECT_EQ(kf.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_FALSE(kf.weight_decay);
  EXPECT_EQ(f.find("model.layers.4.self_attn.fuse_k_last").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.find("model.layers.4.self_attn.fuse_v_first").shape, (std::vector<int64_t>{2, 6}));
  EXPECT_FALSE(f.find("model.layers.4.self_attn.fuse_v_last").weight_decay);
  EXPECT_TRUE(f.find("model.layers.4.self_attn.q_proj.weight").weight_decay);

  const ParamTable c = build_param_table(variant_config("cla", 3, 0));
  EXPECT_FALSE(c.contains("model.layers.1.self_attn.k_proj.weight"));
  EXPECT_TRUE(c.contains("model.layers.2.self_attn.v_proj.weight"));

  const ParamTable l = build_param_table(variant_config("none", 2, 0, 0, 2));
  EXPECT_FALSE(l.contains("model.layers.0.self_attn.k_proj.weight"));
  EXPECT_EQ(l.find("model.layers.1.self_attn.k_shared.weight").shape, (std::vector<int64_t>{6, 24}));
  EXPECT_EQ(l.find("model.layers.1.self_attn.v_shared.weight").shape, (std::vector<int64_t>{6, 24}));
  EXPECT_EQ(l.find("model.layers.1.self_attn.k_down.weight").shape, (std::vector<int64_t>{8, 24}));
  EXPECT_EQ(l.find("model.layers.1.self_attn.v_down.weight").shape, (std::vector<int64_t>{8, 24}));
  EXPECT_EQ(l.find("model.layers.1.self_attn.k_up.weight").shape, (std::vector<int64_t>{4, 6, 2}));
  EXPECT_EQ(l.find("model.layers.1.self_attn.v_up.weight").shape, (std::vector<int64_t>{4, 6, 2}));
  EXPECT_TRUE(l.find("model.layers.1.self_attn.k_up.weight").weight_decay);
}

// FLOPs/token = 6 N_matmul + 12 L H D T. Tiny shape, T = 7, attention term 12*L*4*6*7 = 2016 L.
TEST(VariantParams, TrainFlopsByHand) {
  // cla, L = 3: storing layers 576 + 1152 + 576 + 2880 = 5184 MACs, the reusing one 4032,
  // LM head 1272: N = 10368 + 4032 + 1272 = 15672 -> 94032 + 6048.
  EXPECT_DOUBLE_EQ(train_flops_per_token(variant_config("cla", 3, 0), 7), 100080.0);
  // LRKV r = 2, L = 2: 576 + 288 + 384 + expansion 2*4*6*2 = 96 + 576 + 2880 = 4800 per layer:
  // N = 9600 + 1272 = 10872 -> 65232 + 4032.
  EXPECT_DOUBLE_EQ(train_flops_per_token(variant_config("none", 2, 0, 0, 2), 7), 69264.0);
}

// KV cache per token. tiny.yaml's shape: L = 4, 4 heads of d_h = 32.
TEST(KvCache, ValuesAndBytesByHand) {
  ModelConfig m;
  m.vocab_size = 4096, m.d_model = 128, m.n_layers = 4, m.n_heads = 4;
  ModelConfig mha = m;
  mha.resolve();
  KvCacheSize s = kv_cache_per_token(mha);  // 2 * 4 layers * 4 heads * 32
  EXPECT_EQ(s.values, 1024);
  EXPECT_EQ(s.bytes_fp32, 4096);
  EXPECT_EQ(s.bytes_bf16, 2048);
  ModelConfig gqa = m;
  gqa.n_kv_heads = 2;
  gqa.resolve();
  EXPECT_EQ(kv_cache_per_token(gqa).values, 512);
  for (const char* scheme : {"cla", "yoco", "fusedkv_lite", "fusedkv"}) {
    ModelConfig c = m;
    c.kv_sharing = scheme;
    c.resolve();  // 2 storage layers of 4
    EXPECT_EQ(kv_cache_per_token(c).values, 512) << scheme;
    EXPECT_EQ(kv_cache_per_token(c).bytes_fp32, 2048) << scheme;
    EXPECT_EQ(kv_cache_per_token(c).bytes_bf16, 1024) << scheme;
  }
  ModelConfig half = m;
  half.kv_sharing = "fusedkv";
  half.resolve();
  EXPECT_EQ(kv_cache_summary(half),
            "KV cache: fusedkv, 2 of 4 layers store K/V, 4 KV heads: 512 values/token = "
            "2.00 KiB fp32, 1.00 KiB bf16 (50.0% of MHA)");
  ModelConfig cla5 = m;  // odd L: layers 0, 2, 4 store
  cla5.n_layers = 5, cla5.kv_sharing = "cla";
  cla5.resolve();
  EXPECT_EQ(kv_cache_per_token(cla5).values, 768);
  ModelConfig f = m;  // 2 * 3 storage layers * 2 KV heads * 32
  f.n_layers = 6, f.n_kv_heads = 2, f.kv_sharing = "fusedkv", f.storage_layers = 3;
  f.resolve();
  EXPECT_EQ(kv_cache_per_token(f).values, 384);
  ModelConfig l = m;  // 2 * 4 layers * (32 + 4 heads * 12)
  l.lrkv_rank = 12;
  l.resolve();
  s = kv_cache_per_token(l);
  EXPECT_EQ(s.values, 640);
  EXPECT_EQ(s.bytes_fp32, 2560);
  EXPECT_EQ(s.bytes_bf16, 1280);
  const std::string line = kv_cache_summary(l);
  EXPECT_NE(line.find("640 values/token"), std::string::npos) << line;
  EXPECT_NE(line.find("2.50 KiB fp32, 1.25 KiB bf16"), std::string::npos) << line;
  EXPECT_NE(line.find("62.5% of MHA"), std::string::npos) << line;
}

// ---- the ops in the harness -------------------------------------------------------------------

using optest::Buffers;
using optest::Expected;
using optest::Grad;
using optest::OpCase;

// first/last are column blocks (offset off_*, row strides ld_*) of wider inputs, as the K or V
// block of a storage layer's qkv; every element's gradient accumulates (padding gets 0).
struct KvFuseCase : OpCase {
  int64_t N;
  int Hkv, D, ldf, ldl, ldo, off_f, off_l;
  bool tied;
  KvFuseCase(std::string n, int64_t N_, int Hkv_, int D_, bool tied_, uint64_t seed)
      : N(N_), Hkv(Hkv_), D(D_), ldf(Hkv_ * D_ + 5), ldl(Hkv_ * D_ + 2), ldo(Hkv_ * D_ + 1),
        off_f(3), off_l(1), tied(tied_) {
    name = std::move(n);
    Rng rng(seed);
    const int W = tied ? D / 2 : D;
    add_input("first", optest::normal_values(rng, N * ldf), Grad::Accumulate);
    add_input("last", optest::normal_values(rng, N * ldl), Grad::Accumulate);
    add_input("w_first", optest::normal_values(rng, static_cast<size_t>(Hkv) * W), Grad::Accumulate);
    add_input("w_last", optest::normal_values(rng, static_cast<size_t>(Hkv) * W), Grad::Accumulate);
    add_output("out", N * ldo, rng);
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.kv_fuse_forward(b.out[0].data(), ldo, b.in[0].data() + off_f, ldf, b.in[1].data() + off_l,
                        ldl, b.in[2].data(), b.in[3].data(), N, Hkv, D, tied);
  }
  void backward(Ops& ops, Buffers& b) const override {
    ops.kv_fuse_backward(b.grad[0].data() + off_f, b.grad[1].data() + off_l, b.grad[2].data(),
                         b.grad[3].data(), b.dout[0].data(), ldo, b.in[0].data() + off_f, ldf,
                         b.in[1].data() + off_l, ldl, b.in[2].data(), b.in[3].data(), N, Hkv, D,
                         tied);
  }
  Expected reference() const override {
    Expected e{{std::vector<double>(N * ldo, 0.0)}, {}};
    const int W = tied ? D / 2 : D;
    for (int64_t n = 0; n < N; n++)
      for (int h = 0; h < Hkv; h++)
        for (int j = 0; j < D; j++) {
          const int c = h * W + (tied ? j % (D / 2) : j);
          e.outputs[0][n * ldo + h * D + j] =
              double(inputs[2].values[c]) * inputs[0].values[n * ldf + off_f + h * D + j] +
              double(inputs[3].values[c]) * inputs[1].values[n * ldl + off_l + h * D + j];
        }
    return e;
  }
};

// shared [N, lds] at column 1, lat [N, ldl] at column 2, up [H, D, R]; out [N, ldo].
struct LrkvExpandCase : OpCase {
  int64_t N;
  int H, D, R, lds, ldl, ldo;
  static constexpr int kOffS = 1, kOffL = 2;
  LrkvExpandCase(std::string n, int64_t N_, int H_, int D_, int R_, uint64_t seed)
      : N(N_), H(H_), D(D_), R(R_), lds(D_ + 3), ldl(H_ * R_ + 4), ldo(H_ * D_ + 2) {
    name = std::move(n);
    Rng rng(seed);
    add_input("shared", optest::normal_values(rng, N * lds), Grad::Accumulate);
    add_input("lat", optest::normal_values(rng, N * ldl), Grad::Accumulate);
    add_input("up", optest::normal_values(rng, static_cast<size_t>(H) * D * R), Grad::Accumulate);
    add_output("out", N * ldo, rng);
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.lrkv_expand_forward(b.out[0].data(), ldo, b.in[0].data() + kOffS, lds,
                            b.in[1].data() + kOffL, ldl, b.in[2].data(), N, H, D, R);
  }
  void backward(Ops& ops, Buffers& b) const override {
    ops.lrkv_expand_backward(b.grad[0].data() + kOffS, lds, b.grad[1].data() + kOffL,
                             b.grad[2].data(), b.dout[0].data(), ldo, b.in[1].data() + kOffL, ldl,
                             b.in[2].data(), N, H, D, R);
  }
  Expected reference() const override {
    Expected e{{std::vector<double>(N * ldo, 0.0)}, {}};
    const auto &s = inputs[0].values, &z = inputs[1].values, &u = inputs[2].values;
    for (int64_t n = 0; n < N; n++)
      for (int h = 0; h < H; h++)
        for (int d = 0; d < D; d++) {
          double acc = s[n * lds + kOffS + d];
          for (int r = 0; r < R; r++)
            acc += double(z[n * ldl + kOffL + h * R + r]) * u[(static_cast<size_t>(h) * D + d) * R + r];
          e.outputs[0][n * ldo + h * D + d] = acc;
        }
    return e;
  }
};

// Small shapes (finite differences over every element); N = 70 spans two reduction chunks.
std::vector<optest::CaseParam> variant_op_cases() {
  std::vector<optest::CaseParam> c;
  optest::add<KvFuseCase>(c, "kv_fuse_keys_pair_tied", true, int64_t{70}, 2, 6, true, uint64_t{401});
  optest::add<KvFuseCase>(c, "kv_fuse_values", true, int64_t{9}, 3, 4, false, uint64_t{402});
  optest::add<LrkvExpandCase>(c, "lrkv_expand", true, int64_t{70}, 3, 4, 2, uint64_t{403});
  optest::add<LrkvExpandCase>(c, "lrkv_expand_rank1", true, int64_t{5}, 2, 6, 1, uint64_t{404});
  return c;
}

// Training-sized shapes for CUDA vs CPU.
std::vector<optest::CaseParam> variant_op_cases_large() {
  std::vector<optest::CaseParam> c = variant_op_cases();
  optest::add<KvFuseCase>(c, "large_kv_fuse_keys", true, int64_t{2048}, 4, 64, true, uint64_t{411});
  optest::add<KvFuseCase>(c, "large_kv_fuse_values", true, int64_t{1999}, 2, 64, false, uint64_t{412});
  optest::add<LrkvExpandCase>(c, "large_lrkv_expand", true, int64_t{1031}, 8, 64, 24, uint64_t{413});
  return c;
}

Ops& cpu() {
  static std::unique_ptr<Ops> ops = make_ops("cpu");
  return *ops;
}

class variant_ops : public testing::TestWithParam<optest::CaseParam> {};

TEST_P(variant_ops, forward_matches_double_reference) {
  optest::check_forward_reference(cpu(), *GetParam());
}
TEST_P(variant_ops, backward_matches_finite_differences) {
  optest::check_finite_differences(cpu(), *GetParam());
}
TEST_P(variant_ops, follows_accumulate_convention) {
  optest::check_grad_conventions(cpu(), *GetParam());
}
TEST_P(variant_ops, is_deterministic_and_leaves_inputs) {
  optest::check_deterministic(cpu(), *GetParam());
  optest::check_inputs_unchanged(cpu(), *GetParam());
}
INSTANTIATE_TEST_SUITE_P(ops, variant_ops, testing::ValuesIn(variant_op_cases()), optest::case_name);

class variant_ops_cuda : public testing::TestWithParam<optest::CaseParam> {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "no usable CUDA device: " << why;
  }
  static Ops& cuda() {
    static std::unique_ptr<Ops> ops = make_ops("cuda");
    return *ops;
  }
};

TEST_P(variant_ops_cuda, matches_cpu) {
  optest::check_backends_match(cuda(), cpu(), *GetParam());
  optest::check_deterministic(cuda(), *GetParam());
  optest::check_grad_conventions(cuda(), *GetParam());
}
INSTANTIATE_TEST_SUITE_P(ops, variant_ops_cuda, testing::ValuesIn(variant_op_cases_large()),
                         optest::case_name);

// ---- whole model --------------------------------------------------------------------------------


struct VariantCase {
  const char* name;
  const char* scheme;
  int layers, kv_heads, storage, rank;
  const char* fusion_init;
  bool tied;
};

void PrintTo(const VariantCase& v, std::ostream* os) { *os << v.name; }

ModelConfig config_of(const VariantCase& v) {
  ModelConfig c;
  c.vocab_size = 53, c.d_model = 24, c.n_layers = v.layers, c.n_heads = 4;
  c.n_kv_heads = v.kv_heads, c.d_ff = 40, c.max_seq_len = 16, c.tie_embeddings = v.tied;
  c.init_std = 0.2f;
  c.kv_sharing = v.scheme, c.storage_layers = v.storage, c.lrkv_rank = v.rank;
  c.fusion_init = v.fusion_init;
  c.resolve();
  return c;
}

const VariantCase kVariants[] = {
    {"cla_mha_L3", "cla", 3, 4, 0, 0, "normal", true},
    {"cla_gqa_L5", "cla", 5, 2, 0, 0, "normal", false},
    {"yoco_mha_L4_n3", "yoco", 4, 4, 3, 0, "normal", true},
    {"yoco_gqa_L4_n1", "yoco", 4, 2, 1, 0, "normal", true},
    {"fusedkv_lite_mha_L5_n3", "fusedkv_lite", 5, 4, 3, 0, "normal", true},
    {"fusedkv_lite_mqa_L4", "fusedkv_lite", 4, 1, 0, 0, "normal", false},
    {"fusedkv_mha_L5_n3", "fusedkv", 5, 4, 3, 0, "normal", true},
    {"fusedkv_gqa_L4_n2", "fusedkv", 4, 2, 2, 0, "normal", false},
    {"fusedkv_gqa_L5_n4_lite_init", "fusedkv", 5, 2, 4, 0, "lite", true},
    {"lrkv_r2_L2", "none", 2, 0, 0, 2, "normal", true},
    {"lrkv_r3_L3_untied", "none", 3, 4, 0, 3, "normal", false},
};

class VariantGrad : public ::testing::TestWithParam<VariantCase> {};

TEST_P(VariantGrad, DirectionalFiniteDifferencesPerTensor) {
  expect_directional_grads_match(config_of(GetParam()), GetParam().name);
}

TEST_P(VariantGrad, CausalityIsBitwise) { expect_causal_bitwise(config_of(GetParam()), GetParam().name); }

// Two micro-batches with loss scale 1/2 equal one doubled batch (the per-storage-layer dK/dV
// buffers must restart from zero in every backward), and a rerun is bitwise identical.
TEST_P(VariantGrad, AccumulationMatchesDoubledBatchAndIsDeterministic) {
  const VariantCase vc = GetParam();
  auto ops = make_ops("cpu");
  const int B = 2, T = 6;
  const ModelConfig cfg = config_of(vc);
  const auto x = random_tokens(2 * B * T, cfg.vocab_size, 31);
  const auto y = random_tokens(2 * B * T, cfg.vocab_size, 32);

  Transformer big(cfg, *ops, 2 * B, T, true);
  big.init_parameters(8);
  big.zero_grads();
  big.forward(x.data(), y.data(), 2 * B, T);
  big.backward(1.0f);
  const auto g_big = big.grads_to_host();

  std::vector<std::vector<float>> runs;
  for (int run = 0; run < 2; run++) {
    Transformer small(cfg, *ops, B, T, true);
    small.init_parameters(8);
    small.zero_grads();
    for (int m = 0; m < 2; m++) {
      small.forward(x.data() + m * B * T, y.data() + m * B * T, B, T);
      small.backward(0.5f);
    }
    runs.push_back(small.grads_to_host());
  }
  EXPECT_EQ(runs[0], runs[1]) << vc.name << ": gradients differ between identical runs";
  double max_err = 0, max_g = 0;
  for (size_t i = 0; i < g_big.size(); i++) {
    max_err = std::max(max_err, static_cast<double>(std::fabs(g_big[i] - runs[0][i])));
    max_g = std::max(max_g, static_cast<double>(std::fabs(g_big[i])));
  }
  EXPECT_LT(max_err, 1e-5 * max_g) << vc.name << ": max |g_big - g_acc| " << max_err;
}

INSTANTIATE_TEST_SUITE_P(Variants, VariantGrad, ::testing::ValuesIn(kVariants),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- invariants with random weights -------------------------------------------------------------

std::map<std::string, std::vector<float>> by_name(const Transformer& m) {
  const std::vector<float> p = m.params_to_host();
  std::map<std::string, std::vector<float>> out;
  for (const ParamInfo& e : m.params().entries())
    out[e.name] = std::vector<float>(p.begin() + e.offset, p.begin() + e.offset + e.numel);
  return out;
}

// Fills `to` from named tensors; every tensor of `to` must be given.
void load_by_name(Transformer& to, const std::map<std::string, std::vector<float>>& tensors) {
  std::vector<float> p(to.params().total());
  for (const ParamInfo& e : to.params().entries()) {
    auto it = tensors.find(e.name);
    ASSERT_NE(it, tensors.end()) << "no tensor for " << e.name;
    ASSERT_EQ(it->second.size(), e.numel) << e.name;
    std::copy(it->second.begin(), it->second.end(), p.begin() + e.offset);
  }
  to.params_from_host(p);
}

void fill_normal(std::vector<float>& v, Rng& rng, double sd) {
  for (auto& x : v) x = static_cast<float>(sd * rng.normal());
}

// LRKV with random U_h, B_h (not the small init) equals MHA whose k_proj rows of head h are
// W_shared + B_h U_h (stored [out, in]: K_h = X (W_sh + B_h U_h)^T), v_proj likewise.
TEST(VariantInvariant, LrkvEqualsMhaWithMaterialisedProjections) {
  auto ops = make_ops("cpu");
  const int B = 2, T = 9, R = 3;
  const ModelConfig lcfg = variant_config("none", 3, 0, 0, R);
  const ModelConfig mcfg = variant_config("none", 3, 0);
  Transformer lrkv(lcfg, *ops, B, T, false), mha(mcfg, *ops, B, T, false);
  lrkv.init_parameters(21);
  auto t = by_name(lrkv);
  Rng rng(77);
  const int H = lcfg.n_heads, D = lcfg.head_dim(), C = lcfg.d_model;
  std::map<std::string, std::vector<float>> m;
  for (auto& [name, v] : t) {
    if (name.find("_down.") != std::string::npos || name.find("_up.") != std::string::npos)
      fill_normal(v, rng, 0.3);  // a low-rank term as large as the shared part
    if (name.find("self_attn.k_") == std::string::npos && name.find("self_attn.v_") == std::string::npos)
      m[name] = v;
  }
  for (int l = 0; l < lcfg.n_layers; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    for (const char* kv : {"k", "v"}) {
      const auto& sh = t.at(p + kv + "_shared.weight");  // [D, C]
      const auto& dn = t.at(p + kv + "_down.weight");    // [H R, C]
      const auto& up = t.at(p + kv + "_up.weight");      // [H, D, R]
      std::vector<float> w(static_cast<size_t>(H) * D * C);
      for (int h = 0; h < H; h++)
        for (int d = 0; d < D; d++)
          for (int c = 0; c < C; c++) {
            double acc = sh[d * C + c];
            for (int r = 0; r < R; r++)
              acc += double(up[(h * D + d) * R + r]) * dn[(h * R + r) * C + c];
            w[(static_cast<size_t>(h) * D + d) * C + c] = static_cast<float>(acc);
          }
      m[p + kv + "_proj.weight"] = w;
    }
  }
  load_by_name(lrkv, t);
  load_by_name(mha, m);
  const auto x = random_tokens(B * T, lcfg.vocab_size, 5);
  lrkv.forward(x.data(), nullptr, B, T);
  mha.forward(x.data(), nullptr, B, T);
  const auto a = lrkv.logits_to_host(), b = mha.logits_to_host();
  double max_err = 0, max_ref = 0, max_dev = 0;
  for (size_t i = 0; i < a.size(); i++) {
    max_err = std::max(max_err, static_cast<double>(std::fabs(a[i] - b[i])));
    max_ref = std::max(max_ref, static_cast<double>(std::fabs(b[i])));
  }
  EXPECT_LT(max_err, 2e-5 * max_ref) << "max |lrkv - mha| " << max_err << " of max |logit| " << max_ref;
  // The test would be empty if the low-rank term did not matter: drop it and the logits move.
  for (auto& [name, v] : t)
    if (name.find("_up.") != std::string::npos) std::fill(v.begin(), v.end(), 0.0f);
  load_by_name(lrkv, t);
  lrkv.forward(x.data(), nullptr, B, T);
  const auto c = lrkv.logits_to_host();
  for (size_t i = 0; i < c.size(); i++) max_dev = std::max(max_dev, static_cast<double>(std::fabs(c[i] - b[i])));
  EXPECT_GT(max_dev, 100 * max_err);
}

// FusedKV with fusion weights (a_0, a_n, b_0, b_n) = (0, 1, 1, 0) and otherwise the same (random)
// weights is FusedKV-Lite: same logits, loss and gradients of every shared tensor.
TEST(VariantInvariant, FusedKvWithWeights0110EqualsFusedKvLite) {
  auto ops = make_ops("cpu");
  const int B = 2, T = 8;
  for (int kv_heads : {4, 2}) {
    const ModelConfig fcfg = variant_config("fusedkv", 5, kv_heads, 3);
    const ModelConfig lcfg = variant_config("fusedkv_lite", 5, kv_heads, 3);
    Transformer fused(fcfg, *ops, B, T, true), lite(lcfg, *ops, B, T, true);
    lite.init_parameters(41);
    auto t = by_name(lite);
    for (int l = 3; l < 5; l++) {
      const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
      const size_t half = static_cast<size_t>(kv_heads) * 3, full = 2 * half;
      t[p + "fuse_k_first"] = std::vector<float>(half, 0.0f);
      t[p + "fuse_k_last"] = std::vector<float>(half, 1.0f);
      t[p + "fuse_v_first"] = std::vector<float>(full, 1.0f);
      t[p + "fuse_v_last"] = std::vector<float>(full, 0.0f);
    }
    load_by_name(fused, t);
    const auto x = random_tokens(B * T, fcfg.vocab_size, 6);
    const auto y = random_tokens(B * T, fcfg.vocab_size, 7);
    fused.zero_grads();
    lite.zero_grads();
    const float lf = fused.forward(x.data(), y.data(), B, T);
    const float ll = lite.forward(x.data(), y.data(), B, T);
    const auto a = fused.logits_to_host(), b = lite.logits_to_host();
    double max_err = 0;
    for (size_t i = 0; i < a.size(); i++) max_err = std::max(max_err, static_cast<double>(std::fabs(a[i] - b[i])));
    EXPECT_LT(max_err, 1e-6) << "kv_heads " << kv_heads;
    EXPECT_NEAR(lf, ll, 1e-6 * std::fabs(ll));
    fused.backward(1.0f);
    lite.backward(1.0f);
    const auto gf = fused.grads_to_host(), gl = lite.grads_to_host();
    for (const ParamInfo& e : lite.params().entries()) {
      const ParamInfo& ef = fused.params().find(e.name);
      double err = 0, ref = 0;
      for (size_t i = 0; i < e.numel; i++) {
        err = std::max(err, static_cast<double>(std::fabs(gf[ef.offset + i] - gl[e.offset + i])));
        ref = std::max(ref, static_cast<double>(std::fabs(gl[e.offset + i])));
      }
      EXPECT_LE(err, 1e-5 * ref + 1e-9) << "kv_heads " << kv_heads << " d" << e.name;
    }
    // The fusion weights get gradients even at (0, 1, 1, 0).
    const ParamInfo& fk = fused.params().find("model.layers.4.self_attn.fuse_k_first");
    double gk = 0;
    for (size_t i = 0; i < fk.numel; i++) gk += std::fabs(gf[fk.offset + i]);
    EXPECT_GT(gk, 0.0);
  }
}

}  // namespace
}  // namespace kvt

// Tests of Fast KVzip gate training (model/gates.h, train/gate_trainer.h, `kvtrain gates` and
// `kvtrain eval`, docs/design.md, "Fast KVzip gates"). The KVzip targets and the gate module are also checked against
// the independent float64 PyTorch reference (tests/py/test_gates_reference.py).
//  * the gate module: directional finite differences of the BCE loss for every gate tensor (MHA,
//    GQA, LRKV's max over heads);
//  * the reference's lr schedule, the held-out metrics counted by hand, the gate config;
//  * the trainer, on a model trained by the kvtrain binary on a corpus made by `kvtrain prepare`:
//    the frozen model has no gradient buffer and its weights stay bitwise equal; training lowers
//    the held-out gate loss; a stopped and resumed run ends bitwise equal to one that never
//    stopped (gates, optimizer, metrics); it resumes on the same weights in another file and
//    refuses other weights; progress lines and metrics.jsonl records;
//  * gate files: gates of another model, a model checkpoint given as gates (and the reverse), a
//    damaged gates.h5, a context longer than max_seq_len and keep ratios outside (0, 1] all fail
//    with messages naming the file, key or value;
//  * `kvtrain eval` end to end: keep 1.0 equals the full cache for every policy, the kept share
//    and the measured KV bytes follow the keep ratio.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "kernels/common/math.h"
#include "kernels/common/rng.h"
#include "model/gates.h"
#include "train/checkpoint.h"
#include "train/gate_config.h"
#include "train/gate_trainer.h"
#include "model_checks.h"

namespace kvt {
namespace {

namespace fs = std::filesystem;
using testutil::CmdResult;
using testutil::run_kvtrain;

std::string quote(const std::string& s) { return "'" + s + "'"; }

// ---- the gate module ------------------------------------------------------------------------

ModelConfig small_config(int kv_heads, int lrkv_rank) {
  ModelConfig c;
  c.vocab_size = 31;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = kv_heads;
  c.d_ff = 24;
  c.max_seq_len = 32;
  c.lrkv_rank = lrkv_rank;
  c.resolve();
  return c;
}

// Loss of every storage layer's gates on its own hidden states: sum of M x bce.
double gate_loss(GateModel& g, const std::vector<int>& layers, const std::vector<Buffer<float>>& h,
                 const std::vector<std::vector<float>>& targets, int n, bool backward) {
  double loss = 0;
  const int M = static_cast<int>(targets[0].size()) / n;
  for (size_t i = 0; i < layers.size(); i++) {
    std::vector<float> ds;
    const std::vector<float> s = g.forward(layers[i], h[i].data(), n);
    loss += M * bce_loss(s, targets[i], backward ? &ds : nullptr);
    if (backward) {
      for (float& d : ds) d *= static_cast<float>(M);
      g.backward(ds);
    }
  }
  return loss;
}

// bfloat16 rounding of the context cache's gate inputs: nearest, ties to even, NaN stays NaN,
// and bf16 -> float -> bf16 is the identity.
TEST(Bf16, RoundsToNearestEvenAndRoundTrips) {
  EXPECT_EQ(math::to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(math::to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(math::to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(math::to_bf16(std::bit_cast<float>(0x3f808001u)), 0x3f81);  // above the tie
  EXPECT_EQ(math::to_bf16(-2.0f), 0xc000);
  EXPECT_TRUE(std::isnan(math::from_bf16(math::to_bf16(std::nanf("")))));
  EXPECT_EQ(math::to_bf16(std::bit_cast<float>(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to inf
  for (uint32_t b = 0; b < 0x10000; b++) {
    if ((b & 0x7f80) == 0x7f80 && (b & 0x7f)) continue;  // NaNs
    ASSERT_EQ(math::to_bf16(math::from_bf16(static_cast<uint16_t>(b))), b) << b;
  }
}

TEST(GateModel, GradientsMatchDirectionalFiniteDifferences) {
  for (auto [kvh, rank, label] : {std::tuple{4, 0, "mha"}, std::tuple{2, 0, "gqa"}, std::tuple{4, 2, "lrkv"}}) {
    SCOPED_TRACE(label);
    const ModelConfig cfg = small_config(kvh, rank);
    auto ops = make_ops("cpu");
    const int n = 6, M = gate_decisions(cfg);
    GateModel g(cfg, *ops, n, true);
    std::vector<float> p0 = init_gate_parameters(cfg, 3);
    Rng r(4);
    for (float& x : p0) x += static_cast<float>(0.3 * r.normal());  // sinks, bias, norms matter
    g.params_from_host(p0);
    const std::vector<int> layers = gate_layers(cfg);
    std::vector<Buffer<float>> h;
    std::vector<std::vector<float>> targets;
    for (size_t i = 0; i < layers.size(); i++) {
      std::vector<float> x(static_cast<size_t>(n) * cfg.d_model), t(static_cast<size_t>(n) * M);
      for (float& v : x) v = static_cast<float>(r.normal());
      for (float& v : t) v = static_cast<float>(r.uniform());
      h.emplace_back(*ops, x.size());
      ops->to_device(h.back().data(), x.data(), x.size() * sizeof(float));
      targets.push_back(t);
    }
    g.zero_grads();
    gate_loss(g, layers, h, targets, n, true);
    const std::vector<float> grads = g.grads_to_host();
    for (size_t i = 0; i < g.params().entries().size(); i++) {
      const ParamInfo& e = g.params().at(i);
      double m = 0;
      for (size_t j = 0; j < e.numel; j++) m = std::max(m, std::fabs(static_cast<double>(grads[e.offset + j])));
      EXPECT_GT(m, 1e-5) << e.name << ": a zero gradient checks nothing";
    }
    testutil::expect_directional_derivatives(
        g.params(), p0, grads,
        [&](const std::vector<float>& p) {
          g.params_from_host(p);
          return gate_loss(g, layers, h, targets, n, false);
        },
        1e-3, label);
  }
}

TEST(GateModel, ParameterTableAndLayers) {
  // fusedkv L4 n2, GQA 2: gates on layers 0 and 1 only; d' = 16, S = 16, G = 2.
  ModelConfig c = small_config(2, 0);
  c.n_layers = 4;
  c.kv_sharing = "fusedkv";
  c.resolve();
  EXPECT_EQ(gate_layers(c), (std::vector<int>{0, 1}));
  const ParamTable t = build_gate_param_table(c);
  EXPECT_EQ(t.find("gates.1.q_proj.weight").shape, (std::vector<int64_t>{2 * 2 * 16, 16}));
  EXPECT_EQ(t.find("gates.1.k_proj.weight").shape, (std::vector<int64_t>{2 * 16, 16}));
  EXPECT_EQ(t.find("gates.0.sinks").shape, (std::vector<int64_t>{2, 16, 16}));
  EXPECT_EQ(t.find("gates.0.bias").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_FALSE(t.contains("gates.2.bias"));
  // per layer: 64*16 + 64 + 32*16 + 16 + 16 + 512 + 4 = 2148
  EXPECT_EQ(t.total(), 2u * 2148u);
}

TEST(GateSchedule, IsTheReferenceRecipe) {
  EXPECT_DOUBLE_EQ(gate_lr_factor(0, 1000, "kvzip"), 0.01);
  EXPECT_DOUBLE_EQ(gate_lr_factor(9, 1000, "kvzip"), 0.1);  // step 10 = 1% of 1000
  EXPECT_DOUBLE_EQ(gate_lr_factor(10, 1000, "kvzip"), 1.0);
  EXPECT_DOUBLE_EQ(gate_lr_factor(499, 1000, "kvzip"), 1.0);
  EXPECT_DOUBLE_EQ(gate_lr_factor(500, 1000, "kvzip"), 0.5);
  EXPECT_DOUBLE_EQ(gate_lr_factor(749, 1000, "kvzip"), 0.5);
  EXPECT_DOUBLE_EQ(gate_lr_factor(750, 1000, "kvzip"), 0.25);
  EXPECT_DOUBLE_EQ(gate_lr_factor(999, 1000, "kvzip"), 0.25);
  EXPECT_DOUBLE_EQ(gate_lr_factor(499, 100000, "kvzip"), 1.0);  // 0.01 x 500 capped at 1
  EXPECT_DOUBLE_EQ(gate_lr_factor(0, 1000, "constant"), 1.0);
}

TEST(GateEval, MetricsCountedByHand) {
  GateEvalAccumulator acc(0.05f, 0.5f);
  // targets >= 0.05: entries 0, 2 (density 2/4); scores >= 0.05: 0, 1 -> agree on 0 and 3.
  // top half by target {0, 2}, by score {0, 1}: recall 1/2.
  acc.add_context(std::vector<float>{0.9f, 0.5f, 0.01f, 0.02f}, std::vector<float>{0.3f, 0.01f, 0.2f, 0.0f}, 2.0);
  // targets >= 0.05: 1, 2, 3; scores >= 0.05: 1, 2 -> agree on 0, 1, 2. Top half by target {1, 2}
  // (ties at 0.1: the lower index), by score {1, 2}: recall 1.
  acc.add_context(std::vector<float>{0.0f, 0.8f, 0.7f, 0.01f}, std::vector<float>{0.0f, 0.1f, 0.1f, 0.1f}, 4.0);
  const GateEvalStats s = acc.result();
  EXPECT_DOUBLE_EQ(s.accuracy, 5.0 / 8.0);
  EXPECT_DOUBLE_EQ(s.recall, 0.75);
  EXPECT_DOUBLE_EQ(s.target_density, 5.0 / 8.0);
  EXPECT_DOUBLE_EQ(s.loss, 3.0);
  EXPECT_EQ(s.entries, 8);
  EXPECT_EQ(s.contexts, 2);
}

TEST(GateConfig, DefaultsRoundTripAndErrorsNameTheKey) {
  const GateRunConfig d = parse_gate_config("", {}, "x.yaml");
  EXPECT_EQ(d.gates.context, 1024);
  EXPECT_EQ(d.gates.optimizer, "sgd");
  EXPECT_FLOAT_EQ(d.gates.lr, 0.2f);
  EXPECT_FLOAT_EQ(d.gates.momentum, 0.9f);
  EXPECT_EQ(d.gates.repeat_prompt, "\n\nRepeat the previous context exactly.\n");
  const GateRunConfig back = parse_gate_config(to_yaml(d), {}, "resolved");
  EXPECT_EQ(to_yaml(back), to_yaml(d));
  auto error_of = [](const std::string& yaml, const std::vector<std::string>& sets) {
    try {
      parse_gate_config(yaml, sets, "g.yaml");
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_of("gates: {optimiser: sgd}\n", {}), "g.yaml: unknown key gates.optimiser (line 1)");
  EXPECT_EQ(error_of("", {"gates.optimizer=adam"}), "g.yaml: gates.optimizer: must be sgd or adamw, got \"adam\"");
  EXPECT_EQ(error_of("model: {d_model: 4}\n", {}),
            "g.yaml: unknown key model (sections are gates, data, output) (line 1)");
  EXPECT_NE(error_of("gates: {recall_top: 1.5}\n", {}).find("gates.recall_top: must be in (0, 1]"), std::string::npos);
}

// ---- the trainer and the CLI, on a trained model ------------------------------------------

class Gates : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("kvt_test_gates_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    testutil::write_word_text((dir_ / "text.txt").string(), 800, 5);
    const CmdResult prep = run_kvtrain("prepare --input " + quote((dir_ / "text.txt").string()) + " --out " +
                                       quote((dir_ / "data").string()) +
                                       " --vocab-size 300 --val-fraction 0.1 --val-block 0");
    ASSERT_EQ(prep.rc, 0) << prep.out;
    ckpt_ = train_model("model", 2, 60);
    other_ = train_model("other", 4, 1);  // another model config: MHA
    const Tokenizer tok((dir_ / "data" / "tokenizer.model").string());
    prompt_len_ = static_cast<int>(tok.encode(kDefaultRepeatPrompt).size());
    context_ = std::min(24, (kMaxSeq - prompt_len_) / 2);
    ASSERT_GE(context_, 16) << "the repeat prompt takes " << prompt_len_ << " tokens";
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static constexpr int kMaxSeq = 112;

  static std::string train_model(const std::string& name, int kv_heads, int steps) {
    const fs::path cfg = dir_ / (name + ".yaml");
    std::ofstream(cfg) << "model: {vocab_size: 300, d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: "
                       << kv_heads << ", max_seq_len: " << kMaxSeq << ", init_std: 0.1}\n"
                       << "train: {batch_size: 8, seq_len: 64, steps: " << steps
                       << ", lr: 0.01, warmup_steps: 5, eval_every: 0, threads: 1}\n"
                       << "data: {train: '" << (dir_ / "data" / "*train*.bin").string() << "', val: '"
                       << (dir_ / "data" / "*val*.bin").string() << "', tokenizer: '"
                       << (dir_ / "data" / "tokenizer.model").string() << "'}\n"
                       << "output: {dir: '" << (dir_ / name).string() << "'}\n";
    const CmdResult r = run_kvtrain("train --config " + quote(cfg.string()));
    EXPECT_EQ(r.rc, 0) << r.out;
    const auto ck = list_checkpoints((dir_ / name).string());
    return ck.empty() ? "" : ck.front();
  }

  // A gate config for the trained model, run directory `name`.
  static GateRunConfig gate_config(const std::string& name, int steps, const std::string& extra = "") {
    const fs::path p = dir_ / (name + ".yaml");
    std::ofstream(p) << "gates: {checkpoint: '" << ckpt_ << "', context: " << context_ << ", steps: " << steps
                     << ", eval_every: 3, eval_contexts: 3, threads: 1" << extra << "}\n"
                     << "output: {dir: '" << (dir_ / name).string() << "', checkpoint_every: 0}\n";
    return load_gate_config(p.string());
  }

  // The trained model written again as dir_/name/model.h5 with another time stamp (other file
  // bytes), its first weight plus `delta`.
  static std::string rewritten_model(const std::string& name, float delta) {
    const ModelCheckpoint m = load_model_checkpoint(ckpt_);
    const ParamTable table = build_param_table(m.config.model);
    CheckpointState st = checkpoint_read(ckpt_, table);
    st.utc_time = "2000-01-01T00:00:00Z";
    st.params[0] += delta;
    return checkpoint_write_file_atomic((dir_ / name).string(), "model.h5", table, st);
  }

  static fs::path dir_;
  static std::string ckpt_, other_;
  static int prompt_len_, context_;
};
fs::path Gates::dir_;
std::string Gates::ckpt_, Gates::other_;
int Gates::prompt_len_ = 0, Gates::context_ = 0;

TEST_F(Gates, FrozenModelStaysBitwiseEqual) {
  // The frozen model is an InferenceModel: it has no backward and no gradient buffer by type.
  ASSERT_FALSE(ckpt_.empty());
  GateTrainer tr(gate_config("frozen", 3));
  const std::vector<float> gates0 = tr.gates().params_to_host();
  for (int i = 0; i < 3; i++) tr.step();
  const ModelCheckpoint m = load_model_checkpoint(ckpt_);
  const std::vector<float> after = tr.model().params_to_host();
  ASSERT_EQ(after.size(), m.params.size());
  EXPECT_EQ(std::memcmp(after.data(), m.params.data(), after.size() * sizeof(float)), 0)
      << "gate training changed the frozen model";
  EXPECT_NE(tr.gates().params_to_host(), gates0) << "the gates did not move";
}

TEST_F(Gates, TrainingLowersTheHeldOutGateLoss) {
  ASSERT_FALSE(ckpt_.empty());
  GateTrainer tr(gate_config("learn", 40, ", schedule: constant"));
  const GateEvalStats before = tr.evaluate();
  for (int i = 0; i < 40; i++) tr.step();
  const GateEvalStats after = tr.evaluate();
  EXPECT_LT(after.loss, 0.9 * before.loss) << "before " << before.loss << " after " << after.loss;
  EXPECT_GT(after.recall, before.recall) << "before " << before.recall << " after " << after.recall;
  EXPECT_GT(before.target_density, 0.0);
  EXPECT_LT(before.target_density, 1.0);
  EXPECT_EQ(before.entries, 3 * 2 * 2 * context_);  // contexts x storage layers x KV heads x P
}

// Reads metrics.jsonl without the fields that depend on the clock.
std::vector<std::string> metrics_without_timings(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    j.erase("tokens_per_s");
    j.erase("step_time_s");
    out.push_back(j.dump());
  }
  return out;
}

TEST_F(Gates, StoppedAndResumedRunEqualsAnUninterruptedOneBitwise) {
  ASSERT_FALSE(ckpt_.empty());
  for (const char* opt : {"sgd", "adamw"}) {
    SCOPED_TRACE(opt);
    const std::string extra = std::string(", optimizer: ") + opt + ", lr: 0.05";
    gate_config(std::string("straight_") + opt, 7, extra);
    gate_config(std::string("resumed_") + opt, 7, extra);
    const std::string a = "gates --config " + quote((dir_ / ("straight_" + std::string(opt) + ".yaml")).string());
    const std::string b = "gates --config " + quote((dir_ / ("resumed_" + std::string(opt) + ".yaml")).string());
    const CmdResult ra = run_kvtrain(a);
    ASSERT_EQ(ra.rc, 0) << ra.out;
    EXPECT_NE(ra.out.find("gates step      7/7 | loss"), std::string::npos) << ra.out;
    EXPECT_NE(ra.out.find("eval step 6 | gate loss"), std::string::npos) << ra.out;
    const CmdResult rb1 = run_kvtrain(b + " --stop-after 4");
    ASSERT_EQ(rb1.rc, 0) << rb1.out;
    EXPECT_NE(rb1.out.find("stopped as asked"), std::string::npos) << rb1.out;
    EXPECT_FALSE(fs::exists(dir_ / ("resumed_" + std::string(opt)) / "gates.h5"));
    const CmdResult rb2 = run_kvtrain(b + " --resume");
    ASSERT_EQ(rb2.rc, 0) << rb2.out;
    EXPECT_NE(rb2.out.find("resumed from"), std::string::npos) << rb2.out;

    const ModelCheckpoint m = load_model_checkpoint(ckpt_);
    const ParamTable table = build_gate_param_table(m.config.model);
    const CheckpointState sa = checkpoint_read((dir_ / ("straight_" + std::string(opt)) / "gates.h5").string(), table, kGatesFormatName);
    const CheckpointState sb = checkpoint_read((dir_ / ("resumed_" + std::string(opt)) / "gates.h5").string(), table, kGatesFormatName);
    EXPECT_EQ(sa.step, 7);
    EXPECT_EQ(sa.params, sb.params);
    EXPECT_EQ(sa.adam_m, sb.adam_m);
    EXPECT_EQ(sa.adam_v, sb.adam_v);
    EXPECT_EQ(sa.adam_step, sb.adam_step);
    EXPECT_EQ(sa.loader_next_sample, 7u);
    const auto ma = metrics_without_timings(dir_ / ("straight_" + std::string(opt)) / "metrics.jsonl");
    EXPECT_EQ(ma, metrics_without_timings(dir_ / ("resumed_" + std::string(opt)) / "metrics.jsonl"));
    ASSERT_EQ(ma.size(), 7u + 3u);  // 7 steps, evals after 3, 6 and 7
    const nlohmann::json ev = nlohmann::json::parse(ma.back());
    EXPECT_EQ(ev["kind"], "eval");
    for (const char* k : {"val_loss", "accuracy", "recall", "target_density"}) EXPECT_TRUE(ev.contains(k)) << k;
    EXPECT_EQ(*find_text(sa.texts, kGateTextModelSha256), m.sha256);
  }
}

// A gate run resumes on the same weights in another file (a fresh import writes other bytes), and
// refuses other weights, naming the weights digest.
TEST_F(Gates, ResumeComparesTheWeightsNotTheFile) {
  ASSERT_FALSE(ckpt_.empty());
  gate_config("moved", 7);
  const std::string run = "gates --config " + quote((dir_ / "moved.yaml").string());
  const CmdResult first = run_kvtrain(run + " --stop-after 4");
  ASSERT_EQ(first.rc, 0) << first.out;
  const ModelCheckpoint m = load_model_checkpoint(ckpt_);
  const std::string copy = rewritten_model("copy", 0.0f);
  ASSERT_NE(load_model_checkpoint(copy).sha256, m.sha256);
  const CmdResult resumed = run_kvtrain(run + " --checkpoint " + quote(copy) + " --resume");
  ASSERT_EQ(resumed.rc, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("resumed from"), std::string::npos) << resumed.out;
  EXPECT_NE(resumed.out.find("gates step      7/7"), std::string::npos) << resumed.out;
  // other weights: refused in one line that names the digest the checkpoint records
  const std::string changed = rewritten_model("changed", 1.0f);
  const CmdResult refused = run_kvtrain(run + " --checkpoint " + quote(changed) + " --resume");
  EXPECT_NE(refused.rc, 0);
  EXPECT_NE(refused.out.find("was trained on another model checkpoint (weights SHA-256 " +
                             weights_sha256(m).substr(0, 12)),
            std::string::npos)
      << refused.out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}

TEST_F(Gates, CachedContextsGiveBitwiseTheSameGates) {
  ASSERT_FALSE(ckpt_.empty());
  const std::string cache = (dir_ / "cache").string();
  // A training shard of 3 windows (the first tokens of the real one): steps 4 to 9 are epochs 2
  // and 3, read from the cache.
  const ModelCheckpoint m = load_model_checkpoint(ckpt_);
  const std::vector<std::string> shards = expand_glob(m.config.data.train);
  std::vector<uint32_t> tokens;
  {
    WindowLoader all(shards, context_ - 1, m.config.model.vocab_size, 0, false);
    std::vector<int32_t> w(static_cast<size_t>(context_));
    for (int i = 0; i < 3; i++) {
      all.read_window(static_cast<uint64_t>(i), w.data());
      tokens.insert(tokens.end(), w.begin(), w.end());
    }
  }
  const std::string small = (dir_ / "small_train.bin").string();
  write_shard(small, tokens, 1);
  const std::string extra = ", optimizer: adamw, lr: 0.05}\ndata: {train: '" + small + "'";
  GateTrainer plain(gate_config("plain", 9, extra));
  GateTrainer cached(gate_config("cached", 9, ", cache_dir: '" + cache + "'" + extra));
  for (int i = 0; i < 9; i++) {
    EXPECT_EQ(plain.step().loss, cached.step().loss) << "step " << i + 1;
  }
  EXPECT_EQ(plain.gates().params_to_host(), cached.gates().params_to_host());
  const GateEvalStats a = plain.evaluate(), b = cached.evaluate(), c = cached.evaluate();
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(b.loss, c.loss);  // the second eval reads the cached held-out contexts
  size_t train_files = 0, val_files = 0;
  // Each file: the header, bf16 gate inputs [layers, P, C] and fp32 targets [layers, M, P].
  const ModelConfig& mc = m.config.model;
  const uint64_t L = gate_layers(mc).size(), M = gate_decisions(mc), P = context_, C = mc.d_model;
  for (const auto& e : fs::directory_iterator(cache)) {
    const std::string n = e.path().filename().string();
    if (n != "KEY") {
      EXPECT_EQ(fs::file_size(e.path()), 64 + 2 * L * P * C + 4 * L * M * P) << n;
    }
    train_files += n.rfind("train_", 0) == 0;
    val_files += n.rfind("val_", 0) == 0;
  }
  EXPECT_EQ(train_files, 3u);
  EXPECT_EQ(val_files, 3u);
  // A cache of another context length is refused, not reused.
  const std::string e = error_of([&] {
    GateRunConfig c = gate_config("other_cache", 1);
    c.gates.context = 16;
    c.gates.cache_dir = cache;
    GateTrainer other(c);
  });
  EXPECT_NE(e.find("holds the contexts of another model, context length, prompt or data"), std::string::npos) << e;
  // The cache is keyed by the weights: the same weights in another file reuse it, other weights
  // do not; a KEY of the older form (the file's SHA-256) is reused for that same file only.
  auto opens = [&](const std::string& model) {
    return error_of([&] {
      GateRunConfig c = gate_config("reuse_cache", 1, ", cache_dir: '" + cache + "'" + extra);
      c.gates.checkpoint = model;
      GateTrainer t(c);
    });
  };
  const std::string copy = rewritten_model("cache_copy", 0.0f), changed = rewritten_model("cache_changed", 1.0f);
  EXPECT_EQ(opens(copy), "no error");
  EXPECT_NE(opens(changed).find("holds the contexts of another model"), std::string::npos);
  const fs::path key_path = fs::path(cache) / "KEY";
  std::ifstream key_in(key_path, std::ios::binary);
  const std::string key((std::istreambuf_iterator<char>(key_in)), std::istreambuf_iterator<char>());
  key_in.close();
  ASSERT_EQ(key.rfind("model_weights_sha256 " + weights_sha256(m) + "\n", 0), 0u) << key;
  std::ofstream(key_path, std::ios::binary) << "model_sha256 " << m.sha256 << key.substr(key.find('\n'));
  EXPECT_EQ(opens(ckpt_), "no error");
  EXPECT_NE(opens(copy).find("holds the contexts of another model"), std::string::npos);
}

TEST_F(Gates, GateFilesOfAnotherModelOrKindAreRejected) {
  ASSERT_FALSE(ckpt_.empty());
  ASSERT_FALSE(other_.empty());
  GateTrainer tr(gate_config("files", 2));
  std::ostringstream log;
  tr.run(log);
  const std::string gates = (dir_ / "files" / "gates.h5").string();
  const ModelCheckpoint mine = load_model_checkpoint(ckpt_), other = load_model_checkpoint(other_);
  std::string warning = "unset";
  EXPECT_EQ(load_gates(gates, mine, &warning).size(), build_gate_param_table(mine.config.model).total());
  EXPECT_EQ(warning, "");
  std::string e = error_of([&] { load_gates(gates, other, nullptr); });
  EXPECT_NE(e.find("gates trained for another model"), std::string::npos) << e;
  EXPECT_NE(e.find("model.n_kv_heads: 2 vs 4"), std::string::npos) << e;
  e = error_of([&] { load_gates(ckpt_, mine, nullptr); });
  EXPECT_NE(e.find("is a kvtrain-checkpoint file, not Fast KVzip gates"), std::string::npos) << e;
  e = error_of([&] { load_model_checkpoint(gates); });
  EXPECT_NE(e.find("is a kvtrain-gates file, expected a kvtrain-checkpoint file"), std::string::npos) << e;
  // The same weights in another file (a fresh import: another time stamp): no warning.
  ModelCheckpoint reimported = mine;
  reimported.sha256 = std::string(64, '0');
  reimported.path = "elsewhere.h5";
  load_gates(gates, reimported, &warning);
  EXPECT_EQ(warning, "");
  // The same config with other weights: accepted, with a warning naming both checkpoints.
  ModelCheckpoint retrained = reimported;
  retrained.params[0] += 1.0f;
  load_gates(gates, retrained, &warning);
  EXPECT_NE(warning.find("not on elsewhere.h5"), std::string::npos) << warning;
  EXPECT_NE(warning.find("(weights SHA-256 " + weights_sha256(mine).substr(0, 12)), std::string::npos) << warning;
  // A damaged gates file never loads.
  const fs::path bad = dir_ / "files" / "bad";
  fs::create_directories(bad);
  fs::copy_file(gates, bad / "gates.h5");
  fs::copy_file(gates + ".sha256", bad / "gates.h5.sha256");
  {
    std::fstream f(bad / "gates.h5", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(bad / "gates.h5") / 2));
    f.put('\x5a');
  }
  e = error_of([&] { load_gates((bad / "gates.h5").string(), mine, nullptr); });
  EXPECT_NE(e.find("SHA-256 mismatch"), std::string::npos) << e;

  // The same through the CLI: one line, non-zero exit.
  CmdResult r = run_kvtrain("eval --checkpoint " + quote(other_) + " --gates " + quote(gates) +
                            " --policy gates --keep 0.5 --context 16");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("kvtrain: error: " + gates + ": gates trained for another model"), std::string::npos) << r.out;
  r = run_kvtrain("eval --checkpoint " + quote(gates) + " --context 16");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("is a kvtrain-gates file"), std::string::npos) << r.out;
  r = run_kvtrain("gates --checkpoint " + quote(gates));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("is a kvtrain-gates file"), std::string::npos) << r.out;
}

TEST_F(Gates, BadArgumentsGiveClearErrors) {
  ASSERT_FALSE(ckpt_.empty());
  const std::string ck = " --checkpoint " + quote(ckpt_);
  struct Case {
    std::string args, want;
  };
  const std::vector<Case> cases = {
      {"gates" + ck + " --set gates.context=60",
       "gates.context: 60 tokens: the KVzip input (context 60 + repeat prompt " + std::to_string(prompt_len_)},
      {"gates" + ck + " --set gates.context=60", "more than model.max_seq_len 112"},
      {"gates" + ck + " --set gates.optimizer=adam", "gates.optimizer: must be sgd or adamw"},
      {"eval" + ck + " --keep 0", "--keep: the keep ratio must be in (0, 1], got 0"},
      {"eval" + ck + " --keep 1.5", "--keep: the keep ratio must be in (0, 1], got 1.5"},
      {"eval" + ck + " --keep 0.5,abc", "--keep: 'abc' is not a number"},
      {"eval" + ck + " --context 60", "must fit model.max_seq_len 112"},
      {"eval" + ck + " --policy gates --keep 0.5 --context 16", "--policy gates needs --gates FILE"},
      {"eval" + ck + " --policy lru --context 16", "unknown eviction policy 'lru'"},
  };
  for (const Case& c : cases) {
    const CmdResult r = run_kvtrain(c.args);
    EXPECT_NE(r.rc, 0) << c.args;
    EXPECT_NE(r.out.find(c.want), std::string::npos) << c.args << "\n" << r.out;
  }
}

TEST_F(Gates, EvalKeepOneEqualsFullAndBytesFollowTheKeepRatio) {
  ASSERT_FALSE(ckpt_.empty());
  gate_config("eval_gates", 2);
  const CmdResult g = run_kvtrain("gates --config " + quote((dir_ / "eval_gates.yaml").string()));
  ASSERT_EQ(g.rc, 0) << g.out;
  const fs::path json = dir_ / "eval.jsonl";
  const CmdResult r = run_kvtrain("eval --checkpoint " + quote(ckpt_) + " --gates " +
                                  quote((dir_ / "eval_gates" / "gates.h5").string()) +
                                  " --policy full,gates,kvzip,recent,random --keep 1.0,0.5 --context " +
                                  std::to_string(context_) + " --continuation 8 --contexts 2 --chunk 8" +
                                  " --sinks 2 --recent 4 --json " + quote(json.string()));
  ASSERT_EQ(r.rc, 0) << r.out;
  std::ifstream in(json);
  std::vector<nlohmann::json> rows;
  nlohmann::json targets;
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("policy")) rows.push_back(j);
    else targets = j;
  }
  ASSERT_EQ(rows.size(), 1u + 4u * 2u);
  const nlohmann::json& full = rows[0];
  ASSERT_EQ(full["policy"], "full");
  for (const nlohmann::json& j : rows) {
    SCOPED_TRACE(j.dump());
    if (j["keep"].get<double>() == 1.0) {
      EXPECT_NEAR(j["continuation_loss"].get<double>(), full["continuation_loss"].get<double>(), 1e-6);
      EXPECT_NEAR(j["reconstruction_loss"].get<double>(), full["reconstruction_loss"].get<double>(), 1e-6);
      EXPECT_EQ(j["kv_bytes_kept"], full["kv_bytes"]);
    } else {
      EXPECT_DOUBLE_EQ(j["kept_entries"].get<double>(), 0.5);
      EXPECT_EQ(2 * j["kv_bytes_kept"].get<int64_t>(), j["kv_bytes"].get<int64_t>());
    }
  }
  // KV bytes per context: P positions x 2 layers x 2 KV heads x d_h 8 x (K, V) x 4 bytes.
  EXPECT_EQ(full["kv_bytes"].get<int64_t>(), int64_t{context_} * 2 * 2 * 8 * 2 * 4);
  const double density = targets["targets_ge_0.05"].get<double>();
  EXPECT_GT(density, 0.0);
  EXPECT_LT(density, 1.0);
  EXPECT_NE(r.out.find("KVzip targets:"), std::string::npos) << r.out;
}

// `kvtrain eval --study`: one record per context with its tasks, the full cache keeps every entry
// and the evicting policies half, compaction shrinks the allocation, the free copy runs decode-time
// eviction, a rerun skips finished contexts and refuses other options; the memory probe prints its
// JSON line.
TEST_F(Gates, EvalStudyWritesResumableRecordsAndTheMemoryProbeItsLine) {
  ASSERT_FALSE(ckpt_.empty());
  // a short repeat prompt, so that 2 x 50 + the prompt fit max_seq_len 112 and the needle sentence
  // (about 40 tokens with this small tokenizer) fits the context
  const int kStudyContext = 50;
  gate_config("study_gates", 2);
  const CmdResult g = run_kvtrain("gates --config " + quote((dir_ / "study_gates.yaml").string()));
  ASSERT_EQ(g.rc, 0) << g.out;
  const std::string gates = quote((dir_ / "study_gates" / "gates.h5").string());
  const fs::path study = dir_ / "study";
  const std::string args = "eval --checkpoint " + quote(ckpt_) + " --gates " + gates +
                           " --policy full,kvzip,gates,snapkv,streaming,random --keep 0.5 --context " +
                           std::to_string(kStudyContext) + " --continuation 8 --contexts 2 --chunk 8 --sinks 2" +
                           " --recent 4 --tasks reconstruction,continuation,freecopy" +
                           " --freecopy-contexts 1 --freecopy-keep 0.5 --generate 12 --decode-every 4" +
                           " --decode-recent 4 --prompt Again: --study " + quote(study.string());
  const CmdResult r = run_kvtrain(args);
  ASSERT_EQ(r.rc, 0) << r.out;
  for (int c = 0; c < 2; c++) {
    const fs::path f = study / ("ctx_0000" + std::to_string(c) + ".json");
    ASSERT_TRUE(fs::exists(f)) << f;
    std::ifstream in(f);
    const nlohmann::json j = nlohmann::json::parse(in);
    ASSERT_EQ(j["results"].size(), 6u);
    const nlohmann::json& full = j["results"][0];
    EXPECT_EQ(full["policy"], "full");
    EXPECT_EQ(full["entries_kept"], full["entries_total"]);
    EXPECT_EQ(j["answer"].get<std::string>().size(), 5u);
    EXPECT_TRUE(j["no_context"].is_null());  // the needle task is not run here: its question alone
                                             // is 114 tokens with this small tokenizer
    for (const nlohmann::json& x : j["results"]) {
      SCOPED_TRACE(x.dump());
      EXPECT_GT(x["reconstruction_nll"].get<double>(), 0.0);
      EXPECT_GE(x["copy_prefix"].get<int>(), 0);
      EXPECT_LE(x["copy_prefix"].get<int>(), kStudyContext);
      EXPECT_GT(x["continuation_nll"].get<double>(), 0.0);
      EXPECT_TRUE(x["needle_correct"].is_null());
      if (x["policy"] == "full") continue;
      EXPECT_EQ(2 * x["entries_kept"].get<int64_t>(), x["entries_total"].get<int64_t>());
      EXPECT_LE(x["kv_alloc_bytes"].get<int64_t>(), full["kv_alloc_bytes"].get<int64_t>());
      const bool decodes = x["policy"] == "gates" || x["policy"] == "streaming" || x["policy"] == "random";
      EXPECT_EQ(!x["freecopy"].is_null(), decodes && c == 0);
      if (!x["freecopy"].is_null()) {
        EXPECT_EQ(x["freecopy"]["generated"], 12);
        EXPECT_EQ(x["freecopy"]["evictions"], 3);  // after the prompt, then after 4 and 8 decodes
        EXPECT_FALSE(x["freecopy"]["text"].get<std::string>().empty());  // the 12 tokens, decoded
      }
      if (x["policy"] == "gates") {
        EXPECT_GT(x["gate_seconds"].get<double>(), 0.0);
      }
    }
  }
  // A rerun skips what is done (the records stay byte for byte); other options are refused.
  const auto stamp = fs::last_write_time(study / "ctx_00000.json");
  const CmdResult again = run_kvtrain(args);
  ASSERT_EQ(again.rc, 0) << again.out;
  EXPECT_EQ(fs::last_write_time(study / "ctx_00000.json"), stamp);
  const CmdResult other = run_kvtrain(args + " --depths 0.2");
  EXPECT_NE(other.rc, 0);
  EXPECT_NE(other.out.find("meta.json: the study there was made with other options"), std::string::npos) << other.out;
  // The same study's arguments into another directory, and a record there equal to the whole study's.
  auto args_in = [&](const fs::path& other_dir) {
    std::string a = args;
    a.replace(a.find(quote(study.string())), quote(study.string()).size(), quote(other_dir.string()));
    return a;
  };
  auto expect_same_record = [&](const fs::path& other_dir, const std::string& file) {
    std::ifstream a(study / file), b(other_dir / file);
    nlohmann::json ja = nlohmann::json::parse(a), jb = nlohmann::json::parse(b);
    ASSERT_EQ(ja["results"].size(), jb["results"].size());
    EXPECT_EQ(ja["answer"], jb["answer"]);
    EXPECT_EQ(ja["needle_position"], jb["needle_position"]);
    for (size_t i = 0; i < ja["results"].size(); i++) {
      SCOPED_TRACE(ja["results"][i]["policy"].get<std::string>());
      for (const char* k : {"policy", "entries_kept", "reconstruction_nll", "continuation_nll", "copy_prefix"})
        EXPECT_EQ(ja["results"][i][k], jb["results"][i][k]) << k;
    }
  };
  // A study of one of the two contexts alone, whose record is the whole study's.
  auto expect_alone = [&](const fs::path& other_dir, const std::string& option, int kept) {
    SCOPED_TRACE(option);
    const CmdResult part = run_kvtrain(args_in(other_dir) + " " + option);
    ASSERT_EQ(part.rc, 0) << part.out;
    const std::string file = "ctx_0000" + std::to_string(kept) + ".json";
    EXPECT_FALSE(fs::exists(other_dir / ("ctx_0000" + std::to_string(1 - kept) + ".json")));
    ASSERT_TRUE(fs::exists(other_dir / file));
    expect_same_record(other_dir, file);
  };
  auto expect_refused = [&](const fs::path& other_dir, const std::string& option, const std::string& message) {
    const CmdResult r = run_kvtrain(args_in(other_dir) + " " + option);
    EXPECT_NE(r.rc, 0);
    EXPECT_NE(r.out.find(message), std::string::npos) << r.out;
  };
  expect_alone(dir_ / "study_from_1", "--first-context 1", 1);
  expect_refused(dir_ / "study_from_1", "--first-context 2", "--first-context must be in [0, --contexts)");
  // --context-step 2 from context 0: context 0 alone (1 is the other process's)
  expect_alone(dir_ / "study_step_2", "--context-step 2", 0);
  expect_refused(dir_ / "study_step_2", "--context-step 0", "--context-step must be >= 1");
  expect_refused(dir_ / "study_step_2", "--context-step 3",  // another step is another study
                 "meta.json: the study there was made with other options");
  {  // a meta.json written before --context-step existed reads as step 1
    std::ifstream in(study / "meta.json");
    nlohmann::json m = nlohmann::json::parse(in);
    ASSERT_EQ(m["context_step"], 1);
    m.erase("context_step");
    std::ofstream(study / "meta.json") << m.dump(1) << "\n";
  }
  const CmdResult older = run_kvtrain(args);
  EXPECT_EQ(older.rc, 0) << older.out;
  // The memory probe: allocation and peak RSS fall with the keep ratio's cache.
  std::vector<nlohmann::json> probes;
  for (const char* keep : {"1.0", "0.25"}) {
    const CmdResult m = run_kvtrain("eval --checkpoint " + quote(ckpt_) + " --gates " + gates +
                                    " --policy gates --keep " + keep + " --context 96 --chunk 8 --contexts 1" +
                                    " --memory-probe");
    ASSERT_EQ(m.rc, 0) << m.out;
    const size_t at = m.out.rfind("{\"");
    ASSERT_NE(at, std::string::npos) << m.out;
    probes.push_back(nlohmann::json::parse(m.out.substr(at)));
  }
  EXPECT_LT(probes[1]["kv_alloc_bytes"].get<int64_t>(), probes[0]["kv_alloc_bytes"].get<int64_t>());
  EXPECT_LT(probes[1]["kv_peak_bytes"].get<int64_t>(), probes[0]["kv_peak_bytes"].get<int64_t>());
  EXPECT_GT(probes[0]["vmhwm_bytes"].get<int64_t>(), 0);
}

}  // namespace
}  // namespace kvt

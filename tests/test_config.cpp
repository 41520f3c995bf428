// tests/test_config.cpp — the run config: every shipped config parses, every bad config fails with
// a message that names the key path (and the value), overrides apply, to_yaml round-trips.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "train/config.h"
#include "train/gate_config.h"

namespace fs = std::filesystem;
using kvt::RunConfig;

namespace {

const std::string kSource = "test.yaml";

// A small valid config; tests append or override what they need.
const std::string kBase = R"(
model:
  vocab_size: 256
  d_model: 64
  n_layers: 2
  n_heads: 4
  max_seq_len: 128
train:
  batch_size: 2
  seq_len: 64
  steps: 100
data:
  train: "data/x/*train*.bin"
output:
  dir: runs/test
)";

RunConfig parse(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return kvt::parse_run_config(text, overrides, kSource);
}

// The message of the std::invalid_argument that f throws; fails the test if it throws nothing.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected std::invalid_argument, nothing was thrown";
  return "";
}

std::string parse_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return error_of([&] { parse(text, overrides); });
}

// Parameter count of the LLaMA-style model, written from docs/design.md, "The model family" (no biases).
int64_t llama_params(const kvt::ModelConfig& m) {
  const int64_t d = m.d_model, hd = m.head_dim(), h = m.n_heads, hkv = m.kv_heads();
  const int64_t f = m.ffn_dim(), v = m.vocab_size;
  const int64_t per_layer = d * h * hd + 2 * d * hkv * hd + h * hd * d + 3 * d * f + 2 * d;
  return v * d + m.n_layers * per_layer + d + (m.tie_embeddings ? 0 : v * d);
}

fs::path configs_dir() { return fs::path(KVT_SOURCE_DIR) / "configs"; }

}  // namespace

// ---- shipped configs ---------------------------------------------------------------------------

TEST(Config, EveryShippedConfigParses) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(configs_dir())) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    names.insert(entry.path().filename().string());
    if (entry.path().filename().string().rfind("gates", 0) == 0) {  // gate configs (kvtrain gates)
      kvt::GateRunConfig g;
      ASSERT_NO_THROW(g = kvt::load_gate_config(entry.path().string()));
      EXPECT_EQ(g.gates.context, 1024);
      continue;
    }
    RunConfig c;
    ASSERT_NO_THROW(c = kvt::load_run_config(entry.path().string()));
    EXPECT_LE(c.train.seq_len, c.model.max_seq_len);
    EXPECT_FALSE(c.data.train.empty());
    EXPECT_EQ(c.model.n_heads % c.model.n_kv_heads, 0);
  }
  for (const char* want : {"tiny.yaml", "tiny_gqa.yaml", "tiny_mqa.yaml", "gpt124m.yaml",
                           "gpt350m.yaml", "gpt1.5b.yaml", "bench_25m.yaml", "gates.yaml",
                           "tiny_long.yaml", "tiny_long_fusedkv.yaml"})
    EXPECT_TRUE(names.count(want)) << want << " is missing from configs/";
}

TEST(Config, ShippedShapesAreWhatTheirNamesSay) {
  auto load = [](const char* name) { return kvt::load_run_config((configs_dir() / name).string()); };
  const RunConfig tiny = load("tiny.yaml"), gqa = load("tiny_gqa.yaml"), mqa = load("tiny_mqa.yaml");
  EXPECT_EQ(tiny.model.kv_heads(), tiny.model.n_heads);
  EXPECT_EQ(gqa.model.kv_heads(), 2);
  EXPECT_EQ(mqa.model.kv_heads(), 1);
  EXPECT_EQ(tiny.train.backend, "cpu");
  // The variants differ from tiny only in n_kv_heads and the run directory.
  for (const RunConfig* v : {&gqa, &mqa}) {
    RunConfig same = *v;
    same.model.n_kv_heads = tiny.model.n_kv_heads;
    same.output.dir = tiny.output.dir;
    EXPECT_EQ(kvt::to_yaml(same), kvt::to_yaml(tiny));
    EXPECT_NE(v->output.dir, tiny.output.dir);
  }

  const int64_t p124 = llama_params(load("gpt124m.yaml").model);
  const int64_t p350 = llama_params(load("gpt350m.yaml").model);
  const RunConfig xl = load("gpt1.5b.yaml");
  const int64_t p1500 = llama_params(xl.model);
  EXPECT_GT(p124, 115'000'000);
  EXPECT_LT(p124, 135'000'000);
  EXPECT_GT(p350, 330'000'000);
  EXPECT_LT(p350, 380'000'000);
  EXPECT_GT(p1500, 1'400'000'000);
  EXPECT_LT(p1500, 1'700'000'000);
  EXPECT_EQ(xl.model.head_dim(), 64);
  EXPECT_EQ(xl.train.backend, "cuda");

  const RunConfig bench = load("bench_25m.yaml");
  EXPECT_GT(llama_params(bench.model), 20'000'000);
  EXPECT_LT(llama_params(bench.model), 30'000'000);
  EXPECT_EQ(bench.train.seq_len, 256);
}

// ---- defaults ----------------------------------------------------------------------------------

TEST(Config, MissingKeysTakeTheStructDefaults) {
  const RunConfig c = parse(kBase);
  const kvt::TrainConfig t;
  const kvt::OutputConfig o;
  EXPECT_EQ(c.train.lr, t.lr);
  EXPECT_EQ(c.train.grad_accum, t.grad_accum);
  EXPECT_EQ(c.train.seed, t.seed);
  EXPECT_EQ(c.train.resume, t.resume);
  EXPECT_EQ(c.output.keep_last, o.keep_last);
  EXPECT_EQ(c.data.val, "");
  // Written values are taken, and derived ones resolved.
  EXPECT_EQ(c.model.vocab_size, 256);
  EXPECT_EQ(c.train.steps, 100);
  EXPECT_EQ(c.model.n_kv_heads, 4);                     // 0 -> n_heads
  EXPECT_EQ(c.model.d_ff, (8 * 64 / 3 + 31) / 32 * 32);  // 0 -> round_up(8/3 d, 32)
}

TEST(Config, EmptySectionsAreAllowed) {
  const RunConfig c = parse(kBase + "\n# nothing more\n", {});
  EXPECT_NO_THROW(parse("model:\ntrain:\ndata:\n  train: a.bin\noutput:\n"));
  EXPECT_EQ(c.data.train, "data/x/*train*.bin");
}

// ---- unknown keys ------------------------------------------------------------------------------

TEST(Config, UnknownKeyInSectionNamesTheFullPath) {
  std::string text = kBase;
  text.replace(text.find("  steps: 100"), 0, "  lerning_rate: 0.1\n");
  const std::string msg = parse_error(text);
  EXPECT_NE(msg.find("test.yaml: unknown key train.lerning_rate"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line"), std::string::npos) << msg;
}

TEST(Config, UnknownTopLevelKeyIsAnError) {
  const std::string msg = parse_error(kBase + "optimizer:\n  lr: 0.1\n");
  EXPECT_NE(msg.find("unknown key optimizer"), std::string::npos) << msg;
}

TEST(Config, DuplicateKeyIsAnError) {
  const std::string msg = parse_error(kBase + "train:\n  steps: 5\n");
  EXPECT_NE(msg.find("duplicate key train"), std::string::npos) << msg;
}

TEST(Config, SectionMustBeAMapping) {
  const std::string msg = parse_error("model: 5\ndata:\n  train: a.bin\n");
  EXPECT_NE(msg.find("model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mapping"), std::string::npos) << msg;
  EXPECT_NE(parse_error("- 1\n- 2\n").find("top level"), std::string::npos);
}

// ---- wrong types -------------------------------------------------------------------------------

TEST(Config, WrongTypesNameThePathAndTheValue) {
  struct Case {
    std::string set;    // override that puts the bad value in place
    std::string path;   // expected in the message
    std::string value;  // expected in the message
  };
  const std::vector<Case> cases = {
      {"train.batch_size=abc", "train.batch_size", "abc"},          // string for int
      {"train.batch_size=1.5", "train.batch_size", "1.5"},          // float for int
      {"model.d_model=64.0", "model.d_model", "64.0"},              // float for int
      {"train.steps=\"100\"", "train.steps", "100"},                // quoted string for int64
      {"model.tie_embeddings=1", "model.tie_embeddings", "1"},      // non-bool for bool
      {"model.tie_embeddings=yes", "model.tie_embeddings", "yes"},  // YAML 1.1 bool: rejected
      {"train.seed=-1", "train.seed", "-1"},                        // negative for unsigned
      {"train.lr=fast", "train.lr", "fast"},                        // string for float
      {"train.lr=.inf", "train.lr", ".inf"},                        // non-finite float
      {"model.n_layers=3000000000", "model.n_layers", "3000000000"},  // int out of range
      {"model.n_layers=[1, 2]", "model.n_layers", "sequence"},
      {"data.train={a: b}", "data.train", "mapping"},               // mapping for string
      {"model.n_heads=", "model.n_heads", "null"},                  // null for int
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.set);
    const std::string msg = parse_error(kBase, {c.set});
    EXPECT_NE(msg.find(c.path + ": expected"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.value), std::string::npos) << msg;
  }
}

TEST(Config, WrongTypeInFileNamesTheLine) {
  std::string text = kBase;
  text.replace(text.find("steps: 100"), 10, "steps: many");
  const std::string msg = parse_error(text);
  EXPECT_NE(msg.find("test.yaml: train.steps: expected an integer, got 'many'"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("(line 11)"), std::string::npos) << msg;
}

TEST(Config, ScalarFormsThatAreAccepted) {
  const RunConfig c = parse(kBase, {"train.lr=6e-4", "train.weight_decay=0", "train.seed=+7",
                                    "model.tie_embeddings=False", "data.val=",
                                    "train.init_from=123"});
  EXPECT_FLOAT_EQ(c.train.lr, 6e-4f);
  EXPECT_EQ(c.train.weight_decay, 0.0f);
  EXPECT_EQ(c.train.seed, 7u);
  EXPECT_FALSE(c.model.tie_embeddings);
  EXPECT_EQ(c.data.val, "");
  EXPECT_EQ(c.train.init_from, "123");  // a plain number is a fine string
}

// ---- impossible shapes and out-of-range values --------------------------------------------------

TEST(Config, ImpossibleShapesNameTheKey) {
  struct Case {
    std::vector<std::string> set;
    std::string path;
  };
  const std::vector<Case> cases = {
      {{"model.d_model=66"}, "model.n_heads"},                         // 66 % 4 != 0
      {{"model.n_kv_heads=3"}, "model.n_kv_heads"},                    // 4 % 3 != 0
      {{"model.d_model=12"}, "model.n_heads"},                         // head_dim 3 is odd
      {{"model.n_heads=0"}, "model.n_heads"},
      {{"model.vocab_size=1"}, "model.vocab_size"},
      {{"model.norm_eps=0"}, "model.norm_eps"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.set[0]);
    const std::string msg = parse_error(kBase, c.set);
    EXPECT_EQ(msg.rfind("test.yaml: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(c.path), std::string::npos) << msg;
  }
}

TEST(Config, SeqLenAboveMaxSeqLenNamesBothValues) {
  const std::string msg = parse_error(kBase, {"train.seq_len=512"});
  EXPECT_NE(msg.find("train.seq_len"), std::string::npos) << msg;
  EXPECT_NE(msg.find("512"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.max_seq_len"), std::string::npos) << msg;
  EXPECT_NE(msg.find("128"), std::string::npos) << msg;
  EXPECT_NO_THROW(parse(kBase, {"train.seq_len=128"}));  // equal is fine
}

TEST(Config, OutOfRangeTrainingValuesNameTheKey) {
  const std::vector<std::string> bad = {
      "train.batch_size=0",   "train.seq_len=0",          "train.grad_accum=0",
      "train.steps=0",        "train.lr=0",               "train.lr=-1e-3",
      "train.min_lr_ratio=-0.1", "train.min_lr_ratio=1.5", "train.warmup_steps=-1",
      "train.weight_decay=-0.1", "train.beta1=1",          "train.beta2=-0.5",
      "train.eps=0",          "train.grad_clip=-1",       "train.eval_every=-1",
      "train.eval_batches=0", "train.backend=tpu",        "train.threads=-2",
      "train.resume=sometimes", "data.train=",            "output.dir=",
      "output.keep_last=0",   "output.keep_every=-1",     "output.checkpoint_every=-5",
  };
  for (const std::string& set : bad) {
    SCOPED_TRACE(set);
    const std::string path = set.substr(0, set.find('='));
    const std::string msg = parse_error(kBase, {set});
    EXPECT_NE(msg.find("test.yaml: " + path + ": must be"), std::string::npos) << msg;
  }
  // The boundaries themselves are valid.
  EXPECT_NO_THROW(parse(kBase, {"train.min_lr_ratio=0", "train.min_lr_ratio=1", "train.beta1=0",
                                "train.grad_clip=0", "train.eval_every=0", "train.warmup_steps=0",
                                "train.threads=0", "train.resume=auto", "train.backend=cuda",
                                "output.keep_last=1"}));
}

// ---- overrides ---------------------------------------------------------------------------------

TEST(Config, OverridesReplaceFileValues) {
  const RunConfig c = parse(kBase, {"train.steps=50", "model.n_layers=4", "train.lr=1e-3",
                                    "output.dir=runs/other"});
  EXPECT_EQ(c.train.steps, 50);
  EXPECT_EQ(c.model.n_layers, 4);
  EXPECT_FLOAT_EQ(c.train.lr, 1e-3f);
  EXPECT_EQ(c.output.dir, "runs/other");
  // Later overrides win; an override can create a section the file lacks.
  EXPECT_EQ(parse(kBase, {"train.steps=50", "train.steps=60"}).train.steps, 60);
  const RunConfig d = parse("data:\n  train: a.bin\n", {"model.n_layers=3", "train.seq_len=32"});
  EXPECT_EQ(d.model.n_layers, 3);
  EXPECT_EQ(d.train.seq_len, 32);
  // An override may fix a value the file has wrong.
  std::string text = kBase;
  text.replace(text.find("steps: 100"), 10, "steps: many");
  EXPECT_EQ(parse(text, {"train.steps=7"}).train.steps, 7);
}

TEST(Config, OverrideOfUnknownKeyFails) {
  const std::string msg = parse_error(kBase, {"train.lerning_rate=0.1"});
  EXPECT_NE(msg.find("unknown key train.lerning_rate"), std::string::npos) << msg;
  EXPECT_NE(parse_error(kBase, {"optim.lr=0.1"}).find("unknown key optim.lr"), std::string::npos);
}

TEST(Config, MalformedOverridesFail) {
  for (const char* bad : {"train.steps", "steps=5", "=5", ".steps=5", "train.=5"}) {
    SCOPED_TRACE(bad);
    const std::string msg = parse_error(kBase, {bad});
    EXPECT_NE(msg.find("override '" + std::string(bad) + "'"), std::string::npos) << msg;
  }
  const std::string msg = parse_error(kBase, {"train.steps=[1"});
  EXPECT_NE(msg.find("not valid YAML"), std::string::npos) << msg;
}

TEST(Config, OverrideTypeErrorNamesTheOverride) {
  const std::string msg = parse_error(kBase, {"train.steps=abc"});
  EXPECT_NE(msg.find("train.steps: expected an integer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("override 'train.steps=abc'"), std::string::npos) << msg;
}

TEST(Config, EveryKeyIsWiredAndTyped) {
  // A mapping is the wrong type for every field, so each key must reach its own type check.
  const std::vector<std::string> keys = kvt::config_keys();
  EXPECT_GE(keys.size(), 38u);
  const std::string yaml = kvt::to_yaml(parse(kBase));
  for (const std::string& key : keys) {
    SCOPED_TRACE(key);
    const std::string msg = parse_error(kBase, {key + "={x: 1}"});
    EXPECT_NE(msg.find(key + ": expected"), std::string::npos) << msg;
    const std::string leaf = key.substr(key.find('.') + 1);
    EXPECT_NE(yaml.find("  " + leaf + ": "), std::string::npos) << "to_yaml lacks " << key;
  }
}

// ---- files -------------------------------------------------------------------------------------

TEST(Config, MissingFileNamesThePath) {
  const std::string path = (fs::temp_directory_path() / "kvt_no_such_config.yaml").string();
  const std::string msg = error_of([&] { kvt::load_run_config(path); });
  EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
}

TEST(Config, SyntaxErrorNamesFileAndLine) {
  const fs::path path = fs::temp_directory_path() / "kvt_test_config_syntax.yaml";
  {
    std::ofstream out(path);
    out << "model:\n  d_model: 64\n  n_heads: [4\ntrain:\n  steps: 1\n";
  }
  const std::string msg = error_of([&] { kvt::load_run_config(path.string()); });
  fs::remove(path);
  EXPECT_EQ(msg.rfind(path.string() + ": ", 0), 0u) << msg;
  EXPECT_NE(msg.find("line"), std::string::npos) << msg;
  EXPECT_NE(msg.find("column"), std::string::npos) << msg;
}

TEST(Config, LoadAppliesOverrides) {
  const fs::path path = fs::temp_directory_path() / "kvt_test_config_load.yaml";
  {
    std::ofstream out(path);
    out << kBase;
  }
  const RunConfig c = kvt::load_run_config(path.string(), {"train.steps=50"});
  const std::string msg = error_of([&] { kvt::load_run_config(path.string(), {"train.nope=1"}); });
  fs::remove(path);
  EXPECT_EQ(c.train.steps, 50);
  EXPECT_EQ(msg.rfind(path.string() + ": ", 0), 0u) << msg;
  EXPECT_NE(msg.find("unknown key train.nope"), std::string::npos) << msg;
}

// ---- to_yaml -----------------------------------------------------------------------------------

TEST(Config, ToYamlRoundTripsEveryField) {
  // Every field off its default, floats with digits that a short format would lose.
  RunConfig c;
  c.model.vocab_size = 1000;
  c.model.d_model = 96;
  c.model.n_layers = 3;
  c.model.n_heads = 6;
  c.model.n_kv_heads = 2;
  c.model.d_ff = 200;
  c.model.max_seq_len = 77;
  c.model.rope_theta = 500000.0f;
  c.model.norm_eps = 1.2345678e-6f;
  c.model.tie_embeddings = false;
  c.model.init_std = 0.0173205081f;
  c.train.batch_size = 3;
  c.train.seq_len = 70;
  c.train.grad_accum = 5;
  c.train.steps = 12345678901;
  c.train.lr = 0.1f + 0.2f;
  c.train.min_lr_ratio = 1.0f / 3.0f;
  c.train.warmup_steps = 9;
  c.train.weight_decay = 0.0123f;
  c.train.decay_embeddings = true;
  c.train.beta1 = 0.85f;
  c.train.beta2 = 0.999f;
  c.train.eps = 3e-9f;
  c.train.grad_clip = 0.5f;
  c.train.eval_every = 11;
  c.train.eval_batches = 2;
  c.train.seed = 18446744073709551615ull;
  c.train.backend = "cuda";
  c.train.threads = 7;
  c.train.resume = "auto";
  c.train.init_from = "runs/a b/ckpt_10.h5";
  c.data.train = "data/*train*.bin";
  c.data.val = "data/\"quoted\"\\val #1.bin";
  c.data.tokenizer = "tok: model.model";
  c.output.dir = "runs/x";
  c.output.checkpoint_every = 13;
  c.output.keep_last = 4;
  c.output.keep_every = 1000;

  const std::string text = kvt::to_yaml(c);
  const RunConfig r = parse(text);
  EXPECT_EQ(kvt::to_yaml(r), text);

  EXPECT_EQ(r.model.vocab_size, c.model.vocab_size);
  EXPECT_EQ(r.model.d_model, c.model.d_model);
  EXPECT_EQ(r.model.n_layers, c.model.n_layers);
  EXPECT_EQ(r.model.n_heads, c.model.n_heads);
  EXPECT_EQ(r.model.n_kv_heads, c.model.n_kv_heads);
  EXPECT_EQ(r.model.d_ff, c.model.d_ff);
  EXPECT_EQ(r.model.max_seq_len, c.model.max_seq_len);
  EXPECT_EQ(r.model.rope_theta, c.model.rope_theta);
  EXPECT_EQ(r.model.norm_eps, c.model.norm_eps);  // bitwise, not approximately
  EXPECT_EQ(r.model.tie_embeddings, c.model.tie_embeddings);
  EXPECT_EQ(r.model.init_std, c.model.init_std);
  EXPECT_EQ(r.train.batch_size, c.train.batch_size);
  EXPECT_EQ(r.train.seq_len, c.train.seq_len);
  EXPECT_EQ(r.train.grad_accum, c.train.grad_accum);
  EXPECT_EQ(r.train.steps, c.train.steps);
  EXPECT_EQ(r.train.lr, c.train.lr);
  EXPECT_EQ(r.train.min_lr_ratio, c.train.min_lr_ratio);
  EXPECT_EQ(r.train.warmup_steps, c.train.warmup_steps);
  EXPECT_EQ(r.train.weight_decay, c.train.weight_decay);
  EXPECT_EQ(r.train.decay_embeddings, c.train.decay_embeddings);
  EXPECT_EQ(r.train.beta1, c.train.beta1);
  EXPECT_EQ(r.train.beta2, c.train.beta2);
  EXPECT_EQ(r.train.eps, c.train.eps);
  EXPECT_EQ(r.train.grad_clip, c.train.grad_clip);
  EXPECT_EQ(r.train.eval_every, c.train.eval_every);
  EXPECT_EQ(r.train.eval_batches, c.train.eval_batches);
  EXPECT_EQ(r.train.seed, c.train.seed);
  EXPECT_EQ(r.train.backend, c.train.backend);
  EXPECT_EQ(r.train.threads, c.train.threads);
  EXPECT_EQ(r.train.resume, c.train.resume);
  EXPECT_EQ(r.train.init_from, c.train.init_from);
  EXPECT_EQ(r.data.train, c.data.train);
  EXPECT_EQ(r.data.val, c.data.val);
  EXPECT_EQ(r.data.tokenizer, c.data.tokenizer);
  EXPECT_EQ(r.output.dir, c.output.dir);
  EXPECT_EQ(r.output.checkpoint_every, c.output.checkpoint_every);
  EXPECT_EQ(r.output.keep_last, c.output.keep_last);
  EXPECT_EQ(r.output.keep_every, c.output.keep_every);
}

TEST(Config, ToYamlOfShippedConfigsRoundTrips) {
  for (const char* name : {"tiny.yaml", "gpt1.5b.yaml", "bench_25m.yaml"}) {
    SCOPED_TRACE(name);
    const RunConfig c = kvt::load_run_config((configs_dir() / name).string());
    const std::string text = kvt::to_yaml(c);
    EXPECT_EQ(kvt::to_yaml(parse(text)), text);
    EXPECT_NE(text.find("  n_kv_heads: " + std::to_string(c.model.kv_heads()) + "\n"),
              std::string::npos);  // resolved values are written
  }
}

TEST(Config, ToYamlOrderIsStableAndSectioned) {
  const std::string text = kvt::to_yaml(parse(kBase));
  const size_t m = text.find("\nmodel:\n"), t = text.find("\ntrain:\n");
  const size_t d = text.find("\ndata:\n"), o = text.find("\noutput:\n");
  ASSERT_NE(m, std::string::npos);
  ASSERT_NE(o, std::string::npos);
  EXPECT_LT(m, t);
  EXPECT_LT(t, d);
  EXPECT_LT(d, o);
  EXPECT_LT(text.find("  vocab_size: 256\n"), t);
}

TEST(Config, HashIsEqualForEqualConfigsAndDiffersOtherwise) {
  const RunConfig a = parse(kBase), b = parse(kBase);
  const std::string h = kvt::config_hash(a);
  ASSERT_EQ(h.size(), 16u);
  EXPECT_TRUE(std::all_of(h.begin(), h.end(), [](char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
  }));
  EXPECT_EQ(kvt::config_hash(b), h);
  RunConfig c = a;
  c.train.lr = std::nextafter(c.train.lr, 1.0f);  // one ulp apart
  EXPECT_NE(kvt::config_hash(c), h);
  c = a;
  c.train.seed += 1;
  EXPECT_NE(kvt::config_hash(c), h);
}

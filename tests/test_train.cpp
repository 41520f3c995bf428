// Trainer integration tests on small corpora written by the test: learning below the bigram
// entropy, bitwise resume, a non-finite loss stopping the run, init_from, and preemption by a
// real signal sent to a real `kvtrain train` process.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "data/prepare.h"
#include "data/shard.h"
#include "kernels/common/rng.h"
#include "train/checkpoint.h"
#include "model_checks.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace kvt {
namespace {

using namespace kvt::testutil;

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("kvt_test_train_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}


RunConfig small_run(const fs::path& dir, int V) {
  RunConfig c;
  c.model.vocab_size = V;
  c.model.d_model = 32;
  c.model.n_layers = 2;
  c.model.n_heads = 2;
  c.model.d_ff = 64;
  c.model.max_seq_len = 32;
  c.model.resolve();
  c.train.batch_size = 4;
  c.train.seq_len = 24;
  c.train.steps = 12;
  c.train.lr = 3e-3f;
  c.train.warmup_steps = 2;
  c.train.eval_every = 4;
  c.train.eval_batches = 2;
  c.train.threads = 2;
  c.data.train = (dir / "*train*.bin").string();
  c.data.val = (dir / "*val*.bin").string();
  c.output.dir = (dir / "run").string();
  return c;
}

void write_corpus(const fs::path& dir, const std::vector<uint32_t>& train, const std::vector<uint32_t>& val) {
  write_shard((dir / "c_train_000000.bin").string(), train, 1);
  write_shard((dir / "c_val_000000.bin").string(), val, 7);
}

std::vector<nlohmann::json> metrics_without_timings(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    for (const char* k : {"tokens_per_s", "flops_per_s", "step_time_s"}) j.erase(k);
    out.push_back(j);
  }
  return out;
}

TEST(Train, LearnsBelowBigramEntropy) {
  const fs::path dir = fresh_dir("learn");
  const int V = 16;
  const auto train = markov2_corpus(60000, V, 1), val = markov2_corpus(4000, V, 2);
  write_corpus(dir, train, val);
  const double bigram = bigram_entropy(train);
  RunConfig c = small_run(dir, V);
  c.train.steps = 150;
  c.train.batch_size = 8;
  c.train.eval_every = 0;
  c.train.eval_batches = 4;
  c.train.warmup_steps = 10;
  auto comm = make_host_communicator(DistContext(nullptr, nullptr));
  Trainer tr(c, *comm);
  const double before = tr.evaluate();
  std::ostringstream log;
  tr.run(log);
  const double after = tr.evaluate();
  // Uniform over 16 symbols is ln 16 = 2.77 nats; the bigram entropy of this source is about 2.2;
  // the true conditional entropy is about 0.5.
  EXPECT_GT(before, 2.5);
  EXPECT_LT(after, bigram - 0.3) << "val loss " << after << " vs bigram entropy " << bigram;
  fs::remove_all(dir);
}

// 2N steps in one go == N steps, stop, resume, N steps: bitwise parameters and optimizer state,
// equal metrics records (timings aside). Gradient accumulation 2, the data epoch (5 windows of 25
// tokens, 4 samples a step) wraps several times, and the stop at step 7 is a multiple of neither
// eval_every (4) nor checkpoint_every (5).
TEST(Train, ResumeIsBitwise) {
  const fs::path dir = fresh_dir("resume");
  const int V = 16;
  write_corpus(dir, markov2_corpus(5 * 25 + 3, V, 3), markov2_corpus(400, V, 4));
  RunConfig c = small_run(dir, V);
  c.train.batch_size = 2;
  c.train.grad_accum = 2;
  c.output.checkpoint_every = 5;
  auto comm = make_host_communicator(DistContext(nullptr, nullptr));
  std::ostringstream log;

  RunConfig ca = c;
  ca.output.dir = (dir / "straight").string();
  Trainer a(ca, *comm);
  a.run(log);

  RunConfig cb = c;
  cb.output.dir = (dir / "resumed").string();
  {
    Trainer b1(cb, *comm);
    EXPECT_EQ(b1.run(log, false, 7), 7);
  }
  Trainer b2(cb, *comm);
  EXPECT_EQ(b2.run(log, /*resume*/ true), 12);
  EXPECT_NE(log.str().find("resumed from"), std::string::npos) << log.str();

  EXPECT_EQ(a.model().params_to_host(), b2.model().params_to_host());
  EXPECT_EQ(a.optimizer().m_to_host(), b2.optimizer().m_to_host());
  EXPECT_EQ(a.optimizer().v_to_host(), b2.optimizer().v_to_host());
  EXPECT_EQ(a.optimizer().t(), b2.optimizer().t());
  const auto ma = metrics_without_timings(ca.output.dir + "/metrics.jsonl");
  const auto mb = metrics_without_timings(cb.output.dir + "/metrics.jsonl");
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); i++) EXPECT_EQ(ma[i], mb[i]) << "record " << i;
  fs::remove_all(dir);
}

TEST(Train, NonFiniteLossStopsNamingTheStep) {
  const fs::path dir = fresh_dir("nan");
  write_corpus(dir, markov2_corpus(3000, 16, 5), markov2_corpus(400, 16, 6));
  RunConfig c = small_run(dir, 16);
  c.train.lr = 1e30f;  // the first update blows the weights up; step 2 sees inf/nan
  c.train.warmup_steps = 0;
  c.train.grad_clip = 0;
  auto comm = make_host_communicator(DistContext(nullptr, nullptr));
  Trainer tr(c, *comm);
  std::ostringstream log;
  try {
    tr.run(log);
    FAIL() << "training with lr 1e30 did not stop";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("at step 2"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(Train, InitFromStartsFromCheckpointWeights) {
  const fs::path dir = fresh_dir("init");
  write_corpus(dir, markov2_corpus(3000, 16, 7), markov2_corpus(400, 16, 8));
  RunConfig c = small_run(dir, 16);
  c.train.steps = 3;
  auto comm = make_host_communicator(DistContext(nullptr, nullptr));
  std::ostringstream log;
  Trainer first(c, *comm);
  first.run(log);
  const auto trained = first.model().params_to_host();

  RunConfig c2 = c;
  c2.output.dir = (dir / "finetune").string();
  c2.train.seed = 999;  // a different init seed must not matter
  c2.train.init_from = c.output.dir + "/" + checkpoint_file_name(3);
  Trainer second(c2, *comm);
  EXPECT_EQ(second.model().params_to_host(), trained);
  EXPECT_EQ(second.steps_done(), 0);
  EXPECT_EQ(second.optimizer().t(), 0);
  fs::remove_all(dir);
}

// SIGUSR1 to a real training process: it finishes the step, checkpoints, exits 0; --resume then
// completes the run.
TEST(Train, SignalCheckpointsAndExitsZero) {
  const fs::path dir = fresh_dir("signal");
  write_corpus(dir, markov2_corpus(20000, 16, 9), markov2_corpus(400, 16, 10));
  std::ofstream(dir / "c.yaml") << "model: {vocab_size: 16, d_model: 32, n_layers: 2, n_heads: 2, max_seq_len: 32}\n"
                                << "train: {batch_size: 4, seq_len: 24, steps: 100000, eval_every: 0, threads: 1}\n"
                                << "data: {train: '" << (dir / "*train*.bin").string() << "'}\n"
                                << "output: {dir: '" << (dir / "run").string() << "'}\n";
  const std::string log_path = (dir / "log.txt").string();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    freopen(log_path.c_str(), "w", stdout);
    execl(KVT_BINARY, KVT_BINARY, "train", "--config", (dir / "c.yaml").c_str(), nullptr);
    _exit(127);
  }
  // Wait until it has done a few steps.
  bool training = false;
  for (int i = 0; i < 600 && !training; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::ifstream in(log_path);
    std::string s((std::istreambuf_iterator<char>(in)), {});
    training = s.find("step      3/") != std::string::npos;
  }
  ASSERT_TRUE(training) << "kvtrain did not start training within 60 s";
  kill(pid, SIGUSR1);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "kvtrain did not exit normally";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::ifstream in(log_path);
  const std::string out((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(out.find("stopped by signal"), std::string::npos) << out;
  const auto ckpts = list_checkpoints((dir / "run").string());
  ASSERT_FALSE(ckpts.empty()) << out;
  std::string why;
  EXPECT_TRUE(checkpoint_verify(ckpts.front(), &why)) << why;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kvt

// Data-parallel training under a real mpirun (docs/design.md, "Data" and "Distribution"; issue 5). Each test launches
// `mpirun -np N` on kvtrain or on tests/tools/mpi_driver (a per-step observer of the Trainer) and
// checks what the ranks wrote:
//  * 2 ranks x batch B == 1 rank x batch 2B, step by step: loss, gradient norm, the reduced
//    gradient buffer and the parameters; every rank bitwise equal to rank 0 after every step.
//  * a checkpoint written by 2 ranks resumes on 1 and on 3 ranks at the same loader cursor: the
//    sample indices read after the resume are exactly the continuation, none repeated or skipped.
//  * faults: an error on one rank (at start-up or mid-run) ends the whole job non-zero within
//    seconds; a config that differs between ranks stops the job naming the rank; SIGUSR1 to
//    mpirun stops every rank at the same step with a checkpoint and exit 0.
// Tiny models and few steps: each test runs in seconds on 2 busy cores.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "data/shard.h"
#include "kernels/common/rng.h"
#include "train/checkpoint.h"
#include "model_checks.h"
#include "mpi_harness.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace kvt {
namespace {

using namespace kvt::testutil;

using namespace kvt::mpitest;

// ---- equivalence ---------------------------------------------------------------------------

TEST(MpiTrain, TwoRanksMatchOneRankWithTheWholeBatch) {
  const Corpus c = make_corpus("equiv", "global_batch: 4, steps: 4");
  const fs::path two = c.dir / "two", one = c.dir / "one";
  ASSERT_EQ(run(mpirun(concat({"-np", "2"}, driver(c, two))), c.dir / "two.log"), 0) << slurp(c.dir / "two.log");
  ASSERT_EQ(run(driver(c, one), c.dir / "one.log"), 0) << slurp(c.dir / "one.log");

  const auto r0 = read_rank(two, 0), r1 = read_rank(two, 1), solo = read_rank(one, 0);
  ASSERT_EQ(r0.size(), 4u) << slurp(c.dir / "two.log");
  ASSERT_EQ(r1.size(), 4u);
  ASSERT_EQ(solo.size(), 4u) << slurp(c.dir / "one.log");
  double prev_loss = 0;
  for (int64_t s = 1; s <= 4; s++) {
    const StepRec &a = r0.at(s), &b = r1.at(s), &o = solo.at(s);
    // Both ranks hold bitwise what rank 0 holds, and report the same reduced loss and norm.
    EXPECT_EQ(a.same_params, 1) << "step " << s;
    EXPECT_EQ(a.same_grads, 1) << "step " << s;
    EXPECT_EQ(b.same_params, 1) << "step " << s;
    EXPECT_EQ(a.loss, b.loss);
    EXPECT_EQ(a.gnorm, b.gnorm);
    // Each rank read its half of the step's global batch; together exactly the one rank's.
    const uint64_t g0 = static_cast<uint64_t>(s - 1) * 4;
    EXPECT_EQ(a.samples, (std::vector<uint64_t>{g0, g0 + 1})) << "step " << s;
    EXPECT_EQ(b.samples, (std::vector<uint64_t>{g0 + 2, g0 + 3})) << "step " << s;
    EXPECT_EQ(o.samples, (std::vector<uint64_t>{g0, g0 + 1, g0 + 2, g0 + 3})) << "step " << s;
    // Same loss, gradient norm, reduced gradient and parameters as one rank with batch 2B.
    EXPECT_LT(rel_diff(a.loss, o.loss), 1e-6) << "step " << s << ": " << a.loss << " vs " << o.loss;
    EXPECT_LT(rel_diff(a.gnorm, o.gnorm), 1e-6) << "step " << s << ": " << a.gnorm << " vs " << o.gnorm;
    const auto g2 = read_floats(two / ("grads_" + std::to_string(s) + ".bin"));
    const auto g1 = read_floats(one / ("grads_" + std::to_string(s) + ".bin"));
    ASSERT_FALSE(g1.empty());
    EXPECT_LT(rel_l2(g2, g1), 1e-6) << "step " << s;
    const auto p2 = read_floats(two / ("params_" + std::to_string(s) + ".bin"));
    const auto p1 = read_floats(one / ("params_" + std::to_string(s) + ".bin"));
    // AdamW's first steps move a weight by about lr whatever its gradient's size, so a weight whose
    // gradient is near eps (1e-8) keeps float-rounding noise at ~lr x 1e-4: hence 5e-6, not 1e-6.
    EXPECT_LT(rel_l2(p2, p1), 1e-6) << "step " << s;
    EXPECT_LT(max_abs_diff(p2, p1), 5e-6) << "step " << s;
    // Training moves: a silently idle step would also "agree".
    EXPECT_NE(a.loss, prev_loss);
    EXPECT_GT(a.gnorm, 0);
    prev_loss = a.loss;
    std::printf("step %lld: loss rel %.2e | gnorm rel %.2e | grads rel-L2 %.2e | params rel-L2 %.2e, max abs %.2e\n",
                static_cast<long long>(s), rel_diff(a.loss, o.loss), rel_diff(a.gnorm, o.gnorm),
                rel_l2(g2, g1), rel_l2(p2, p1), max_abs_diff(p2, p1));
  }
  fs::remove_all(c.dir);
}

// ---- resume on another world size ----------------------------------------------------------

TEST(MpiTrain, CheckpointOfTwoRanksResumesOnOneAndOnThree) {
  const int64_t G = 6, stop = 2, steps = 5;
  const Corpus c = make_corpus("resume", "global_batch: 6, steps: 5");
  const fs::path straight = c.dir / "straight", first = c.dir / "first";
  ASSERT_EQ(run(mpirun(concat({"-np", "2"}, driver(c, straight))), c.dir / "straight.log"), 0)
      << slurp(c.dir / "straight.log");
  ASSERT_EQ(run(mpirun(concat({"-np", "2"}, driver(c, first, {"--stop-after", std::to_string(stop)}))),
                c.dir / "first.log"), 0)
      << slurp(c.dir / "first.log");

  // The checkpoint holds the cursor as a global sample index, valid for any world size.
  const auto ckpts = list_checkpoints((first / "run").string());
  ASSERT_EQ(ckpts.size(), 1u) << slurp(c.dir / "first.log");
  const CheckpointSummary sum = read_checkpoint_summary(ckpts.front());
  EXPECT_EQ(sum.step, stop);
  EXPECT_EQ(sum.world_size, 2);

  const auto ref = read_rank(straight, 0);
  ASSERT_EQ(ref.size(), static_cast<size_t>(steps));
  for (int world : {1, 3}) {
    SCOPED_TRACE("resumed on " + std::to_string(world) + " rank(s)");
    const fs::path out = c.dir / ("on" + std::to_string(world));
    fs::create_directories(out);
    fs::copy(first / "run", out / "run", fs::copy_options::recursive);
    std::vector<std::string> cmd = driver(c, out, {"--resume"});
    if (world > 1) cmd = mpirun(concat({"-np", std::to_string(world)}, cmd));
    const fs::path log = c.dir / ("on" + std::to_string(world) + ".log");
    ASSERT_EQ(run(cmd, log), 0) << slurp(log);
    EXPECT_NE(slurp(log).find("resumed from"), std::string::npos) << slurp(log);

    // Every sample of the run read exactly once, in order: steps 1..stop by the 2 ranks before the
    // checkpoint, steps stop+1.. by the `world` ranks after it.
    std::vector<uint64_t> seen;
    for (int r = 0; r < 2; r++)
      for (const auto& [s, rec] : read_rank(first, r)) seen.insert(seen.end(), rec.samples.begin(), rec.samples.end());
    std::vector<std::map<int64_t, StepRec>> ranks;
    for (int r = 0; r < world; r++) ranks.push_back(read_rank(out, r));
    for (int64_t s = stop + 1; s <= steps; s++) {
      std::vector<uint64_t> step_samples;
      for (int r = 0; r < world; r++) {
        ASSERT_TRUE(ranks[r].count(s)) << "rank " << r << " has no step " << s << "\n" << slurp(log);
        const StepRec& rec = ranks[r].at(s);
        EXPECT_EQ(rec.samples.size(), static_cast<size_t>(G / world));
        EXPECT_EQ(rec.same_params, 1) << "step " << s;
        EXPECT_EQ(rec.next, static_cast<uint64_t>(s * G));
        step_samples.insert(step_samples.end(), rec.samples.begin(), rec.samples.end());
      }
      std::vector<uint64_t> expect(G);
      for (int64_t i = 0; i < G; i++) expect[i] = static_cast<uint64_t>((s - 1) * G + i);
      EXPECT_EQ(step_samples, expect) << "step " << s;  // rank order = sample order
      seen.insert(seen.end(), step_samples.begin(), step_samples.end());
      // And the training continues as if never interrupted.
      const StepRec& r0 = ranks[0].at(s);
      EXPECT_LT(rel_diff(r0.loss, ref.at(s).loss), 1e-6) << "step " << s;
      EXPECT_LT(rel_diff(r0.gnorm, ref.at(s).gnorm), 1e-6) << "step " << s;
    }
    std::vector<uint64_t> all(static_cast<size_t>(steps * G));
    for (size_t i = 0; i < all.size(); i++) all[i] = i;
    std::vector<uint64_t> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, all) << "samples repeated or skipped";
    const auto p = read_floats(out / ("params_" + std::to_string(steps) + ".bin"));
    const auto pref = read_floats(straight / ("params_" + std::to_string(steps) + ".bin"));
    EXPECT_LT(rel_l2(p, pref), 1e-6);
    EXPECT_LT(max_abs_diff(p, pref), 5e-6);
  }

  // A resume whose global batch differs (batch_size 4 x 1 rank, no global_batch) is refused,
  // saying which train.global_batch continues the run.
  RunConfig other = load_run_config(c.config.string(), {"train.global_batch=0", "train.batch_size=4"});
  auto comm = make_host_communicator(DistContext(nullptr, nullptr));
  Trainer tr(other, *comm);
  try {
    tr.restore(checkpoint_read(ckpts.front(), tr.model().params()));
    FAIL() << "a checkpoint of global batch 6 resumed with global batch 4";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("train.global_batch: 6"), std::string::npos) << e.what();
  }
  fs::remove_all(c.dir);
}

TEST(MpiTrain, GlobalBatchMustBeDivisibleByTheWorld) {
  TrainConfig t;
  t.global_batch = 6;
  t.grad_accum = 1;
  EXPECT_EQ(per_rank_batch_size(t, 1), 6);
  EXPECT_EQ(per_rank_batch_size(t, 2), 3);
  EXPECT_EQ(per_rank_batch_size(t, 3), 2);
  try {
    per_rank_batch_size(t, 4);
    FAIL() << "global batch 6 split over 4 ranks";
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("train.global_batch: 6"), std::string::npos) << m;
    EXPECT_NE(m.find("4 rank(s)"), std::string::npos) << m;
  }
  t.grad_accum = 3;
  EXPECT_EQ(per_rank_batch_size(t, 2), 1);
  t.global_batch = 0;
  t.batch_size = 5;
  EXPECT_EQ(per_rank_batch_size(t, 7), 5);  // 0: batch_size is per rank, the global batch grows
}

// The same error from a real launch: 4 ranks, global batch 6.
TEST(MpiTrain, IndivisibleGlobalBatchStopsTheJob) {
  const Corpus c = make_corpus("indivisible", "global_batch: 6, steps: 2");
  const fs::path log = c.dir / "log";
  const int rc = run(mpirun({"-np", "4", KVT_BINARY, "train", "--config", c.config.string()}), log, 60);
  EXPECT_NE(rc, 0) << slurp(log);
  EXPECT_NE(rc, -1) << "the job hung\n" << slurp(log);
  EXPECT_NE(slurp(log).find("train.global_batch: 6 sequences cannot be split over 4 rank(s)"), std::string::npos)
      << slurp(log);
  fs::remove_all(c.dir);
}

// ---- faults --------------------------------------------------------------------------------

// kvtrain with a shard that only rank 1 cannot read (its working directory holds a truncated
// copy; data.train is relative): rank 1 fails while rank 0 waits in the first all-reduce.
TEST(MpiFault, ErrorOnOneRankEndsTheJob) {
  const fs::path dir = fresh_dir("fault");
  const auto tokens = markov2_corpus(20000, 16, 12);
  for (const char* d : {"a/data", "b/data"}) fs::create_directories(dir / d);
  write_shard((dir / "a/data/c_train_000000.bin").string(), tokens, 1);
  write_shard((dir / "b/data/c_train_000000.bin").string(), tokens, 1);
  fs::resize_file(dir / "b/data/c_train_000000.bin", 1024 + 2 * 1000 + 1);  // truncated, odd size
  write_config(dir / "c.yaml", "data/*train*.bin", "run", "batch_size: 2, steps: 1000");
  const std::vector<std::string> app = {KVT_BINARY, "train", "--config", (dir / "c.yaml").string()};
  const fs::path log = dir / "log";
  const auto t0 = Clock::now();
  const int rc = run(mpirun(concat(concat({"-np", "1", "-wdir", (dir / "a").string()}, app),
                                   concat({":", "-np", "1", "-wdir", (dir / "b").string()}, app))),
                     log, 60);
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  const std::string out = slurp(log);
  EXPECT_NE(rc, -1) << "the job hung\n" << out;
  EXPECT_NE(rc, 0) << out;
  EXPECT_LT(took, 20) << out;
  EXPECT_NE(out.find("error on rank 1"), std::string::npos) << out;
  EXPECT_NE(out.find("c_train_000000.bin"), std::string::npos) << out;
  EXPECT_EQ(out.find("step   1000/"), std::string::npos) << out;
  fs::remove_all(dir);
}

// An error on rank 1 after step 2 of a long run, while rank 0 is in step 3's all-reduce.
TEST(MpiFault, ErrorMidRunOnOneRankEndsTheJob) {
  const Corpus c = make_corpus("midrun", "batch_size: 2, steps: 100000");
  const fs::path log = c.dir / "log";
  const auto t0 = Clock::now();
  const int rc = run(mpirun(concat({"-np", "2"}, driver(c, c.dir / "out"))), log, 60,
                     {{"KVT_TEST_FAIL_RANK", "1"}, {"KVT_TEST_FAIL_STEP", "2"}});
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  const std::string out = slurp(log);
  EXPECT_NE(rc, -1) << "the job hung\n" << out;
  EXPECT_NE(rc, 0) << out;
  EXPECT_LT(took, 20) << out;
  EXPECT_NE(out.find("error on rank 1: injected failure after step 2"), std::string::npos) << out;
  const auto r0 = read_rank(c.dir / "out", 0);
  EXPECT_LT(r0.size(), 100u) << "rank 0 kept training";
  fs::remove_all(c.dir);
}

// Rank 1 started with another learning rate (mpirun's MPMD syntax): the start-up hash check stops
// the job, naming rank 1.
TEST(MpiFault, ConfigMismatchStopsTheJobNamingTheRank) {
  const Corpus c = make_corpus("mismatch", "batch_size: 2, steps: 1000");
  const std::vector<std::string> app = {KVT_BINARY, "train", "--config", c.config.string()};
  const fs::path log = c.dir / "log";
  const int rc = run(mpirun(concat(concat({"-np", "1"}, app),
                                   concat({":", "-np", "1"}, concat(app, {"--set", "train.lr=0.01"})))),
                     log, 60);
  const std::string out = slurp(log);
  EXPECT_NE(rc, -1) << "the job hung\n" << out;
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("the config of rank 1 differs from rank 0's"), std::string::npos) << out;
  EXPECT_EQ(out.find("step      1/"), std::string::npos) << "trained with mismatched configs\n" << out;
  fs::remove_all(c.dir);
}

// SIGUSR1 to mpirun (as a scheduler sends it): forwarded to every rank; the flag is max-reduced so
// all stop after the same step; rank 0 checkpoints that step; exit 0. The checkpoint resumes.
TEST(MpiFault, SigusrToMpirunStopsEveryRankAtTheSameStep) {
  const Corpus c = make_corpus("sigusr", "batch_size: 2, steps: 100000");
  const std::vector<std::string> cmd = mpirun({"-np", "2", KVT_BINARY, "train", "--config", c.config.string()});
  const fs::path log = c.dir / "log";
  Proc p = start(cmd, log);
  bool training = false;
  for (int i = 0; i < 600 && !training; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    training = slurp(log).find("step      3/") != std::string::npos;
  }
  if (!training) kill(-p.pid, SIGKILL);
  ASSERT_TRUE(training) << "no training within 60 s\n" << slurp(log);
  kill(p.pid, SIGUSR1);
  const int rc = wait_for(p, 30);
  const std::string out = slurp(log);
  ASSERT_EQ(rc, 0) << out;
  const size_t at = out.find("stopped by signal 10 at step ");
  ASSERT_NE(at, std::string::npos) << out;
  const int64_t step = std::stoll(out.substr(at + std::strlen("stopped by signal 10 at step ")));
  // Both ranks saw the signal (each prints the notice once) and none trained past the step.
  size_t notices = 0;
  for (size_t pos = 0; (pos = out.find("kvtrain: stop requested", pos)) != std::string::npos; pos++) notices++;
  EXPECT_EQ(notices, 2u) << out;
  char next[32];
  std::snprintf(next, sizeof next, "step %6lld/", static_cast<long long>(step + 1));
  EXPECT_EQ(out.find(next), std::string::npos) << out;
  const auto ckpts = list_checkpoints((c.dir / "run").string());
  ASSERT_EQ(ckpts.size(), 1u) << out;
  EXPECT_EQ(read_checkpoint_summary(ckpts.front()).step, step);
  EXPECT_EQ(read_checkpoint_summary(ckpts.front()).world_size, 2);
  std::string why;
  EXPECT_TRUE(checkpoint_verify(ckpts.front(), &why)) << why;
  fs::remove_all(c.dir);
}

}  // namespace
}  // namespace kvt

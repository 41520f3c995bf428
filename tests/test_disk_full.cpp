// A full disk during a checkpoint, through the CLI (docs/design.md, "Failures and resources"):
// `kvtrain train` with output.dir on a 3.5 MB tmpfs exits 1 (not a signal) with one line naming
// the temporary and "no space left", leaves no temporary, keeps the earlier checkpoints and
// `latest` intact, and resumes once space is freed. The gate files (gates.h5) and the gate
// context cache on a full disk: one line, no temporary, the earlier gates.h5 intact. The disk is
// a small tmpfs (tests/small_disk.h: as root, or in a user namespace otherwise).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/shard.h"
#include "kernels/common/rng.h"
#include "small_disk.h"
#include "train/checkpoint.h"
#include "train/checkpoint_commit.h"
#include "train/context_cache.h"

namespace fs = std::filesystem;
using namespace kvt;

namespace {

struct CliRun {
  int status = -1;
  std::string out, err;
};

// Runs kvtrain with `args` (exec'd, so the status is the binary's own, signals included).
CliRun kvtrain(const std::string& args, const fs::path& dir) {
  const fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string cmd = "OMP_NUM_THREADS=1 exec " + std::string(KVT_BINARY) + " " + args + " >" + out.string() +
                          " 2>" + err.string();
  CliRun r;
  r.status = std::system(cmd.c_str());
  auto slurp = [](const fs::path& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

std::vector<std::string> temporaries(const fs::path& dir) {
  std::vector<std::string> t;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".tmp") t.push_back(e.path().filename().string());
  return t;
}

}  // namespace

TEST(DiskFull, CheckpointFailsInOneLineAndTheRunResumes) {
  test::SmallDisk disk(3500000);
  ASSERT_TRUE(disk.ok()) << disk.reason();
  const fs::path work = fs::temp_directory_path() / ("kvt_test_disk_full_" + std::to_string(getpid()));
  fs::remove_all(work);
  fs::create_directories(work);
  std::vector<uint32_t> tokens(20000);
  Rng rng(1);
  for (uint32_t& t : tokens) t = static_cast<uint32_t>(rng.below(512));
  write_shard((work / "train.bin").string(), tokens, 1);
  const fs::path run = fs::path(disk.dir()) / "run";
  // About 1.4 MB per checkpoint: steps 2 and 4 fit, step 6 does not.
  std::ofstream(work / "c.yaml")
      << "model: {vocab_size: 512, d_model: 64, n_layers: 2, n_heads: 2, n_kv_heads: 2, d_ff: 128, max_seq_len: 32}\n"
      << "train: {batch_size: 2, seq_len: 16, steps: 20, eval_every: 0, threads: 1}\n"
      << "data: {train: '" << (work / "train.bin").string() << "', val: ''}\n"
      << "output: {dir: '" << run.string() << "', checkpoint_every: 2, keep_last: 10}\n";

  const CliRun full = kvtrain("train --config " + (work / "c.yaml").string(), work);
  ASSERT_TRUE(WIFEXITED(full.status)) << "killed by signal " << WTERMSIG(full.status) << "\n" << full.err;
  EXPECT_EQ(WEXITSTATUS(full.status), 1) << full.err;
  EXPECT_EQ(std::count(full.err.begin(), full.err.end(), '\n'), 1) << full.err;
  EXPECT_NE(full.err.find(".ckpt_00000006.h5.tmp: no space left on device (needs "), std::string::npos) << full.err;
  EXPECT_NE(full.err.find(" free)"), std::string::npos) << full.err;
  EXPECT_TRUE(temporaries(run).empty()) << temporaries(run).front();
  for (int step : {2, 4}) {
    std::string why;
    EXPECT_TRUE(checkpoint_verify((run / checkpoint_file_name(step)).string(), &why)) << why;
  }
  EXPECT_FALSE(fs::exists(run / checkpoint_file_name(6)));
  const auto latest = read_hash_line((run / "latest").string());
  EXPECT_EQ(latest.second, checkpoint_file_name(4));
  EXPECT_EQ(latest.first, sha256_file_hex((run / checkpoint_file_name(4)).string()));

  // Space freed: the run resumes from step 4 and finishes.
  fs::remove(run / checkpoint_file_name(2));
  const CliRun resumed =
      kvtrain("train --config " + (work / "c.yaml").string() + " --resume --set output.keep_last=1", work);
  ASSERT_TRUE(WIFEXITED(resumed.status)) << resumed.err;
  EXPECT_EQ(WEXITSTATUS(resumed.status), 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resumed from " + (run / checkpoint_file_name(4)).string() + " at step 4"),
            std::string::npos)
      << resumed.out;
  EXPECT_EQ(list_checkpoints(run.string()), std::vector<std::string>{(run / checkpoint_file_name(20)).string()});
  fs::remove_all(work);
}

namespace {
// A gate-file state of `n` floats (params, and the optimizer's two buffers) for table {gates: [n]}.
CheckpointState gate_state(const ParamTable& t) {
  CheckpointState s;
  s.format = kGatesFormatName;
  s.step = 1;
  s.config_yaml = "gates: {}\n";
  s.params.assign(t.total(), 0.5f);
  s.adam_m.assign(t.total(), 0.0f);
  s.adam_v.assign(t.total(), 0.0f);
  return s;
}

// The message of the exception `f` throws ("" when none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(DiskFull, GateFileAndContextCacheFailInOneLine) {
  test::SmallDisk disk(1 << 20);
  ASSERT_TRUE(disk.ok()) << disk.reason();
  const std::string dir = disk.dir();
  ParamTable small, big;
  small.add("gates.w", {64}, false);
  big.add("gates.w", {100000}, false);  // 3 x 400 kB: does not fit in 1 MiB
  checkpoint_write_file_atomic(dir, "gates.h5", small, gate_state(small));
  const std::string before = sha256_file_hex(dir + "/gates.h5");

  const std::string gates_err = error_of([&] { checkpoint_write_file_atomic(dir, "gates.h5", big, gate_state(big)); });
  EXPECT_NE(gates_err.find("gates.h5.tmp: no space left on device (needs "), std::string::npos) << gates_err;
  EXPECT_EQ(gates_err.find('\n'), std::string::npos) << gates_err;
  EXPECT_TRUE(temporaries(dir).empty()) << temporaries(dir).front();
  EXPECT_EQ(sha256_file_hex(dir + "/gates.h5"), before) << "the earlier gates.h5 changed";
  std::string why;
  EXPECT_TRUE(checkpoint_verify(dir + "/gates.h5", &why)) << why;

  // Context cache: one context of 2 x 1200 x 300 bf16 gate inputs (1.4 MB).
  const ContextCache cache(dir + "/contexts", "key\n", 1200, 300, 2, 2);
  const std::vector<uint16_t> hidden(2 * 1200 * 300, 0x3f80);
  const std::vector<float> targets(2 * 2 * 1200, 0.25f);
  const std::string cache_err = error_of([&] { cache.store("train_0", hidden, targets); });
  EXPECT_NE(cache_err.find("train_0.bin.tmp: no space left on device"), std::string::npos) << cache_err;
  EXPECT_EQ(cache_err.find('\n'), std::string::npos) << cache_err;
  EXPECT_TRUE(temporaries(dir + "/contexts").empty()) << temporaries(dir + "/contexts").front();
  std::vector<uint16_t> h;
  std::vector<float> t;
  EXPECT_FALSE(cache.load("train_0", h, t)) << "a context that failed to store must not load";
}

// Checkpoint format version 1 still loads (tests/data/checkpoint_v1, written by the version-1
// writer with make_fixture.sh): its weights, step, loader cursor and global batch read back, it
// verifies, and training resumes from it exactly as from the same state saved as version 2.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "dist/dist.h"
#include "model/transformer.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace kvt;

namespace {

const fs::path kFixture = fs::path(KVT_SOURCE_DIR) / "tests" / "data" / "checkpoint_v1";

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("kvt_test_v1_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// The fixture's run config with its shard found in the source tree and the run in `run_dir`.
RunConfig fixture_config(const fs::path& run_dir) {
  RunConfig c = load_run_config((kFixture / "run.yaml").string(),
                                {"data.train=" + (kFixture / "train.bin").string(), "output.dir=" + run_dir.string()});
  return c;
}

std::string ckpt(int step) { return (kFixture / checkpoint_file_name(step)).string(); }

void copy_with_sidecar(const std::string& from, const fs::path& dir) {
  fs::create_directories(dir);
  fs::copy_file(from, dir / fs::path(from).filename());
  fs::copy_file(from + ".sha256", dir / (fs::path(from).filename().string() + ".sha256"));
}

}  // namespace

TEST(CheckpointV1, ReadsWeightsStepCursorAndGlobalBatch) {
  const RunConfig c = fixture_config("unused");
  const ParamTable table = build_param_table(c.model, c.train.decay_embeddings);
  const CheckpointState s = checkpoint_read(ckpt(4), table);
  EXPECT_EQ(s.format_version, 1);
  EXPECT_EQ(s.step, 4);
  EXPECT_EQ(s.global_batch, 4);  // batch 2 x grad_accum 2 x 1 rank, from the stored config
  EXPECT_EQ(s.loader_seed, 99u);
  EXPECT_EQ(s.loader_next_sample, 16u);
  EXPECT_EQ(s.adam_step, 4);
  EXPECT_EQ(s.tokens_seen, 4 * 4 * 12);
  ASSERT_EQ(s.params.size(), table.total());
  // The weights are trained ones: not the initialisation of the same seed.
  const ModelCheckpoint m = load_model_checkpoint(ckpt(4));
  EXPECT_EQ(m.step, 4);
  EXPECT_EQ(m.params, s.params);
  const CheckpointState s2 = checkpoint_read(ckpt(2), table);
  EXPECT_NE(s2.params, s.params);
  std::string why;
  EXPECT_TRUE(checkpoint_verify(ckpt(4), &why)) << why;
  const CheckpointSummary sum = read_checkpoint_summary(ckpt(4));
  EXPECT_EQ(sum.format_version, 1);
  EXPECT_EQ(sum.global_batch, 0);  // not stored in version 1
}

TEST(CheckpointV1, ResumesLikeTheSameStateSavedAsVersion2) {
  configure_threads(1, 1);
  const fs::path dir = fresh_dir("resume");
  auto comm = make_host_communicator(DistContext(nullptr, nullptr));
  std::ostringstream log;

  // From the version-1 file at step 2 to step 4.
  copy_with_sidecar(ckpt(2), dir / "from_v1");
  Trainer a(fixture_config(dir / "from_v1"), *comm);
  EXPECT_EQ(a.run(log, /*resume=*/true), 4);
  EXPECT_NE(log.str().find("resumed from " + (dir / "from_v1" / "ckpt_00000002.h5").string() + " at step 2"),
            std::string::npos)
      << log.str();
  EXPECT_EQ(a.next_sample(), 16u);

  // The same state written by this version (format 2), resumed the same way.
  const RunConfig cb = fixture_config(dir / "from_v2");
  {
    Trainer saver(cb, *comm);
    saver.restore(checkpoint_read(ckpt(2), saver.model().params()));
    saver.save_checkpoint();
    EXPECT_EQ(read_checkpoint_summary((dir / "from_v2" / "ckpt_00000002.h5").string()).format_version, 2);
  }
  Trainer b(cb, *comm);
  EXPECT_EQ(b.run(log, /*resume=*/true), 4);
  EXPECT_EQ(a.model().params_to_host(), b.model().params_to_host());
  EXPECT_EQ(a.optimizer().m_to_host(), b.optimizer().m_to_host());
  EXPECT_EQ(a.optimizer().v_to_host(), b.optimizer().v_to_host());

  // And close to what the version-1 code itself reached at step 4 (bitwise while the kernels are
  // unchanged; a tolerance so that a kernel change does not read as a format break).
  const CheckpointState v1_end = checkpoint_read(ckpt(4), a.model().params());
  const std::vector<float> got = a.model().params_to_host();
  double worst = 0;
  for (size_t i = 0; i < got.size(); i++) worst = std::max(worst, double(std::fabs(got[i] - v1_end.params[i])));
  EXPECT_LT(worst, 1e-4);
  fs::remove_all(dir);
}

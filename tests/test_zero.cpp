// Bucketed gradient reduction and ZeRO-1 (docs/parallel.md).
//  * in process: the bucket plan (top down, multiples of the world, the lowest padded), the
//    launch of each bucket once the backward's ranges cover it (a recording Communicator), and
//    sharded AdamW over a rank's slices equal to the whole update (slices cutting tensors of
//    both decay flags);
//  * under mpirun (tests/tools/mpi_driver): ZeRO-1 equals plain data parallelism step by step
//    (2 and 3 ranks, grad_accum 2, tied embeddings); bucketed and unbucketed reductions give the
//    same gradients; a ZeRO-1 checkpoint holds the same moments as a plain one and resumes on
//    3 ranks with ZeRO-1 and on 1 rank without, continuing as the uninterrupted run.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <set>

#include "kernels/common/rng.h"
#include "model/transformer.h"
#include "mpi_harness.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/grad_sync.h"
#include "train/run_dir.h"

namespace kvt {
namespace {

using namespace kvt::mpitest;

// The model of mpi_harness.h's write_config (tied embeddings, the default).
ParamTable tiny_table() {
  ModelConfig m;
  m.vocab_size = 16;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 2;
  m.d_ff = 64;
  m.max_seq_len = 32;
  m.resolve();
  return build_param_table(m);
}

constexpr float kSmallBucketMb = 0.01f;  // 2621 floats: 9 buckets over the tiny model

// Whether some bucket boundary falls strictly inside a tensor.
bool cuts_a_tensor(const std::vector<GradBucket>& plan, const ParamTable& t) {
  for (const GradBucket& b : plan)
    for (const ParamInfo& e : t.entries())
      if (b.begin > e.offset && b.begin < e.offset + e.numel) return true;
  return false;
}

// ---- the plan ------------------------------------------------------------------------------

TEST(ZeroPlan, BucketsAreTopDownMultiplesOfTheWorldAndSlicesTileTheBuffer) {
  EXPECT_EQ(bucket_floats(0, 3), 0u);
  EXPECT_EQ(bucket_floats(1.0f, 1), 262144u);      // 1 MiB of fp32
  EXPECT_EQ(bucket_floats(1.0f, 3), 262143u);      // rounded down to a multiple of 3
  EXPECT_EQ(bucket_floats(1e-9f, 4), 4u);          // at least one float per rank
  for (int W : {1, 2, 3, 4}) {
    SCOPED_TRACE("world " + std::to_string(W));
    const size_t total = 1001, cap = bucket_floats(0.0003f, W);  // 78 floats, ~13 buckets
    ASSERT_GT(cap, 0u);
    const auto plan = plan_buckets(total, cap, W);
    ASSERT_GT(plan.size(), 10u);
    size_t hi = total, local = 0;
    for (size_t i = 0; i < plan.size(); i++) {
      const GradBucket& b = plan[i];
      EXPECT_EQ(b.end, hi) << "bucket " << i;  // top down, contiguous
      EXPECT_EQ(b.local, local);
      EXPECT_GE(b.padded, b.end - b.begin);
      EXPECT_EQ(b.padded, b.shard * W);
      if (i + 1 < plan.size()) {
        EXPECT_EQ((b.end - b.begin) % W, 0u) << "bucket " << i;
      }
      hi = b.begin;
      local += b.shard;
    }
    EXPECT_EQ(hi, 0u);
    // Every float is owned by exactly one rank, in a range that fits its shard.
    std::vector<int> owner(total, -1);
    for (int r = 0; r < W; r++)
      for (const OwnedRange& o : owned_ranges(plan, r))
        for (size_t i = o.begin; i < o.end; i++) {
          EXPECT_EQ(owner[i], -1) << "float " << i;
          owner[i] = r;
        }
    EXPECT_EQ(std::count(owner.begin(), owner.end(), -1), 0);
  }
  // One bucket when unbucketed; its shard is padded when the world does not divide it.
  const auto one = plan_buckets(1001, 0, 3);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].shard, 334u);
  EXPECT_EQ(one[0].padded, 1002u);
  EXPECT_THROW(plan_buckets(10, 5, 2), std::invalid_argument);
}

// The tiny model's plan of the MPI tests below: several buckets, one boundary inside a tensor,
// and at 3 ranks a padded lowest bucket (the embedding, reduced last).
TEST(ZeroPlan, TheMpiTestsPlanSeveralBucketsCuttingTensors) {
  const ParamTable t = tiny_table();
  for (int W : {2, 3}) {
    const auto plan = plan_buckets(t.total(), bucket_floats(kSmallBucketMb, W), W);
    EXPECT_GE(plan.size(), 5u) << "world " << W;
    EXPECT_TRUE(cuts_a_tensor(plan, t)) << "world " << W;
  }
  const auto p3 = plan_buckets(t.total(), bucket_floats(kSmallBucketMb, 3), 3);
  EXPECT_NE(p3.back().padded, p3.back().end - p3.back().begin);
}

// ---- launches ------------------------------------------------------------------------------

// Records the collectives started (offsets into the gradient buffer); reduces nothing.
struct RecordingComm final : Communicator {
  int r, w;
  const float* base = nullptr;
  size_t total = 0;
  // (offset of the send buffer in the gradients, or kOutside; floats sent)
  static constexpr size_t kOutside = ~size_t{0};
  std::vector<std::pair<size_t, size_t>> started;
  size_t at(const float* p) const {
    return std::less_equal<const float*>()(base, p) && std::less<const float*>()(p, base + total)
               ? static_cast<size_t>(p - base) : kOutside;
  }
  int waits = 0;
  bool device = false;  // answers device_collectives() (NCCL says yes)
  RecordingComm(int rank, int world) : r(rank), w(world) {}
  bool device_collectives() const override { return device; }
  int rank() const override { return r; }
  int world() const override { return w; }
  void allreduce_mean(float*, size_t) override {}
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
  int max_flag(int f) override { return f; }
  void start_allreduce_mean(float* buf, size_t n) override { started.emplace_back(at(buf), n); }
  void start_reduce_scatter_mean(float*, const float* send, size_t shard) override {
    started.emplace_back(at(send), shard * w);
  }
  void start_all_gather(float*, const float*, size_t) override {}
  void wait_all() override { waits++; }
  double sum_double(double x) override { return x; }
};

// One rank: the host communicator's collectives are the identity, so nothing is planned or
// started; a device communicator (NCCL on one rank, the GPU check) runs every bucket.
TEST(ZeroSync, OneRankReducesOnlyOnADeviceCommunicator) {
  auto ops = make_ops("cpu");
  const size_t total = 1000;
  const float mb = 300 * 4 / 1048576.0f;  // 300 floats
  RecordingComm host(0, 1);
  GradSync plain(*ops, host, total, /*zero*/ 1, mb);
  EXPECT_FALSE(plain.sharded());
  EXPECT_FALSE(plain.overlapped());
  RecordingComm device(0, 1);
  device.device = true;
  GradSync sync(*ops, device, total, /*zero*/ 1, mb);
  EXPECT_TRUE(sync.sharded());
  ASSERT_TRUE(sync.overlapped());
  ASSERT_EQ(sync.buckets().size(), 4u);
  Buffer<float> g(*ops, total);
  device.base = g.data();
  device.total = total;
  sync.begin(g.data());
  sync.ready(0, total);
  sync.finish();
  ASSERT_EQ(device.started.size(), 4u);
  EXPECT_EQ(device.started.front(), std::make_pair(size_t{700}, size_t{300}));
  EXPECT_EQ(device.started.back(), std::make_pair(size_t{0}, size_t{100}));
  EXPECT_EQ(device.waits, 1);
}

TEST(ZeroSync, ABucketStartsAsSoonAsTheBackwardHasFinishedIt) {
  auto ops = make_ops("cpu");
  const size_t total = 1000;
  RecordingComm comm(0, 2);
  GradSync sync(*ops, comm, total, /*zero*/ 0, /*bucket_mb*/ 300 * 4 / 1048576.0f);  // 300 floats
  ASSERT_TRUE(sync.overlapped());
  ASSERT_EQ(sync.buckets().size(), 4u);  // [700,1000) [400,700) [100,400) [0,100)
  Buffer<float> g(*ops, total);
  comm.base = g.data();
  comm.total = total;
  sync.begin(g.data());
  sync.ready(800, 1000);
  EXPECT_TRUE(comm.started.empty());  // [700, 1000) is not final yet
  sync.ready(650, 800);
  ASSERT_EQ(comm.started.size(), 1u);
  EXPECT_EQ(comm.started[0], std::make_pair(size_t{700}, size_t{300}));
  sync.ready(100, 650);  // finishes two buckets at once
  ASSERT_EQ(comm.started.size(), 3u);
  EXPECT_EQ(comm.started[2], std::make_pair(size_t{100}, size_t{300}));
  EXPECT_THROW(sync.ready(0, 50), std::logic_error);  // not the continuation of [100, 1000)
  sync.ready(0, 100);  // the (tied) embedding, last
  ASSERT_EQ(comm.started.size(), 4u);
  EXPECT_EQ(comm.waits, 0);
  sync.finish();
  EXPECT_EQ(comm.started.size(), 4u);
  EXPECT_EQ(comm.waits, 1);

  // ZeRO-1: the lowest bucket (100 floats over 3 ranks) goes through the padded staging buffer.
  RecordingComm comm3(1, 3);
  GradSync z(*ops, comm3, total, /*zero*/ 1, 300 * 4 / 1048576.0f);
  ASSERT_TRUE(z.sharded());
  comm3.base = g.data();
  comm3.total = total;
  z.begin(g.data());
  z.finish();  // nothing reported ready: everything starts after the backward
  ASSERT_EQ(comm3.started.size(), 4u);
  EXPECT_EQ(comm3.started[0].first, 700u);
  EXPECT_EQ(comm3.started[3].first, RecordingComm::kOutside) << "the padded bucket is sent from its staging copy";
  EXPECT_EQ(comm3.started[3].second, 102u);
  EXPECT_EQ(z.state_size(), 100u + 100 + 100 + 34);
}

// The model reports its ranges top down and tiling the buffer, the tied embedding last.
TEST(ZeroSync, TheBackwardCoversEveryBucketWithTiedEmbeddings) {
  auto ops = make_ops("cpu");
  ModelConfig m;
  m.vocab_size = 16, m.d_model = 32, m.n_layers = 2, m.n_heads = 2, m.d_ff = 64, m.max_seq_len = 32;
  m.resolve();
  ASSERT_TRUE(m.tie_embeddings);
  Transformer tr(m, *ops, 2, 8, true);
  tr.init_parameters(3);
  RecordingComm comm(0, 2);
  GradSync sync(*ops, comm, tr.params().total(), 1, kSmallBucketMb);
  comm.base = tr.grad_data();
  comm.total = tr.params().total();
  std::vector<int32_t> in(16), tg(16);
  for (int i = 0; i < 16; i++) in[i] = i % 16, tg[i] = (i * 7 + 3) % 16;
  tr.forward(in.data(), tg.data(), 2, 8);
  sync.begin(tr.grad_data());
  size_t before_embedding = 0;
  tr.set_grad_ready([&](size_t b, size_t e) {
    if (b == 0) before_embedding = comm.started.size();
    sync.ready(b, e);
  });
  tr.backward(1.0f);
  EXPECT_EQ(comm.started.size(), sync.buckets().size()) << "every bucket started inside the backward";
  EXPECT_LT(before_embedding, sync.buckets().size()) << "the embedding's bucket waited for its range";
  EXPECT_GT(before_embedding, 0u) << "no bucket started before the end of the backward";
}

// ---- sharded AdamW -------------------------------------------------------------------------

TEST(ZeroAdamW, SlicesOfEveryRankTogetherEqualTheWholeUpdate) {
  auto ops = make_ops("cpu");
  const ParamTable table = tiny_table();
  const size_t P = table.total();
  TrainConfig cfg;
  cfg.weight_decay = 0.1f;
  const int W = 3;
  const auto plan = plan_buckets(P, bucket_floats(kSmallBucketMb, W), W);
  ASSERT_TRUE(cuts_a_tensor(plan, table));
  // Some slice holds elements of a decayed and of a non-decayed tensor: the per-element mask.
  bool mixed = false;
  for (int r = 0; r < W; r++)
    for (const OwnedRange& o : owned_ranges(plan, r)) {
      std::set<bool> flags;
      for (const ParamInfo& e : table.entries())
        if (std::max(o.begin, e.offset) < std::min(o.end, e.offset + e.numel)) flags.insert(e.weight_decay);
      mixed |= flags.size() == 2;
    }
  ASSERT_TRUE(mixed);

  Rng rng(5);
  std::vector<float> p0(P), g(P);
  for (auto& x : p0) x = rng.normal() * 0.1f;
  for (auto& x : g) x = rng.normal() * 0.01f;
  std::vector<float> whole = p0;
  AdamW full(*ops, table, cfg);
  for (int s = 0; s < 3; s++) full.step(whole.data(), g.data(), 1e-2f, 0.7f);

  std::vector<float> assembled(P, std::nanf("")), m_all(P, std::nanf(""));
  const std::vector<float> m_full = full.m_to_host();
  size_t state = 0;
  for (const GradBucket& b : plan) state += b.shard;
  for (int r = 0; r < W; r++) {
    const auto owned = owned_ranges(plan, r);
    std::vector<float> p = p0, gs(state, 0.0f);
    for (const OwnedRange& o : owned) std::copy(g.begin() + o.begin, g.begin() + o.end, gs.begin() + o.local);
    AdamW part(*ops, table, cfg, owned, state);
    for (int s = 0; s < 3; s++) part.step(p.data(), gs.data(), 1e-2f, 0.7f);
    const std::vector<float> m = part.m_to_host();
    for (const OwnedRange& o : owned)
      for (size_t i = o.begin; i < o.end; i++) {
        assembled[i] = p[i];
        m_all[i] = m[o.local + i - o.begin];
      }
    // load() takes the table layout and keeps this rank's slices.
    AdamW again(*ops, table, cfg, owned, state);
    again.load(m_full, full.v_to_host(), full.t());
    EXPECT_EQ(again.m_to_host(), m) << "rank " << r;
    EXPECT_EQ(again.t(), 3);
  }
  EXPECT_EQ(std::memcmp(assembled.data(), whole.data(), P * sizeof(float)), 0);  // bitwise
  EXPECT_EQ(std::memcmp(m_all.data(), m_full.data(), P * sizeof(float)), 0);
  EXPECT_NE(whole, p0);
}

// ---- under mpirun --------------------------------------------------------------------------

const std::string kSmall = "train.bucket_mb=" + std::to_string(kSmallBucketMb);

std::vector<std::string> sets(const std::vector<std::string>& kv) {
  std::vector<std::string> a;
  for (const auto& s : kv) a.insert(a.end(), {"--set", s});
  return a;
}

// One driver run on `world` ranks (no mpirun for 1); asserts it succeeded.
void launch(const Corpus& c, const fs::path& out, int world, const std::vector<std::string>& extra) {
  std::vector<std::string> cmd = driver(c, out, extra);
  if (world > 1) cmd = mpirun(concat({"-np", std::to_string(world)}, cmd));
  const fs::path log = out.string() + ".log";
  ASSERT_EQ(run(cmd, log, 120), 0) << slurp(log);
}

// Steps s of `got` against `want`: loss, norm (1e-6 relative), parameters (1e-6 relative L2,
// 5e-6 absolute: see test_mpi's equivalence test).
void expect_same_run(const fs::path& got, const fs::path& want, int64_t from, int64_t to) {
  const auto a = read_rank(got, 0), b = read_rank(want, 0);
  for (int64_t s = from; s <= to; s++) {
    SCOPED_TRACE("step " + std::to_string(s));
    ASSERT_TRUE(a.count(s) && b.count(s));
    EXPECT_LT(rel_diff(a.at(s).loss, b.at(s).loss), 1e-6) << a.at(s).loss << " vs " << b.at(s).loss;
    EXPECT_LT(rel_diff(a.at(s).gnorm, b.at(s).gnorm), 1e-6) << a.at(s).gnorm << " vs " << b.at(s).gnorm;
    EXPECT_EQ(a.at(s).same_params, 1) << "ranks disagree";
    const auto pa = read_floats(got / ("params_" + std::to_string(s) + ".bin"));
    const auto pb = read_floats(want / ("params_" + std::to_string(s) + ".bin"));
    ASSERT_FALSE(pb.empty());
    EXPECT_LT(rel_l2(pa, pb), 1e-6);
    EXPECT_LT(max_abs_diff(pa, pb), 5e-6);
    std::printf("%s vs %s, step %lld: loss rel %.2e | gnorm rel %.2e | params rel-L2 %.2e, max abs %.2e\n",
                got.filename().c_str(), want.filename().c_str(), static_cast<long long>(s),
                rel_diff(a.at(s).loss, b.at(s).loss), rel_diff(a.at(s).gnorm, b.at(s).gnorm), rel_l2(pa, pb),
                max_abs_diff(pa, pb));
  }
}

class ZeroMpi : public ::testing::TestWithParam<int> {};

// ZeRO-1 with small buckets against plain data parallelism with one all-reduce, and the
// bucketed all-reduce against the single one (the reduced gradient itself), step by step.
TEST_P(ZeroMpi, ZeroAndBucketsMatchPlainDataParallelism) {
  const int W = GetParam();
  const Corpus c = make_corpus("zero" + std::to_string(W), "global_batch: 12, grad_accum: 2, steps: 4");
  const fs::path plain = c.dir / "plain", bucketed = c.dir / "bucketed", zero = c.dir / "zero";
  launch(c, plain, W, sets({"train.zero=0", "train.bucket_mb=0"}));
  launch(c, bucketed, W, sets({"train.zero=0", kSmall}));
  launch(c, zero, W, sets({"train.zero=1", kSmall}));
  expect_same_run(zero, plain, 1, 4);
  expect_same_run(bucketed, plain, 1, 4);
  const auto ref = read_rank(plain, 0);
  ASSERT_EQ(ref.size(), 4u);
  EXPECT_NE(ref.at(1).loss, ref.at(4).loss);  // it trains
  for (int64_t s = 1; s <= 4; s++) {
    const auto gb = read_floats(bucketed / ("grads_" + std::to_string(s) + ".bin"));
    const auto gp = read_floats(plain / ("grads_" + std::to_string(s) + ".bin"));
    ASSERT_FALSE(gp.empty());
    EXPECT_LT(rel_l2(gb, gp), 1e-6) << "step " << s;
    EXPECT_LT(max_abs_diff(gb, gp), 1e-6) << "step " << s;
    EXPECT_EQ(read_rank(bucketed, 1).at(s).same_grads, 1) << "step " << s;
  }
  fs::remove_all(c.dir);
}

INSTANTIATE_TEST_SUITE_P(Ranks, ZeroMpi, ::testing::Values(2, 3));

// A ZeRO-1 checkpoint of 2 ranks: the same moments as a plain checkpoint (gathered into the
// table's layout), and it resumes on 3 ranks with ZeRO-1 and on 1 rank without.
TEST(ZeroCheckpoint, ResumesOnAnotherWorldSizeAsTheUninterruptedRun) {
  const int64_t stop = 2, steps = 4;
  const Corpus c = make_corpus("zckpt", "global_batch: 12, grad_accum: 2, steps: 4");
  const auto z1 = sets({"train.zero=1", kSmall});
  const fs::path straight = c.dir / "straight", first = c.dir / "first", plain = c.dir / "plain";
  launch(c, straight, 2, z1);
  launch(c, first, 2, concat(z1, {"--stop-after", std::to_string(stop)}));
  launch(c, plain, 2, {"--stop-after", std::to_string(stop), "--set", "train.zero=0"});

  const auto zc = list_checkpoints((first / "run").string()), pc = list_checkpoints((plain / "run").string());
  ASSERT_EQ(zc.size(), 1u);
  ASSERT_EQ(pc.size(), 1u);
  const ParamTable table = tiny_table();
  const CheckpointState zs = checkpoint_read(zc.front(), table), ps = checkpoint_read(pc.front(), table);
  EXPECT_EQ(zs.adam_step, stop);
  EXPECT_LT(rel_l2(zs.adam_m, ps.adam_m), 1e-6);
  EXPECT_LT(rel_l2(zs.adam_v, ps.adam_v), 1e-6);
  EXPECT_LT(rel_l2(zs.params, ps.params), 1e-6);
  // Every slice was gathered: no moment left at its initial zero.
  EXPECT_EQ(std::count(zs.adam_v.begin(), zs.adam_v.end(), 0.0f), std::count(ps.adam_v.begin(), ps.adam_v.end(), 0.0f));
  EXPECT_LT(std::count(zs.adam_v.begin(), zs.adam_v.end(), 0.0f), static_cast<long>(zs.adam_v.size() / 2));

  for (const auto& [world, zero] : {std::pair{3, 1}, std::pair{1, 0}}) {
    SCOPED_TRACE("resumed on " + std::to_string(world) + " rank(s), zero " + std::to_string(zero));
    const fs::path out = c.dir / ("on" + std::to_string(world));
    fs::create_directories(out);
    fs::copy(first / "run", out / "run", fs::copy_options::recursive);
    launch(c, out, world, concat(sets({"train.zero=" + std::to_string(zero), kSmall}), {"--resume"}));
    ASSERT_EQ(read_rank(out, 0).begin()->first, stop + 1);
    expect_same_run(out, straight, stop + 1, steps);
  }
  fs::remove_all(c.dir);
}

}  // namespace
}  // namespace kvt

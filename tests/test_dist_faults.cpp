// The fault paths of the device communicator on CPU (docs/nccl.md): CollectiveGuard driven by a
// fake communicator that fails on cue and a fake clock, and the pure device / NCCL choices.
// NCCL refuses two ranks on one GPU, so these are the only tests of the NCCL fault handling.
#include <gtest/gtest.h>

#include <deque>
#include <string>
#include <vector>

#include "dist/comm_guard.h"
#include "dist/device_choice.h"

namespace kvt {
namespace {

// Every call of the fakes, in order: "abort_comm", "abort_process", "finalize", "destroy".
using Log = std::vector<std::string>;

// Answers from scripts; once a script is used up it keeps answering its last entry.
class FakeComm final : public GuardedComm {
 public:
  explicit FakeComm(Log& log) : log_(log) {}
  std::deque<Poll> done{Poll::ok()}, async{Poll::ok()}, fin{Poll::ok()};
  int done_polls = 0, async_polls = 0;

  Poll work_done() override {
    done_polls++;
    return next(done);
  }
  Poll async_error() override {
    async_polls++;
    return next(async);
  }
  Poll finalize() override {
    log_.push_back("finalize");
    return next(fin);
  }
  void destroy() noexcept override { log_.push_back("destroy"); }
  void abort_comm() noexcept override { log_.push_back("abort_comm"); }

 private:
  static Poll next(std::deque<Poll>& q) {
    Poll p = q.front();
    if (q.size() > 1) q.pop_front();
    return p;
  }
  Log& log_;
};

// A clock that advances one second per pause; abort_process records and returns.
class FakeEnv final : public GuardEnv {
 public:
  explicit FakeEnv(Log& log) : log_(log) {}
  double t = 0.0;
  std::string message;
  double aborted_at = -1.0;

  double now_s() override { return t; }
  void pause() override { t += 1.0; }
  void abort_process(const std::string& m) override {
    log_.push_back("abort_process");
    message = m;
    aborted_at = t;
  }

 private:
  Log& log_;
};

std::deque<Poll> pending_then(int n, Poll last) {
  std::deque<Poll> q(static_cast<size_t>(n), Poll::pending());
  q.push_back(std::move(last));
  return q;
}

struct Fixture {
  Log log;
  FakeComm comm{log};
  FakeEnv env{log};
  CollectiveGuard guard{comm, env, 600.0};
};

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// (a) An asynchronous error mid-collective: communicator aborted before the process, once.
TEST(CollectiveGuard, AsyncErrorMidCollectiveAbortsCommThenProcessOnce) {
  Fixture f;
  f.comm.done = {Poll::pending()};
  f.comm.async = {Poll::ok(), Poll::ok(), Poll::error("remote process exited or there was a network error")};
  f.guard.enqueue("ncclAllReduce", Poll::ok());
  EXPECT_THROW(f.guard.wait(), CommAborted);
  EXPECT_EQ(f.log, (Log{"abort_comm", "abort_process"}));
  EXPECT_TRUE(contains(f.env.message, "ncclAllReduce")) << f.env.message;
  EXPECT_TRUE(contains(f.env.message, "remote process exited")) << f.env.message;
  EXPECT_EQ(f.env.message.find('\n'), std::string::npos);
  // Afterwards: every use throws, nothing is aborted again, teardown leaves it alone.
  EXPECT_THROW(f.guard.enqueue("ncclAllReduce", Poll::ok()), CommAborted);
  EXPECT_THROW(f.guard.wait(), CommAborted);
  EXPECT_EQ(f.guard.close(), CollectiveGuard::Closed::already_aborted);
  EXPECT_EQ(f.log, (Log{"abort_comm", "abort_process"}));
}

// (b) A collective that never finishes: aborted at the timeout, naming it and the timeout.
TEST(CollectiveGuard, TimeoutAbortsNamingCollectiveAndTimeout) {
  Fixture f;
  f.comm.done = {Poll::pending()};
  f.guard.enqueue("ncclReduceScatter", Poll::ok());
  EXPECT_THROW(f.guard.wait(), CommAborted);
  EXPECT_EQ(f.log, (Log{"abort_comm", "abort_process"}));
  EXPECT_TRUE(contains(f.env.message, "ncclReduceScatter")) << f.env.message;
  EXPECT_TRUE(contains(f.env.message, "600 s")) << f.env.message;
  EXPECT_TRUE(contains(f.env.message, "train.comm_timeout_s")) << f.env.message;
  EXPECT_GE(f.env.aborted_at, 600.0);  // not before the timeout
  EXPECT_LT(f.env.aborted_at, 601.5);  // nor long after it
}

// (b) The wait names every collective in flight.
TEST(CollectiveGuard, TimeoutNamesEveryCollectiveInFlight) {
  Fixture f;
  f.comm.done = {Poll::pending()};
  f.guard.enqueue("ncclAllReduce", Poll::ok());
  f.guard.enqueue("ncclAllReduce", Poll::ok());
  f.guard.enqueue("ncclAllGather", Poll::ok());
  EXPECT_THROW(f.guard.wait(), CommAborted);
  EXPECT_TRUE(contains(f.env.message, "ncclAllReduce x2, ncclAllGather")) << f.env.message;
}

// (b) An enqueue (or init) stuck in ncclInProgress times out the same way.
TEST(CollectiveGuard, CallStuckInProgressTimesOut) {
  Fixture f;
  f.comm.async = {Poll::pending()};
  EXPECT_THROW(f.guard.settle("ncclCommInitRankConfig", Poll::pending()), CommAborted);
  EXPECT_EQ(f.log, (Log{"abort_comm", "abort_process"}));
  EXPECT_TRUE(contains(f.env.message, "ncclCommInitRankConfig")) << f.env.message;
  EXPECT_TRUE(contains(f.env.message, "600 s")) << f.env.message;
}

// A call that fails at once: no polling, aborted once, the error named.
TEST(CollectiveGuard, FailedCallAbortsAtOnce) {
  Fixture f;
  EXPECT_THROW(f.guard.enqueue("ncclAllGather", Poll::error("invalid usage")), CommAborted);
  EXPECT_EQ(f.log, (Log{"abort_comm", "abort_process"}));
  EXPECT_TRUE(contains(f.env.message, "ncclAllGather: invalid usage")) << f.env.message;
  EXPECT_EQ(f.comm.async_polls, 0);
}

// (c) Teardown with a collective in flight aborts; it never finalizes or destroys.
TEST(CollectiveGuard, CloseWithCollectiveInFlightAbortsNotDestroys) {
  Fixture f;
  f.guard.enqueue("ncclAllReduce", Poll::ok());
  EXPECT_EQ(f.guard.close(), CollectiveGuard::Closed::aborted);
  EXPECT_EQ(f.log, (Log{"abort_comm"}));  // and no process abort from a destructor
  EXPECT_EQ(f.guard.close(), CollectiveGuard::Closed::already_aborted);
  EXPECT_EQ(f.log, (Log{"abort_comm"}));
}

// Teardown of an idle communicator: finalize (polled while in progress), then destroy.
TEST(CollectiveGuard, CloseWhenIdleFinalizesThenDestroys) {
  Fixture f;
  f.guard.enqueue("ncclAllReduce", Poll::ok());
  f.guard.wait();
  f.comm.fin = {Poll::pending()};
  f.comm.async = pending_then(3, Poll::ok());
  EXPECT_EQ(f.guard.close(), CollectiveGuard::Closed::destroyed);
  EXPECT_EQ(f.log, (Log{"finalize", "destroy"}));
}

// Teardown whose finalize fails or never ends: abort, no destroy, no process abort.
TEST(CollectiveGuard, CloseWhoseFinalizeFailsOrHangsAborts) {
  for (const Poll& after : {Poll::error("remote process exited"), Poll::pending()}) {
    Fixture f;
    f.comm.fin = {Poll::pending()};
    f.comm.async = {after};
    EXPECT_EQ(f.guard.close(), CollectiveGuard::Closed::aborted);
    EXPECT_EQ(f.log, (Log{"finalize", "abort_comm"}));
  }
}

// (d) Success: the collectives finish after a few polls, nothing is aborted, the guard is idle.
TEST(CollectiveGuard, SuccessNeverAborts) {
  Fixture f;
  f.comm.done = pending_then(4, Poll::ok());
  f.guard.enqueue("ncclAllReduce", Poll::ok());
  f.guard.enqueue("ncclReduceScatter", Poll::ok());
  EXPECT_FALSE(f.guard.idle());
  f.guard.wait();
  EXPECT_TRUE(f.guard.idle());
  EXPECT_EQ(f.comm.done_polls, 5);
  EXPECT_TRUE(f.log.empty());
  EXPECT_EQ(f.env.aborted_at, -1.0);
  f.guard.wait();  // nothing in flight: no poll
  EXPECT_EQ(f.comm.done_polls, 5);
}

// (e) ncclInProgress answers are polled until they settle, in a call and during a wait.
TEST(CollectiveGuard, PendingIsPolledNotAnError) {
  Fixture f;
  f.comm.async = pending_then(5, Poll::ok());
  f.guard.enqueue("ncclAllReduce", Poll::pending());
  EXPECT_EQ(f.comm.async_polls, 6);
  f.comm.async = pending_then(3, Poll::ok());
  f.comm.done = pending_then(2, Poll::ok());
  f.guard.wait();
  EXPECT_TRUE(f.log.empty());
  EXPECT_TRUE(f.guard.idle());
}

// The timeout restarts with each call or wait: a slow but progressing run is not aborted.
TEST(CollectiveGuard, TimeoutCountsPerWait) {
  Fixture f;
  for (int step = 0; step < 3; step++) {
    f.comm.done = pending_then(500, Poll::ok());
    f.guard.enqueue("ncclAllReduce", Poll::ok());
    f.guard.wait();
  }
  EXPECT_GE(f.env.t, 1500.0);
  EXPECT_TRUE(f.log.empty());
}

TEST(CollectiveGuard, RejectsNonPositiveTimeout) {
  Log log;
  FakeComm comm(log);
  FakeEnv env(log);
  EXPECT_THROW(CollectiveGuard(comm, env, 0.0), std::invalid_argument);
}

TEST(DeviceChoice, SeveralGpusGiveTheLocalRank) {
  EXPECT_EQ(choose_device(5, 1, 4, 4), 1);
  EXPECT_EQ(choose_device(7, 3, 4, 8), 3);
  EXPECT_EQ(choose_device(0, 0, 1, 2), 0);
}

TEST(DeviceChoice, OneVisibleGpuIsDeviceZeroForEveryRank) {
  for (int local = 0; local < 4; local++) EXPECT_EQ(choose_device(4 + local, local, 4, 1), 0);
}

TEST(DeviceChoice, TooFewGpusNameRankLocalRankAndCount) {
  try {
    choose_device(3, 2, 4, 2);
    FAIL() << "4 ranks on 2 GPUs accepted";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_TRUE(contains(m, "rank 3")) << m;
    EXPECT_TRUE(contains(m, "local rank 2")) << m;
    EXPECT_TRUE(contains(m, "sees 2 GPU(s)")) << m;
  }
  EXPECT_THROW(choose_device(0, 0, 2, 0), std::runtime_error);  // no GPU at all
  EXPECT_THROW(choose_device(0, 2, 2, 4), std::invalid_argument);  // local rank out of range
}

TEST(DeviceChoice, ForceNcclParsesOnlyZeroOrOne) {
  EXPECT_FALSE(force_nccl(nullptr));
  EXPECT_FALSE(force_nccl(""));
  EXPECT_FALSE(force_nccl("0"));
  EXPECT_TRUE(force_nccl("1"));
  EXPECT_THROW(force_nccl("yes"), std::runtime_error);
}

TEST(DeviceChoice, NcclAtWorldOneOnlyWhenForced) {
  EXPECT_FALSE(use_nccl(1, false));
  EXPECT_TRUE(use_nccl(1, true));
  EXPECT_TRUE(use_nccl(2, false));
}

}  // namespace
}  // namespace kvt

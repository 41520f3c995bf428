// dist/comm_guard.h — when a device communicator's collective has failed, hung or finished, and
// what to do then (docs/nccl.md). Host-only: no CUDA or NCCL type appears here, so a fake
// communicator that fails on cue tests every fault path on CPU (tests/test_dist_faults.cpp).
#pragma once

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvt {

// One answer of a non-blocking query or call.
struct Poll {
  enum class State { ok, pending, error };
  State state = State::ok;
  std::string message;  // the error, for State::error

  static Poll ok() { return {}; }
  static Poll pending() { return {State::pending, {}}; }
  static Poll error(std::string why) { return {State::error, std::move(why)}; }
};

// The communicator as the guard sees it (NCCL + CUDA in dist/cuda/, fakes in the tests).
class GuardedComm {
 public:
  virtual ~GuardedComm() = default;
  // ok: every enqueued collective has finished on the device; pending: not yet (cudaEventQuery).
  virtual Poll work_done() = 0;
  // ok, pending (ncclInProgress: an operation is still being set up) or error
  // (ncclCommGetAsyncError).
  virtual Poll async_error() = 0;
  // Starts an orderly teardown of an idle communicator: ok, pending or error (ncclCommFinalize).
  virtual Poll finalize() = 0;
  virtual void destroy() noexcept = 0;     // ncclCommDestroy, after finalize
  virtual void abort_comm() noexcept = 0;  // ncclCommAbort: never waits for the peers
};

// The process around the communicator.
class GuardEnv {
 public:
  virtual ~GuardEnv() = default;
  virtual double now_s() = 0;  // a monotonic clock, seconds
  virtual void pause() = 0;    // between two polls
  // Ends the whole job with the one-line message (MPI_Abort). Only fakes return.
  virtual void abort_process(const std::string& message) = 0;
};

// The real clock (steady_clock, a 50 us sleep between polls) and an injected abort.
class SystemGuardEnv final : public GuardEnv {
 public:
  explicit SystemGuardEnv(std::function<void(const std::string&)> abort) : abort_(std::move(abort)) {}
  double now_s() override;
  void pause() override;
  void abort_process(const std::string& message) override { abort_(message); }

 private:
  std::function<void(const std::string&)> abort_;
};

// Thrown after abort_process returned (fakes only: in production it never returns).
struct CommAborted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The polling and abort rules of a non-blocking communicator. Any error, or a call or wait still
// pending after timeout_s, aborts the communicator, then the process, once, with a message that
// names the call and the error or the timeout; afterwards every use throws CommAborted.
class CollectiveGuard {
 public:
  CollectiveGuard(GuardedComm& comm, GuardEnv& env, double timeout_s);

  // The result of a call (init, an enqueue, a CUDA call): an error fails; pending is polled
  // through async_error() until it is no longer pending.
  void settle(const std::string& what, const Poll& call);
  // A collective was enqueued by `what` with result `call`: it is in flight until wait().
  void enqueue(const std::string& what, const Poll& call);
  // Polls async_error() and work_done() until every collective in flight has finished.
  void wait();
  // Fails now: abort the communicator, then the process; throws CommAborted if that returns.
  [[noreturn]] void fail(const std::string& what, const std::string& why);

  // Teardown (from a destructor; never throws, never ends the process): an idle communicator is
  // finalized and destroyed; one with a collective in flight, or whose finalize fails or times
  // out, is aborted (a destroy would wait for peers that may never come).
  enum class Closed { destroyed, aborted, already_aborted };
  Closed close() noexcept;

  bool idle() const { return in_flight_.empty(); }
  bool aborted() const { return aborted_; }
  double timeout_s() const { return timeout_s_; }

 private:
  void check_usable() const;
  // Polls until `done` answers ok: an error or the timeout fails `what`.
  void poll_until(const std::string& what, const std::function<Poll()>& done);
  std::string in_flight_names() const;  // "ncclAllReduce x2, ncclAllGather"

  GuardedComm& comm_;
  GuardEnv& env_;
  double timeout_s_;
  std::vector<std::string> in_flight_;
  bool aborted_ = false;
};

}  // namespace kvt

#include "dist/comm_guard.h"

#include <chrono>
#include <cstdio>
#include <thread>

namespace kvt {

namespace {
std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", s);
  return buf;
}
}  // namespace

double SystemGuardEnv::now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void SystemGuardEnv::pause() { std::this_thread::sleep_for(std::chrono::microseconds(50)); }

CollectiveGuard::CollectiveGuard(GuardedComm& comm, GuardEnv& env, double timeout_s)
    : comm_(comm), env_(env), timeout_s_(timeout_s) {
  if (!(timeout_s > 0)) throw std::invalid_argument("communicator timeout: " + seconds(timeout_s) + ", expected > 0");
}

void CollectiveGuard::check_usable() const {
  if (aborted_) throw CommAborted("the device communicator was aborted after an earlier error");
}

void CollectiveGuard::fail(const std::string& what, const std::string& why) {
  const std::string message = what + ": " + why + "; aborting the communicator and the job";
  if (!aborted_) {
    aborted_ = true;  // first: whatever follows, the communicator is never aborted twice
    comm_.abort_comm();
    env_.abort_process(message);
  }
  throw CommAborted(message);
}

void CollectiveGuard::poll_until(const std::string& what, const std::function<Poll()>& done) {
  const double start = env_.now_s();
  for (;;) {
    const Poll p = done();
    if (p.state == Poll::State::ok) return;
    if (p.state == Poll::State::error) fail(what, p.message);
    if (env_.now_s() - start >= timeout_s_)
      fail(what, "still running after " + seconds(timeout_s_) + " (train.comm_timeout_s)");
    env_.pause();
  }
}

void CollectiveGuard::settle(const std::string& what, const Poll& call) {
  check_usable();
  if (call.state == Poll::State::error) fail(what, call.message);
  if (call.state == Poll::State::pending) poll_until(what, [this] { return comm_.async_error(); });
}

void CollectiveGuard::enqueue(const std::string& what, const Poll& call) {
  check_usable();
  in_flight_.push_back(what);
  settle(what, call);
}

void CollectiveGuard::wait() {
  check_usable();
  if (idle()) return;
  // An asynchronous error fails even while the device work still looks pending.
  poll_until("waiting for " + in_flight_names(), [this] {
    Poll a = comm_.async_error();
    return a.state == Poll::State::error ? a : comm_.work_done();
  });
  in_flight_.clear();
}

CollectiveGuard::Closed CollectiveGuard::close() noexcept {
  if (aborted_) return Closed::already_aborted;
  aborted_ = true;  // closed: no further use
  if (!idle()) {
    comm_.abort_comm();
    return Closed::aborted;
  }
  // Finalize is polled like any call, but a failure here only aborts the communicator.
  Poll p = comm_.finalize();
  const double start = env_.now_s();
  while (p.state == Poll::State::pending && env_.now_s() - start < timeout_s_) {
    env_.pause();
    p = comm_.async_error();
  }
  if (p.state != Poll::State::ok) {
    comm_.abort_comm();
    return Closed::aborted;
  }
  comm_.destroy();
  return Closed::destroyed;
}

std::string CollectiveGuard::in_flight_names() const {
  std::string out;
  for (size_t i = 0; i < in_flight_.size();) {
    size_t j = i;
    while (j < in_flight_.size() && in_flight_[j] == in_flight_[i]) j++;
    if (!out.empty()) out += ", ";
    out += in_flight_[i];
    if (j - i > 1) out += " x" + std::to_string(j - i);
    i = j;
  }
  return out;
}

}  // namespace kvt

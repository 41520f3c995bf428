#include "train/grad_sync.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace kvt {

std::vector<GradBucket> plan_buckets(size_t total, size_t cap, int world) {
  if (world < 1) throw std::invalid_argument("plan_buckets: world " + std::to_string(world));
  if (cap != 0 && cap % static_cast<size_t>(world) != 0)
    throw std::invalid_argument("plan_buckets: bucket of " + std::to_string(cap) +
                                " floats is not a multiple of the world " + std::to_string(world));
  std::vector<GradBucket> plan;
  const size_t W = static_cast<size_t>(world);
  size_t local = 0;
  for (size_t hi = total; hi > 0;) {
    const size_t len = cap == 0 ? hi : std::min(cap, hi);  // top down; the lowest takes the rest
    GradBucket b;
    b.begin = hi - len;
    b.end = hi;
    b.shard = (len + W - 1) / W;
    b.padded = b.shard * W;
    b.local = local;
    local += b.shard;
    plan.push_back(b);
    hi = b.begin;
  }
  return plan;
}

size_t bucket_floats(float bucket_mb, int world) {
  if (bucket_mb <= 0) return 0;
  const size_t W = static_cast<size_t>(world);
  const size_t f = static_cast<size_t>(static_cast<double>(bucket_mb) * 1048576.0 / sizeof(float));
  return std::max(W, f / W * W);
}

std::vector<OwnedRange> owned_ranges(const std::vector<GradBucket>& plan, int rank) {
  std::vector<OwnedRange> out;
  for (const GradBucket& b : plan) {
    const size_t lo = b.begin + static_cast<size_t>(rank) * b.shard;
    const size_t hi = std::min(lo + b.shard, b.end);
    if (lo < hi) out.push_back({lo, hi, b.local});
  }
  return out;
}

GradSync::GradSync(Ops& ops, Communicator& comm, size_t total, int zero, float bucket_mb)
    : ops_(ops), comm_(comm), total_(total) {
  if (zero != 0 && zero != 1) throw std::invalid_argument("train.zero: " + std::to_string(zero) + " (expected 0 or 1)");
  const int W = comm.world();
  // One host rank has nothing to reduce; a device communicator (NCCL, also on one rank for the
  // GPU check) runs its collectives whatever the world.
  active_ = W > 1 || comm.device_collectives();
  sharded_ = zero == 1 && active_;
  const size_t cap = bucket_floats(bucket_mb, W);
  overlap_ = active_ && cap > 0;
  plan_ = plan_buckets(total, active_ ? cap : 0, W);
  if (!sharded_) return;
  shard_ = Buffer<float>(ops, state_size());
  for (const GradBucket& b : plan_)
    if (b.padded != b.end - b.begin) staging_ = Buffer<float>(ops, b.padded);  // the lowest only
}

std::vector<OwnedRange> GradSync::owned() const {
  if (!sharded_) return {OwnedRange{0, total_, 0}};
  return owned_ranges(plan_, comm_.rank());
}

size_t GradSync::state_size() const {
  if (!sharded_) return total_;
  return plan_.empty() ? 0 : plan_.back().local + plan_.back().shard;
}

void GradSync::begin(float* grads) {
  grads_ = grads;
  next_ = 0;
  covered_ = total_;
}

void GradSync::ready(size_t b, size_t e) {
  if (e != covered_ || b > e)
    throw std::logic_error("gradient range [" + std::to_string(b) + ", " + std::to_string(e) +
                           ") reported ready does not continue the finished range [" +
                           std::to_string(covered_) + ", " + std::to_string(total_) + ")");
  covered_ = b;
  while (next_ < plan_.size() && plan_[next_].begin >= covered_) launch(next_++);
}

float* GradSync::padded_for(const GradBucket& b) {
  return b.padded == b.end - b.begin ? nullptr : staging_.data();
}

void GradSync::launch(size_t i) {
  const GradBucket& b = plan_[i];
  const size_t len = b.end - b.begin;
  if (!sharded_) {
    comm_.start_allreduce_mean(grads_ + b.begin, len);
    return;
  }
  const float* send = grads_ + b.begin;
  if (float* stage = padded_for(b)) {  // [grads | zeros], a multiple of the world
    ops_.copy(stage, send, len * sizeof(float));
    ops_.zero(stage + len, (b.padded - len) * sizeof(float));
    send = stage;
  }
  comm_.start_reduce_scatter_mean(shard_.data() + b.local, send, b.shard);
}

void GradSync::finish() {
  if (!active_) return;
  if (!grads_) throw std::logic_error("GradSync::finish without begin()");
  if (!overlap_ && !sharded_) {
    // One reduction of the whole buffer after the backward (bucket_mb 0).
    ops_.synchronize();  // the gradients are complete before another stream reduces them
    comm_.allreduce_mean(grads_, total_);
    return;
  }
  while (next_ < plan_.size()) launch(next_++);
  comm_.wait_all();
}

float* GradSync::reduced() const { return sharded_ ? shard_.data() : grads_; }

double GradSync::global_sum_squares() {
  if (!sharded_) return ops_.sum_squares(grads_, static_cast<int64_t>(total_));
  // The padding of the lowest bucket reduces to zeros and adds nothing.
  return comm_.sum_double(ops_.sum_squares(shard_.data(), static_cast<int64_t>(shard_.size())));
}

void GradSync::gather_params(float* params) {
  if (!sharded_) return;
  const size_t r = static_cast<size_t>(comm_.rank());
  for (const GradBucket& b : plan_) {
    if (float* stage = padded_for(b)) {
      const size_t lo = std::min(b.begin + r * b.shard, b.end), hi = std::min(lo + b.shard, b.end);
      if (lo < hi) ops_.copy(stage + r * b.shard, params + lo, (hi - lo) * sizeof(float));
      comm_.start_all_gather(stage, stage + r * b.shard, b.shard);
    } else {
      comm_.start_all_gather(params + b.begin, params + b.begin + r * b.shard, b.shard);  // in place
    }
  }
  comm_.wait_all();
  for (const GradBucket& b : plan_)
    if (float* stage = padded_for(b)) ops_.copy(params + b.begin, stage, (b.end - b.begin) * sizeof(float));
}

std::vector<float> GradSync::gather_state(const float* state) {
  std::vector<float> full(total_);
  if (!sharded_) {
    ops_.to_host(full.data(), state, total_ * sizeof(float));
    return full;
  }
  size_t padded_total = 0;
  for (const GradBucket& b : plan_) padded_total += b.padded;
  Buffer<float> all(ops_, padded_total);
  std::vector<size_t> at;  // each bucket's offset in `all`
  for (size_t off = 0; const GradBucket& b : plan_) {
    at.push_back(off);
    comm_.start_all_gather(all.data() + off, state + b.local, b.shard);
    off += b.padded;
  }
  comm_.wait_all();
  std::vector<float> host(padded_total);
  ops_.to_host(host.data(), all.data(), padded_total * sizeof(float));
  for (size_t i = 0; i < plan_.size(); i++)
    std::copy_n(host.begin() + static_cast<ptrdiff_t>(at[i]), plan_[i].end - plan_[i].begin,
                full.begin() + static_cast<ptrdiff_t>(plan_[i].begin));
  return full;
}

}  // namespace kvt

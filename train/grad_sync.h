// train/grad_sync.h — the gradient reduction of data-parallel training (docs/parallel.md):
// buckets over the flat gradient buffer, each started on the Communicator as soon as the
// backward has finished it, and ZeRO-1's ownership of slices of every bucket.
//
// Buckets are planned from the top of the buffer down (the order the backward finishes the
// gradients), about train.bucket_mb each; a boundary may cut through a tensor. zero 0: each
// bucket is mean-all-reduced in place. zero 1: each bucket is mean-reduce-scattered, so rank r
// owns slice r of every bucket (bucket lengths are multiples of the world except the lowest,
// which is reduced through a zero-padded staging buffer); AdamW then updates only the owned
// slices and gather_params() all-gathers them. All buffers are backend memory.
#pragma once

#include <cstddef>
#include <vector>

#include "dist/dist.h"
#include "kernels/ops.h"
#include "train/adamw.h"

namespace kvt {

// One bucket: floats [begin, end) of the gradient (and parameter) buffer. shard = the floats
// each rank owns (ceil(len / world)); rank r owns [begin + r shard, begin + (r+1) shard) clipped
// to end, held in the reduced shard buffer at local + [0, shard).
struct GradBucket {
  size_t begin = 0, end = 0;
  size_t shard = 0, local = 0;
  size_t padded = 0;  // shard * world >= end - begin
};

// Buckets of at most `cap` floats (0: one bucket) over [0, total), top down: bucket 0 ends at
// total; every bucket but the last (the lowest, starting at 0) holds a multiple of `world`.
std::vector<GradBucket> plan_buckets(size_t total, size_t cap, int world);
// Floats per bucket for train.bucket_mb (MiB of fp32; 0 -> 0, one bucket), rounded down to a
// multiple of world and at least world.
size_t bucket_floats(float bucket_mb, int world);
// The ranges rank r owns under the plan, in bucket order (empty slices of the padding skipped).
std::vector<OwnedRange> owned_ranges(const std::vector<GradBucket>& plan, int rank);

class GradSync {
 public:
  // total: floats in the gradient buffer. zero: train.zero; with world 1 on a host communicator
  // nothing is reduced and nothing is sharded. bucket_mb: train.bucket_mb.
  GradSync(Ops& ops, Communicator& comm, size_t total, int zero, float bucket_mb);
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  bool sharded() const { return sharded_; }
  // Whether the reduction runs inside the backward (install hook() for the last micro-step).
  bool overlapped() const { return overlap_; }
  const std::vector<GradBucket>& buckets() const { return plan_; }
  // AdamW's layout: this rank's slices (sharded) or the whole buffer.
  std::vector<OwnedRange> owned() const;
  size_t state_size() const;  // floats of AdamW state per moment (shard buffer size, or total)

  // Before the last micro-step's backward: resets the launch cursor for `grads`.
  void begin(float* grads);
  // The grad-ready callback (Transformer::set_grad_ready): [b, e) final; starts every bucket
  // the final ranges now cover. Ranges must arrive top down and tile the buffer.
  void ready(size_t b, size_t e);
  // After the backward: starts what is left and waits. Then reduced() holds the mean gradient
  // in AdamW's layout (the gradient buffer itself, or this rank's shard buffer). Without an
  // overlapped reduction (bucket_mb 0, zero 0) this is one blocking all-reduce, as before.
  void finish();
  float* reduced() const;
  // Squared norm of the whole mean gradient (sum over ranks of the owned slices when sharded).
  double global_sum_squares();
  // ZeRO-1: every rank's updated slices into every rank's params (a no-op unsharded).
  void gather_params(float* params);
  // A sharded AdamW state (state_size() floats, backend memory) in the table's layout on the host
  // of every rank (collective: all ranks call it). Unsharded: a copy of `state`.
  std::vector<float> gather_state(const float* state);

 private:
  void launch(size_t i);
  float* padded_for(const GradBucket& b);  // staging for a bucket not a multiple of the world

  Ops& ops_;
  Communicator& comm_;
  size_t total_;
  bool active_, sharded_, overlap_;
  std::vector<GradBucket> plan_;
  Buffer<float> shard_, staging_;
  float* grads_ = nullptr;
  size_t next_ = 0;      // next bucket to launch
  size_t covered_ = 0;   // the backward has finished [covered_, total)
};

}  // namespace kvt

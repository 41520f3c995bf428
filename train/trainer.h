// train/trainer.h — the training loop, composed from the model, the data loader, the optimizer,
// the communicator and the metrics log (torchtitan style: each a component, the loop on one
// screen). One step: for each micro-batch, forward + backward (grads accumulate; the last
// micro-step's backward starts the bucketed reduction, train/grad_sync.h) -> mean over ranks
// (all-reduce, or reduce-scatter with train.zero 1) -> global-norm clip -> AdamW (on this
// rank's slices with ZeRO-1, then all-gather) -> metrics -> maybe eval.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>

#include "data/loader.h"
#include "dist/dist.h"
#include "model/transformer.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/grad_sync.h"
#include "train/metrics.h"
#include "train/run_loop.h"

namespace kvt {

struct StepResult {
  double loss = 0;       // mean over the global batch
  double grad_norm = 0;  // of the reduced gradient, before clipping
  double lr = 0;
};

class Trainer {
 public:
  // Checks that every rank has rank 0's config (config_hash; a mismatch throws on every rank,
  // naming the rank), derives the per-rank batch from train.global_batch (per_rank_batch_size),
  // builds the model (initialised from train.seed, rank 0's parameters broadcast), the loaders
  // and the optimizer. Writes nothing to disk.
  Trainer(const RunConfig& cfg, Communicator& comm);
  ~Trainer();

  // The whole run: resumes (train.resume: auto, or resume = true) from the newest valid
  // checkpoint of output.dir, writes the resolved config and metrics.jsonl (rank 0), prints a
  // progress line per step to `out` (rank 0), evaluates every eval_every steps and at the end,
  // checkpoints every checkpoint_every steps, at the end, and when a stop signal arrives.
  // stop_after > 0 ends the run after that step with a checkpoint, as a preemption would (for
  // time-limited allocations, and for resume tests). Returns the step it stopped at.
  int64_t run(std::ostream& out, bool resume = false, int64_t stop_after = 0);

  // Loads the newest checkpoint of output.dir that verifies (damaged ones are reported to `out`
  // and skipped). Returns false when there is none.
  bool resume_latest(std::ostream& out);
  // Restores everything a checkpoint holds: parameters, optimizer, step, data position. The
  // checkpoint may come from any world size; its global batch (its batch_size x grad_accum x
  // world_size) must equal this run's, else it throws saying which train.global_batch resumes.
  void restore(const CheckpointState& s);
  // Writes ckpt_<step>.h5 (rank 0; all ranks call it: under ZeRO-1 they all-gather the AdamW
  // moments into the table's layout first, so the file is the same for any world size).
  void save_checkpoint();

  // One optimizer step on the next global batch. Throws std::runtime_error naming the step if
  // the loss or the gradient norm is not finite.
  StepResult step();
  // Mean validation loss over eval_batches batches (the same windows every time), all ranks.
  double evaluate();

  int64_t steps_done() const { return step_; }
  // Tokens per training window (inputs): the loader's, which the model's buffers were sized for.
  int seq_len() const { return train_data_->seq_len(); }
  int64_t tokens_seen() const { return step_ * global_batch_ * seq_len(); }
  int64_t global_batch() const { return global_batch_; }
  // The loader cursor: the global sample index the next step starts at (what checkpoints store).
  uint64_t next_sample() const {
    return sample_base_ + static_cast<uint64_t>(step_ - step_base_) * static_cast<uint64_t>(global_batch_);
  }
  // The global sample indices this rank read in the last step(), in reading order.
  const std::vector<uint64_t>& last_step_samples() const { return last_samples_; }
  Transformer& model() { return *model_; }
  AdamW& optimizer() { return *opt_; }
  GradSync& grad_sync() { return *sync_; }
  const RunConfig& config() const { return cfg_; }
  Ops& ops() { return *ops_; }

 private:
  RunConfig cfg_;
  Communicator& comm_;
  std::unique_ptr<Ops> ops_;
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<GradSync> sync_;
  std::unique_ptr<AdamW> opt_;
  std::unique_ptr<WindowLoader> train_data_, val_data_;
  int64_t global_batch_ = 0;  // sequences per optimizer step, all ranks and micro-steps
  int64_t step_ = 0;          // optimizer steps done
  // Data position: step s reads global samples from sample_base_ + (s - step_base_) * global
  // batch, so a resumed run continues where the checkpoint's loader cursor stopped.
  uint64_t sample_base_ = 0;
  int64_t step_base_ = 0;
  std::vector<int32_t> windows_, inputs_, targets_;
  std::vector<uint64_t> last_samples_;
};

// Sequences per rank per micro-step: train.batch_size, or, when train.global_batch > 0,
// global_batch / (grad_accum x world); throws std::invalid_argument naming train.global_batch
// and the numbers when world does not divide it.
int per_rank_batch_size(const TrainConfig& t, int world);

// Sets OpenMP (and so OpenBLAS) threads and returns the count: `threads` if > 0; else
// OMP_NUM_THREADS if set; else max(1, min(cores / local_ranks, cores this process may run on)) —
// the second term follows a launcher's binding (mpirun binds each rank to one core when np <= 2).
int configure_threads(int threads, int local_ranks);

}  // namespace kvt

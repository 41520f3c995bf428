#include "train/trainer.h"

#include <omp.h>
#include <sched.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <stdexcept>
#include <thread>

#include "train/checkpoint.h"
#include "train/schedule.h"
#include "train/signals.h"

namespace kvt {

int configure_threads(int threads, int local_ranks) {
  int n = threads;
  if (n <= 0) {
    if (const char* env = std::getenv("OMP_NUM_THREADS"); env && std::atoi(env) > 0) {
      n = std::atoi(env);
    } else {
      const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
      int allowed = cores;
      cpu_set_t set;
      if (sched_getaffinity(0, sizeof set, &set) == 0) allowed = std::max(1, CPU_COUNT(&set));
      n = std::max(1, std::min(cores / std::max(1, local_ranks), allowed));
    }
  }
  omp_set_num_threads(n);
  return n;
}

int per_rank_batch_size(const TrainConfig& t, int world) {
  if (t.global_batch <= 0) return t.batch_size;
  const int64_t per_step = static_cast<int64_t>(t.grad_accum) * world;
  if (t.global_batch % per_step != 0)
    throw std::invalid_argument(
        "train.global_batch: " + std::to_string(t.global_batch) + " sequences cannot be split over " +
        std::to_string(world) + " rank(s) x train.grad_accum " + std::to_string(t.grad_accum) +
        " (= " + std::to_string(per_step) + "): use a world size whose product with grad_accum divides it");
  return static_cast<int>(t.global_batch / per_step);
}

namespace {
// Every rank compares its config hash with rank 0's; all ranks throw when any differs, naming it.
void check_same_config(const RunConfig& cfg, Communicator& comm) {
  if (comm.world() == 1) return;
  const std::string mine = config_hash(cfg);
  std::string root = mine;
  comm.broadcast(root.data(), root.size(), 0);
  const bool differs = mine != root;
  const int last_bad = comm.max_flag(differs ? comm.rank() : 0);  // rank 0 never differs
  if (last_bad == 0) return;
  if (differs)
    throw std::runtime_error("the config of rank " + std::to_string(comm.rank()) +
                             " differs from rank 0's (config hash " + mine + " vs " + root +
                             "): start every rank with the same config file and --set overrides");
  throw std::runtime_error("the config of rank " + std::to_string(last_bad) +
                           " differs from rank 0's (config hash " + root +
                           "): start every rank with the same config file and --set overrides");
}
}  // namespace

Trainer::Trainer(const RunConfig& cfg, Communicator& comm) : cfg_(cfg), comm_(comm) {
  check_same_config(cfg_, comm_);
  cfg_.train.batch_size = per_rank_batch_size(cfg_.train, comm_.world());
  const TrainConfig& t = cfg_.train;
  ops_ = make_ops(t.backend);
  ops_->set_precision(parse_precision(t.precision));
  // NCCL orders its collectives after the work submitted to the compute stream.
  comm_.attach_compute(ops_->native_stream());
  global_batch_ = static_cast<int64_t>(t.batch_size) * t.grad_accum * comm_.world();
  model_ = std::make_unique<Transformer>(cfg_.model, *ops_, t.batch_size, t.seq_len,
                                         /*with_grads*/ true, t.decay_embeddings,
                                         parse_recompute(t.recompute));
  model_->init_parameters(t.seed);
  // Every rank initialises from the same seed; broadcasting rank 0's values makes equality a
  // guarantee rather than an assumption.
  std::vector<float> p = model_->params_to_host();
  if (!t.init_from.empty()) {
    // A new run from another run's weights, fresh optimizer (fine-tuning, gate training).
    p = read_model_weights(t.init_from, model_->params()).params;
  }
  comm_.broadcast(p.data(), p.size() * sizeof(float), 0);
  model_->params_from_host(p);
  sync_ = std::make_unique<GradSync>(*ops_, comm_, model_->params().total(), t.zero, t.bucket_mb);
  opt_ = std::make_unique<AdamW>(*ops_, model_->params(), t, sync_->owned(), sync_->state_size());

  // Data errors name the config key they came from.
  auto files_of = [](const std::string& key, const std::string& pattern) {
    try {
      return expand_glob(pattern);
    } catch (const std::exception& e) {
      throw std::runtime_error(key + ": " + e.what());
    }
  };
  train_data_ = std::make_unique<WindowLoader>(files_of("data.train", cfg_.data.train), t.seq_len,
                                               cfg_.model.vocab_size, t.seed, /*shuffle*/ true);
  if (!cfg_.data.val.empty())
    val_data_ = std::make_unique<WindowLoader>(files_of("data.val", cfg_.data.val), t.seq_len,
                                               cfg_.model.vocab_size, t.seed, /*shuffle*/ false);
  // From here on the loader answers for the window length (seq_len() is its seq_len).
  const size_t n = static_cast<size_t>(t.batch_size) * seq_len();
  windows_.resize(static_cast<size_t>(t.batch_size) * train_data_->window_len());
  inputs_.resize(n);
  targets_.resize(n);
}

Trainer::~Trainer() = default;

StepResult Trainer::step() {
  const TrainConfig& t = cfg_.train;
  const int B = t.batch_size, T = seq_len(), A = t.grad_accum, W = comm_.world();
  model_->zero_grads();
  last_samples_.clear();
  for (int m = 0; m < A; m++) {
    // Global sample index of this rank's micro-batch (docs/design.md, "Data").
    const uint64_t g0 = next_sample() + static_cast<uint64_t>(m * W + comm_.rank()) * B;
    for (int i = 0; i < B; i++) last_samples_.push_back(g0 + static_cast<uint64_t>(i));
    train_data_->read_samples(g0, B, windows_.data());
    split_inputs_targets(windows_.data(), B, T, inputs_.data(), targets_.data());
    model_->forward_train(inputs_.data(), targets_.data(), B, T, 1.0f / static_cast<float>(A));
    // Only the last micro-step's backward reduces: its ranges are final for the whole step.
    const bool last = m == A - 1;
    if (last) sync_->begin(model_->grad_data());
    // The callback is removed again however the backward ends (RAII).
    struct Hook {
      Transformer& model;
      ~Hook() { model.set_grad_ready(nullptr); }
    } hook{*model_};
    if (last && sync_->overlapped())
      model_->set_grad_ready([this](size_t b, size_t e) { sync_->ready(b, e); });
    model_->backward(1.0f / static_cast<float>(A));
  }
  sync_->finish();  // the mean gradient is in sync_->reduced() (this rank's slices with ZeRO-1)
  float loss = model_->take_loss();  // the one read of the step's loss
  comm_.allreduce_mean(&loss, 1);

  StepResult r;
  r.loss = loss;
  r.grad_norm = std::sqrt(sync_->global_sum_squares());
  r.lr = lr_at(step_, t);
  if (!std::isfinite(r.loss) || !std::isfinite(r.grad_norm))
    throw std::runtime_error("non-finite " + std::string(std::isfinite(r.loss) ? "gradient norm" : "loss") +
                             " at step " + std::to_string(step_ + 1) + " (loss " +
                             std::to_string(r.loss) + ", grad norm " + std::to_string(r.grad_norm) +
                             "); stopping instead of training on NaN");
  const float clip = (t.grad_clip > 0 && r.grad_norm > t.grad_clip)
                         ? static_cast<float>(t.grad_clip / r.grad_norm)
                         : 1.0f;
  opt_->step(model_->param_data(), sync_->reduced(), static_cast<float>(r.lr), clip);
  sync_->gather_params(model_->param_data());  // ZeRO-1: every rank's slices to every rank
  model_->weights_updated();                   // the bf16 copy of the new weights
  step_++;
  return r;
}

double Trainer::evaluate() {
  if (!val_data_) return std::nan("");
  const TrainConfig& t = cfg_.train;
  const int B = t.batch_size, T = seq_len(), W = comm_.world();
  // The first eval_batches * B * W validation windows (capped to what exists), split over ranks.
  const int64_t total = std::min<int64_t>(static_cast<int64_t>(t.eval_batches) * B * W,
                                          val_data_->num_windows());
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t g0 = static_cast<int64_t>(comm_.rank()) * B; g0 < total; g0 += static_cast<int64_t>(B) * W) {
    const int b = static_cast<int>(std::min<int64_t>(B, total - g0));
    val_data_->read_samples(static_cast<uint64_t>(g0), b, windows_.data());
    split_inputs_targets(windows_.data(), b, T, inputs_.data(), targets_.data());
    sum += static_cast<double>(model_->forward(inputs_.data(), targets_.data(), b, T)) * b;
    count += b;
  }
  float part[2] = {static_cast<float>(sum), static_cast<float>(count)};
  comm_.allreduce_mean(part, 2);  // mean of sums / mean of counts = global mean
  return part[1] > 0 ? part[0] / part[1] : std::nan("");
}

void Trainer::save_checkpoint() {
  // ZeRO-1: the moments are gathered (collective, every rank) into the table's layout, so the
  // checkpoint is the same for every world size and zero setting.
  std::vector<float> m, v;
  if (sync_->sharded() || comm_.rank() == 0) {
    m = sync_->gather_state(opt_->m_data());
    v = sync_->gather_state(opt_->v_data());
  }
  if (comm_.rank() == 0) {
    CheckpointState s;
    s.step = step_;
    s.tokens_seen = tokens_seen();
    s.world_size = comm_.world();
    s.config_yaml = to_yaml(cfg_);
    s.params = model_->params_to_host();
    s.adam_m = std::move(m);
    s.adam_v = std::move(v);
    s.adam_step = opt_->t();
    s.global_batch = global_batch_;
    // Training draws no random numbers after init (no dropout); the data order is a function of
    // (seed, epoch): the loader's seed and cursor are all the random state there is.
    s.loader_seed = cfg_.train.seed;
    s.loader_next_sample = next_sample();
    checkpoint_write_atomic(cfg_.output.dir, model_->params(), s,
                            RetentionPolicy{cfg_.output.keep_last, cfg_.output.keep_every});
  }
  comm_.barrier();
}

void Trainer::restore(const CheckpointState& s) {
  if (s.loader_seed != cfg_.train.seed)
    throw std::runtime_error("checkpoint at step " + std::to_string(s.step) + " was trained with seed " +
                             std::to_string(s.loader_seed) + ", the config says train.seed " +
                             std::to_string(cfg_.train.seed));
  // The position is a global sample index, valid on any world size with the same global batch
  // (stored since checkpoint format 2, derived from a version-1 file's config on read).
  if (s.global_batch != global_batch_)
    throw std::runtime_error(
        "checkpoint at step " + std::to_string(s.step) + " was trained with a global batch of " +
        std::to_string(s.global_batch) + " sequences on " + std::to_string(s.world_size) +
        " rank(s); this run's is " + std::to_string(global_batch_) + " on " +
        std::to_string(comm_.world()) + " rank(s): set train.global_batch: " +
        std::to_string(s.global_batch) + " to resume with the same data order and schedule");
  model_->params_from_host(s.params);
  opt_->load(s.adam_m, s.adam_v, s.adam_step);  // each rank keeps its slices under ZeRO-1
  step_ = step_base_ = s.step;
  sample_base_ = s.loader_next_sample;
}

bool Trainer::resume_latest(std::ostream& out) {
  // Rank 0 chooses; every rank then reads the same file (the run directory is shared).
  std::string path;
  if (comm_.rank() == 0) {
    std::vector<std::string> skipped;
    auto found = find_latest_valid(cfg_.output.dir, model_->params(), &skipped);
    for (const auto& why : skipped) out << "checkpoint damaged, skipped: " << why << std::endl;
    if (found) path = *found;
  }
  uint64_t len = path.size();
  comm_.broadcast(&len, sizeof len, 0);
  path.resize(len);
  comm_.broadcast(path.data(), len, 0);
  if (path.empty()) return false;
  restore(checkpoint_read(path, model_->params()));
  if (comm_.rank() == 0) out << "resumed from " << path << " at step " << step_ << std::endl;
  return true;
}

int64_t Trainer::run(std::ostream& out, bool resume, int64_t stop_after) {
  struct Task final : RunTask {
    Trainer& tr;
    StepResult last;
    const double flops_tok, tokens_per_step;
    explicit Task(Trainer& t)
        : tr(t), flops_tok(train_flops_per_token(t.cfg_.model, t.seq_len())),
          tokens_per_step(static_cast<double>(t.global_batch_ * t.seq_len())) {}
    int64_t steps_done() const override { return tr.step_; }
    int64_t total_steps() const override { return tr.cfg_.train.steps; }
    bool resume_latest(std::ostream& o) override { return tr.resume_latest(o); }
    void step() override { last = tr.step(); }
    RunReport step_report(double dt) const override {
      const double tok_s = tokens_per_step / dt, flop_s = flops_tok * tokens_per_step / dt;
      char line[256];
      std::snprintf(line, sizeof line, "step %6lld/%lld | loss %.4f | lr %.3e | gnorm %.3f | %.0f tok/s | %.2f GFLOP/s",
                    static_cast<long long>(tr.step_), static_cast<long long>(tr.cfg_.train.steps), last.loss,
                    last.lr, last.grad_norm, tok_s, flop_s * 1e-9);
      return {{{"kind", "train"}, {"step", tr.step_}, {"loss", last.loss}, {"lr", last.lr},
               {"grad_norm", last.grad_norm}, {"tokens_seen", tr.tokens_seen()}, {"tokens_per_s", tok_s},
               {"flops_per_s", flop_s}, {"step_time_s", dt}},
              line};
    }
    std::optional<RunReport> eval() override {
      if (!tr.val_data_) return std::nullopt;
      const double vl = tr.evaluate();
      char line[128];
      std::snprintf(line, sizeof line, "eval step %lld | val loss %.4f", static_cast<long long>(tr.step_), vl);
      return RunReport{{{"kind", "eval"}, {"step", tr.step_}, {"val_loss", vl}, {"tokens_seen", tr.tokens_seen()}},
                       line};
    }
    std::string save() override {
      tr.save_checkpoint();
      return tr.cfg_.output.dir + "/" + checkpoint_file_name(tr.step_);
    }
    bool stop_requested() override { return tr.comm_.max_flag(stop_signal()) != 0; }
    bool leader() const override { return tr.comm_.rank() == 0; }
  } task(*this);
  const RunLoopOptions opts{cfg_.output.dir, to_yaml(cfg_), cfg_.train.eval_every, cfg_.output.checkpoint_every,
                            cfg_.train.resume == "auto"};
  return run_loop(task, opts, out, resume, stop_after);
}

}  // namespace kvt

// train/gate_trainer.cpp — the forward-only gate trainer: one step, eval, state and its run loop.
#include "train/gate_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>
#include <stdexcept>

#include "data/file_commit.h"
#include "kernels/common/math.h"
#include "train/model_tokenizer.h"
#include "train/adamw.h"
#include "train/run_loop.h"
#include "train/signals.h"
#include "train/trainer.h"

namespace kvt {

std::vector<int32_t> repeat_prompt_tokens(const TextTokenizer& tok, const std::string& text, int vocab_size) {
  const std::vector<int32_t> ids = tok.encode(text, /*parse_special=*/true);  // e.g. ChatML turns of a chat model
  if (ids.empty()) throw std::invalid_argument("the repeat prompt encodes to no tokens with " + tok.source());
  for (int32_t id : ids)
    if (id < 0 || id >= vocab_size)
      throw std::invalid_argument("tokenizer " + tok.source() + " encodes the repeat prompt to id " +
                                  std::to_string(id) + ", outside the model's vocab_size " +
                                  std::to_string(vocab_size) + " (a tokenizer of another model?)");
  return ids;
}

// ---- the optimizer --------------------------------------------------------------------------

// SGD with momentum (one buffer, kept in `m`) or AdamW, over the gate parameter table. Weight
// decay applies to the tensors the table marks (the projection matrices).
class GateTrainer::Optimizer {
 public:
  Optimizer(Ops& ops, const ParamTable& table, const GateTrainConfig& g)
      : ops_(ops), table_(table), g_(g) {
    if (g.optimizer == "adamw") {
      TrainConfig t;
      t.beta1 = g.beta1;
      t.beta2 = g.beta2;
      t.eps = g.eps;
      t.weight_decay = g.weight_decay;
      adamw_ = std::make_unique<AdamW>(ops, table, t);
    } else {
      buf_ = Buffer<float>(ops, table.total());
    }
  }
  void step(float* params, const float* grads, float lr) {
    if (adamw_) return adamw_->step(params, grads, lr, 1.0f);
    for (const ParamInfo& p : table_.entries())
      ops_.sgd_update(params + p.offset, grads + p.offset, buf_.data() + p.offset,
                      static_cast<int64_t>(p.numel), lr, g_.momentum,
                      p.weight_decay ? g_.weight_decay : 0.0f, 1.0f);
    t_++;
  }
  int64_t t() const { return adamw_ ? adamw_->t() : t_; }
  std::vector<float> m_to_host() const {
    if (adamw_) return adamw_->m_to_host();
    std::vector<float> h(table_.total());
    ops_.to_host(h.data(), buf_.data(), buf_.bytes());
    return h;
  }
  // SGD has no second buffer: zeros, so every gate file has the same layout.
  std::vector<float> v_to_host() const {
    return adamw_ ? adamw_->v_to_host() : std::vector<float>(table_.total(), 0.0f);
  }
  void load(const std::vector<float>& m, const std::vector<float>& v, int64_t t) {
    if (adamw_) return adamw_->load(m, v, t);
    ops_.to_device(buf_.data(), m.data(), buf_.bytes());
    t_ = t;
  }

 private:
  Ops& ops_;
  const ParamTable& table_;
  GateTrainConfig g_;
  std::unique_ptr<AdamW> adamw_;
  Buffer<float> buf_;
  int64_t t_ = 0;
};

// ---- the trainer ----------------------------------------------------------------------------

GateTrainer::GateTrainer(const GateRunConfig& cfg) : cfg_(cfg) {
  const GateTrainConfig& g = cfg_.gates;
  if (g.checkpoint.empty())
    throw std::invalid_argument("gates.checkpoint: give the frozen model's checkpoint (--checkpoint)");
  frozen_ = load_model_checkpoint(g.checkpoint);
  const ModelConfig& m = frozen_.config.model;
  for (auto [key, mine, theirs] : {std::tuple{"data.train", &cfg_.data.train, &frozen_.config.data.train},
                                   std::tuple{"data.val", &cfg_.data.val, &frozen_.config.data.val}}) {
    if (mine->empty()) *mine = *theirs;
    if (mine->empty())
      throw std::invalid_argument(std::string(key) + ": not set in the gate config, nor in " + g.checkpoint);
  }
  // data.tokenizer of the gate config, else the frozen model's (embedded, or its data.tokenizer).
  const auto tok = checkpoint_tokenizer(g.checkpoint, frozen_.config.data.tokenizer, m.vocab_size,
                                        cfg_.data.tokenizer);
  prompt_ = repeat_prompt_tokens(*tok, g.repeat_prompt, m.vocab_size);
  if (cfg_.data.tokenizer.empty()) cfg_.data.tokenizer = frozen_.config.data.tokenizer;
  const int P = g.context, Q = static_cast<int>(prompt_.size()), T = 2 * P + Q;
  if (P < 2) throw std::invalid_argument("gates.context: must be >= 2, got " + std::to_string(P));
  if (T > m.max_seq_len)
    throw std::invalid_argument("gates.context: " + std::to_string(P) + " tokens: the KVzip input (context " +
                                std::to_string(P) + " + repeat prompt " + std::to_string(Q) +
                                " + context) is " + std::to_string(T) + " tokens, more than model.max_seq_len " +
                                std::to_string(m.max_seq_len) + " of " + g.checkpoint +
                                " (use a context of at most " + std::to_string((m.max_seq_len - Q) / 2) + ")");

  ops_ = make_ops(g.backend);
  // The frozen model runs only its inference path: no gradients, no probabilities kept.
  model_ = std::make_unique<InferenceModel>(m, *ops_, frozen_.params);
  frozen_weights_ = weights_sha256(frozen_);
  scorer_ = std::make_unique<KvzipScorer>(*model_);
  gates_ = std::make_unique<GateModel>(m, *ops_, P, /*with_grads=*/true);
  gates_->params_from_host(init_gate_parameters(m, g.seed));
  opt_ = std::make_unique<Optimizer>(*ops_, gates_->params(), g);
  layers_ = gate_layers(m);

  auto files_of = [](const std::string& key, const std::string& pattern) {
    try {
      return expand_glob(pattern);
    } catch (const std::exception& e) {
      throw std::runtime_error(key + ": " + e.what());
    }
  };
  // Windows of P tokens (the loader's seq_len + 1).
  train_data_ = std::make_unique<WindowLoader>(files_of("data.train", cfg_.data.train), P - 1,
                                               m.vocab_size, g.seed, /*shuffle=*/true,
                                               static_cast<uint64_t>(g.train_contexts));
  val_data_ = std::make_unique<WindowLoader>(files_of("data.val", cfg_.data.val), P - 1, m.vocab_size,
                                             g.seed, /*shuffle=*/false);
  window_.resize(static_cast<size_t>(P));

  if (!g.cache_dir.empty()) {
    // what the contexts were computed from: the model by the digest of its weights (a re-import
    // writes another file of the same weights), KEYs of older caches by the file's SHA-256
    std::ostringstream key;
    key << "\ncontext " << P << "\nprompt";
    for (int32_t t : prompt_) key << " " << t;
    for (const auto* d : {train_data_.get(), val_data_.get()}) {
      key << "\nshards";
      for (const std::string& f : d->files()) key << " " << std::filesystem::absolute(f).string();
    }
    key << "\ntrain_contexts " << g.train_contexts << "\n";
    cache_ = std::make_unique<ContextCache>(g.cache_dir, "model_weights_sha256 " + frozen_weights_ + key.str(), P,
                                            m.d_model, static_cast<int64_t>(layers_.size()), gate_decisions(m),
                                            std::vector<std::string>{"model_sha256 " + frozen_.sha256 + key.str()});
  }
  hidden_buf_ = Buffer<float>(*ops_, layers_.size() * static_cast<size_t>(P) * m.d_model);
  hidden_.resize(layers_.size());
  for (size_t i = 0; i < layers_.size(); i++) hidden_[i] = hidden_buf_.data() + i * P * m.d_model;
}

GateTrainer::~GateTrainer() = default;

void GateTrainer::load_context(WindowLoader& data, const std::string& split, uint64_t w) {
  const size_t P = static_cast<size_t>(cfg_.gates.context), C = static_cast<size_t>(model_->config().d_model);
  const std::string name = split + "_" + std::to_string(w);
  if (!cache_ || !cache_->load(name, hidden_bf16_, targets_)) {
    data.read_window(w, window_.data());
    scorer_->run(window_, prompt_);
    targets_ = scorer_->scores();
    hidden_host_.resize(layers_.size() * P * C);
    for (size_t i = 0; i < layers_.size(); i++)
      ops_->to_host(hidden_host_.data() + i * P * C, scorer_->hidden(static_cast<int>(i)), P * C * sizeof(float));
    hidden_bf16_.resize(hidden_host_.size());
    std::transform(hidden_host_.begin(), hidden_host_.end(), hidden_bf16_.begin(), math::to_bf16);
    if (cache_) cache_->store(name, hidden_bf16_, targets_);
  }
  // The gates read bf16-rounded inputs, cached or not.
  hidden_host_.resize(hidden_bf16_.size());
  std::transform(hidden_bf16_.begin(), hidden_bf16_.end(), hidden_host_.begin(), math::from_bf16);
  ops_->to_device(hidden_buf_.data(), hidden_host_.data(), hidden_host_.size() * sizeof(float));
}

double GateTrainer::score_context(bool backward, float grad_scale, GateEvalAccumulator* acc) {
  const int P = cfg_.gates.context, M = gate_decisions(model_->config());
  std::vector<float> all_scores, all_targets;
  double loss = 0;
  std::vector<float> t(static_cast<size_t>(P) * M), ds;
  for (size_t i = 0; i < layers_.size(); i++) {
    const std::vector<float> s = gates_->forward(layers_[i], hidden_[i], P);
    for (int m = 0; m < M; m++)
      for (int p = 0; p < P; p++)
        t[static_cast<size_t>(p) * M + m] = targets_[(i * M + m) * static_cast<size_t>(P) + p];
    // Loss: BCE mean over tokens, summed over the M decisions: M x the mean over (token, decision).
    loss += M * bce_loss(s, t, backward ? &ds : nullptr);
    if (backward) {
      for (float& d : ds) d *= static_cast<float>(M) * grad_scale;
      gates_->backward(ds);
    }
    if (acc) {
      all_scores.insert(all_scores.end(), s.begin(), s.end());
      all_targets.insert(all_targets.end(), t.begin(), t.end());
    }
  }
  if (acc) acc->add_context(all_scores, all_targets, loss);
  return loss;
}

GateTrainer::StepResult GateTrainer::step() {
  const GateTrainConfig& g = cfg_.gates;
  const int B = g.contexts_per_step;
  gates_->zero_grads();
  double loss = 0;
  for (int b = 0; b < B; b++) {
    load_context(*train_data_, "train", train_data_->window_of_sample(static_cast<uint64_t>(step_) * B + b));
    loss += score_context(/*backward=*/true, 1.0f / static_cast<float>(B), nullptr);
  }
  StepResult r;
  r.loss = loss / B;
  r.lr = g.lr * gate_lr_factor(step_, g.steps, g.schedule);
  if (!std::isfinite(r.loss))
    throw std::runtime_error("non-finite gate loss at step " + std::to_string(step_ + 1));
  opt_->step(gates_->param_data(), gates_->grad_data(), static_cast<float>(r.lr));
  step_++;
  return r;
}

GateEvalStats GateTrainer::evaluate() {
  const GateTrainConfig& g = cfg_.gates;
  GateEvalAccumulator acc(g.threshold, g.recall_top);
  const uint64_t n = std::min<uint64_t>(static_cast<uint64_t>(g.eval_contexts), val_data_->num_windows());
  for (uint64_t w = 0; w < n; w++) {
    load_context(*val_data_, "val", w);
    score_context(/*backward=*/false, 0.0f, &acc);
  }
  return acc.result();
}

CheckpointState GateTrainer::state() const {
  CheckpointState s;
  s.format = kGatesFormatName;
  s.step = step_;
  s.tokens_seen = step_ * cfg_.gates.contexts_per_step * cfg_.gates.context;
  s.world_size = 1;
  s.config_yaml = to_yaml(cfg_);
  s.params = gates_->params_to_host();
  s.adam_m = opt_->m_to_host();
  s.adam_v = opt_->v_to_host();
  s.adam_step = opt_->t();
  s.loader_seed = cfg_.gates.seed;
  s.loader_next_sample = static_cast<uint64_t>(step_) * cfg_.gates.contexts_per_step;  // no other randomness
  s.global_batch = cfg_.gates.contexts_per_step;
  s.texts = {{kGateTextModelConfig, to_yaml(frozen_.config)},
             {kGateTextModelCheckpoint, frozen_.path},
             {kGateTextModelSha256, frozen_.sha256},
             {kGateTextModelWeights, frozen_weights_}};
  return s;
}

void GateTrainer::save_checkpoint() {
  checkpoint_write_atomic(cfg_.output.dir, gates_->params(), state(),
                          RetentionPolicy{cfg_.output.keep_last, cfg_.output.keep_every});
}

void GateTrainer::restore(const CheckpointState& s) {
  const std::string where = "gate checkpoint at step " + std::to_string(s.step);
  // the same weights (by their digest; a gate checkpoint older than it, by the file's SHA-256)
  const RecordedModel rec = recorded_model(s.texts);
  const std::string mine = rec.of(frozen_, &frozen_weights_);
  if (!rec.sha || *rec.sha != mine)
    throw std::runtime_error(where + " was trained on another model checkpoint (" + rec.kind() + " " +
                             (rec.sha ? rec.sha->substr(0, 12) : std::string("unknown")) + "...) than " +
                             frozen_.path + " (" + mine.substr(0, 12) + "...)");
  const GateRunConfig theirs = parse_gate_config(s.config_yaml, {}, where);
  const GateTrainConfig &a = theirs.gates, &b = cfg_.gates;
  auto same = [&](bool eq, const char* key) {
    if (!eq) throw std::runtime_error(where + " has another " + key + " than this run: resume with the same value");
  };
  same(a.context == b.context, "gates.context");
  same(a.repeat_prompt == b.repeat_prompt, "gates.repeat_prompt");
  same(a.contexts_per_step == b.contexts_per_step, "gates.contexts_per_step");
  same(a.optimizer == b.optimizer, "gates.optimizer");
  same(a.seed == b.seed, "gates.seed");
  gates_->params_from_host(s.params);
  opt_->load(s.adam_m, s.adam_v, s.adam_step);
  step_ = s.step;
}

bool GateTrainer::resume_latest(std::ostream& out) {
  std::vector<std::string> skipped;
  const auto found = find_latest_valid(cfg_.output.dir, gates_->params(), &skipped, kGatesFormatName);
  for (const auto& why : skipped) out << "checkpoint damaged, skipped: " << why << std::endl;
  if (!found) return false;
  restore(checkpoint_read(*found, gates_->params(), kGatesFormatName));
  out << "resumed from " << *found << " at step " << step_ << std::endl;
  return true;
}

int64_t GateTrainer::run(std::ostream& out, bool resume, int64_t stop_after) {
  struct Task final : RunTask {
    GateTrainer& tr;
    StepResult last;
    const GateTrainConfig& g;
    const int64_t tokens_per_step;
    explicit Task(GateTrainer& t)
        : tr(t), g(t.cfg_.gates), tokens_per_step(static_cast<int64_t>(g.contexts_per_step) * g.context) {}
    int64_t steps_done() const override { return tr.step_; }
    int64_t total_steps() const override { return g.steps; }
    bool resume_latest(std::ostream& o) override { return tr.resume_latest(o); }
    void step() override { last = tr.step(); }
    RunReport step_report(double dt) const override {
      char line[256];
      std::snprintf(line, sizeof line, "gates step %6lld/%lld | loss %.4f | lr %.3e | %.0f context tok/s",
                    static_cast<long long>(tr.step_), static_cast<long long>(g.steps), last.loss, last.lr,
                    tokens_per_step / dt);
      return {{{"kind", "train"}, {"step", tr.step_}, {"loss", last.loss}, {"lr", last.lr},
               {"tokens_seen", tr.step_ * tokens_per_step}, {"tokens_per_s", tokens_per_step / dt},
               {"step_time_s", dt}},
              line};
    }
    std::optional<RunReport> eval() override {
      const GateEvalStats e = tr.evaluate();
      char line[256];
      std::snprintf(line, sizeof line,
                    "eval step %lld | gate loss %.4f | accuracy@%.2f %.4f | recall of top %.0f%% %.4f | "
                    "targets >= %.2f: %.2f%%",
                    static_cast<long long>(tr.step_), e.loss, g.threshold, e.accuracy, 100.0 * g.recall_top,
                    e.recall, g.threshold, 100.0 * e.target_density);
      return RunReport{{{"kind", "eval"}, {"step", tr.step_}, {"val_loss", e.loss}, {"accuracy", e.accuracy},
                        {"recall", e.recall}, {"target_density", e.target_density}, {"target_mean", e.target_mean},
                        {"contexts", e.contexts}, {"tokens_seen", tr.step_ * tokens_per_step}},
                       line};
    }
    std::string save() override {
      tr.save_checkpoint();
      return tr.cfg_.output.dir + "/" + checkpoint_file_name(tr.step_);
    }
    void finish(std::ostream& o) override {
      o << "gates "
        << checkpoint_write_file_atomic(tr.cfg_.output.dir, "gates.h5", tr.gates_->params(), tr.state())
        << std::endl;
    }
    bool stop_requested() override { return stop_signal() != 0; }
  } task(*this);
  const RunLoopOptions opts{cfg_.output.dir, to_yaml(cfg_), cfg_.gates.eval_every, cfg_.output.checkpoint_every,
                            cfg_.gates.resume == "auto"};
  return run_loop(task, opts, out, resume, stop_after);
}

}  // namespace kvt

// train/gate_trainer.cpp — the forward-only gate trainer, its held-out metrics and gate files.
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
#include "data/tokenizer.h"
#include "train/adamw.h"
#include "train/metrics.h"
#include "train/signals.h"
#include "train/trainer.h"

namespace kvt {

double gate_lr_factor(int64_t step, int64_t steps, const std::string& schedule) {
  if (schedule == "constant") return 1.0;
  const double t = static_cast<double>(step + 1), S = static_cast<double>(steps);
  if (t <= 0.01 * S) return std::min(1.0, 0.01 * t);
  if (t <= 0.5 * S) return 1.0;
  if (t <= 0.75 * S) return 0.5;
  return 0.25;
}

// ---- held-out metrics -----------------------------------------------------------------------

void GateEvalAccumulator::add_context(std::span<const float> scores, std::span<const float> targets,
                                      double loss) {
  if (scores.size() != targets.size() || scores.empty())
    throw std::invalid_argument("gate eval: " + std::to_string(scores.size()) + " scores for " +
                                std::to_string(targets.size()) + " targets");
  const size_t n = scores.size();
  for (size_t i = 0; i < n; i++) {
    agree_ += (scores[i] >= thr_) == (targets[i] >= thr_);
    dense_ += targets[i] >= thr_;
    target_sum_ += targets[i];
  }
  // Top k by target and by score (ties: the lower index), then their overlap.
  const size_t k = std::max<size_t>(1, static_cast<size_t>(std::llround(top_ * static_cast<double>(n))));
  auto top_set = [&](std::span<const float> v) {
    std::vector<uint32_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0u);
    std::nth_element(idx.begin(), idx.begin() + static_cast<int64_t>(k) - 1, idx.end(),
                     [&](uint32_t a, uint32_t b) { return v[a] != v[b] ? v[a] > v[b] : a < b; });
    std::vector<uint8_t> in(n, 0);
    for (size_t i = 0; i < k; i++) in[idx[i]] = 1;
    return in;
  };
  const std::vector<uint8_t> truth = top_set(targets), pred = top_set(scores);
  size_t hit = 0;
  for (size_t i = 0; i < n; i++) hit += truth[i] && pred[i];
  recall_ += static_cast<double>(hit) / static_cast<double>(k);
  loss_ += loss;
  entries_ += static_cast<int64_t>(n);
  contexts_++;
}

GateEvalStats GateEvalAccumulator::result() const {
  GateEvalStats s;
  if (contexts_ == 0) return s;
  const double e = static_cast<double>(entries_);
  s.loss = loss_ / contexts_;
  s.accuracy = agree_ / e;
  s.recall = recall_ / contexts_;
  s.target_density = dense_ / e;
  s.target_mean = target_sum_ / e;
  s.entries = entries_;
  s.contexts = contexts_;
  return s;
}

std::vector<int32_t> repeat_prompt_tokens(const std::string& tokenizer_path, const std::string& text,
                                          int vocab_size) {
  const std::vector<int32_t> ids = Tokenizer(tokenizer_path).encode(text);
  if (ids.empty()) throw std::invalid_argument("the repeat prompt encodes to no tokens with " + tokenizer_path);
  for (int32_t id : ids)
    if (id < 0 || id >= vocab_size)
      throw std::invalid_argument("tokenizer " + tokenizer_path + " encodes the repeat prompt to id " +
                                  std::to_string(id) + ", outside the model's vocab_size " +
                                  std::to_string(vocab_size) + " (a tokenizer of another model?)");
  return ids;
}

// ---- gate files -----------------------------------------------------------------------------

namespace {

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) s += (i ? sep : "") + v[i];
  return s;
}

}  // namespace

std::vector<float> load_gates(const std::string& path, const ModelCheckpoint& model,
                              std::string* warning) {
  // The gates' model config first, so that gates of another model fail naming the keys that
  // differ rather than the first tensor whose shape does not fit; then the verified read.
  const CheckpointSummary sum = read_checkpoint_summary(path);
  if (sum.format != kGatesFormatName)
    throw std::runtime_error(path + ": is a " + sum.format + " file, not Fast KVzip gates (kvtrain gates writes gates.h5)");
  const std::string* cfg_text = find_text(sum.texts, kGateTextModelConfig);
  if (!cfg_text) throw std::runtime_error(path + ": has no /text/" + kGateTextModelConfig);
  const RunConfig theirs = parse_run_config(*cfg_text, {}, path + ": /text/" + kGateTextModelConfig);
  const std::vector<std::string> diff = config_differences(theirs, model.config, "model");
  if (!diff.empty())
    throw std::runtime_error(path + ": gates trained for another model (" + join(diff, ", ") +
                             "; the gates' model vs " + model.path + "'s)");
  const CheckpointState s = checkpoint_read(path, build_gate_param_table(model.config.model), kGatesFormatName);
  const std::string* sha = find_text(s.texts, kGateTextModelSha256);
  if (warning) {
    warning->clear();
    if (sha && *sha != model.sha256) {
      const std::string* from = find_text(s.texts, kGateTextModelCheckpoint);
      *warning = path + " was trained on " + (from ? *from : std::string("another checkpoint")) +
                 " (SHA-256 " + sha->substr(0, 12) + "...), not on " + model.path + " (" +
                 model.sha256.substr(0, 12) + "...): same model config, other weights";
    }
  }
  return s.params;
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

// ---- the context cache ----------------------------------------------------------------------

// One file per context, <dir>/<split>_<window>.bin: a header of 8 int64 (magic, P, C, layers,
// decisions, 0, 0, 0), the gate inputs [layers, P, C] and the targets [layers, decisions, P], all
// little-endian float32. <dir>/KEY says what they were computed from (the model's SHA-256, the
// context length, the repeat prompt's ids, the shards); a directory with another KEY is an error,
// never reused. Files are written to a temporary name and renamed, so a killed run leaves none
// half-written; a file of the wrong size is an error naming it.
class GateTrainer::ContextCache {
 public:
  ContextCache(std::string dir, const std::string& key, int64_t P, int64_t C, int64_t layers, int64_t M)
      : dir_(std::move(dir)), header_{kMagic, P, C, layers, M, 0, 0, 0} {
    namespace fs = std::filesystem;
    fs::create_directories(dir_);
    const std::string key_path = dir_ + "/KEY";
    if (fs::exists(key_path)) {
      std::ifstream in(key_path, std::ios::binary);
      const std::string have((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (have != key)
        throw std::runtime_error("gates.cache_dir " + dir_ + " holds the contexts of another model, context "
                                 "length, prompt or data (see its KEY): delete it or choose another directory");
    } else {
      write_file_atomic(key_path, key);
    }
  }

  bool load(const std::string& name, std::vector<float>& hidden, std::vector<float>& targets) const {
    const std::string path = dir_ + "/" + name + ".bin";
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    int64_t h[8];
    in.read(reinterpret_cast<char*>(h), sizeof h);
    if (!in || !std::equal(h, h + 8, header_))
      throw std::runtime_error(path + ": not a context of this gate run (header differs); delete gates.cache_dir");
    hidden.resize(static_cast<size_t>(header_[3] * header_[1] * header_[2]));
    targets.resize(static_cast<size_t>(header_[3] * header_[4] * header_[1]));
    in.read(reinterpret_cast<char*>(hidden.data()), static_cast<std::streamsize>(hidden.size() * sizeof(float)));
    in.read(reinterpret_cast<char*>(targets.data()), static_cast<std::streamsize>(targets.size() * sizeof(float)));
    if (!in || in.peek() != std::char_traits<char>::eof())
      throw std::runtime_error(path + ": truncated or oversized context file; delete gates.cache_dir");
    return true;
  }

  void store(const std::string& name, const std::vector<float>& hidden, const std::vector<float>& targets) const {
    std::string bytes(reinterpret_cast<const char*>(header_), sizeof header_);
    bytes.append(reinterpret_cast<const char*>(hidden.data()), hidden.size() * sizeof(float));
    bytes.append(reinterpret_cast<const char*>(targets.data()), targets.size() * sizeof(float));
    write_file_atomic(dir_ + "/" + name + ".bin", bytes);  // fsync, rename; ENOSPC in one line
  }

 private:
  static constexpr int64_t kMagic = 0x6b767a6970637478;  // "kvzipctx"
  std::string dir_;
  int64_t header_[8];
};

// ---- the trainer ----------------------------------------------------------------------------

GateTrainer::GateTrainer(const GateRunConfig& cfg) : cfg_(cfg) {
  const GateTrainConfig& g = cfg_.gates;
  if (g.checkpoint.empty())
    throw std::invalid_argument("gates.checkpoint: give the frozen model's checkpoint (--checkpoint)");
  frozen_ = load_model_checkpoint(g.checkpoint);
  const ModelConfig& m = frozen_.config.model;
  for (auto [key, mine, theirs] : {std::tuple{"data.train", &cfg_.data.train, &frozen_.config.data.train},
                                   std::tuple{"data.val", &cfg_.data.val, &frozen_.config.data.val},
                                   std::tuple{"data.tokenizer", &cfg_.data.tokenizer,
                                              &frozen_.config.data.tokenizer}}) {
    if (mine->empty()) *mine = *theirs;
    if (mine->empty())
      throw std::invalid_argument(std::string(key) + ": not set in the gate config, nor in " + g.checkpoint);
  }

  prompt_ = repeat_prompt_tokens(cfg_.data.tokenizer, g.repeat_prompt, m.vocab_size);
  const int P = g.context, Q = static_cast<int>(prompt_.size()), T = 2 * P + Q;
  if (P < 2) throw std::invalid_argument("gates.context: must be >= 2, got " + std::to_string(P));
  if (T > m.max_seq_len)
    throw std::invalid_argument("gates.context: " + std::to_string(P) + " tokens: the KVzip input (context " +
                                std::to_string(P) + " + repeat prompt " + std::to_string(Q) +
                                " + context) is " + std::to_string(T) + " tokens, more than model.max_seq_len " +
                                std::to_string(m.max_seq_len) + " of " + g.checkpoint +
                                " (use a context of at most " + std::to_string((m.max_seq_len - Q) / 2) + ")");

  ops_ = make_ops(g.backend);
  model_ = std::make_unique<Transformer>(m, *ops_, 1, T, /*with_grads=*/false);
  model_->params_from_host(frozen_.params);
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
                                               m.vocab_size, g.seed, /*shuffle=*/true);
  val_data_ = std::make_unique<WindowLoader>(files_of("data.val", cfg_.data.val), P - 1, m.vocab_size,
                                             g.seed, /*shuffle=*/false);
  window_.resize(static_cast<size_t>(P));

  if (!g.cache_dir.empty()) {
    std::ostringstream key;
    key << "model_sha256 " << frozen_.sha256 << "\ncontext " << P << "\nprompt";
    for (int32_t t : prompt_) key << " " << t;
    for (const auto* d : {train_data_.get(), val_data_.get()}) {
      key << "\nshards";
      for (const std::string& f : d->files()) key << " " << std::filesystem::absolute(f).string();
    }
    key << "\n";
    cache_ = std::make_unique<ContextCache>(g.cache_dir, key.str(), P, m.d_model,
                                            static_cast<int64_t>(layers_.size()), gate_decisions(m));
    hidden_buf_ = Buffer<float>(*ops_, layers_.size() * static_cast<size_t>(P) * m.d_model);
  }
  hidden_.resize(layers_.size());
}

GateTrainer::~GateTrainer() = default;

void GateTrainer::load_context(WindowLoader& data, const std::string& split, uint64_t w) {
  const size_t P = static_cast<size_t>(cfg_.gates.context), C = static_cast<size_t>(model_->config().d_model);
  const std::string name = split + "_" + std::to_string(w);
  if (cache_ && cache_->load(name, hidden_host_, targets_)) {
    ops_->to_device(hidden_buf_.data(), hidden_host_.data(), hidden_host_.size() * sizeof(float));
    for (size_t i = 0; i < layers_.size(); i++) hidden_[i] = hidden_buf_.data() + i * P * C;
    return;
  }
  data.read_window(w, window_.data());
  scorer_->run(window_, prompt_);
  targets_ = scorer_->scores();
  for (size_t i = 0; i < layers_.size(); i++) hidden_[i] = scorer_->hidden(static_cast<int>(i));
  if (!cache_) return;
  hidden_host_.resize(layers_.size() * P * C);
  for (size_t i = 0; i < layers_.size(); i++)
    ops_->to_host(hidden_host_.data() + i * P * C, hidden_[i], P * C * sizeof(float));
  cache_->store(name, hidden_host_, targets_);
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
             {kGateTextModelSha256, frozen_.sha256}};
  return s;
}

void GateTrainer::save_checkpoint() {
  checkpoint_write_atomic(cfg_.output.dir, gates_->params(), state(),
                          RetentionPolicy{cfg_.output.keep_last, cfg_.output.keep_every});
}

void GateTrainer::restore(const CheckpointState& s) {
  const std::string where = "gate checkpoint at step " + std::to_string(s.step);
  const std::string* sha = find_text(s.texts, kGateTextModelSha256);
  if (!sha || *sha != frozen_.sha256)
    throw std::runtime_error(where + " was trained on another model checkpoint (SHA-256 " +
                             (sha ? sha->substr(0, 12) : std::string("unknown")) + "...) than " +
                             frozen_.path + " (" + frozen_.sha256.substr(0, 12) + "...)");
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
  const GateTrainConfig& g = cfg_.gates;
  if (resume || g.resume == "auto") {
    if (!resume_latest(out)) out << "no checkpoint in " << cfg_.output.dir << "; starting from step 0" << std::endl;
  }
  install_stop_signals();
  std::filesystem::create_directories(cfg_.output.dir);
  std::ofstream(cfg_.output.dir + "/config.yaml") << to_yaml(cfg_);
  MetricsLog metrics(cfg_.output.dir + "/metrics.jsonl", step_);
  const int64_t tokens_per_step = static_cast<int64_t>(g.contexts_per_step) * g.context;
  double elapsed = 0;
  const int64_t first = step_;
  while (step_ < g.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const StepResult r = step();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    elapsed += dt;
    metrics.log(nlohmann::json{{"kind", "train"}, {"step", step_}, {"loss", r.loss}, {"lr", r.lr},
                               {"tokens_seen", step_ * tokens_per_step},
                               {"tokens_per_s", tokens_per_step / dt}, {"step_time_s", dt}});
    const double eta = elapsed / static_cast<double>(step_ - first) * static_cast<double>(g.steps - step_);
    char line[256];
    std::snprintf(line, sizeof line, "gates step %6lld/%lld | loss %.4f | lr %.3e | %.0f context tok/s | ETA %s",
                  static_cast<long long>(step_), static_cast<long long>(g.steps), r.loss, r.lr,
                  tokens_per_step / dt, format_duration(eta).c_str());
    out << line << std::endl;
    const bool last = step_ == g.steps;
    const bool stop = stop_signal() != 0 || step_ == stop_after;
    if ((g.eval_every > 0 && step_ % g.eval_every == 0) || last) {
      const GateEvalStats e = evaluate();
      metrics.log(nlohmann::json{{"kind", "eval"}, {"step", step_}, {"val_loss", e.loss},
                                 {"accuracy", e.accuracy}, {"recall", e.recall},
                                 {"target_density", e.target_density}, {"target_mean", e.target_mean},
                                 {"contexts", e.contexts}, {"tokens_seen", step_ * tokens_per_step}});
      std::snprintf(line, sizeof line,
                    "eval step %lld | gate loss %.4f | accuracy@%.2f %.4f | recall of top %.0f%% %.4f | "
                    "targets >= %.2f: %.2f%%",
                    static_cast<long long>(step_), e.loss, g.threshold, e.accuracy, 100.0 * g.recall_top,
                    e.recall, g.threshold, 100.0 * e.target_density);
      out << line << std::endl;
    }
    if (last || stop || (cfg_.output.checkpoint_every > 0 && step_ % cfg_.output.checkpoint_every == 0)) {
      save_checkpoint();
      out << "checkpoint " << cfg_.output.dir << "/" << checkpoint_file_name(step_) << std::endl;
    }
    if (last) {
      const std::string path = checkpoint_write_file_atomic(cfg_.output.dir, "gates.h5", gates_->params(), state());
      out << "gates " << path << std::endl;
    }
    if (stop) {
      out << stop_message(step_) << std::endl;
      break;
    }
  }
  return step_;
}

}  // namespace kvt

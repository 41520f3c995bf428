// train/gate_trainer.h — the forward-only Fast KVzip gate trainer (DESIGN.md §4). The model of a
// checkpoint is frozen: built without gradient buffers, its forward runs on
// [context ; repeat prompt ; context] to give both the KVzip targets and the hidden states the
// gates read (model/kvzip.h); only the gates (model/gates.h) get gradients, from a BCE loss.
//
// One step: for each of gates.contexts_per_step training contexts (windows of gates.context
// tokens, in a per-epoch permutation drawn from gates.seed, like the training loader), one frozen
// forward, then per storage layer gate forward + BCE + gate backward (gradients averaged over the
// contexts) -> SGD momentum (or AdamW) with the lr of gate_lr_at -> metrics -> maybe eval -> maybe
// checkpoint. The run directory holds config.yaml, metrics.jsonl, resumable ckpt_<step>.h5
// (format kvtrain-gates) and, at the end, gates.h5: the same file under the name eval reads.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "data/loader.h"
#include "model/gates.h"
#include "model/kvzip.h"
#include "model/transformer.h"
#include "train/checkpoint.h"
#include "train/gate_config.h"

namespace kvt {

// Multiplier of gates.lr at 0-based step s of S. "kvzip" (the reference recipe, DESIGN.md §4),
// with t = s + 1: min(1, 0.01 t) while t <= 0.01 S, 1 while t <= 0.5 S, 0.5 while t <= 0.75 S,
// then 0.25. "constant": 1.
double gate_lr_factor(int64_t step, int64_t steps, const std::string& schedule);

// Held-out quality of the gates on some contexts. An entry is one (storage layer, decision, context
// position); each context's entries are ranked together, as eviction ranks them.
struct GateEvalStats {
  double loss = 0;            // BCE summed over layers and decisions, mean over tokens and contexts
  double accuracy = 0;        // share of entries where (score >= thr) == (target >= thr)
  double recall = 0;          // mean over contexts: share of the true top-`recall_top` entries (by
                              // target) that are also in the gates' top (by score)
  double target_density = 0;  // share of entries with target >= thr (how sparse the targets are)
  double target_mean = 0;
  int64_t entries = 0;
  int contexts = 0;
};

// Accumulates GateEvalStats context by context. scores and targets: [entries] of one context, in
// the same order; layer_losses: its per-layer BCE sum (the loss is given, not recomputed).
class GateEvalAccumulator {
 public:
  GateEvalAccumulator(float threshold, float recall_top) : thr_(threshold), top_(recall_top) {}
  void add_context(std::span<const float> scores, std::span<const float> targets, double loss);
  GateEvalStats result() const;

 private:
  float thr_, top_;
  double loss_ = 0, recall_ = 0, target_sum_ = 0;
  int64_t agree_ = 0, dense_ = 0, entries_ = 0;
  int contexts_ = 0;
};

// The repeat prompt's ids with the SentencePiece model at tokenizer_path (no BOS). Throws naming
// the tokenizer when the text encodes to nothing or to ids the model cannot embed.
std::vector<int32_t> repeat_prompt_tokens(const std::string& tokenizer_path, const std::string& text,
                                          int vocab_size);

// The texts a gate file stores about its frozen model (CheckpointState::texts).
inline constexpr const char* kGateTextModelConfig = "model_config";      // its resolved run config
inline constexpr const char* kGateTextModelCheckpoint = "model_checkpoint";  // its path
inline constexpr const char* kGateTextModelSha256 = "model_sha256";      // its SHA-256

// Reads gates (gates.h5 or a gate run's ckpt_<step>.h5) for `model`: the file must be a
// kvtrain-gates file whose frozen model has the same model config (else std::runtime_error naming
// the file and every differing key), and every gate tensor must have the shape `model` needs.
// A different model checkpoint hash is only reported in *warning (gates may serve a fine-tuned
// model of the same shape). Returns the gate parameters, laid out by build_gate_param_table.
std::vector<float> load_gates(const std::string& path, const ModelCheckpoint& model,
                              std::string* warning);

class GateTrainer {
 public:
  // Loads the frozen model from cfg.gates.checkpoint, resolves empty data keys from its config,
  // encodes the repeat prompt with data.tokenizer, opens the shards and initialises the gates from
  // gates.seed. Throws naming the key when the KVzip input 2 P + prompt exceeds
  // model.max_seq_len, when data.val is empty, or when launched on several ranks.
  explicit GateTrainer(const GateRunConfig& cfg);
  ~GateTrainer();

  // The whole run, like Trainer::run: resume (gates.resume: auto or resume = true), progress lines
  // and metrics.jsonl, evals every eval_every steps and at the end, checkpoints every
  // checkpoint_every steps, at the end and on a stop signal; at the end also gates.h5.
  int64_t run(std::ostream& out, bool resume = false, int64_t stop_after = 0);

  struct StepResult {
    double loss = 0;  // mean over the step's contexts
    double lr = 0;
  };
  StepResult step();
  // The first gates.eval_contexts windows of data.val (always the same ones).
  GateEvalStats evaluate();
  void save_checkpoint();
  bool resume_latest(std::ostream& out);
  void restore(const CheckpointState& s);

  const GateRunConfig& config() const { return cfg_; }  // data keys resolved
  const ModelCheckpoint& frozen() const { return frozen_; }
  Transformer& model() { return *model_; }
  GateModel& gates() { return *gates_; }
  const std::vector<int32_t>& repeat_prompt() const { return prompt_; }
  int64_t steps_done() const { return step_; }

 private:
  class Optimizer;
  class ContextCache;
  CheckpointState state() const;
  // Makes window w of `data` the current context: targets_ and hidden_ from the cache, or from a
  // forward of the frozen model (then cached, when a cache is set).
  void load_context(WindowLoader& data, const std::string& split, uint64_t w);
  // Gate scores of the current context against its targets: into the accumulator, or gradients
  // (scaled by grad_scale). Returns its loss.
  double score_context(bool backward, float grad_scale, GateEvalAccumulator* acc);

  GateRunConfig cfg_;
  ModelCheckpoint frozen_;
  std::unique_ptr<Ops> ops_;
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<KvzipScorer> scorer_;
  std::unique_ptr<GateModel> gates_;
  std::unique_ptr<Optimizer> opt_;
  std::unique_ptr<ContextCache> cache_;
  std::unique_ptr<WindowLoader> train_data_, val_data_;
  std::vector<int32_t> prompt_, window_;
  std::vector<int> layers_;
  // The current context: targets [layer][M][P] (host) and each storage layer's gate input [P, C]
  // (backend memory: the scorer's activations, or hidden_buf_ when read from the cache).
  std::vector<float> targets_, hidden_host_;
  std::vector<const float*> hidden_;
  Buffer<float> hidden_buf_;
  int64_t step_ = 0;
};

}  // namespace kvt

// train/gate_trainer.h — the forward-only Fast KVzip gate trainer (docs/design.md, "Fast KVzip gates"). The model of a
// checkpoint is frozen: only its inference path is built (model/inference.h: no gradients, no
// backward), and one prefill of [context ; repeat prompt ; context] gives both the KVzip targets,
// reduced to the max as they are computed, and the hidden states the gates read (model/kvzip.h);
// only the gates (model/gates.h) get gradients, from a BCE loss.
//
// One step: for each of gates.contexts_per_step training contexts (windows of gates.context
// tokens, in a per-epoch permutation drawn from gates.seed, like the training loader), one frozen
// forward, then per storage layer gate forward + BCE + gate backward (gradients averaged over the
// contexts) -> SGD momentum (or AdamW) with the lr of gate_lr_at -> metrics -> maybe eval -> maybe
// checkpoint. The run directory holds config.yaml, metrics.jsonl, resumable ckpt_<step>.h5
// (format kvtrain-gates) and, at the end, gates.h5: the same file under the name eval reads.
#pragma once

#include "data/text_tokenizer.h"

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "data/loader.h"
#include "model/gates.h"
#include "model/kvzip.h"
#include "model/inference.h"
#include "train/checkpoint.h"
#include "train/context_cache.h"
#include "train/gate_config.h"
#include "train/gate_eval.h"
#include "train/gate_files.h"
#include "train/schedule.h"

namespace kvt {

// The repeat prompt's ids with the model's tokenizer (no BOS; special-token strings such as
// "<|im_start|>" become their ids).
// Throws naming the tokenizer when the text encodes to nothing or to ids the model cannot embed.
std::vector<int32_t> repeat_prompt_tokens(const TextTokenizer& tok, const std::string& text, int vocab_size);

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
  InferenceModel& model() { return *model_; }
  GateModel& gates() { return *gates_; }
  const std::vector<int32_t>& repeat_prompt() const { return prompt_; }
  int64_t steps_done() const { return step_; }

 private:
  class Optimizer;
  CheckpointState state() const;
  // Makes window w of `data` the current context: targets_ and hidden_ from the cache, or from a
  // forward of the frozen model (then cached, when a cache is set).
  void load_context(WindowLoader& data, const std::string& split, uint64_t w);
  // Gate scores of the current context against its targets: into the accumulator, or gradients
  // (scaled by grad_scale). Returns its loss.
  double score_context(bool backward, float grad_scale, GateEvalAccumulator* acc);

  GateRunConfig cfg_;
  ModelCheckpoint frozen_;
  std::string frozen_weights_;  // weights_sha256(frozen_), once: it reads all of the parameters
  std::unique_ptr<Ops> ops_;
  std::unique_ptr<InferenceModel> model_;
  std::unique_ptr<KvzipScorer> scorer_;
  std::unique_ptr<GateModel> gates_;
  std::unique_ptr<Optimizer> opt_;
  std::unique_ptr<ContextCache> cache_;
  std::unique_ptr<WindowLoader> train_data_, val_data_;
  std::vector<int32_t> prompt_, window_;
  std::vector<int> layers_;
  // The current context: targets [layer][M][P] (host) and each storage layer's gate input [P, C]
  // (backend memory, hidden_buf_: bf16-rounded, from the cache or the scorer).
  std::vector<float> targets_, hidden_host_;
  std::vector<uint16_t> hidden_bf16_;
  std::vector<const float*> hidden_;
  Buffer<float> hidden_buf_;
  int64_t step_ = 0;
};

}  // namespace kvt

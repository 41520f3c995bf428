// train/gate_config.h — the gate run config (configs/gates.yaml): YAML sections gates, data,
// output, parsed and validated like the run config (train/config_yaml.h). The frozen model and
// its data come from the model checkpoint (`kvtrain gates --checkpoint`); data keys left empty
// take that checkpoint's values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/config.h"

namespace kvt {

inline constexpr const char* kDefaultRepeatPrompt = "\n\nRepeat the previous context exactly.\n";

struct GateTrainConfig {
  std::string checkpoint;         // the frozen model (ckpt_<step>.h5); --checkpoint sets it
  int context = 1024;             // P: context tokens; the KVzip input is 2 P + prompt tokens
  std::string repeat_prompt = kDefaultRepeatPrompt;  // tokenized with data.tokenizer
  int64_t steps = 5000;           // optimizer steps
  int contexts_per_step = 1;      // contexts (of P tokens each) per step
  std::string optimizer = "sgd";  // sgd (momentum, the reference's) | adamw
  float lr = 0.2f;                // peak learning rate
  std::string schedule = "kvzip"; // kvzip (the reference's steps, docs/design.md, "Fast KVzip gates") | constant
  float momentum = 0.9f;          // sgd
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;  // adamw
  float weight_decay = 0.0f;      // sgd: L2 added to the gradient; adamw: decoupled, matrices only
  int64_t eval_every = 500;       // steps between held-out evaluations; 0 = only at the end
  int eval_contexts = 8;          // held-out contexts per evaluation (the first of data.val)
  int64_t train_contexts = 0;     // 0: every window of data.train; N: N windows spread evenly over it
  float threshold = 0.05f;        // accuracy: (score >= t) agrees with (target >= t)
  float recall_top = 0.3f;        // recall of the true top fraction of each context's entries
  uint64_t seed = 1234;           // gate init and the order of training contexts
  std::string backend = "cpu";    // cpu | cuda
  int threads = 0;                // OpenMP threads; 0 = automatic
  std::string resume = "never";   // never | auto (newest valid checkpoint of output.dir)
  // "" = every step runs the frozen model; else the targets and gate inputs of each context are
  // stored here once (about 4 x storage layers x context x d_model bytes each) and read back in
  // later epochs and evals, which then cost no model forward. Same results, bitwise.
  std::string cache_dir;
};

struct GateRunConfig {
  GateTrainConfig gates;
  DataConfig data;      // empty keys: the model checkpoint's
  OutputConfig output;  // dir holds config.yaml, metrics.jsonl, ckpt_<step>.h5 and gates.h5
};

// Parses and validates a gate config (errors name the file and the key path, as load_run_config's).
GateRunConfig load_gate_config(const std::string& path, const std::vector<std::string>& overrides = {});
GateRunConfig parse_gate_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                                const std::string& source);
std::string to_yaml(const GateRunConfig& cfg);
std::vector<std::string> gate_config_keys();

}  // namespace kvt

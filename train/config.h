// train/config.h — the run configuration: YAML sections model, train, data, output
// (configs/*.yaml). Parsed and validated in one place, before any work; overridable with
// `--set section.key=value`; written back resolved into the run directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace kvt {

struct TrainConfig {
  int batch_size = 8;           // sequences per rank per micro-step (B)
  int seq_len = 128;            // T (<= model.max_seq_len)
  int grad_accum = 1;           // micro-steps per optimizer step
  int64_t global_batch = 0;     // sequences per optimizer step, all ranks; 0 = batch_size x
                                // grad_accum x world; > 0 derives batch_size = it / (grad_accum x world)
  int64_t steps = 100;          // optimizer steps
  float lr = 3e-3f;             // peak learning rate
  float min_lr_ratio = 0.1f;    // cosine floor: min lr = lr * min_lr_ratio
  int64_t warmup_steps = 10;    // linear warm-up from lr/warmup_steps to lr
  float weight_decay = 0.1f;    // AdamW, decoupled; matrices only
  bool decay_embeddings = false;  // also decay the embedding (and untied lm_head)
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float grad_clip = 1.0f;       // global-norm clip; 0 disables
  int64_t eval_every = 50;      // steps between validation evals; 0 disables (a final eval still runs)
  int eval_batches = 8;         // validation batches of batch_size x seq_len per eval
  uint64_t seed = 1234;         // init and data order
  std::string backend = "cpu";  // cpu | cuda
  int threads = 0;              // OpenMP threads per rank; 0 = max(1, cores / local ranks)
  std::string resume = "never"; // never | auto (newest valid checkpoint of output.dir)
  std::string init_from;        // checkpoint .h5 whose weights start a new run (fresh optimizer)
  // GPU hot path (docs/gpu.md)
  std::string precision = "fp32";   // fp32 | fp32_tf32 | bf16 (kernels/ops.h, Precision)
  int zero = 0;                     // 0: plain data parallelism; 1: ZeRO-1 (AdamW state sharded)
  std::string recompute = "none";   // none | attention | block: activations recomputed in backward
  float bucket_mb = 25.0f;          // gradient buckets (MB, reverse layer order); 0 = one reduction
  float comm_timeout_s = 600.0f;    // a collective still running after this long aborts the job
};

struct DataConfig {
  std::string train;      // glob of training shards, e.g. datasets/kjv/*train*.bin
  std::string val;        // glob of validation shards
  std::string tokenizer;  // SentencePiece .model (for generate/export; optional for train)
};

struct OutputConfig {
  std::string dir = "runs/default";  // run directory: config.yaml, metrics.jsonl, checkpoints
  int64_t checkpoint_every = 0;       // steps between checkpoints; 0 = only at the end
  int keep_last = 3;                  // checkpoints kept (newest)
  int64_t keep_every = 0;             // also keep every k-th step's checkpoint; 0 = none
};

struct RunConfig {
  ModelConfig model;
  TrainConfig train;
  DataConfig data;
  OutputConfig output;
};

// Loads a YAML file, applies `section.key=value` overrides, validates everything (unknown keys,
// wrong types, impossible shapes) and resolves defaults. Throws std::invalid_argument whose
// message names the file and the key path, e.g. "configs/x.yaml: train.seq_len: ...".
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Same, from YAML text (source names the origin in messages, e.g. a checkpoint).
RunConfig parse_run_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                           const std::string& source);
// The resolved config as YAML text (every key, defaults filled in); parse_run_config of it gives
// back an equal config.
std::string to_yaml(const RunConfig& cfg);
// FNV-1a 64 of to_yaml(cfg), as 16 hex digits: equal on every rank iff the configs are equal.
std::string config_hash(const RunConfig& cfg);
// Every key path the YAML accepts ("model.vocab_size", ...), in to_yaml's order.
std::vector<std::string> config_keys();
// "<section>.<key>: <a> vs <b>" for every key of `section` whose values differ, in to_yaml's order
// (e.g. "model.n_kv_heads: 2 vs 4"); empty when the section is equal.
std::vector<std::string> config_differences(const RunConfig& a, const RunConfig& b,
                                            const std::string& section);

}  // namespace kvt

// model/memory_estimate.h — the bytes a run will allocate, counted from the config before anything
// is allocated (docs/design.md, "Failures and resources").
//
// Every count is closed-form per layer: O(n_layers) integer arithmetic, nothing allocated in
// proportion to the model (no parameter table is built), saturating at UINT64_MAX instead of
// wrapping, so any config answers at once. Each count equals what the code allocates today:
//   parameter_count       == build_param_table(cfg).total()
//   gate_parameter_count  == build_gate_param_table(cfg).total()
//   transformer_activation_bytes == Transformer::activation_bytes() (arena + token buffer)
//   inference_*_bytes     == InferenceModel's cache, arena, token buffer and keep-mask
//   gate_activation_bytes == GateModel's arena
// (tests/test_resources.cpp checks each against the allocator).
#pragma once

#include <cstdint>
#include <string>

#include "model/config.h"
#include "model/recompute.h"

namespace kvt {

// Floats of the model's parameter table; cfg need not be resolved.
uint64_t parameter_count(const ModelConfig& cfg);
// Floats of the Fast KVzip gate table (model/gates.h).
uint64_t gate_parameter_count(const ModelConfig& cfg);

// Transformer(cfg, ops, B, T, with_grads, _, recompute): its activation arena (every slot rounded
// up to 16 floats) and its 2 B T token ids. attention_probs: the backend's attention saves
// B H T T probabilities per layer (ops.attention_saves_probs), else B H T flash statistics.
uint64_t transformer_activation_bytes(const ModelConfig& cfg, int64_t B, int64_t T, bool with_grads,
                                      Recompute recompute = Recompute::none,
                                      bool attention_probs = true);

// InferenceModel on cfg (chunk = InferenceOptions::max_chunk, 0 = its default):
// the KV cache (max_seq_len positions of every storage layer's block) ...
uint64_t inference_cache_bytes(const ModelConfig& cfg);
// ... and its working memory: the one-chunk arena (with the rebuilt-K/V scratch and the RoPE
// tables), the chunk's token ids and the host keep-mask (one byte per layer, mask head, position).
uint64_t inference_working_bytes(const ModelConfig& cfg, int chunk);
// GateModel(cfg, ops, max_tokens, with_grads): its activation arena (the same with or without
// gradients).
uint64_t gate_activation_bytes(const ModelConfig& cfg, int64_t max_tokens);

// What one process of a command holds at its peak, by kind. Host copies are the std::vector
// copies of parameters and optimizer state a command keeps or builds (a loaded checkpoint's
// weights, a checkpoint being written). On the CPU backend everything is host memory.
struct MemoryEstimate {
  std::string what;              // "train", "gates", "generate", "eval", "bench"
  uint64_t params = 0;           // parameter buffers (model, and gates)
  uint64_t grads = 0;            // gradient buffers
  uint64_t optimizer = 0;        // optimizer state
  std::string optimizer_name;    // "AdamW", "SGD momentum"; empty without an optimizer
  uint64_t kv_cache = 0;         // inference KV cache
  uint64_t activations = 0;      // activation arenas, scratch, token buffers
  uint64_t host_copies = 0;      // host copies of parameters / optimizer state at the peak
  int64_t batch = 0, seq = 0;    // the activations' shape (batch x seq tokens)

  uint64_t total() const;  // saturating
};

// `kvtrain train`, per rank: params, grads, AdamW m and v, activations at (B, T); host copies are
// the 3 P floats (parameters, m, v) a checkpoint write holds on the host.
MemoryEstimate estimate_train_memory(const ModelConfig& cfg, int64_t B, int64_t T);
// `kvtrain bench` (training): the same buffers without checkpoints.
MemoryEstimate estimate_bench_memory(const ModelConfig& cfg, int64_t B, int64_t T);
// `kvtrain gates`: the frozen model (parameters, activations of batch 1 x T = 2 context + prompt,
// no gradients) and its host copy, the gates (parameters, gradients, AdamW m v or SGD momentum,
// arena of `context` tokens), the KVzip score buffer, the context cache's hidden-state buffer
// (with_cache), and the 3 gate-table copies of a gate checkpoint write.
MemoryEstimate estimate_gates_memory(const ModelConfig& cfg, int context, int prompt_tokens,
                                     bool adamw, bool with_cache);
// `kvtrain generate`: the checkpoint's weights on the host and uploaded, the KV cache, one chunk.
MemoryEstimate estimate_generate_memory(const ModelConfig& cfg);
// `kvtrain eval`: the weights on the host and uploaded, a Transformer of batch 1 x oracle_T
// (1 without the KVzip oracle) sharing them with the InferenceModel (KV cache, one chunk), the
// gates (with_gates: parameters and an arena of one chunk) and the oracle's score buffer.
MemoryEstimate estimate_eval_memory(const ModelConfig& cfg, int oracle_T, int chunk, bool with_gates);

}  // namespace kvt

// model/transformer.h — the LLaMA-style decoder (docs/design.md, "The model family"): forward and backward
// orchestration over the op interface. It never branches on the backend.
//
// Memory (llm.c): parameters in one contiguous buffer described by the ParamTable, gradients in a
// second buffer with the same table, activations in one buffer sized from (B, T, config) and the
// recompute mode (model/recompute.h).
//
// Precision (kernels/ops.h, Precision): the parameter buffer is registered with
// ops.set_weights, so in bf16 the GEMMs read a bf16 copy of it. The copy is rebuilt by
// init_parameters, params_from_host and weights_updated(); whoever writes param_data() directly
// (the optimizer, a broadcast) calls weights_updated() afterwards.
//
// A training step, for the trainer (train/trainer.cpp):
//   zero_grads();
//   for each micro-batch: forward_train(inputs, targets, B, T, 1/A); backward(1/A);
//   loss = take_loss();            // sum over micro-batches of weight * mean loss: one read
//   ... all-reduce, optimizer update of param_data() ...
//   weights_updated();             // refresh the low-precision weight copy
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kernels/ops.h"
#include "model/config.h"
#include "model/layer_plan.h"
#include "model/params.h"
#include "model/recompute.h"

namespace kvt {

// Builds the parameter table for a config (names and shapes of docs/design.md, "The model family"): reusing layers of a
// cross-layer scheme have q_proj but no k_proj/v_proj (fusedkv adds fuse_{k,v}_{first,last}),
// LRKV layers have k_shared/v_shared/k_down/v_down/k_up/v_up instead of k_proj/v_proj.
ParamTable build_param_table(const ModelConfig& cfg, bool decay_embeddings = false);

// Model FLOPs per token for one training step (forward + backward), PaLM's formula:
// 6 * N_matmul + 12 * L * H * D * T, with N_matmul the parameters of all matmuls
// (the LM head included, the embedding lookup excluded; LRKV's expansion counted as H D r
// multiply-accumulates each for K and V; FusedKV's element-wise fusion not counted).
double train_flops_per_token(const ModelConfig& cfg, int T);

class Transformer {
 public:
  // B, T: the largest batch and sequence length a forward will see (activation buffers are
  // sized for them). with_grads: allocate gradient and backward buffers. recompute: which
  // activations backward() recomputes instead of keeping (model/recompute.h); gradients are
  // bitwise the same in every mode.
  Transformer(const ModelConfig& cfg, Ops& ops, int B, int T, bool with_grads,
              bool decay_embeddings = false, Recompute recompute = Recompute::none);
  ~Transformer();
  Transformer(const Transformer&) = delete;
  Transformer& operator=(const Transformer&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const ParamTable& params() const { return table_; }
  Ops& ops() { return ops_; }
  int max_batch() const { return B_; }
  int max_seq() const { return T_; }
  Recompute recompute() const { return recompute_; }

  float* param_data() { return params_.data(); }  // backend memory, table_.total() floats
  float* grad_data() { return grads_.data(); }    // null without grads

  // Deterministic init from a seed: matrices ~ N(0, init_std^2), the attention output and MLP
  // down projections ~ N(0, (init_std / sqrt(2 L))^2) (GPT-2), norm weights 1.
  void init_parameters(uint64_t seed);
  std::vector<float> params_to_host() const;
  void params_from_host(const std::vector<float>& host);  // and refreshes the weight copy
  // Call after every change of param_data() made outside this class (each optimizer update):
  // rebuilds the backend's low-precision weight copy (ops.refresh_weights; nothing in fp32).
  void weights_updated();
  std::vector<float> grads_to_host() const;
  void zero_grads();

  // Forward over inputs [B, T] (host int32, B <= max_batch, T <= max_seq). With targets
  // (host, [B, T]) it also computes per-token losses and returns their mean; without, it returns
  // 0 and only the logits are computed. Activations are kept for backward().
  // The loss is read back to the host (one synchronisation).
  float forward(const int32_t* inputs, const int32_t* targets, int B, int T);
  // The training forward: as forward() with targets, but the loss stays on the backend:
  // weight * mean loss is added to an accumulator (ops.accumulate_sum), read by take_loss().
  void forward_train(const int32_t* inputs, const int32_t* targets, int B, int T, float weight);
  // The accumulated sum of weight * mean loss since the last take_loss() (one to_host), and
  // resets it to 0.
  float take_loss();
  // Logits of the last forward, [B, T, V] on the host (call before backward(), which overwrites
  // them with their gradient).
  std::vector<float> logits_to_host() const;
  // Backward of the last forward (which had targets): grads += d(mean loss * loss_scale)/dparams.
  void backward(float loss_scale);
  // Called by backward() each time a range [begin, end) of grad_data() (floats) is final, in
  // decreasing order of begin: [final norm, end) (untied lm_head too) after the head, each
  // layer's own range after its backward (L-1 first), and [0, layer 0) — the embedding, tied or
  // not — last. The ranges tile the buffer. Null (the default) calls nothing.
  using GradReady = std::function<void(size_t begin, size_t end)>;
  void set_grad_ready(GradReady cb) { grad_ready_ = std::move(cb); }
  // Start of layer l's parameters in the buffer (floats); layer_begin(L) is the final norm's.
  size_t layer_begin(int l) const;

  // Bytes of the activation arena and token buffer (== transformer_activation_bytes).
  size_t activation_bytes() const;

  // Activations of the last forward, in backend memory (Fast KVzip, docs/design.md, "Fast KVzip gates"):
  // the normalised hidden state entering layer l's attention [B, T, C] (not kept with recompute
  // block: throws), and its attention probabilities [B, H, T, T] (row t is query t; entries
  // past t are 0; throws with recompute != none, or when the backend saves flash statistics).
  const float* attention_input(int layer) const;
  const float* attention_probs(int layer) const;

 private:
  struct Acts;
  void alloc_activations();
  void check_shape(const int32_t* inputs, const int32_t* targets, int B, int T) const;
  void run_forward(const int32_t* inputs, const int32_t* targets, int B, int T);
  // Layer l's forward from res[l]; full = false stops after SwiGLU (what its backward reads).
  void block_forward(int l, int B, int T, bool full);

  ModelConfig cfg_;
  Ops& ops_;
  int B_, T_;
  bool with_grads_;
  Recompute recompute_;
  ParamTable table_;
  Buffer<float> params_, grads_;
  std::unique_ptr<Acts> acts_;
  int cur_B_ = 0, cur_T_ = 0;  // shape of the last forward
  bool have_targets_ = false;
  GradReady grad_ready_;
};

}  // namespace kvt

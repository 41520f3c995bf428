// train/gguf_llama.h — a LLaMA GGUF file's model config and its attention weights in kvtrain's
// layout (docs/design.md, "Importing models"): pieces of `kvtrain import`.
#pragma once

#include <cstdint>

#include "data/gguf.h"
#include "model/config.h"

namespace kvt {

// The model config from llama.* metadata: block_count, embedding_length, feed_forward_length,
// attention.head_count (_kv: default head_count), rope.freq_base (default 10000),
// attention.layer_norm_rms_epsilon, context_length; vocab from tokenizer.ggml.tokens (or
// llama.vocab_size); tie_embeddings when there is no output.weight. Refused by name, naming the
// file and the key or tensor: another general.architecture, rope scaling, a sliding window,
// experts (MoE), biases (*.bias) and q/k norms (attn_q_norm, attn_k_norm), and a
// rope.dimension_count other than the head dim. The result is resolve()d.
ModelConfig gguf_llama_config(const GgufFile& f);

// llama.cpp's converter permutes the rows of attn_q (n_head) and attn_k (n_head_kv) for its
// interleaved RoPE: W.reshape(n_head, 2, R, cols).swapaxes(1, 2), R = rows / n_head / 2, so
// row (h, r, i) of its file holds row (h, i, r) of the original. unpermute_qk_rows undoes it in
// place for kvtrain's rotate-half pairing; permute_qk_rows is the converter's step (for tests).
void unpermute_qk_rows(float* w, int64_t rows, int64_t cols, int n_head);
void permute_qk_rows(float* w, int64_t rows, int64_t cols, int n_head);

}  // namespace kvt

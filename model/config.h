// model/config.h — the model's shape. Validation lives here so every caller (YAML, tests, tools)
// gets the same checks; key paths in messages are those of the YAML `model:` section.
#pragma once

#include <cstdint>
#include <string>

namespace kvt {

struct ModelConfig {
  int vocab_size = 4096;
  int d_model = 128;
  int n_layers = 4;
  int n_heads = 4;
  int n_kv_heads = 0;  // 0 = same as n_heads (MHA); 1 = MQA; else GQA
  int d_ff = 0;        // 0 = round_up(8/3 d_model, 32)  (LLaMA's SwiGLU width)
  int max_seq_len = 256;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  bool tie_embeddings = true;
  float init_std = 0.02f;

  // KV-lean attention (docs/design.md, "The model family").
  std::string kv_sharing = "none";     // none | cla | yoco | fusedkv_lite | fusedkv
  int storage_layers = 0;              // n for yoco / fusedkv_lite / fusedkv; 0 = L/2
  std::string fusion_init = "normal";  // fusedkv weights: normal (N(0,1)) | lite (a_n = b_0 = 1)
  int lrkv_rank = 0;                   // r > 0: shared + low-rank K/V projections (LRKV)

  // Derived (valid after resolve()).
  int head_dim() const { return d_model / n_heads; }
  int kv_heads() const { return n_kv_heads > 0 ? n_kv_heads : n_heads; }
  int ffn_dim() const;
  bool lrkv() const { return lrkv_rank > 0; }

  // Fills derived defaults (n_kv_heads, d_ff, storage_layers) and throws std::invalid_argument naming the
  // `model.<key>` whose value is impossible.
  void resolve();
};

}  // namespace kvt

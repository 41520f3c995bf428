#include "train/gguf_llama.h"

#include "data/error_text.h"

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvt {

namespace {
[[noreturn]] void refuse(const GgufFile& f, const std::string& what) {
  throw std::runtime_error(f.path() + ": " + one_line(what) + ": not a plain LLaMA block, refused");
}

int get_int(const GgufFile& f, const std::string& key) {
  const int64_t v = f.get_i64(key);
  if (v <= 0 || v > (int64_t(1) << 30))
    throw std::runtime_error(f.path() + ": " + key + " = " + std::to_string(v) +
                             " is not a positive size");
  return static_cast<int>(v);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Row (h, a, b) of a [n_head, A, B, cols] view moves to (h, b, a): the swap of the two inner
// row axes, A x B -> B x A within each head.
void swap_row_axes(float* w, int64_t cols, int n_head, int64_t A, int64_t B) {
  std::vector<float> head(static_cast<size_t>(A * B * cols));
  for (int h = 0; h < n_head; h++) {
    float* base = w + static_cast<int64_t>(h) * A * B * cols;
    std::memcpy(head.data(), base, head.size() * sizeof(float));
    for (int64_t a = 0; a < A; a++)
      for (int64_t b = 0; b < B; b++)
        std::memcpy(base + (b * A + a) * cols, head.data() + (a * B + b) * cols,
                    static_cast<size_t>(cols) * sizeof(float));
  }
}

void check_rows(int64_t rows, int n_head) {
  if (n_head <= 0 || rows % (2 * n_head) != 0)
    throw std::invalid_argument("q/k rows " + std::to_string(rows) + " are not 2 x " +
                                std::to_string(n_head) + " heads");
}
}  // namespace

void permute_qk_rows(float* w, int64_t rows, int64_t cols, int n_head) {
  check_rows(rows, n_head);
  swap_row_axes(w, cols, n_head, 2, rows / n_head / 2);  // (2, R) -> (R, 2)
}

void unpermute_qk_rows(float* w, int64_t rows, int64_t cols, int n_head) {
  check_rows(rows, n_head);
  swap_row_axes(w, cols, n_head, rows / n_head / 2, 2);  // (R, 2) -> (2, R)
}

ModelConfig gguf_llama_config(const GgufFile& f) {
  const std::string& arch = f.get_string("general.architecture");
  if (arch != "llama") refuse(f, "general.architecture = '" + arch + "'");
  const std::string p = "llama.";
  for (const char* key : {"rope.scaling.type", "attention.sliding_window", "expert_count"}) {
    const GgufValue* v = f.find(p + key);
    if (!v) continue;
    if (std::string(key) == "rope.scaling.type" && f.get_string(p + key) == "none") continue;
    if (std::string(key) == "expert_count" && f.get_i64(p + key) == 0) continue;
    refuse(f, p + key);
  }
  for (const GgufTensorInfo& t : f.tensors())
    if (ends_with(t.name, ".bias") || ends_with(t.name, "attn_q_norm.weight") ||
        ends_with(t.name, "attn_k_norm.weight"))
      refuse(f, "tensor '" + t.name + "'");
  ModelConfig m;
  m.n_layers = get_int(f, p + "block_count");
  m.d_model = get_int(f, p + "embedding_length");
  m.d_ff = get_int(f, p + "feed_forward_length");
  m.n_heads = get_int(f, p + "attention.head_count");
  m.n_kv_heads = f.find(p + "attention.head_count_kv") ? get_int(f, p + "attention.head_count_kv")
                                                        : m.n_heads;
  m.rope_theta = f.find(p + "rope.freq_base") ? f.get_f32(p + "rope.freq_base") : 10000.0f;
  m.norm_eps = f.get_f32(p + "attention.layer_norm_rms_epsilon");
  m.max_seq_len = get_int(f, p + "context_length");
  m.vocab_size = f.find("tokenizer.ggml.tokens")
                     ? static_cast<int>(f.get_string_array("tokenizer.ggml.tokens").size())
                     : get_int(f, p + "vocab_size");
  m.tie_embeddings = f.tensor("output.weight") == nullptr;
  if (m.d_model % m.n_heads != 0)
    throw std::runtime_error(f.path() + ": " + p + "embedding_length " + std::to_string(m.d_model) +
                             " is not a multiple of the " + std::to_string(m.n_heads) + " heads");
  if (f.find(p + "rope.dimension_count") &&
      get_int(f, p + "rope.dimension_count") != m.d_model / m.n_heads)
    refuse(f, p + "rope.dimension_count = " + std::to_string(get_int(f, p + "rope.dimension_count")) +
                  " (partial rotary; head dim " + std::to_string(m.d_model / m.n_heads) + ")");
  try {
    m.resolve();
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(f.path() + ": " + e.what());
  }
  return m;
}

}  // namespace kvt

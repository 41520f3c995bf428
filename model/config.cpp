#include "model/config.h"

#include <stdexcept>

namespace kvt {

namespace {
[[noreturn]] void bad(const std::string& key, const std::string& why) {
  throw std::invalid_argument("config key model." + key + ": " + why);
}
}  // namespace

int ModelConfig::ffn_dim() const {
  if (d_ff > 0) return d_ff;
  int f = (8 * d_model) / 3;
  return (f + 31) / 32 * 32;
}

void ModelConfig::resolve() {
  if (vocab_size < 2) bad("vocab_size", "must be >= 2, got " + std::to_string(vocab_size));
  if (d_model < 1) bad("d_model", "must be >= 1, got " + std::to_string(d_model));
  if (n_layers < 1) bad("n_layers", "must be >= 1, got " + std::to_string(n_layers));
  if (n_heads < 1) bad("n_heads", "must be >= 1, got " + std::to_string(n_heads));
  if (d_model % n_heads != 0)
    bad("n_heads", "d_model " + std::to_string(d_model) + " is not divisible by n_heads " +
                       std::to_string(n_heads));
  if (n_kv_heads == 0) n_kv_heads = n_heads;
  if (n_kv_heads < 1) bad("n_kv_heads", "must be >= 1, got " + std::to_string(n_kv_heads));
  if (n_heads % n_kv_heads != 0)
    bad("n_kv_heads", "n_heads " + std::to_string(n_heads) + " is not divisible by n_kv_heads " +
                          std::to_string(n_kv_heads));
  if (head_dim() % 2 != 0)
    bad("n_heads", "head_dim d_model/n_heads = " + std::to_string(head_dim()) +
                       " is odd; RoPE needs an even head_dim");
  if (d_ff == 0) d_ff = ffn_dim();
  if (d_ff < 1) bad("d_ff", "must be >= 1, got " + std::to_string(d_ff));
  if (max_seq_len < 1) bad("max_seq_len", "must be >= 1, got " + std::to_string(max_seq_len));
  if (!(rope_theta > 0)) bad("rope_theta", "must be > 0");
  if (!(norm_eps > 0)) bad("norm_eps", "must be > 0");
  if (!(init_std > 0)) bad("init_std", "must be > 0");
}

}  // namespace kvt

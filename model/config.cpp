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
  if (lrkv_rank < 0) bad("lrkv_rank", "must be >= 0 (0 = off), got " + std::to_string(lrkv_rank));
  if (lrkv_rank > 0 && n_kv_heads != 0 && n_kv_heads != n_heads)
    bad("lrkv_rank", "LRKV has one KV head per query head: n_kv_heads must equal n_heads " +
                         std::to_string(n_heads) + " or be left out, got n_kv_heads " +
                         std::to_string(n_kv_heads));
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

  const bool known = kv_sharing == "none" || kv_sharing == "cla" || kv_sharing == "yoco" ||
                     kv_sharing == "fusedkv_lite" || kv_sharing == "fusedkv";
  if (!known)
    bad("kv_sharing", "must be none, cla, yoco, fusedkv_lite or fusedkv, got \"" + kv_sharing + "\"");
  if (fusion_init != "normal" && fusion_init != "lite")
    bad("fusion_init", "must be normal or lite, got \"" + fusion_init + "\"");
  if (lrkv_rank > 0 && kv_sharing != "none")
    bad("lrkv_rank", "LRKV (lrkv_rank " + std::to_string(lrkv_rank) +
                         ") cannot be combined with cross-layer sharing (kv_sharing " + kv_sharing +
                         "): the combination is not defined; set one of them off");
  if (kv_sharing == "none" || kv_sharing == "cla") {
    // Every layer stores (none), or the even layers do (cla): nothing to choose.
    if (storage_layers != 0)
      bad("storage_layers", "applies to yoco, fusedkv_lite and fusedkv only (kv_sharing is " +
                                kv_sharing + "); leave it 0, got " + std::to_string(storage_layers));
  } else {
    if (storage_layers == 0) storage_layers = n_layers / 2;
    const int lo = kv_sharing == "fusedkv" ? 2 : 1;
    if (storage_layers < lo || storage_layers > n_layers)
      bad("storage_layers",
          "must be in [" + std::to_string(lo) + ", n_layers = " + std::to_string(n_layers) +
              "] for kv_sharing " + kv_sharing + " (0 = n_layers/2), got " +
              std::to_string(storage_layers) +
              (kv_sharing == "fusedkv" ? " (fusedkv fuses layers 0 and n-1, so n >= 2)" : ""));
  }
}

}  // namespace kvt

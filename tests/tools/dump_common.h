// tests/tools/dump_common.h — helpers shared by the dump tools the Python oracles drive
// (refdump, gatedump): the resolved model keys as JSON, and the norm-weight perturbation.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/common/rng.h"
#include "model/config.h"
#include "model/params.h"

namespace kvt::dump {

// Seeds of the random streams, derived from --seed (init_parameters uses the seed itself).
inline constexpr uint64_t kTokensPurpose = 0x746f6b656e73ull;  // "tokens"
inline constexpr uint64_t kNormsPurpose = 0x6e6f726d73ull;     // "norms"

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The resolved model keys, KV-lean keys included (storage_layers as resolve() leaves it).
inline nlohmann::json model_json(const ModelConfig& m) {
  return {{"vocab_size", m.vocab_size},         {"d_model", m.d_model},
          {"n_layers", m.n_layers},             {"n_heads", m.n_heads},
          {"n_kv_heads", m.kv_heads()},         {"d_ff", m.ffn_dim()},
          {"max_seq_len", m.max_seq_len},       {"rope_theta", m.rope_theta},
          {"norm_eps", m.norm_eps},             {"tie_embeddings", m.tie_embeddings},
          {"init_std", m.init_std},             {"kv_sharing", m.kv_sharing},
          {"storage_layers", m.storage_layers}, {"fusion_init", m.fusion_init},
          {"lrkv_rank", m.lrkv_rank}};
}

// Replaces every "*norm.weight" entry of a host parameter buffer by 1 + sigma N(0, 1), drawn in
// table order from one stream seeded by derive_seed(seed, kNormsPurpose).
inline void perturb_norms(const ParamTable& table, std::vector<float>& p, uint64_t seed,
                          double sigma) {
  Rng rng(derive_seed(seed, kNormsPurpose));
  for (const auto& e : table.entries())
    if (ends_with(e.name, "norm.weight"))
      for (size_t i = 0; i < e.numel; ++i)
        p[e.offset + i] = static_cast<float>(1.0 + sigma * rng.normal());
}

// Parses the command line into app's options, then runs body; an error prints one line
// "<name>: error: ..." and gives exit code 1.
inline int parse_and_run(CLI::App& app, int argc, char** argv, const char* name,
                         const std::function<void()>& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    body();
  } catch (const std::exception& e) {
    std::cerr << name << ": error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace kvt::dump

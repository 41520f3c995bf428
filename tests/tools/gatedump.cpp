// gatedump — runs kvtrain's KVzip scorer and Fast KVzip gates (docs/design.md, "Fast KVzip gates") on random tokens
// and dumps what the Python oracle (tests/py/test_gates_reference.py) needs into one safetensors
// file:
//   tokens             I32 [2P+Q]          the full input: context (P) ; prompt (Q) ; context
//   param/<name>       F32                 every model parameter (frozen LLM)
//   kvzip              F32 [n_storage, M, P]  KvzipScorer::scores() (M = gate_decisions)
//   gate_param/<name>  F32                 every gate parameter (after the perturbation below)
//   gate_score         F32 [n_storage, P, M]  GateModel::forward of each storage layer
//   gate_loss          F64 []              sum over storage layers of M * bce_loss (BCE mean over
//                                          tokens, summed over heads and layers)
//   gate_grad/<name>   F32                 its gradient (one backward per storage layer)
//   __metadata__: "model" (resolved model keys as JSON, like refdump), "config_yaml", context,
//                 prompt_len, seed, perturb_norms, gate_layers (JSON list).
//
//   gatedump --config FILE [--set section.key=value ...] --out FILE.safetensors
//            [--context P] [--prompt-len Q] [--seed S] [--perturb-norms SIGMA]
// The gates start from init_gate_parameters(seed), then sinks and bias ~ N(0, 0.5^2) and the
// q_norm/k_norm weights 1 + 0.2 N(0, 1), so no term of the score is trivial.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common/rng.h"
#include "kernels/ops.h"
#include "model/gates.h"
#include "model/kvzip.h"
#include "model/transformer.h"
#include "tools/safetensors.h"
#include "train/config.h"

#include "dump_common.h"

namespace {

using kvt::dump::ends_with;

constexpr uint64_t kGatePerturbPurpose = 0x6770657274ull;  // "gpert"
constexpr double kSinkBiasStd = 0.5;
constexpr double kGateNormSigma = 0.2;

struct Options {
  std::string config, out;
  std::vector<std::string> sets;
  int context = 10, prompt_len = 3;
  int64_t seed = -1;
  double perturb_norms = 0.0;
};

void run(const Options& o) {
  kvt::RunConfig rc = kvt::load_run_config(o.config, o.sets);
  const kvt::ModelConfig& mc = rc.model;
  const int P = o.context, Q = o.prompt_len, T = 2 * P + Q;
  if (P < 1 || Q < 0) throw std::invalid_argument("--context must be >= 1 and --prompt-len >= 0");
  const uint64_t seed = o.seed >= 0 ? static_cast<uint64_t>(o.seed) : rc.train.seed;
  if (T > mc.max_seq_len)
    throw std::invalid_argument("2 * --context + --prompt-len = " + std::to_string(T) +
                                " exceeds model.max_seq_len " + std::to_string(mc.max_seq_len));
  const int V = mc.vocab_size;

  auto ops = kvt::make_ops("cpu");
  kvt::Transformer model(mc, *ops, 1, T, /*with_grads=*/false);
  model.init_parameters(seed);
  if (o.perturb_norms > 0) {
    std::vector<float> p = model.params_to_host();
    kvt::dump::perturb_norms(model.params(), p, seed, o.perturb_norms);
    model.params_from_host(p);
  }

  std::vector<int32_t> context(P), prompt(Q);
  kvt::Rng trng(kvt::derive_seed(seed, kvt::dump::kTokensPurpose));
  for (auto& t : context) t = static_cast<int32_t>(trng.below(static_cast<uint64_t>(V)));
  for (auto& t : prompt) t = static_cast<int32_t>(trng.below(static_cast<uint64_t>(V)));
  std::vector<int32_t> tokens;
  tokens.insert(tokens.end(), context.begin(), context.end());
  tokens.insert(tokens.end(), prompt.begin(), prompt.end());
  tokens.insert(tokens.end(), context.begin(), context.end());

  kvt::InferenceModel inference(model);
  kvt::KvzipScorer scorer(inference);
  scorer.run(context, prompt);
  const std::vector<int> layers = kvt::gate_layers(model.config());
  const int M = kvt::gate_decisions(model.config()), NS = static_cast<int>(layers.size());
  const std::vector<float>& kvzip = scorer.scores();
  if (kvzip.size() != static_cast<size_t>(NS) * M * P)
    throw std::logic_error("KvzipScorer::scores() has " + std::to_string(kvzip.size()) +
                           " values, expected " + std::to_string(static_cast<size_t>(NS) * M * P));

  kvt::GateModel gates(model.config(), *ops, P, /*with_grads=*/true);
  {
    std::vector<float> g = kvt::init_gate_parameters(model.config(), seed);
    kvt::Rng rng(kvt::derive_seed(seed, kGatePerturbPurpose));
    for (const auto& e : gates.params().entries()) {
      float* x = g.data() + e.offset;
      if (ends_with(e.name, ".sinks") || (ends_with(e.name, ".bias") && !ends_with(e.name, "proj.bias"))) {
        for (size_t i = 0; i < e.numel; ++i) x[i] = static_cast<float>(kSinkBiasStd * rng.normal());
      } else if (ends_with(e.name, "norm.weight")) {
        for (size_t i = 0; i < e.numel; ++i)
          x[i] = static_cast<float>(1.0 + kGateNormSigma * rng.normal());
      }
    }
    gates.params_from_host(g);
  }
  gates.zero_grads();

  std::vector<float> all_scores;
  all_scores.reserve(static_cast<size_t>(NS) * P * M);
  double loss = 0.0;
  for (int i = 0; i < NS; ++i) {
    std::vector<float> s = gates.forward(layers[i], scorer.hidden(i), P);  // [P, M]
    std::vector<float> t(static_cast<size_t>(P) * M);                      // [P, M]
    for (int m = 0; m < M; ++m)
      for (int p = 0; p < P; ++p)
        t[static_cast<size_t>(p) * M + m] = kvzip[(static_cast<size_t>(i) * M + m) * P + p];
    std::vector<float> ds;
    loss += M * kvt::bce_loss(s, t, &ds);
    for (auto& d : ds) d *= static_cast<float>(M);
    gates.backward(ds);
    all_scores.insert(all_scores.end(), s.begin(), s.end());
  }

  kvt::SafetensorsWriter w;
  w.add_i32("tokens", {T}, tokens);
  const std::vector<float> params = model.params_to_host();
  for (const auto& e : model.params().entries())
    w.add("param/" + e.name, kvt::DType::F32, e.shape, params.data() + e.offset);
  w.add_f32("kvzip", {NS, M, P}, kvzip);
  const std::vector<float> gp = gates.params_to_host(), gg = gates.grads_to_host();
  for (const auto& e : gates.params().entries()) {
    w.add("gate_param/" + e.name, kvt::DType::F32, e.shape, gp.data() + e.offset);
    w.add("gate_grad/" + e.name, kvt::DType::F32, e.shape, gg.data() + e.offset);
  }
  w.add_f32("gate_score", {NS, P, M}, all_scores);
  w.add_f64("gate_loss", {}, {loss});
  w.set_metadata("model", kvt::dump::model_json(mc).dump());
  w.set_metadata("config_yaml", kvt::to_yaml(rc));
  w.set_metadata("context", std::to_string(P));
  w.set_metadata("prompt_len", std::to_string(Q));
  w.set_metadata("seed", std::to_string(seed));
  w.set_metadata("perturb_norms", std::to_string(o.perturb_norms));
  w.set_metadata("gate_layers", nlohmann::json(layers).dump());
  w.write(o.out);
  std::cout << "gatedump: " << o.out << ": " << NS << " gated layers x " << M
            << " decisions, P=" << P << " Q=" << Q << ", gate loss " << loss << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Dump kvtrain's KVzip targets and gate scores, loss and gradients for the oracle"};
  Options o;
  app.add_option("--config", o.config, "YAML run config")->required();
  app.add_option("--set", o.sets, "override section.key=value (repeatable)");
  app.add_option("--out", o.out, "output .safetensors")->required();
  app.add_option("--context", o.context, "context tokens P (default 10)");
  app.add_option("--prompt-len", o.prompt_len, "repeat-prompt tokens Q (default 3)");
  app.add_option("--seed", o.seed, "init, token and gate seed (default: train.seed)");
  app.add_option("--perturb-norms", o.perturb_norms, "model norm weights = 1 + SIGMA N(0,1)");
  return kvt::dump::parse_and_run(app, argc, argv, "gatedump", [&] { run(o); });
}

// refdump — runs kvtrain's model on random tokens and dumps what the Python oracle
// (tests/py/test_reference.py) needs into one safetensors file:
//   tokens        I32 [A*B, T+1]   micro-batch a is rows [a B, (a+1) B); inputs = [:, :T],
//                                  targets = [:, 1:]
//   loss          F64 []           mean over the A micro-batches of forward()'s mean loss
//   logits        F32 [B, T, V]    of the first micro-batch (before its backward)
//   param/<name>  F32              every parameter-table entry
//   grad/<name>   F32              its gradient after A micro-steps of backward(1/A)
//   __metadata__: "model" (the resolved model keys as JSON, KV-lean keys included:
//                 kv_sharing, storage_layers as resolve() leaves it (L/2 filled in for yoco and
//                 fusedkv(_lite), 0 for none and cla), fusion_init, lrkv_rank), "config_yaml",
//                 batch, seq, accum, seed, perturb_norms.
//
//   refdump --config FILE [--set section.key=value ...] --out FILE.safetensors
//           [--batch B] [--seq T] [--accum A] [--seed S] [--perturb-norms SIGMA]
// Batch, seq, accum and seed default to the config's train section. --perturb-norms replaces the
// RMSNorm weights (init 1) by 1 + SIGMA N(0, 1), so a test also sees them at work.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common/rng.h"
#include "kernels/ops.h"
#include "model/transformer.h"
#include "tools/safetensors.h"
#include "train/config.h"

#include "dump_common.h"

namespace {

using kvt::dump::kTokensPurpose;
using kvt::dump::model_json;

struct Options {
  std::string config, out;
  std::vector<std::string> sets;
  int batch = 0, seq = 0, accum = 0;
  int64_t seed = -1;
  double perturb_norms = 0.0;
};

void run(const Options& o) {
  kvt::RunConfig rc = kvt::load_run_config(o.config, o.sets);
  const kvt::ModelConfig& mc = rc.model;
  const int B = o.batch > 0 ? o.batch : rc.train.batch_size;
  const int T = o.seq > 0 ? o.seq : rc.train.seq_len;
  const int A = o.accum > 0 ? o.accum : rc.train.grad_accum;
  const uint64_t seed = o.seed >= 0 ? static_cast<uint64_t>(o.seed) : rc.train.seed;
  if (T > mc.max_seq_len)
    throw std::invalid_argument("--seq " + std::to_string(T) + " exceeds model.max_seq_len " +
                                std::to_string(mc.max_seq_len));
  const int V = mc.vocab_size;

  auto ops = kvt::make_ops("cpu");
  kvt::Transformer model(mc, *ops, B, T, /*with_grads=*/true);
  model.init_parameters(seed);
  if (o.perturb_norms > 0) {
    std::vector<float> p = model.params_to_host();
    kvt::dump::perturb_norms(model.params(), p, seed, o.perturb_norms);
    model.params_from_host(p);
  }

  const size_t rows = static_cast<size_t>(A) * B, row_len = static_cast<size_t>(T) + 1;
  std::vector<int32_t> tokens(rows * row_len);
  kvt::Rng trng(kvt::derive_seed(seed, kTokensPurpose));
  for (auto& t : tokens) t = static_cast<int32_t>(trng.below(static_cast<uint64_t>(V)));

  model.zero_grads();
  double loss_sum = 0.0;
  std::vector<float> logits;
  std::vector<int32_t> inputs(static_cast<size_t>(B) * T), targets(inputs.size());
  for (int a = 0; a < A; ++a) {
    for (int b = 0; b < B; ++b) {
      const int32_t* row = tokens.data() + (static_cast<size_t>(a) * B + b) * row_len;
      for (int t = 0; t < T; ++t) {
        inputs[static_cast<size_t>(b) * T + t] = row[t];
        targets[static_cast<size_t>(b) * T + t] = row[t + 1];
      }
    }
    loss_sum += model.forward(inputs.data(), targets.data(), B, T);
    if (a == 0) logits = model.logits_to_host();
    model.backward(1.0f / static_cast<float>(A));
  }

  kvt::SafetensorsWriter w;
  w.add_i32("tokens", {static_cast<int64_t>(rows), static_cast<int64_t>(row_len)}, tokens);
  w.add_f64("loss", {}, {loss_sum / A});
  w.add_f32("logits", {B, T, V}, logits);
  const std::vector<float> params = model.params_to_host();
  const std::vector<float> grads = model.grads_to_host();
  for (const auto& e : model.params().entries()) {
    w.add("param/" + e.name, kvt::DType::F32, e.shape, params.data() + e.offset);
    w.add("grad/" + e.name, kvt::DType::F32, e.shape, grads.data() + e.offset);
  }
  w.set_metadata("model", model_json(mc).dump());
  w.set_metadata("config_yaml", kvt::to_yaml(rc));
  w.set_metadata("batch", std::to_string(B));
  w.set_metadata("seq", std::to_string(T));
  w.set_metadata("accum", std::to_string(A));
  w.set_metadata("seed", std::to_string(seed));
  w.set_metadata("perturb_norms", std::to_string(o.perturb_norms));
  w.write(o.out);
  std::cout << "refdump: " << o.out << ": " << model.params().entries().size()
            << " parameters, loss " << loss_sum / A << " (B=" << B << " T=" << T << " A=" << A
            << ")\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Dump kvtrain's loss, logits, parameters and gradients for the Python oracle"};
  Options o;
  app.add_option("--config", o.config, "YAML run config")->required();
  app.add_option("--set", o.sets, "override section.key=value (repeatable)");
  app.add_option("--out", o.out, "output .safetensors")->required();
  app.add_option("--batch", o.batch, "sequences per micro-batch (default: train.batch_size)");
  app.add_option("--seq", o.seq, "sequence length (default: train.seq_len)");
  app.add_option("--accum", o.accum, "micro-batches (default: train.grad_accum)");
  app.add_option("--seed", o.seed, "init and token seed (default: train.seed)");
  app.add_option("--perturb-norms", o.perturb_norms, "norm weights = 1 + SIGMA N(0,1)");
  return kvt::dump::parse_and_run(app, argc, argv, "refdump", [&] { run(o); });
}

// logitdump — runs a kvtrain checkpoint (CPU backend by default, fp32) on given token ids and dumps
// what the parity scripts (tools/hf/smollm2_parity.py) compare with other implementations:
//
//   logitdump --checkpoint C.h5 --tokens IDS --out OUT.safetensors [--generate N]
//             [--backend cpu|cuda] [--threads N]
//
// IDS is a text file of whitespace-separated ids (used as "tokens"), or a safetensors file with
// any of these I32 tensors:
//   tokens  [T]         -> logits   F32 [T, V]   the training forward (model/transformer.h)
//   rows    [N, T + 1]  -> loss     F64 [N]      mean next-token cross-entropy of row n: inputs
//                                                rows[n, :T], targets rows[n, 1:] (nats/token)
//   prompt  [P]         -> with --generate N (the prompt defaults to "tokens"):
//                          generated  I32 [N]     greedy ids through kvtrain's inference path
//                                                 (model/inference.h: prefill, then one-token
//                                                 decode with the KV cache, as `kvtrain generate
//                                                 --temperature 0`), not stopped at EOS
//                          gen_logits F32 [N, V]  row i: the logits greedy step i chose from
//                                                 (prefill's last row, then each decode)
// The inputs are copied to the output (tokens, rows, prompt); __metadata__: "model" (the resolved
// model keys as JSON), checkpoint, sha256, step, backend.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "model/inference.h"
#include "model/sampling.h"
#include "model/transformer.h"
#include "tools/safetensors.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

#include "dump_common.h"

namespace {

using kvt::dump::ends_with;

struct Options {
  std::string checkpoint, tokens, out, backend = "cpu";
  int generate = 0, threads = 0;
};

struct Inputs {
  std::vector<int32_t> tokens, rows, prompt;
  int64_t n_rows = 0, row_len = 0;
};

std::vector<int32_t> read_text_ids(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::vector<int32_t> ids;
  long long v;
  while (f >> v) ids.push_back(static_cast<int32_t>(v));
  if (!f.eof()) throw std::runtime_error(path + ": not a list of integer token ids");
  return ids;
}

Inputs read_inputs(const std::string& path) {
  Inputs in;
  if (!ends_with(path, ".safetensors")) {
    in.tokens = read_text_ids(path);
    return in;
  }
  const kvt::SafetensorsReader r(path);
  auto one_dim = [&](const std::string& name) {
    if (!r.contains(name)) return std::vector<int32_t>{};
    if (r.tensor(name).shape.size() != 1)
      throw std::runtime_error(path + ": tensor '" + name + "' must be 1-D [T]");
    return r.i32(name);
  };
  in.tokens = one_dim("tokens");
  in.prompt = one_dim("prompt");
  if (r.contains("rows")) {
    const auto& shape = r.tensor("rows").shape;
    if (shape.size() != 2 || shape[1] < 2)
      throw std::runtime_error(path + ": tensor 'rows' must be [N, T + 1] with T >= 1");
    in.rows = r.i32("rows");
    in.n_rows = shape[0];
    in.row_len = shape[1];
  }
  return in;
}

void check_ids(const std::vector<int32_t>& ids, int V, const std::string& what) {
  for (int32_t t : ids)
    if (t < 0 || t >= V)
      throw std::out_of_range(what + ": token id " + std::to_string(t) + " outside [0, " +
                              std::to_string(V) + ")");
}

void run(const Options& o) {
  kvt::configure_threads(o.threads, 1);
  const kvt::ModelCheckpoint ck = kvt::load_model_checkpoint(o.checkpoint);
  const kvt::ModelConfig& mc = ck.config.model;
  const int V = mc.vocab_size;
  Inputs in = read_inputs(o.tokens);
  if (o.generate < 0) throw std::invalid_argument("--generate must be >= 0");
  if (in.prompt.empty()) in.prompt = in.tokens;
  if (in.tokens.empty() && in.rows.empty() && o.generate == 0)
    throw std::invalid_argument(o.tokens + ": no 'tokens' or 'rows' and no --generate: nothing to do");
  if (o.generate > 0 && in.prompt.empty())
    throw std::invalid_argument(o.tokens + ": --generate needs a 'prompt' (or 'tokens') tensor");
  check_ids(in.tokens, V, o.tokens + " tokens");
  check_ids(in.rows, V, o.tokens + " rows");
  check_ids(in.prompt, V, o.tokens + " prompt");

  const int T = static_cast<int>(std::max<int64_t>(in.tokens.size(), in.row_len - 1));
  if (T > mc.max_seq_len)
    throw std::length_error(o.tokens + ": " + std::to_string(T) + " tokens exceed model.max_seq_len " +
                            std::to_string(mc.max_seq_len) + " of " + o.checkpoint);
  auto ops = kvt::make_ops(o.backend);
  kvt::Transformer model(mc, *ops, 1, std::max(T, 1), /*with_grads=*/false);
  model.params_from_host(ck.params);

  kvt::SafetensorsWriter w;
  if (!in.tokens.empty()) {
    const int n = static_cast<int>(in.tokens.size());
    model.forward(in.tokens.data(), nullptr, 1, n);
    w.add_i32("tokens", {n}, in.tokens);
    w.add_f32("logits", {n, V}, model.logits_to_host());
  }
  if (!in.rows.empty()) {
    const int n = static_cast<int>(in.row_len - 1);
    std::vector<double> losses;
    for (int64_t r = 0; r < in.n_rows; ++r) {
      const int32_t* row = in.rows.data() + r * in.row_len;
      losses.push_back(model.forward(row, row + 1, 1, n));
    }
    w.add_i32("rows", {in.n_rows, in.row_len}, in.rows);
    w.add_f64("loss", {in.n_rows}, losses);
  }
  std::vector<int32_t> gen;
  if (o.generate > 0) {
    const int P = static_cast<int>(in.prompt.size());
    if (P + o.generate - 1 > mc.max_seq_len)
      throw std::length_error("prompt " + std::to_string(P) + " + --generate " +
                              std::to_string(o.generate) + " exceed model.max_seq_len " +
                              std::to_string(mc.max_seq_len));
    kvt::InferenceModel inf(model);
    const kvt::SamplingParams greedy;  // temperature 0: argmax, lowest id on ties
    kvt::Rng rng(0);
    std::vector<float> logits = inf.prefill(in.prompt), gen_logits;
    for (int i = 0; i < o.generate; ++i) {
      gen.push_back(kvt::sample_token(logits, greedy, rng));
      gen_logits.insert(gen_logits.end(), logits.begin(), logits.end());
      if (i + 1 < o.generate) logits = inf.decode(gen.back());
    }
    w.add_i32("prompt", {P}, in.prompt);
    w.add_i32("generated", {o.generate}, gen);
    w.add_f32("gen_logits", {o.generate, V}, gen_logits);
  }
  w.set_metadata("model", kvt::dump::model_json(mc).dump());
  w.set_metadata("checkpoint", o.checkpoint);
  w.set_metadata("sha256", ck.sha256);
  w.set_metadata("step", std::to_string(ck.step));
  w.set_metadata("backend", o.backend);
  w.write(o.out);
  std::cout << "logitdump: " << o.out << ": " << in.tokens.size() << " tokens, " << in.n_rows
            << " loss rows, " << gen.size() << " generated (V=" << V << ")\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Dump a kvtrain checkpoint's logits, losses and greedy generation on given ids"};
  Options o;
  app.add_option("--checkpoint", o.checkpoint, "kvtrain checkpoint .h5")->required();
  app.add_option("--tokens", o.tokens, "ids: text file, or .safetensors with tokens/rows/prompt")
      ->required();
  app.add_option("--out", o.out, "output .safetensors")->required();
  app.add_option("--generate", o.generate, "greedy tokens to generate from the prompt");
  app.add_option("--backend", o.backend, "cpu | cuda")->capture_default_str();
  app.add_option("--threads", o.threads, "OpenMP threads (0 = OMP_NUM_THREADS or all cores)");
  return kvt::dump::parse_and_run(app, argc, argv, "logitdump", [&] { run(o); });
}

// kvtrain generate --checkpoint ckpt.h5 --prompt "..." [--chat] [--tokenizer P] [--max-new-tokens N]
//                  [--temperature T] [--top-k K] [--top-p P] [--seed S] [--backend cpu|cuda]
//
// Loads the checkpoint's resolved config and weights and its tokenizer (train/model_tokenizer.h:
// embedded in an imported model, else data.tokenizer), encodes the prompt as the model's
// documents start (BOS when the model adds one: kvtrain's SentencePiece models do, SmolLM2 does
// not), prefills the cache (model/inference.h), then samples one token at a time. --chat wraps the
// prompt in the model's ChatML turn (system message of its template, user, assistant) with the
// special tokens parsed, and prints only the answer. Prints the text (prompt and continuation),
// then the timings and the KV-cache bytes measured from the cache. Generation ends after
// --max-new-tokens, at the model's eos or end-of-text token (not printed), or when the cache is
// full (model.max_seq_len), with a message.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/inference.h"
#include "model/kv_sharing.h"
#include "model/sampling.h"
#include "model/transformer.h"
#include "tools/commands.h"
#include "tools/memory_check.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/model_tokenizer.h"
#include "train/trainer.h"

namespace kvt::cli {

namespace {
struct GenerateArgs {
  std::string checkpoint, prompt, tokenizer, backend = "cpu";
  int max_new_tokens = 100;
  SamplingParams sampling;
  uint64_t seed = 0;
  int threads = 0;
  bool print_ids = false;
  bool chat = false;
  bool ignore_memory = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void run_generate(const GenerateArgs& a) {
  if (dist_context().world() > 1)
    throw std::runtime_error("generate runs as one process: start it without mpirun");
  a.sampling.validate();
  if (a.max_new_tokens < 0) throw std::invalid_argument("--max-new-tokens must be >= 0");
  configure_threads(a.threads, 1);

  const auto memory = check_generate_memory(a.checkpoint, a.backend, a.ignore_memory);
  const ModelCheckpoint w = load_model_checkpoint(a.checkpoint);
  const RunConfig& cfg = w.config;
  const ModelConfig& m = cfg.model;

  const auto tok = checkpoint_tokenizer(a.checkpoint, cfg.data.tokenizer, m.vocab_size, a.tokenizer);
  const SpecialTokens& sp = tok->special();
  std::vector<int32_t> ids;
  if (sp.add_bos && sp.bos >= 0) ids.push_back(sp.bos);
  const size_t text_start = ids.size();
  const std::vector<int32_t> enc = a.chat ? tok->encode(tok->chatml_prompt(a.prompt), /*parse_special=*/true)
                                          : tok->encode(a.prompt);
  ids.insert(ids.end(), enc.begin(), enc.end());
  if (ids.empty()) throw std::invalid_argument("the prompt encodes to no tokens (and the model adds no BOS)");
  if (static_cast<int64_t>(ids.size()) > m.max_seq_len)
    throw std::length_error("the prompt is " + std::to_string(ids.size()) +
                            " tokens, longer than model.max_seq_len " + std::to_string(m.max_seq_len) + " of " +
                            a.checkpoint);

  auto ops = make_ops(a.backend);
  InferenceModel inf(m, *ops, w.params);
  Rng rng(a.seed);

  auto t0 = std::chrono::steady_clock::now();
  std::vector<float> logits = inf.prefill(ids);
  const double prefill_s = seconds_since(t0);
  std::vector<int32_t> gen;
  std::string stop_reason = "max-new-tokens reached";
  t0 = std::chrono::steady_clock::now();
  while (static_cast<int>(gen.size()) < a.max_new_tokens) {
    const int32_t next = sample_token(logits, a.sampling, rng);
    gen.push_back(next);
    if (next == sp.eos || next == sp.eot) {
      stop_reason = "end of sequence (" + tok->token_string(next) + ")";
      break;
    }
    if (static_cast<int>(gen.size()) == a.max_new_tokens) break;
    if (inf.length() == inf.capacity()) {
      stop_reason = "stopped: the cache is full at model.max_seq_len " + std::to_string(m.max_seq_len);
      break;
    }
    logits = inf.decode(next);
  }
  const double decode_s = seconds_since(t0);

  // The printed text: prompt and continuation (chat: the answer), without BOS and the stop token.
  std::vector<int32_t> text_ids;
  if (!a.chat) text_ids.assign(ids.begin() + text_start, ids.end());
  text_ids.insert(text_ids.end(), gen.begin(), gen.end());
  if (!gen.empty() && (gen.back() == sp.eos || gen.back() == sp.eot)) text_ids.pop_back();
  // A model whose vocab is padded beyond the tokenizer's can sample an id no token has: it is
  // printed as [id N] between the decoded runs.
  std::string text;
  const int n_tok = tok->vocab_size();
  for (size_t i = 0; i < text_ids.size();) {
    size_t j = i;
    while (j < text_ids.size() && text_ids[j] >= 0 && text_ids[j] < n_tok) ++j;
    text += tok->decode(std::span<const int32_t>(text_ids).subspan(i, j - i));
    if (j < text_ids.size()) text += "[id " + std::to_string(text_ids[j++]) + "]";
    i = j;
  }
  std::cout << text << "\n";
  if (a.print_ids) {
    std::cout << "generate: ids:";
    for (int32_t t : gen) std::cout << ' ' << t;
    std::cout << "\n";
  }
  const int decoded = inf.length() - static_cast<int>(ids.size());  // tokens fed through decode
  std::printf("generate: %s (%zu new tokens)\n", stop_reason.c_str(), gen.size());
  std::printf("generate: prefill %zu tokens in %.3f s (%.1f tokens/s); %zu new tokens in %.3f s "
              "(%.1f tokens/s, %d decode steps)\n",
              ids.size(), prefill_s, ids.size() / std::max(prefill_s, 1e-9), gen.size(), decode_s,
              gen.size() / std::max(decode_s, 1e-9), decoded);
  std::printf("generate: KV cache %zu bytes used for %d positions (%zu bytes/token, %zu allocated); %s\n",
              inf.kv_bytes(), inf.length(), inf.kv_bytes_per_token(), inf.kv_capacity_bytes(),
              kv_cache_summary(m).c_str());
  std::fflush(stdout);
}
}  // namespace

void add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* sub = app.add_subcommand("generate", "sample text from a checkpoint with the KV cache");
  sub->add_option("--checkpoint", a->checkpoint, "checkpoint .h5")->required();
  sub->add_option("--prompt", a->prompt, "text to continue (BOS is prepended when the model adds one)")->required();
  sub->add_flag("--chat", a->chat, "wrap the prompt in the model's ChatML chat turn and print the answer");
  sub->add_option("--tokenizer", a->tokenizer,
                  "a .model, .gguf or tokenizer.json (default: the checkpoint's embedded tokenizer, else its "
                  "data.tokenizer)");
  sub->add_option("--max-new-tokens", a->max_new_tokens, "tokens to generate")->capture_default_str();
  sub->add_option("--temperature", a->sampling.temperature, "0 = greedy; > 0 samples softmax(logits / T)")
      ->capture_default_str();
  sub->add_option("--top-k", a->sampling.top_k, "sample among the k most likely tokens (0 = all)")
      ->capture_default_str();
  sub->add_option("--top-p", a->sampling.top_p, "nucleus sampling mass in (0, 1]")->capture_default_str();
  sub->add_option("--seed", a->seed, "sampling seed")->capture_default_str();
  sub->add_option("--backend", a->backend, "cpu | cuda")->capture_default_str();
  sub->add_option("--threads", a->threads, "OpenMP threads (0 = all cores)")->capture_default_str();
  sub->add_flag("--print-ids", a->print_ids, "also print the generated token ids");
  add_memory_limit_flag(*sub, a->ignore_memory);
  sub->callback([a]() { run_generate(*a); });
}

}  // namespace kvt::cli

// tools/eval_args.h — the options of `kvtrain eval` (tools/cmd_eval.cpp), shared by its table
// mode and its study mode (tools/eval_study.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/gate_config.h"

namespace kvt::cli {

struct EvalArgs {
  std::string checkpoint, gates, data, tokenizer, json, backend = "cpu";
  std::string policies = "full", keeps = "1.0";
  std::string prompt = kDefaultRepeatPrompt;
  int context = 1024, continuation = 64, contexts = 8, chunk = 256, sinks = 4, recent = 32;
  int threads = 0;
  uint64_t seed = 0;
  bool ignore_memory = false;
  // study mode (--study DIR) and the memory probe
  std::string study, tasks = "reconstruction,continuation,needle", depths = "0.1,0.5,0.9";
  std::string freecopy_keeps = "0.3";
  int first_context = 0, context_step = 1, freecopy_contexts = 0, freecopy_primer = 16, generate = 512;
  int decode_every = 128, decode_recent = 128, answer_tokens = 8;
  bool memory_probe = false;
};

std::vector<std::string> split_list(const std::string& s);
std::vector<double> parse_keeps(const std::string& s, const std::string& flag = "--keep");

// --study DIR: one JSON record per context in DIR (docs/kvzip.md, "Study records").
void run_eval_study(const EvalArgs& a);
// --memory-probe: one context, one policy and keep ratio; prints one JSON line.
void run_memory_probe(const EvalArgs& a);

}  // namespace kvt::cli

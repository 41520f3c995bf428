// tools/cmd_inspect.cpp — `kvtrain inspect CKPT.h5`: what a checkpoint holds (step, tokens, world
// size, time, version, the model config, every tensor) and whether it verifies (SHA-256 sidecar,
// Fletcher32 on every dataset, shapes against the parameter table its own config builds). Gate
// files (gates.h5) too: their frozen model's config and the gate table it builds.
// A damaged checkpoint makes the command fail.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "data/file_commit.h"
#include "model/gpu_memory.h"
#include "model/kv_sharing.h"
#include "model/memory_estimate.h"
#include "model/transformer.h"
#include "tools/commands.h"
#include "tools/memory_check.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/gate_config.h"
#include "train/gate_trainer.h"
#include "train/model_tokenizer.h"
#include "train/trainer.h"

namespace kvt::cli {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// One line per key of the resolved `model:` section.
void print_model_section(const RunConfig& cfg) {
  const YAML::Node model = YAML::Load(to_yaml(cfg))["model"];
  std::printf("config (model):\n");
  for (const auto& kv : model) {
    YAML::Emitter value;
    value << YAML::Flow << kv.second;
    std::printf("  %-16s %s\n", kv.first.as<std::string>().c_str(), value.c_str());
  }
}

void print_tensors(const std::vector<CheckpointTensor>& tensors) {
  size_t width = 4, total = 0;
  for (const CheckpointTensor& t : tensors) width = std::max(width, t.name.size());
  for (const CheckpointTensor& t : tensors) total += t.numel;
  std::printf("parameters: %zu in %zu tensors\n", total, tensors.size());
  std::printf("  %-*s  %-18s %12s\n", int(width), "name", "shape", "numel");
  for (const CheckpointTensor& t : tensors)
    std::printf("  %-*s  %-18s %12zu\n", int(width), t.name.c_str(), shape_text(t.shape).c_str(), t.numel);
}

// The tokenizer the model is used with (embedded, or data.tokenizer), or why there is none.
void print_tokenizer(const std::string& path, const RunConfig& cfg) {
  try {
    const auto tok = checkpoint_tokenizer(path, cfg.data.tokenizer, cfg.model.vocab_size);
    const SpecialTokens& t = tok->special();
    std::printf("tokenizer:   %s, %d tokens, from %s; bos %d, eos %d, end-of-text %d, add_bos %s, chat %s\n",
                tok->kind().c_str(), tok->vocab_size(), tok->source() == path ? "the checkpoint (embedded)" :
                tok->source().c_str(), t.bos, t.eos, t.eot, t.add_bos ? "true" : "false",
                t.chat_template.empty() ? "none" : tok->has_chatml() ? "ChatML" : "template (not ChatML)");
  } catch (const std::exception& e) {
    std::printf("tokenizer:   none usable (%s)\n", e.what());
  }
}

void inspect(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw std::runtime_error(path + ": no such checkpoint file");
  std::string why;
  const bool intact = checkpoint_verify(path, &why);
  CheckpointSummary s;
  try {
    s = read_checkpoint_summary(path);
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint " + path + " is damaged: " + (intact ? std::string(e.what()) : why));
  }
  std::printf("checkpoint:  %s\n", path.c_str());
  std::printf("format:      %s version %d\n", s.format.c_str(), s.format_version);
  std::printf("step:        %lld\n", static_cast<long long>(s.step));
  std::printf("tokens seen: %lld\n", static_cast<long long>(s.tokens_seen));
  std::printf("world size:  %d\n", s.world_size);
  if (s.format_version >= 2) std::printf("global batch: %lld sequences per step\n", static_cast<long long>(s.global_batch));
  std::printf("written:     %s by kvtrain %s\n", s.utc_time.c_str(), s.kvtrain_version.c_str());
  if (const std::string* src = find_text(s.texts, "import_source")) std::printf("imported:    from %s\n", src->c_str());
  std::printf("optimizer:   %s\n", s.has_optimizer ? "AdamW state (m, v) stored: the run can resume"
                                                   : "none: weights only (start runs from it with train.init_from; "
                                                     "generate, eval, gates and export take it as is)");

  // The config must parse and its parameter table must match the stored tensors, or the checkpoint
  // cannot resume anything.
  std::string table_check;
  try {
    // A gate file keeps its own config in /config and its frozen model's in /text/model_config.
    const bool gates = s.format == kGatesFormatName;
    const std::string* model_yaml = gates ? find_text(s.texts, kGateTextModelConfig) : &s.config_yaml;
    if (!model_yaml) throw std::runtime_error(path + ": no /text/" + kGateTextModelConfig);
    const RunConfig cfg = parse_run_config(*model_yaml, {}, path + (gates ? ": /text/model_config" : ": /config"));
    if (gates) {
      const GateRunConfig g = parse_gate_config(s.config_yaml, {}, path + ": /config");
      const std::string* from = find_text(s.texts, kGateTextModelCheckpoint);
      std::printf("gates of:    %s (model below), context %d, %s lr %g, %lld of %lld steps\n",
                  from ? from->c_str() : "?", g.gates.context, g.gates.optimizer.c_str(), g.gates.lr,
                  static_cast<long long>(s.step), static_cast<long long>(g.gates.steps));
    }
    print_model_section(cfg);
    std::printf("%s\n", kv_cache_summary(cfg.model).c_str());
    if (!gates && s.format == kCheckpointFormatName) print_tokenizer(path, cfg);
    if (intact) {
      const ParamTable table = gates ? build_gate_param_table(cfg.model)
                                     : build_param_table(cfg.model, cfg.train.decay_embeddings);
      if (s.has_optimizer) checkpoint_read(path, table, s.format);
      else read_model_weights(path, table);
      table_check = gates ? "; every tensor matches the gate table of that model"
                          : "; every tensor matches the config's parameter table";
    }
  } catch (const std::exception& e) {
    std::printf("config: %s\n", e.what());
    if (intact) throw std::runtime_error("checkpoint " + path + " cannot be used with this kvtrain: " + e.what());
  }
  print_tensors(s.tensors);
  if (!intact) throw std::runtime_error("checkpoint " + path + " is damaged: " + why);
  std::printf("verification: %s%s\n", why.c_str(), table_check.c_str());
}

// Layers up to which `inspect --config` lists every tensor (a longer list says little and the
// parameter table's cost grows with it).
constexpr int kListTensorsUpToLayers = 64;

// The memory a config needs, counted without allocating (model/memory_estimate.h), against the
// memory available here.
void print_memory(const RunConfig& cfg, int world) {
  const TrainConfig& t = cfg.train;
  const MemoryAvailable avail = memory_available();
  auto line = [&](const char* what, const MemoryEstimate& e) {
    std::printf("memory (%s): %s = %s\n", what, format_bytes(e.total()).c_str(), memory_breakdown(e).c_str());
  };
  line("train, one rank", estimate_train_memory(cfg.model, per_rank_batch_size(t, 1), t.seq_len));
  line("generate", estimate_generate_memory(cfg.model));
  // On a GPU, per rank, with the config's precision, ZeRO stage and recomputation.
  const GpuTrainSetting g{parse_precision(t.precision), t.zero, world, parse_recompute(t.recompute), t.bucket_mb};
  const int64_t B = per_rank_batch_size(t, world);
  const GpuMemoryEstimate ge = estimate_gpu_train_memory(cfg.model, B, t.seq_len, g);
  std::printf("GPU memory (train, per rank of %d; %s, zero %d, recompute %s, batch %lld x seq %d): %s; not counted: %s\n",
              world, t.precision.c_str(), t.zero, t.recompute.c_str(), static_cast<long long>(B), t.seq_len,
              gpu_memory_breakdown(ge).c_str(), ge.not_counted.c_str());
  if (avail.known)
    std::printf("memory available: %s (%s)\n", format_bytes(avail.bytes).c_str(), avail.source.c_str());
  else
    std::printf("memory available: unknown (no MemAvailable or cgroup limit readable)\n");
}

// `inspect --config X [--set k=v]`: what a config would build, without training — its model
// section, KV cache per token, memory estimate and parameter table.
void inspect_config(const std::string& path, const std::vector<std::string>& overrides, int world) {
  const RunConfig cfg = load_run_config(path, overrides);
  std::printf("config:      %s\n", path.c_str());
  print_model_section(cfg);
  std::printf("%s\n", kv_cache_summary(cfg.model).c_str());
  print_memory(cfg, world);
  if (cfg.model.n_layers > kListTensorsUpToLayers) {
    std::printf("parameters: %llu (tensors listed for at most %d layers)\n",
                static_cast<unsigned long long>(parameter_count(cfg.model)), kListTensorsUpToLayers);
    return;
  }
  const ParamTable table = build_param_table(cfg.model, cfg.train.decay_embeddings);
  std::vector<CheckpointTensor> tensors;
  for (const ParamInfo& p : table.entries())
    tensors.push_back({p.name, p.shape, p.numel});
  print_tensors(tensors);
}

}  // namespace

void add_inspect(CLI::App& app) {
  struct Args {
    std::string checkpoint, config;
    std::vector<std::string> overrides;
    int world = 1;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "inspect",
      "Print a checkpoint's step, config, KV cache size, tensors and verification result (fails if "
      "damaged), or with --config what a config would build");
  auto* ck = cmd->add_option("checkpoint", a->checkpoint, "Checkpoint file (ckpt_<step>.h5)");
  auto* cf = cmd->add_option("--config", a->config, "a YAML config instead of a checkpoint");
  cmd->add_option("--set", a->overrides, "with --config: override a key (section.key=value)");
  cmd->add_option("--world", a->world, "with --config: ranks for the per-rank GPU memory estimate (default 1)")
      ->check(CLI::PositiveNumber);
  ck->excludes(cf);
  cmd->callback([a] {
    if (!a->config.empty()) inspect_config(a->config, a->overrides, a->world);
    else if (!a->checkpoint.empty()) inspect(a->checkpoint);
    else throw std::runtime_error("inspect: give a checkpoint file or --config FILE");
  });
}

}  // namespace kvt::cli

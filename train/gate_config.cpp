// train/gate_config.cpp — the gate run config's schema and validation.
#include "train/gate_config.h"

#include "train/config_yaml.h"

namespace kvt {
namespace {

using config_yaml::FieldPtr;
using Field = config_yaml::FieldDef<GateRunConfig>;

#define KVT_FIELD(sec, name) \
  Field { #sec, #name, [](GateRunConfig& c) -> FieldPtr { return &c.sec.name; } }

constexpr Field kGateFields[] = {
    KVT_FIELD(gates, checkpoint),
    KVT_FIELD(gates, context),
    KVT_FIELD(gates, repeat_prompt),
    KVT_FIELD(gates, steps),
    KVT_FIELD(gates, contexts_per_step),
    KVT_FIELD(gates, optimizer),
    KVT_FIELD(gates, lr),
    KVT_FIELD(gates, schedule),
    KVT_FIELD(gates, momentum),
    KVT_FIELD(gates, beta1),
    KVT_FIELD(gates, beta2),
    KVT_FIELD(gates, eps),
    KVT_FIELD(gates, weight_decay),
    KVT_FIELD(gates, eval_every),
    KVT_FIELD(gates, eval_contexts),
    KVT_FIELD(gates, train_contexts),
    KVT_FIELD(gates, threshold),
    KVT_FIELD(gates, recall_top),
    KVT_FIELD(gates, seed),
    KVT_FIELD(gates, backend),
    KVT_FIELD(gates, threads),
    KVT_FIELD(gates, resume),
    KVT_FIELD(gates, cache_dir),

    KVT_FIELD(data, train),
    KVT_FIELD(data, val),
    KVT_FIELD(data, tokenizer),

    KVT_FIELD(output, dir),
    KVT_FIELD(output, checkpoint_every),
    KVT_FIELD(output, keep_last),
    KVT_FIELD(output, keep_every),
};

#undef KVT_FIELD

void validate(const GateRunConfig& cfg, const std::string& source) {
  auto check = [&](bool ok, const char* path, const std::string& rule, const auto& value) {
    config_yaml::check(ok, source, path, rule, value);
  };
  const GateTrainConfig& g = cfg.gates;
  check(g.context >= 1, "gates.context", ">= 1", g.context);
  check(!g.repeat_prompt.empty(), "gates.repeat_prompt", "a non-empty text", g.repeat_prompt);
  check(g.steps >= 1, "gates.steps", ">= 1", g.steps);
  check(g.contexts_per_step >= 1, "gates.contexts_per_step", ">= 1", g.contexts_per_step);
  check(g.optimizer == "sgd" || g.optimizer == "adamw", "gates.optimizer", "sgd or adamw", g.optimizer);
  check(g.lr > 0, "gates.lr", "> 0", g.lr);
  check(g.schedule == "kvzip" || g.schedule == "constant", "gates.schedule", "kvzip or constant",
        g.schedule);
  check(g.momentum >= 0 && g.momentum < 1, "gates.momentum", "in [0, 1)", g.momentum);
  check(g.beta1 >= 0 && g.beta1 < 1, "gates.beta1", "in [0, 1)", g.beta1);
  check(g.beta2 >= 0 && g.beta2 < 1, "gates.beta2", "in [0, 1)", g.beta2);
  check(g.eps > 0, "gates.eps", "> 0", g.eps);
  check(g.weight_decay >= 0, "gates.weight_decay", ">= 0", g.weight_decay);
  check(g.eval_every >= 0, "gates.eval_every", ">= 0 (0 = only at the end)", g.eval_every);
  check(g.eval_contexts >= 1, "gates.eval_contexts", ">= 1", g.eval_contexts);
  check(g.train_contexts >= 0, "gates.train_contexts", ">= 0", g.train_contexts);
  check(g.threshold > 0 && g.threshold < 1, "gates.threshold", "in (0, 1)", g.threshold);
  check(g.recall_top > 0 && g.recall_top <= 1, "gates.recall_top", "in (0, 1]", g.recall_top);
  check(g.backend == "cpu" || g.backend == "cuda", "gates.backend", "cpu or cuda", g.backend);
  check(g.threads >= 0, "gates.threads", ">= 0 (0 = automatic)", g.threads);
  check(g.resume == "never" || g.resume == "auto", "gates.resume", "never or auto", g.resume);
  const OutputConfig& o = cfg.output;
  check(!o.dir.empty(), "output.dir", "a non-empty directory path", o.dir);
  check(o.checkpoint_every >= 0, "output.checkpoint_every", ">= 0 (0 = only at the end)",
        o.checkpoint_every);
  check(o.keep_last >= 1, "output.keep_last", ">= 1", o.keep_last);
  check(o.keep_every >= 0, "output.keep_every", ">= 0 (0 = none)", o.keep_every);
}

GateRunConfig defaults() {
  GateRunConfig c;
  c.output.dir = "runs/gates";
  c.output.checkpoint_every = 500;
  c.output.keep_last = 2;
  return c;
}

}  // namespace

GateRunConfig parse_gate_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                                const std::string& source) {
  GateRunConfig cfg = defaults();
  config_yaml::parse_into(config_yaml::bind(kGateFields, cfg), yaml_text, overrides, source);
  validate(cfg, source);
  return cfg;
}

GateRunConfig load_gate_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_gate_config(config_yaml::read_text_file(path), overrides, path);
}

std::string to_yaml(const GateRunConfig& cfg) {
  return config_yaml::to_yaml(config_yaml::bind(kGateFields, const_cast<GateRunConfig&>(cfg)),
                              "kvtrain gate run config (resolved; every key)");
}

std::vector<std::string> gate_config_keys() { return config_yaml::key_paths(kGateFields); }

}  // namespace kvt

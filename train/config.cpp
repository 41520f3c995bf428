// train/config.cpp — the run config's schema (one line of kFields per key; the YAML machinery
// is train/config_yaml.h) and its validation.
#include "train/config.h"

#include <stdexcept>

#include "train/config_yaml.h"

namespace kvt {
namespace {

using config_yaml::fail;
using config_yaml::FieldPtr;
using Field = config_yaml::FieldDef<RunConfig>;

#define KVT_FIELD(sec, name) \
  Field { #sec, #name, [](RunConfig& c) -> FieldPtr { return &c.sec.name; } }

// Section order and key order here are the order of to_yaml's output.
constexpr Field kFields[] = {
    KVT_FIELD(model, vocab_size),
    KVT_FIELD(model, d_model),
    KVT_FIELD(model, n_layers),
    KVT_FIELD(model, n_heads),
    KVT_FIELD(model, n_kv_heads),
    KVT_FIELD(model, d_ff),
    KVT_FIELD(model, max_seq_len),
    KVT_FIELD(model, rope_theta),
    KVT_FIELD(model, norm_eps),
    KVT_FIELD(model, tie_embeddings),
    KVT_FIELD(model, init_std),
    KVT_FIELD(model, kv_sharing),
    KVT_FIELD(model, storage_layers),
    KVT_FIELD(model, fusion_init),
    KVT_FIELD(model, lrkv_rank),

    KVT_FIELD(train, batch_size),
    KVT_FIELD(train, seq_len),
    KVT_FIELD(train, grad_accum),
    KVT_FIELD(train, global_batch),
    KVT_FIELD(train, steps),
    KVT_FIELD(train, lr),
    KVT_FIELD(train, min_lr_ratio),
    KVT_FIELD(train, warmup_steps),
    KVT_FIELD(train, weight_decay),
    KVT_FIELD(train, decay_embeddings),
    KVT_FIELD(train, beta1),
    KVT_FIELD(train, beta2),
    KVT_FIELD(train, eps),
    KVT_FIELD(train, grad_clip),
    KVT_FIELD(train, eval_every),
    KVT_FIELD(train, eval_batches),
    KVT_FIELD(train, seed),
    KVT_FIELD(train, backend),
    KVT_FIELD(train, threads),
    KVT_FIELD(train, resume),
    KVT_FIELD(train, init_from),
    KVT_FIELD(train, precision),
    KVT_FIELD(train, zero),
    KVT_FIELD(train, recompute),
    KVT_FIELD(train, bucket_mb),
    KVT_FIELD(train, comm_timeout_s),

    KVT_FIELD(data, train),
    KVT_FIELD(data, val),
    KVT_FIELD(data, tokenizer),

    KVT_FIELD(output, dir),
    KVT_FIELD(output, checkpoint_every),
    KVT_FIELD(output, keep_last),
    KVT_FIELD(output, keep_every),
};

#undef KVT_FIELD

// ---- validation --------------------------------------------------------------------------------

void validate(RunConfig& cfg, const std::string& source) {
  try {
    cfg.model.resolve();
  } catch (const std::invalid_argument& e) {
    fail(source, e.what());
  }

  auto check = [&](bool ok, const char* path, const std::string& rule, const auto& value) {
    config_yaml::check(ok, source, path, rule, value);
  };

  const TrainConfig& t = cfg.train;
  check(t.batch_size >= 1, "train.batch_size", ">= 1", t.batch_size);
  check(t.seq_len >= 1, "train.seq_len", ">= 1", t.seq_len);
  if (t.seq_len > cfg.model.max_seq_len)
    fail(source, "train.seq_len: " + std::to_string(t.seq_len) + " exceeds model.max_seq_len " +
                     std::to_string(cfg.model.max_seq_len));
  check(t.grad_accum >= 1, "train.grad_accum", ">= 1", t.grad_accum);
  check(t.global_batch >= 0, "train.global_batch", ">= 0 (0 = batch_size x grad_accum x ranks)",
        t.global_batch);
  if (t.global_batch > 0 && t.global_batch % t.grad_accum != 0)
    fail(source, "train.global_batch: " + std::to_string(t.global_batch) +
                     " is not divisible by train.grad_accum " + std::to_string(t.grad_accum));
  check(t.steps >= 1, "train.steps", ">= 1", t.steps);
  check(t.lr > 0, "train.lr", "> 0", t.lr);
  check(t.min_lr_ratio >= 0 && t.min_lr_ratio <= 1, "train.min_lr_ratio", "in [0, 1]",
        t.min_lr_ratio);
  check(t.warmup_steps >= 0, "train.warmup_steps", ">= 0", t.warmup_steps);
  check(t.weight_decay >= 0, "train.weight_decay", ">= 0", t.weight_decay);
  check(t.beta1 >= 0 && t.beta1 < 1, "train.beta1", "in [0, 1)", t.beta1);
  check(t.beta2 >= 0 && t.beta2 < 1, "train.beta2", "in [0, 1)", t.beta2);
  check(t.eps > 0, "train.eps", "> 0", t.eps);
  check(t.grad_clip >= 0, "train.grad_clip", ">= 0 (0 disables clipping)", t.grad_clip);
  check(t.eval_every >= 0, "train.eval_every", ">= 0 (0 disables periodic evals)", t.eval_every);
  check(t.eval_batches >= 1, "train.eval_batches", ">= 1", t.eval_batches);
  check(t.backend == "cpu" || t.backend == "cuda", "train.backend", "cpu or cuda", t.backend);
  check(t.threads >= 0, "train.threads", ">= 0 (0 = automatic)", t.threads);
  check(t.resume == "never" || t.resume == "auto", "train.resume", "never or auto", t.resume);
  check(t.precision == "fp32" || t.precision == "fp32_tf32" || t.precision == "bf16",
        "train.precision", "fp32, fp32_tf32 or bf16", t.precision);
  check(t.zero == 0 || t.zero == 1, "train.zero", "0 or 1", t.zero);
  check(t.recompute == "none" || t.recompute == "attention" || t.recompute == "block",
        "train.recompute", "none, attention or block", t.recompute);
  check(t.bucket_mb >= 0, "train.bucket_mb", ">= 0 (0 = one reduction after the backward)",
        t.bucket_mb);
  check(t.comm_timeout_s > 0, "train.comm_timeout_s", "> 0 seconds", t.comm_timeout_s);

  check(!cfg.data.train.empty(), "data.train", "a non-empty glob of training shards",
        cfg.data.train);

  const OutputConfig& o = cfg.output;
  check(!o.dir.empty(), "output.dir", "a non-empty directory path", o.dir);
  check(o.checkpoint_every >= 0, "output.checkpoint_every", ">= 0 (0 = only at the end)",
        o.checkpoint_every);
  check(o.keep_last >= 1, "output.keep_last", ">= 1", o.keep_last);
  check(o.keep_every >= 0, "output.keep_every", ">= 0 (0 = none)", o.keep_every);
}

}  // namespace

// ---- public API --------------------------------------------------------------------------------

RunConfig parse_run_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                           const std::string& source) {
  RunConfig cfg;
  config_yaml::parse_into(config_yaml::bind(kFields, cfg), yaml_text, overrides, source);
  validate(cfg, source);
  return cfg;
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_run_config(config_yaml::read_text_file(path), overrides, path);
}

std::string to_yaml(const RunConfig& cfg) {
  // bind() hands out mutable pointers; to_yaml only reads through them.
  return config_yaml::to_yaml(config_yaml::bind(kFields, const_cast<RunConfig&>(cfg)),
                              "kvtrain run config (resolved; every key)");
}

std::string config_hash(const RunConfig& cfg) { return config_yaml::fnv1a_hex(to_yaml(cfg)); }

std::vector<std::string> config_keys() { return config_yaml::key_paths(kFields); }

std::vector<std::string> config_differences(const RunConfig& a, const RunConfig& b,
                                            const std::string& section) {
  // bind() hands out mutable pointers; nothing below writes through them.
  const auto fa = config_yaml::bind(kFields, const_cast<RunConfig&>(a));
  const auto fb = config_yaml::bind(kFields, const_cast<RunConfig&>(b));
  auto text = [](const config_yaml::FieldPtr& p) {
    return std::visit([](const auto* v) { return config_yaml::format_value(*v); }, p);
  };
  std::vector<std::string> out;
  for (size_t i = 0; i < fa.size(); i++) {
    if (fa[i].section != section) continue;
    const std::string va = text(fa[i].ptr), vb = text(fb[i].ptr);
    if (va != vb) out.push_back(fa[i].path() + ": " + va + " vs " + vb);
  }
  return out;
}

}  // namespace kvt

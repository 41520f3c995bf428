// train/gate_files.cpp — reading gate files against a model (train/gate_files.h).
#include "train/gate_files.h"

#include <stdexcept>

#include "model/gates.h"
#include "train/checkpoint_commit.h"

namespace kvt {

namespace {

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) s += (i ? sep : "") + v[i];
  return s;
}

}  // namespace

std::string weights_sha256(const ModelCheckpoint& model) {
  return sha256_hex(model.params.data(), model.params.size() * sizeof(float));
}

RecordedModel recorded_model(const NamedTexts& texts) {
  if (const std::string* w = find_text(texts, kGateTextModelWeights)) return {w, true};
  return {find_text(texts, kGateTextModelSha256), false};
}

std::string RecordedModel::of(const ModelCheckpoint& model, const std::string* weights_digest) const {
  if (!weights) return model.sha256;
  return weights_digest ? *weights_digest : weights_sha256(model);
}

std::vector<float> load_gates(const std::string& path, const ModelCheckpoint& model,
                              std::string* warning) {
  // The gates' model config first, so that gates of another model fail naming the keys that
  // differ rather than the first tensor whose shape does not fit; then the verified read.
  const CheckpointSummary sum = read_checkpoint_summary(path);
  if (sum.format != kGatesFormatName)
    throw std::runtime_error(path + ": is a " + sum.format + " file, not Fast KVzip gates (kvtrain gates writes gates.h5)");
  const std::string* cfg_text = find_text(sum.texts, kGateTextModelConfig);
  if (!cfg_text) throw std::runtime_error(path + ": has no /text/" + kGateTextModelConfig);
  const RunConfig theirs = parse_run_config(*cfg_text, {}, path + ": /text/" + kGateTextModelConfig);
  const std::vector<std::string> diff = config_differences(theirs, model.config, "model");
  if (!diff.empty())
    throw std::runtime_error(path + ": gates trained for another model (" + join(diff, ", ") +
                             "; the gates' model vs " + model.path + "'s)");
  const CheckpointState s = checkpoint_read(path, build_gate_param_table(model.config.model), kGatesFormatName);
  if (warning) {
    warning->clear();
    const RecordedModel rec = recorded_model(s.texts);
    const std::string mine = rec.sha ? rec.of(model) : "";
    if (rec.sha && *rec.sha != mine) {
      const std::string* from = find_text(s.texts, kGateTextModelCheckpoint);
      *warning = path + " was trained on " + (from ? *from : std::string("another checkpoint")) + " (" +
                 rec.kind() + " " + rec.sha->substr(0, 12) + "...), not on " + model.path + " (" +
                 mine.substr(0, 12) + "...): same model config, " +
                 (rec.weights ? "other weights"
                              : "another file (the gates record no weights digest, so the weights may be the same)");
    }
  }
  return s.params;
}

}  // namespace kvt

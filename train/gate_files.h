// train/gate_files.h — Fast KVzip gate files (gates.h5 and a gate run's ckpt_<step>.h5): the
// checkpoint layout with format kvtrain-gates, the gate parameter table under /model, and texts
// naming the frozen model they were trained on.
#pragma once

#include <string>
#include <vector>

#include "train/checkpoint.h"

namespace kvt {

// The texts a gate file stores about its frozen model (CheckpointState::texts).
inline constexpr const char* kGateTextModelConfig = "model_config";      // its resolved run config
inline constexpr const char* kGateTextModelCheckpoint = "model_checkpoint";  // its path
inline constexpr const char* kGateTextModelSha256 = "model_sha256";      // its file's SHA-256
inline constexpr const char* kGateTextModelWeights = "model_weights_sha256";  // of its parameters

// SHA-256 of a checkpoint's parameters (fp32, in table order): the same for every file that holds
// the same weights, whatever else differs (an import's time stamp, the step, the optimizer state).
std::string weights_sha256(const ModelCheckpoint& model);

// What a gate file or gate checkpoint recorded of its frozen model: the weights digest, or, in
// files written before it, the checkpoint file's SHA-256 (sha null when neither is there).
struct RecordedModel {
  const std::string* sha;
  bool weights;  // sha is a weights_sha256
  // The same digest of `model` (`weights_digest` if given, else computed): what sha must equal.
  std::string of(const ModelCheckpoint& model, const std::string* weights_digest = nullptr) const;
  const char* kind() const { return weights ? "weights SHA-256" : "file SHA-256"; }
};
RecordedModel recorded_model(const NamedTexts& texts);

// Reads gates (gates.h5 or a gate run's ckpt_<step>.h5) for `model`: the file must be a
// kvtrain-gates file whose frozen model has the same model config (else std::runtime_error naming
// the file and every differing key), and every gate tensor must have the shape `model` needs.
// Other weights (by the weights' SHA-256; for older gate files, which lack it, by the file's) are
// only reported in *warning (gates may serve a fine-tuned model of the same shape). Returns the
// gate parameters, laid out by build_gate_param_table.
std::vector<float> load_gates(const std::string& path, const ModelCheckpoint& model,
                              std::string* warning);

}  // namespace kvt

// tools/model_import.cpp — the source dispatch and the checkpoint an import writes (see
// tools/model_import.h).
#include "tools/model_import.h"

#include <filesystem>
#include <stdexcept>
#include <utility>
#include <vector>

#include "model/transformer.h"
#include "train/checkpoint.h"
#include "train/config.h"

namespace kvt {

namespace fs = std::filesystem;

ImportedModel import_model(const std::string& source) {
  if (fs::is_directory(source)) return import_hf_dir(source);
  if (!fs::is_regular_file(source)) throw std::runtime_error("import: " + source + ": no such file or directory");
  const std::string ext = fs::path(source).extension().string();
  if (ext == ".gguf") return import_gguf(source);
  throw std::invalid_argument("import: " + source + ": give a .gguf file or a Hugging Face model directory");
}

std::string write_imported_checkpoint(ImportedModel& m, const std::string& out_path, bool force) {
  const fs::path out(out_path);
  if (out.extension() != ".h5") throw std::invalid_argument("import: --out " + out_path + ": must end in .h5");
  if (fs::exists(out) && !force)
    throw std::runtime_error("import: " + out_path + " exists (give --force to replace it)");
  RunConfig cfg;
  cfg.model = m.model;
  cfg.train.seq_len = std::min(cfg.train.seq_len, m.model.max_seq_len);
  cfg.data.train = "(imported: no training data)";  // a run from it (train.init_from) gives its own
  // A SentencePiece tokenizer is referred to by path; a byte-level BPE one is embedded.
  const bool embed = m.tokenizer->kind() != "sentencepiece";
  if (!embed) cfg.data.tokenizer = fs::absolute(m.tokenizer->source()).lexically_normal().string();
  CheckpointState s;
  s.format = kCheckpointFormatName;
  s.config_yaml = to_yaml(cfg);
  // The state borrows the parameters (no second copy of the model in memory) and gives them
  // back however the write ends.
  s.params = std::move(m.params);
  struct GiveBack {
    std::vector<float>& from;
    std::vector<float>& to;
    ~GiveBack() { to = std::move(from); }
  } give_back{s.params, m.params};
  if (embed) s.texts = m.tokenizer->embedded_texts();
  s.texts.emplace_back("import_source", m.source_kind + ": " + fs::absolute(m.source).lexically_normal().string());
  const ParamTable table = build_param_table(m.model);
  const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
  return checkpoint_write_file_atomic(dir.string(), out.filename().string(), table, s);
}

}  // namespace kvt

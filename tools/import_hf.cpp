// tools/import_hf.cpp — a Hugging Face model directory into kvtrain's parameter table (see
// tools/model_import.h).
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>

#include "model/params.h"
#include "model/transformer.h"
#include "tools/model_import.h"
#include "tools/safetensors.h"

namespace kvt {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json(const fs::path& p) {
  std::ifstream f(p);
  if (!f) throw std::runtime_error(p.string() + ": cannot open");
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    throw std::runtime_error(p.string() + ": not valid JSON: " + e.what());
  }
}

// config.json -> ModelConfig; everything that is not a plain LLaMA block is refused by key.
class ConfigReader {
 public:
  ConfigReader(const fs::path& path) : path_(path.string()), j_(read_json(path)) {
    if (!j_.is_object()) fail("", "not a JSON object");
  }
  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw std::runtime_error(path_ + (key.empty() ? "" : ": " + key) + ": " + why);
  }
  [[noreturn]] void refuse(const std::string& key, const std::string& value) const {
    fail(key, value + ": not a plain LLaMA block, refused");
  }
  bool has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }
  const json& at(const std::string& key) const {
    if (!has(key)) fail(key, "missing");
    return j_[key];
  }
  int integer(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > (int64_t(1) << 30))
      fail(key, v.dump() + " is not a positive integer");
    return v.get<int>();
  }
  int count(const std::string& key) const {  // a non-negative integer, 0 when absent
    if (!has(key)) return 0;
    const json& v = j_[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (int64_t(1) << 30))
      fail(key, v.dump() + " is not a non-negative integer");
    return v.get<int>();
  }
  double number(const json& v, const std::string& key) const {
    if (!v.is_number()) fail(key, v.dump() + " is not a number");
    return v.get<double>();
  }
  bool flag(const std::string& key, bool dflt) const {
    if (!has(key)) return dflt;
    if (!j_[key].is_boolean()) fail(key, j_[key].dump() + " is not a boolean");
    return j_[key].get<bool>();
  }
  std::string text(const std::string& key, const std::string& dflt) const {
    if (!has(key)) return dflt;
    if (!j_[key].is_string()) fail(key, j_[key].dump() + " is not a string");
    return j_[key].get<std::string>();
  }
  const json& raw() const { return j_; }

 private:
  std::string path_;
  json j_;
};

ModelConfig hf_model_config(const ConfigReader& c, bool* kvtrain_own) {
  const std::string type = c.text("model_type", "");
  if (type != "llama" && type != "kvtrain") c.refuse("model_type", "'" + type + "'");
  *kvtrain_own = type == "kvtrain";
  for (const char* key : {"attention_bias", "mlp_bias", "use_qk_norm", "qk_norm", "use_sliding_window"})
    if (c.flag(key, false)) c.refuse(key, "true");
  for (const char* key : {"rope_scaling", "sliding_window", "num_local_experts", "num_experts", "n_routed_experts"})
    if (c.has(key) && !(c.raw()[key].is_number() && c.raw()[key].get<double>() == 0))
      c.refuse(key, c.raw()[key].dump());
  if (c.text("hidden_act", "silu") != "silu") c.refuse("hidden_act", "'" + c.text("hidden_act", "") + "'");
  ModelConfig m;
  m.vocab_size = c.integer("vocab_size");
  m.d_model = c.integer("hidden_size");
  m.d_ff = c.integer("intermediate_size");
  m.n_layers = c.integer("num_hidden_layers");
  m.n_heads = c.integer("num_attention_heads");
  m.n_kv_heads = c.has("num_key_value_heads") ? c.integer("num_key_value_heads") : m.n_heads;
  m.max_seq_len = c.integer("max_position_embeddings");
  m.norm_eps = static_cast<float>(c.number(c.at("rms_norm_eps"), "rms_norm_eps"));
  // transformers 5.x writes rope_parameters {"rope_theta", "rope_type"}; 4.x rope_theta.
  m.rope_theta = 10000.0f;
  if (c.has("rope_parameters")) {
    const json& rp = c.at("rope_parameters");
    if (!rp.is_object()) c.fail("rope_parameters", "not an object");
    if (rp.contains("rope_type") && rp["rope_type"] != "default")
      c.refuse("rope_parameters.rope_type", rp["rope_type"].dump());
    if (rp.contains("rope_theta")) m.rope_theta = static_cast<float>(c.number(rp["rope_theta"], "rope_parameters.rope_theta"));
  } else if (c.has("rope_theta")) {
    m.rope_theta = static_cast<float>(c.number(c.at("rope_theta"), "rope_theta"));
  }
  if (c.has("head_dim") && c.integer("head_dim") * m.n_heads != m.d_model)
    c.refuse("head_dim", std::to_string(c.integer("head_dim")) + " (hidden_size / num_attention_heads = " +
                             std::to_string(m.d_model / std::max(1, m.n_heads)) + ")");
  m.tie_embeddings = c.flag("tie_word_embeddings", false);  // LlamaConfig's default
  if (c.has("initializer_range")) m.init_std = static_cast<float>(c.number(c.at("initializer_range"), "initializer_range"));
  if (*kvtrain_own) {
    m.kv_sharing = c.text("kv_sharing", "none");
    m.storage_layers = c.count("storage_layers");
    m.fusion_init = c.text("fusion_init", "normal");
    m.lrkv_rank = c.count("lrkv_rank");
  }
  try {
    m.resolve();
  } catch (const std::invalid_argument& e) {
    c.fail("", e.what());
  }
  return m;
}

// The safetensors files of the directory: one, or the shards its index names.
std::vector<std::unique_ptr<SafetensorsReader>> open_weights(const fs::path& dir,
                                                            std::map<std::string, size_t>* file_of) {
  std::vector<std::unique_ptr<SafetensorsReader>> files;
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::is_regular_file(index)) {
    const json j = read_json(index);
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      throw std::runtime_error(index.string() + ": weight_map: missing or not an object");
    std::map<std::string, size_t> shard;
    for (const auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos)
        throw std::runtime_error(index.string() + ": weight_map." + name + ": not a file name in the directory");
      const std::string f = file.get<std::string>();
      if (!shard.count(f)) {
        shard[f] = files.size();
        files.push_back(std::make_unique<SafetensorsReader>((dir / f).string()));
      }
      if (!files[shard[f]]->contains(name))
        throw std::runtime_error(index.string() + ": weight_map." + name + ": " + f + " has no such tensor");
      (*file_of)[name] = shard[f];
    }
    // A tensor in a shard but not in the index would be silently ignored: refuse it.
    for (const auto& f : files)
      for (const std::string& name : f->names())
        if (!file_of->count(name))
          throw std::runtime_error(f->path() + ": tensor " + name + " is not in " + index.string());
  } else {
    const fs::path single = dir / "model.safetensors";
    if (!fs::is_regular_file(single))
      throw std::runtime_error(dir.string() + ": neither model.safetensors nor model.safetensors.index.json");
    files.push_back(std::make_unique<SafetensorsReader>(single.string()));
    for (const std::string& name : files[0]->names()) {
      if (file_of->count(name)) throw std::runtime_error(single.string() + ": duplicate tensor " + name);
      (*file_of)[name] = 0;
    }
  }
  return files;
}

// The directory's tokenizer: a byte-level BPE tokenizer.json, else none (a kvtrain export of a
// SentencePiece model carries tokenizer.model; see the caller).
std::unique_ptr<TextTokenizer> hf_tokenizer(const fs::path& dir) {
  const fs::path json_path = dir / "tokenizer.json";
  const fs::path sp = dir / "tokenizer.model";
  if (fs::is_regular_file(json_path)) {
    try {
      return open_tokenizer(json_path.string());
    } catch (const std::exception&) {
      if (!fs::is_regular_file(sp)) throw;
    }
  }
  if (fs::is_regular_file(sp)) return open_tokenizer(sp.string());
  throw std::runtime_error(dir.string() + ": no tokenizer.json (nor tokenizer.model)");
}

}  // namespace

ImportedModel import_hf_dir(const std::string& dir_in) {
  const fs::path dir(dir_in);
  ImportedModel out;
  out.source = dir_in;
  out.source_kind = "huggingface";
  bool own = false;
  out.model = hf_model_config(ConfigReader(dir / "config.json"), &own);
  std::map<std::string, size_t> file_of;
  const auto files = open_weights(dir, &file_of);
  const ParamTable table = build_param_table(out.model);
  out.params.assign(table.total(), 0.0f);
  std::set<std::string> dtypes;
  for (const ParamInfo& p : table.entries()) {
    const auto it = file_of.find(p.name);
    if (it == file_of.end()) throw std::runtime_error(dir_in + ": missing tensor " + p.name);
    const SafetensorsReader& f = *files[it->second];
    const std::vector<float> w = f.to_f32(p.name, &p.shape);
    std::copy(w.begin(), w.end(), out.params.begin() + p.offset);
    dtypes.insert(dtype_name(f.tensor(p.name).dtype));
    file_of.erase(it);
  }
  for (const auto& [name, file] : file_of) {
    if (name == "lm_head.weight" && out.model.tie_embeddings) continue;  // a tied copy
    if (name.ends_with(".self_attn.rotary_emb.inv_freq")) continue;  // older transformers saved it
    throw std::runtime_error(files[file]->path() + ": tensor " + name + " has no place in the model, refused");
  }
  out.tokenizer = hf_tokenizer(dir);
  if (out.tokenizer->vocab_size() > out.model.vocab_size)
    throw std::runtime_error(dir_in + ": the tokenizer has " + std::to_string(out.tokenizer->vocab_size()) +
                             " tokens, more than the model's " + std::to_string(out.model.vocab_size));
  std::string seen;
  for (const std::string& d : dtypes) seen += (seen.empty() ? "" : ", ") + d;
  out.notes.push_back(std::string(own ? "kvtrain model (model_type kvtrain, kv_sharing " + out.model.kv_sharing + ")"
                                      : "LlamaForCausalLM") +
                      ", tensors " + seen + " from " + std::to_string(files.size()) + " safetensors file(s)");
  return out;
}

}  // namespace kvt

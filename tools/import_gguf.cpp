// tools/import_gguf.cpp — a LLaMA GGUF file into kvtrain's parameter table (see
// tools/model_import.h).
#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include "data/gguf.h"
#include "data/gguf_quant.h"
#include "model/params.h"
#include "model/transformer.h"
#include "tools/model_import.h"
#include "train/gguf_llama.h"

namespace kvt {

namespace {

// The GGUF name of a parameter-table entry ("" for none).
std::string gguf_name(const std::string& name) {
  static const std::map<std::string, std::string> top = {{"model.embed_tokens.weight", "token_embd.weight"},
                                                         {"model.norm.weight", "output_norm.weight"},
                                                         {"lm_head.weight", "output.weight"}};
  static const std::map<std::string, std::string> leaf = {
      {"input_layernorm.weight", "attn_norm.weight"},   {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},     {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"}};
  if (auto it = top.find(name); it != top.end()) return it->second;
  const std::string pre = "model.layers.";
  if (name.compare(0, pre.size(), pre) != 0) return "";
  const size_t dot = name.find('.', pre.size());
  if (dot == std::string::npos) return "";
  const auto it = leaf.find(name.substr(dot + 1));
  return it == leaf.end() ? "" : "blk." + name.substr(pre.size(), dot - pre.size()) + "." + it->second;
}

std::string shape_text(const GgufTensorInfo& t) {
  std::string s = "[";
  for (uint32_t i = 0; i < t.n_dims; ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
  return s + "] (innermost first)";
}

}  // namespace

ImportedModel import_gguf(const std::string& path) {
  const GgufFile f = GgufFile::open(path);
  ImportedModel out;
  out.source = path;
  out.source_kind = "gguf";
  out.model = gguf_llama_config(f);
  out.tokenizer = open_tokenizer(path);
  if (out.tokenizer->vocab_size() != out.model.vocab_size)
    throw std::runtime_error(path + ": the tokenizer has " + std::to_string(out.tokenizer->vocab_size()) +
                             " tokens, the model " + std::to_string(out.model.vocab_size));
  const ParamTable table = build_param_table(out.model);
  out.params.assign(table.total(), 0.0f);
  std::set<std::string> used;
  std::map<std::string, int> types;  // quant type name -> tensors
  for (const ParamInfo& p : table.entries()) {
    const std::string name = gguf_name(p.name);
    if (name.empty()) throw std::logic_error("import: no GGUF name for " + p.name);
    const GgufTensorInfo* t = f.tensor(name);
    if (!t) throw std::runtime_error(path + ": missing tensor '" + name + "' (for " + p.name + ")");
    // GGUF dims are innermost first: a [rows, cols] parameter is ne = {cols, rows}.
    bool fits = t->n_dims == p.shape.size();
    for (size_t i = 0; fits && i < p.shape.size(); ++i) fits = t->ne[i] == p.shape[p.shape.size() - 1 - i];
    if (!fits)
      throw std::runtime_error(path + ": tensor '" + name + "' has shape " + shape_text(*t) + ", the config needs " +
                               std::to_string(p.shape.size() == 2 ? p.shape[1] : p.shape[0]) +
                               (p.shape.size() == 2 ? " x " + std::to_string(p.shape[0]) : std::string()));
    std::vector<float> w = f.read_f32(*t);
    if (name.find("attn_q.") != std::string::npos)
      unpermute_qk_rows(w.data(), p.shape[0], p.shape[1], out.model.n_heads);
    else if (name.find("attn_k.") != std::string::npos)
      unpermute_qk_rows(w.data(), p.shape[0], p.shape[1], out.model.kv_heads());
    std::copy(w.begin(), w.end(), out.params.begin() + p.offset);
    used.insert(name);
    ++types[ggml_type_name(static_cast<uint32_t>(t->type))];
  }
  for (const GgufTensorInfo& t : f.tensors())
    if (!used.count(t.name))
      throw std::runtime_error(path + ": tensor '" + t.name + "' has no place in a plain LLaMA model, refused");
  std::string seen;
  for (const auto& [type, n] : types) seen += (seen.empty() ? "" : ", ") + std::to_string(n) + " " + type;
  out.notes.push_back("dequantized " + seen);
  out.notes.push_back("attn_q / attn_k rows un-permuted (llama.cpp's interleaved RoPE -> rotate-half)");
  if (out.model.tie_embeddings) out.notes.push_back("no output.weight: tied embeddings");
  return out;
}

}  // namespace kvt

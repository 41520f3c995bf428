// tools/cmd_export.cpp — `kvtrain export --checkpoint ckpt.h5 --out DIR`: a Hugging Face model
// directory for transformers 5.x (docs/design.md, "Inference and the KV cache", docs/export.md).
//
//   DIR/model.safetensors        the parameters under the parameter table's Hugging Face names,
//                                weights [out, in], metadata {"format": "pt"}; F32 or BF16
//   DIR/config.json              LlamaForCausalLM for MHA/GQA/MQA (and --merge-lrkv); otherwise
//                                model_type "kvtrain" with auto_map into the two files below;
//                                5.x keys (rope_parameters, dtype)
//   DIR/generation_config.json   bos/eos ids (eos and, if different, end-of-text)
//   DIR/tokenizer.json           kvtrain's SentencePiece model converted (tools/sp_tokenizer_json.h),
//                                or an imported checkpoint's embedded /text/tokenizer.json as is
//   DIR/tokenizer.model          the SentencePiece model, as is (kvtrain's own tokenizers only)
//   DIR/tokenizer_config.json    PreTrainedTokenizerFast: bos/eos(/unk) strings, add_bos_token,
//                                model_max_length, chat_template when the model has one
//   DIR/special_tokens_map.json  bos/eos(/unk) strings
//   DIR/chat_template.jinja      the chat template, when there is one (5.x reads it first)
//   DIR/configuration_kvtrain.py, DIR/modeling_kvtrain.py   (non-llama variants only; copied
//                                from tools/hf/, found next to the binary's source tree)
//
// The tokenizer: --tokenizer FILE.model, else the checkpoint's embedded /text/tokenizer.json +
// /text/tokenizer_config.json (`kvtrain import`; the token strings of its bos/eos ids are looked
// up in that tokenizer.json), else the config's data.tokenizer.
// Tied embeddings: only model.embed_tokens.weight is written and tie_word_embeddings is true.
// --merge-lrkv writes an LRKV model as a plain LLaMA: per head h,
//   k_proj.weight[h d_h : (h+1) d_h, :] = k_shared.weight + k_up[h] @ k_down.weight[h r : (h+1) r, :]
// (K_h = X W_shared + (X U_h) B_h^T with W stored [out, in]), same for V; exact up to fp32
// rounding of the sum, but the cache then holds H full heads per layer.
#include <sentencepiece_processor.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/file_commit.h"
#include "model/config.h"
#include "model/kv_sharing.h"
#include "model/transformer.h"
#include "tools/commands.h"
#include "tools/safetensors.h"
#include "tools/sp_tokenizer_json.h"
#include "train/checkpoint.h"
#include "train/config.h"

namespace kvt::cli {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

struct ExportArgs {
  std::string checkpoint, out, dtype = "fp32", tokenizer, hf_code;
  bool merge_lrkv = false, force = false;
};

// Every file goes through data/file_commit.h: a reader (or an earlier export in --out) never
// sees a torn file, a failure leaves no temporary, and a full disk names the file, the bytes
// needed and the bytes free.
void write_text(const fs::path& p, const std::string& text) { write_file_atomic(p.string(), text); }
// A copy of `from` as `to`, committed the same way.
void copy_file_atomic(const fs::path& from, const fs::path& to) {
  std::ifstream in(from, std::ios::binary);
  if (!in) throw std::runtime_error("export: cannot read " + from.string());
  std::ostringstream bytes;
  bytes << in.rdbuf();
  write_file_atomic(to.string(), bytes.str());
}
void write_json(const fs::path& p, const ojson& j) { write_text(p, j.dump(2) + "\n"); }

// tools/hf: --hf-code, $KVT_HF_CODE, next to the executable's source tree (build/kvtrain ->
// ../tools/hf), or next to this source file.
fs::path find_hf_code(const std::string& given) {
  std::vector<fs::path> tries;
  if (!given.empty()) tries.push_back(given);
  if (const char* env = std::getenv("KVT_HF_CODE")) tries.push_back(env);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    tries.push_back(exe.parent_path().parent_path() / "tools" / "hf");
    tries.push_back(exe.parent_path() / "tools" / "hf");
  }
  tries.push_back(fs::path(__FILE__).parent_path() / "hf");
  for (const fs::path& d : tries)
    if (fs::is_regular_file(d / "modeling_kvtrain.py") && fs::is_regular_file(d / "configuration_kvtrain.py"))
      return d;
  std::string where;
  for (const fs::path& d : tries) where += (where.empty() ? "" : ", ") + d.string();
  throw std::runtime_error("export: cannot find modeling_kvtrain.py and configuration_kvtrain.py (looked in " +
                           where + "); give --hf-code DIR (kvtrain's tools/hf)");
}

// The output directory: refuse an existing non-empty one unless --force (which then replaces the
// files export writes, leaving any others).
void prepare_out_dir(const fs::path& out, bool force) {
  if (fs::exists(out)) {
    if (!fs::is_directory(out)) throw std::runtime_error("export: --out " + out.string() + " exists and is not a directory");
    if (!fs::is_empty(out) && !force)
      throw std::runtime_error("export: --out " + out.string() +
                               " exists and is not empty; choose another directory or pass --force to overwrite");
  }
  fs::create_directories(out);
}

// The tokenizer files and the special ids config.json / generation_config.json name.
struct TokenizerInfo {
  int bos = -1, eos = -1, eot = -1;   // -1: none
  std::string bos_token, eos_token, unk_token;  // "" when none
  bool add_bos = true;
  std::string chat_template;  // "" when none
  std::string source;         // for messages
};

ojson token_or_null(const std::string& t) { return t.empty() ? ojson(nullptr) : ojson(t); }
ojson id_or_null(int id) { return id < 0 ? ojson(nullptr) : ojson(id); }

// Hugging Face tokenizer_config.json for a tokenizer.json-backed tokenizer: transformers 5.x
// loads tokenizer.json as is (PreTrainedTokenizerFast); BOS comes from its post_processor, the
// strings here name the special tokens.
ojson hf_tokenizer_config(const TokenizerInfo& t, int max_len) {
  ojson cfg;
  cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
  cfg["bos_token"] = token_or_null(t.bos_token);
  cfg["eos_token"] = token_or_null(t.eos_token);
  if (!t.unk_token.empty()) cfg["unk_token"] = t.unk_token;
  cfg["pad_token"] = nullptr;
  cfg["add_bos_token"] = t.add_bos;
  cfg["add_eos_token"] = false;
  cfg["clean_up_tokenization_spaces"] = false;
  cfg["model_max_length"] = max_len;
  if (!t.chat_template.empty()) cfg["chat_template"] = t.chat_template;
  return cfg;
}

void write_hf_tokenizer_files(const fs::path& out, const TokenizerInfo& t, int max_len) {
  write_json(out / "tokenizer_config.json", hf_tokenizer_config(t, max_len));
  ojson special;
  special["bos_token"] = token_or_null(t.bos_token);
  special["eos_token"] = token_or_null(t.eos_token);
  if (!t.unk_token.empty()) special["unk_token"] = t.unk_token;
  write_json(out / "special_tokens_map.json", special);
  // transformers 5.x saves the template as chat_template.jinja and reads it before the config's.
  if (!t.chat_template.empty()) write_text(out / "chat_template.jinja", t.chat_template);
}

// kvtrain's own SentencePiece model: checked and converted to tokenizer.json (tools/sp_tokenizer_json.h).
struct SpTokenizer {
  TokenizerInfo info;
  std::string path, tokenizer_json;
};

SpTokenizer load_sp_tokenizer(const std::string& path, int model_vocab) {
  if (path.empty())
    throw std::invalid_argument("export: the checkpoint's config has no data.tokenizer and embeds no tokenizer; "
                                "give --tokenizer FILE.model");
  if (!fs::is_regular_file(path)) throw std::runtime_error("export: tokenizer " + path + ": no such file");
  sentencepiece::SentencePieceProcessor sp;
  const auto st = sp.Load(path);
  if (!st.ok()) throw std::runtime_error("export: tokenizer " + path + ": " + st.ToString());
  SpTokenizer s;
  TokenizerInfo& t = s.info;
  t.source = path;
  t.bos = sp.bos_id();
  t.eos = sp.eos_id();
  const int unk = sp.unk_id();
  if (sp.GetPieceSize() > model_vocab)
    throw std::invalid_argument("export: tokenizer " + path + " has " + std::to_string(sp.GetPieceSize()) +
                                " pieces, more than the model's vocab_size " + std::to_string(model_vocab));
  if (t.bos < 0 || t.eos < 0 || unk < 0)
    throw std::invalid_argument("export: tokenizer " + path + " lacks a bos, eos or unk piece");
  t.bos_token = sp.IdToPiece(t.bos);
  t.eos_token = sp.IdToPiece(t.eos);
  t.unk_token = sp.IdToPiece(unk);
  t.add_bos = true;  // kvtrain's documents start with BOS (data/tokenizer.h)
  s.path = path;
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  s.tokenizer_json = sp_tokenizer_json(parse_sp_model(bytes.str(), path), path);
  return s;
}

// An imported checkpoint's embedded tokenizer (IMPORT: /text/tokenizer.json, Hugging Face's
// format, and /text/tokenizer_config.json, kvtrain's {"bos_token_id", "eos_token_id",
// "eot_token_id", "add_bos_token", "chat_template"}); the ids' strings come from tokenizer.json's
// added_tokens and model.vocab.
TokenizerInfo embedded_tokenizer(const std::string& tok_json, const std::string& cfg_json, const std::string& where,
                                 int model_vocab) {
  TokenizerInfo t;
  t.source = where;
  ojson tj, kc;
  try {
    tj = ojson::parse(tok_json);
  } catch (const std::exception& e) {
    throw std::runtime_error("export: " + where + ": /text/tokenizer.json is not JSON: " + e.what());
  }
  try {
    kc = ojson::parse(cfg_json);
  } catch (const std::exception& e) {
    throw std::runtime_error("export: " + where + ": /text/tokenizer_config.json is not JSON: " + e.what());
  }
  if (!tj.is_object() || !tj.contains("model") || !tj["model"].is_object())
    throw std::runtime_error("export: " + where + ": /text/tokenizer.json has no \"model\" object");
  if (!kc.is_object()) throw std::runtime_error("export: " + where + ": /text/tokenizer_config.json is not an object");
  std::unordered_map<int64_t, std::string> strings;
  int64_t max_id = -1;
  const ojson& vocab = tj["model"].contains("vocab") ? tj["model"]["vocab"] : ojson();
  if (vocab.is_object()) {
    for (const auto& [tok, id] : vocab.items())
      if (id.is_number_integer()) {
        strings.emplace(id.get<int64_t>(), tok);
        max_id = std::max(max_id, id.get<int64_t>());
      }
  } else if (vocab.is_array()) {  // Unigram: [[token, score], ...]
    for (size_t i = 0; i < vocab.size(); ++i)
      if (vocab[i].is_array() && !vocab[i].empty() && vocab[i][0].is_string())
        strings.emplace(int64_t(i), vocab[i][0].get<std::string>());
    max_id = int64_t(vocab.size()) - 1;
  }
  if (tj.contains("added_tokens") && tj["added_tokens"].is_array())
    for (const ojson& a : tj["added_tokens"])
      if (a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") &&
          a["content"].is_string()) {
        strings[a["id"].get<int64_t>()] = a["content"].get<std::string>();
        max_id = std::max(max_id, a["id"].get<int64_t>());
      }
  if (max_id < 0) throw std::runtime_error("export: " + where + ": /text/tokenizer.json has an empty vocab");
  if (max_id >= model_vocab)
    throw std::invalid_argument("export: " + where + ": the embedded tokenizer has id " + std::to_string(max_id) +
                                ", beyond the model's vocab_size " + std::to_string(model_vocab));
  auto id_key = [&](const char* key) -> int {
    if (!kc.contains(key) || kc[key].is_null()) return -1;
    if (!kc[key].is_number_integer())
      throw std::runtime_error("export: " + where + ": /text/tokenizer_config.json: " + key + " is not an integer");
    const int64_t id = kc[key].get<int64_t>();
    if (id < 0) return -1;
    if (!strings.count(id))
      throw std::runtime_error("export: " + where + ": /text/tokenizer_config.json: " + key + " " +
                               std::to_string(id) + " is not an id of the embedded tokenizer.json");
    return int(id);
  };
  t.bos = id_key("bos_token_id");
  t.eos = id_key("eos_token_id");
  t.eot = id_key("eot_token_id");
  if (t.bos >= 0) t.bos_token = strings[t.bos];
  if (t.eos >= 0) t.eos_token = strings[t.eos];
  if (tj["model"].contains("unk_token") && tj["model"]["unk_token"].is_string())
    t.unk_token = tj["model"]["unk_token"].get<std::string>();
  t.add_bos = kc.contains("add_bos_token") && kc["add_bos_token"].is_boolean() && kc["add_bos_token"].get<bool>();
  if (kc.contains("chat_template") && kc["chat_template"].is_string())
    t.chat_template = kc["chat_template"].get<std::string>();
  return t;
}

ojson model_config(const ModelConfig& m, bool llama, const std::string& dtype, const TokenizerInfo& t) {
  ojson c;
  c["architectures"] = llama ? ojson::array({"LlamaForCausalLM"}) : ojson::array({"KvtrainForCausalLM"});
  c["model_type"] = llama ? "llama" : "kvtrain";
  if (!llama)
    c["auto_map"] = {{"AutoConfig", "configuration_kvtrain.KvtrainConfig"},
                     {"AutoModelForCausalLM", "modeling_kvtrain.KvtrainForCausalLM"}};
  c["vocab_size"] = m.vocab_size;
  c["hidden_size"] = m.d_model;
  c["intermediate_size"] = m.ffn_dim();
  c["num_hidden_layers"] = m.n_layers;
  c["num_attention_heads"] = m.n_heads;
  c["num_key_value_heads"] = m.kv_heads();
  c["max_position_embeddings"] = m.max_seq_len;
  c["rms_norm_eps"] = m.norm_eps;
  c["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", m.rope_theta}};  // transformers 5.x
  c["rope_theta"] = m.rope_theta;  // the 4.x key, still read by other tools
  c["hidden_act"] = "silu";
  c["attention_bias"] = false;
  c["attention_dropout"] = 0.0;
  c["mlp_bias"] = false;
  c["initializer_range"] = m.init_std;
  c["tie_word_embeddings"] = m.tie_embeddings;
  c["bos_token_id"] = id_or_null(t.bos);
  c["eos_token_id"] = id_or_null(t.eos);
  c["pad_token_id"] = nullptr;
  c["use_cache"] = true;
  c["dtype"] = dtype == "bf16" ? "bfloat16" : "float32";  // 5.x's name for torch_dtype
  if (!llama) {
    c["kv_sharing"] = m.kv_sharing;
    c["storage_layers"] = m.kv_sharing == "none" || m.kv_sharing == "cla" ? 0 : m.storage_layers;
    c["fusion_init"] = m.fusion_init;
    c["lrkv_rank"] = m.lrkv_rank;
  }
  return c;
}

void run_export(const ExportArgs& a) {
  if (a.dtype != "fp32" && a.dtype != "bf16")
    throw std::invalid_argument("export: --dtype must be fp32 or bf16, got \"" + a.dtype + "\"");
  if (!fs::is_regular_file(a.checkpoint))
    throw std::runtime_error("export: " + a.checkpoint + ": no such checkpoint file");

  RunConfig cfg;
  try {
    cfg = parse_run_config(read_checkpoint_config(a.checkpoint), {}, a.checkpoint + ": /config");
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("export: cannot export ") + a.checkpoint +
                             " (unknown or invalid model variant for this kvtrain): " + e.what());
  }
  const ModelConfig& m = cfg.model;
  if (a.merge_lrkv && !m.lrkv())
    throw std::invalid_argument("export: --merge-lrkv applies to LRKV checkpoints (model.lrkv_rank > 0); " +
                                a.checkpoint + " has lrkv_rank 0");
  const bool llama = (m.kv_sharing == "none" && !m.lrkv()) || a.merge_lrkv;

  // The tokenizer: --tokenizer, else the one an imported checkpoint embeds, else data.tokenizer.
  const CheckpointSummary summary = read_checkpoint_summary(a.checkpoint);
  const std::string* emb_json = find_text(summary.texts, "tokenizer.json");
  const std::string* emb_cfg = find_text(summary.texts, "tokenizer_config.json");
  const bool embedded = a.tokenizer.empty() && emb_json != nullptr;
  if (embedded && emb_cfg == nullptr)
    throw std::runtime_error("export: " + a.checkpoint + " embeds /text/tokenizer.json but no /text/tokenizer_config.json");
  SpTokenizer sp;
  if (!embedded) sp = load_sp_tokenizer(a.tokenizer.empty() ? cfg.data.tokenizer : a.tokenizer, m.vocab_size);
  const TokenizerInfo tok =
      embedded ? embedded_tokenizer(*emb_json, *emb_cfg, a.checkpoint, m.vocab_size) : sp.info;
  const fs::path hf_code = llama ? fs::path() : find_hf_code(a.hf_code);

  const ParamTable table = build_param_table(m, cfg.train.decay_embeddings);
  const CheckpointWeights w = read_model_weights(a.checkpoint, table);

  const fs::path out(a.out);
  prepare_out_dir(out, a.force);

  // Tensors. Merged LRKV K/V are computed in double and rounded once.
  const bool bf16 = a.dtype == "bf16";
  SafetensorsWriter st;
  std::vector<std::vector<float>> merged;  // keeps merged tensors alive for add_view
  auto add = [&](const std::string& name, const std::vector<int64_t>& shape, const float* data) {
    const size_t n = shape_numel(shape);
    if (bf16) st.add_bf16(name, shape, std::vector<float>(data, data + n));
    else st.add_view(name, DType::F32, shape, data);
  };
  const int H = m.n_heads, D = m.head_dim(), C = m.d_model, r = m.lrkv_rank;
  for (const ParamInfo& p : table.entries()) {
    const float* data = w.params.data() + p.offset;
    if (a.merge_lrkv && p.name.find(".self_attn.") != std::string::npos) {
      const std::string pre = p.name.substr(0, p.name.find(".self_attn.") + 11);
      const std::string leaf = p.name.substr(pre.size());
      if (leaf == "k_shared.weight" || leaf == "v_shared.weight") {
        const std::string kv = leaf.substr(0, 1);
        const float* shared = data;
        const float* down = w.params.data() + table.find(pre + kv + "_down.weight").offset;
        const float* up = w.params.data() + table.find(pre + kv + "_up.weight").offset;
        std::vector<float> proj(static_cast<size_t>(H) * D * C);
        for (int h = 0; h < H; ++h)
          for (int d = 0; d < D; ++d)
            for (int c = 0; c < C; ++c) {
              double s = shared[static_cast<size_t>(d) * C + c];
              for (int j = 0; j < r; ++j)
                s += double(up[(static_cast<size_t>(h) * D + d) * r + j]) *
                     double(down[(static_cast<size_t>(h) * r + j) * C + c]);
              proj[(static_cast<size_t>(h) * D + d) * C + c] = static_cast<float>(s);
            }
        merged.push_back(std::move(proj));
        add(pre + kv + "_proj.weight", {int64_t(H) * D, C}, merged.back().data());
        continue;
      }
      if (leaf == "k_down.weight" || leaf == "v_down.weight" || leaf == "k_up.weight" || leaf == "v_up.weight")
        continue;
    }
    add(p.name, p.shape, data);
  }
  st.set_metadata("format", "pt");
  st.write((out / "model.safetensors").string());

  write_json(out / "config.json", model_config(m, llama, a.dtype, tok));
  ojson gen;
  gen["bos_token_id"] = id_or_null(tok.bos);
  // Generation stops at eos and, when it differs, at the end-of-text token (data/text_tokenizer.h).
  gen["eos_token_id"] = tok.eot >= 0 && tok.eot != tok.eos && tok.eos >= 0 ? ojson::array({tok.eos, tok.eot})
                                                                           : id_or_null(tok.eos);
  gen["do_sample"] = false;
  gen["max_length"] = m.max_seq_len;
  write_json(out / "generation_config.json", gen);
  if (embedded) {
    write_text(out / "tokenizer.json", *emb_json);
  } else {
    copy_file_atomic(sp.path, out / "tokenizer.model");
    write_text(out / "tokenizer.json", sp.tokenizer_json);
  }
  write_hf_tokenizer_files(out, tok, m.max_seq_len);
  if (!llama)
    for (const char* f : {"configuration_kvtrain.py", "modeling_kvtrain.py"})
      copy_file_atomic(hf_code / f, out / f);

  std::printf("export: %s (step %lld) -> %s\n", a.checkpoint.c_str(), static_cast<long long>(w.step),
              out.string().c_str());
  std::printf("export: %zu tensors, %s, %s (%s)\n", st.size(), bf16 ? "bf16" : "fp32",
              llama ? "LlamaForCausalLM" : "KvtrainForCausalLM (trust_remote_code)",
              kv_cache_summary(m).c_str());
  if (a.merge_lrkv)
    std::fprintf(stderr,
                 "export: warning: --merge-lrkv wrote plain per-head K/V projections; the exported model "
                 "caches %d full KV heads per layer, so LRKV's KV-cache saving is lost\n", H);
  std::fflush(stdout);
}

}  // namespace

void add_export(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* sub = app.add_subcommand(
      "export", "Write a checkpoint as a Hugging Face model directory (safetensors, config, tokenizer)");
  sub->add_option("--checkpoint", a->checkpoint, "checkpoint .h5")->required();
  sub->add_option("--out", a->out, "output directory (must be new or empty unless --force)")->required();
  sub->add_option("--dtype", a->dtype, "fp32 | bf16")->capture_default_str();
  sub->add_option("--tokenizer", a->tokenizer,
                  "SentencePiece .model (default: the tokenizer an imported checkpoint embeds, else data.tokenizer)");
  sub->add_flag("--merge-lrkv", a->merge_lrkv,
                "LRKV only: write plain per-head k_proj/v_proj (LlamaForCausalLM); loses the cache saving");
  sub->add_flag("--force", a->force, "write into an existing non-empty directory");
  sub->add_option("--hf-code", a->hf_code, "directory with modeling_kvtrain.py (default: kvtrain's tools/hf)");
  sub->callback([a] { run_export(*a); });
}

}  // namespace kvt::cli

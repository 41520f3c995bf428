// tools/cmd_export.cpp — `kvtrain export --checkpoint ckpt.h5 --out DIR`: a Hugging Face model
// directory (docs/design.md, "Inference and the KV cache", docs/export.md).
//
//   DIR/model.safetensors        the parameters under the parameter table's Hugging Face names,
//                                weights [out, in], metadata {"format": "pt"}; F32 or BF16
//   DIR/config.json              LlamaForCausalLM for MHA/GQA/MQA (and --merge-lrkv); otherwise
//                                model_type "kvtrain" with auto_map into the two files below
//   DIR/generation_config.json   bos/eos ids
//   DIR/tokenizer.model          the SentencePiece model, as is
//   DIR/tokenizer_config.json    LlamaTokenizer: bos/eos/unk pieces, add_bos_token, legacy false,
//   DIR/special_tokens_map.json  add_prefix_space false (kvtrain's tokenizer adds no dummy prefix)
//   DIR/configuration_kvtrain.py, DIR/modeling_kvtrain.py   (non-llama variants only; copied
//                                from tools/hf/, found next to the binary's source tree)
//
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
#include <vector>

#include "data/file_commit.h"
#include "model/config.h"
#include "model/kv_sharing.h"
#include "model/transformer.h"
#include "tools/commands.h"
#include "tools/safetensors.h"
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

struct TokenizerInfo {
  int vocab = 0, bos = -1, eos = -1, unk = -1;
  std::string bos_piece, eos_piece, unk_piece;
};

TokenizerInfo load_tokenizer(const std::string& path, int model_vocab) {
  if (path.empty())
    throw std::invalid_argument("export: the checkpoint's config has no data.tokenizer; give --tokenizer FILE.model");
  if (!fs::is_regular_file(path)) throw std::runtime_error("export: tokenizer " + path + ": no such file");
  sentencepiece::SentencePieceProcessor sp;
  const auto st = sp.Load(path);
  if (!st.ok()) throw std::runtime_error("export: tokenizer " + path + ": " + st.ToString());
  TokenizerInfo t;
  t.vocab = sp.GetPieceSize();
  t.bos = sp.bos_id();
  t.eos = sp.eos_id();
  t.unk = sp.unk_id();
  if (t.vocab > model_vocab)
    throw std::invalid_argument("export: tokenizer " + path + " has " + std::to_string(t.vocab) +
                                " pieces, more than the model's vocab_size " + std::to_string(model_vocab));
  if (t.bos < 0 || t.eos < 0 || t.unk < 0)
    throw std::invalid_argument("export: tokenizer " + path + " lacks a bos, eos or unk piece");
  t.bos_piece = sp.IdToPiece(t.bos);
  t.eos_piece = sp.IdToPiece(t.eos);
  t.unk_piece = sp.IdToPiece(t.unk);
  return t;
}

void write_tokenizer(const fs::path& out, const std::string& path, const TokenizerInfo& t, int max_len) {
  copy_file_atomic(path, out / "tokenizer.model");
  auto added = [](const std::string& piece) {
    return ojson{{"content", piece}, {"lstrip", false}, {"normalized", false}, {"rstrip", false},
                 {"single_word", false}, {"special", true}};
  };
  ojson decoder = ojson::object();
  decoder[std::to_string(t.unk)] = added(t.unk_piece);
  decoder[std::to_string(t.bos)] = added(t.bos_piece);
  decoder[std::to_string(t.eos)] = added(t.eos_piece);
  ojson cfg;
  cfg["tokenizer_class"] = "LlamaTokenizer";
  cfg["add_bos_token"] = true;
  cfg["add_eos_token"] = false;
  cfg["added_tokens_decoder"] = decoder;
  cfg["bos_token"] = t.bos_piece;
  cfg["eos_token"] = t.eos_piece;
  cfg["unk_token"] = t.unk_piece;
  cfg["pad_token"] = nullptr;
  cfg["clean_up_tokenization_spaces"] = false;
  cfg["legacy"] = false;
  cfg["add_prefix_space"] = false;  // kvtrain's tokenizer is trained with add_dummy_prefix=false
  cfg["model_max_length"] = max_len;
  cfg["sp_model_kwargs"] = ojson::object();
  cfg["spaces_between_special_tokens"] = false;
  write_json(out / "tokenizer_config.json", cfg);
  ojson special;
  special["bos_token"] = t.bos_piece;
  special["eos_token"] = t.eos_piece;
  special["unk_token"] = t.unk_piece;
  write_json(out / "special_tokens_map.json", special);
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
  c["rope_theta"] = m.rope_theta;
  c["rope_scaling"] = nullptr;
  c["hidden_act"] = "silu";
  c["attention_bias"] = false;
  c["attention_dropout"] = 0.0;
  c["mlp_bias"] = false;
  c["initializer_range"] = m.init_std;
  c["tie_word_embeddings"] = m.tie_embeddings;
  c["bos_token_id"] = t.bos;
  c["eos_token_id"] = t.eos;
  c["pad_token_id"] = nullptr;
  c["use_cache"] = true;
  c["torch_dtype"] = dtype == "bf16" ? "bfloat16" : "float32";
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

  const std::string tok_path = a.tokenizer.empty() ? cfg.data.tokenizer : a.tokenizer;
  const TokenizerInfo tok = load_tokenizer(tok_path, m.vocab_size);
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
  gen["bos_token_id"] = tok.bos;
  gen["eos_token_id"] = tok.eos;
  gen["do_sample"] = false;
  gen["max_length"] = m.max_seq_len;
  write_json(out / "generation_config.json", gen);
  write_tokenizer(out, tok_path, tok, m.max_seq_len);
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
  sub->add_option("--tokenizer", a->tokenizer, "SentencePiece .model (default: the config's data.tokenizer)");
  sub->add_flag("--merge-lrkv", a->merge_lrkv,
                "LRKV only: write plain per-head k_proj/v_proj (LlamaForCausalLM); loses the cache saving");
  sub->add_flag("--force", a->force, "write into an existing non-empty directory");
  sub->add_option("--hf-code", a->hf_code, "directory with modeling_kvtrain.py (default: kvtrain's tools/hf)");
  sub->callback([a] { run_export(*a); });
}

}  // namespace kvt::cli

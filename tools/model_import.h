// tools/model_import.h — a pretrained model read into kvtrain's parameter table (docs/design.md,
// "Importing models"): the pieces of `kvtrain import`.
//
// From GGUF (tools/import_gguf.cpp): the llama.* config (train/gguf_llama.h), every tensor
// dequantized (data/gguf_quant.h), attn_q / attn_k rows un-permuted, the tokenizer from the
// tokenizer.ggml.* metadata. Names: token_embd -> model.embed_tokens, blk.N.attn_norm ->
// input_layernorm, attn_{q,k,v,output} -> self_attn.{q,k,v,o}_proj, ffn_norm ->
// post_attention_layernorm, ffn_{gate,up,down} -> mlp.*_proj, output_norm -> model.norm, output ->
// lm_head (absent: tied). A tensor the model has no use for is refused by name.
// From a Hugging Face directory (tools/import_hf.cpp): config.json (LlamaForCausalLM, or
// kvtrain's own model_type "kvtrain"), model.safetensors or model.safetensors.index.json shards
// (F32, F16, BF16), tokenizer.json (+ tokenizer_config.json). Tensor names are the parameter
// table's own, so a kvtrain fp32 export imports bitwise.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/text_tokenizer.h"
#include "model/config.h"

namespace kvt {

struct ImportedModel {
  ModelConfig model;              // resolved
  std::vector<float> params;      // laid out by build_param_table(model)
  std::unique_ptr<TextTokenizer> tokenizer;
  std::string source;             // the file or directory read
  std::string source_kind;        // "gguf" | "huggingface"
  std::vector<std::string> notes; // what was converted (quant types seen, permutation undone, ...)
};

ImportedModel import_gguf(const std::string& path);
ImportedModel import_hf_dir(const std::string& dir);
// A .gguf file or a directory; anything else is an error naming it.
ImportedModel import_model(const std::string& source);

// Writes the model as a weights-only kvtrain checkpoint (no optimizer state, step 0; the
// tokenizer embedded as /text/tokenizer.json and /text/tokenizer_config.json, the source as
// /text/import_source) at out_path, atomically, with its .sha256 sidecar. Refuses an existing
// file unless force. Returns the path written. m.params is moved into the writer's state for
// the write (no copy) and is back in m when this returns or throws.
std::string write_imported_checkpoint(ImportedModel& m, const std::string& out_path, bool force);

}  // namespace kvt

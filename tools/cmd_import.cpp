// tools/cmd_import.cpp — `kvtrain import --from SRC --out MODEL.h5 [--force]`: a pretrained
// LLaMA-family model (a GGUF file, or a Hugging Face directory) as a weights-only kvtrain
// checkpoint with its tokenizer embedded (docs/design.md, "Importing models"). The result is
// what `generate`, `eval`, `gates`, `export`, `inspect` and `train` (train.init_from) take.
#include <cstdio>
#include <memory>
#include <string>

#include "model/kv_sharing.h"
#include "tools/commands.h"
#include "tools/model_import.h"

namespace kvt::cli {
namespace {

struct ImportArgs {
  std::string from, out;
  bool force = false;
};

void run_import(const ImportArgs& a) {
  ImportedModel m = import_model(a.from);
  const std::string path = write_imported_checkpoint(m, a.out, a.force);
  const ModelConfig& c = m.model;
  std::printf("import: %s (%s) -> %s\n", a.from.c_str(), m.source_kind.c_str(), path.c_str());
  std::printf("import: %d layers, d_model %d, %d heads, %d KV heads, d_ff %d, vocab %d, rope theta %g, eps %g, "
              "context %d, %s embeddings\n",
              c.n_layers, c.d_model, c.n_heads, c.kv_heads(), c.ffn_dim(), c.vocab_size, c.rope_theta, c.norm_eps,
              c.max_seq_len, c.tie_embeddings ? "tied" : "untied");
  for (const std::string& n : m.notes) std::printf("import: %s\n", n.c_str());
  const SpecialTokens& s = m.tokenizer->special();
  std::printf("import: tokenizer %s, %d tokens, bos %d, eos %d, end-of-text %d, add_bos %s, chat template %s\n",
              m.tokenizer->kind().c_str(), m.tokenizer->vocab_size(), s.bos, s.eos, s.eot,
              s.add_bos ? "true" : "false",
              s.chat_template.empty() ? "none" : m.tokenizer->has_chatml() ? "ChatML" : "present (not ChatML)");
  std::printf("import: weights only (no optimizer state); %s\n", kv_cache_summary(c).c_str());
  std::fflush(stdout);
}

}  // namespace

void add_import(CLI::App& app) {
  auto a = std::make_shared<ImportArgs>();
  CLI::App* sub = app.add_subcommand(
      "import", "Import a pretrained model (GGUF file or Hugging Face directory) as a kvtrain checkpoint");
  sub->add_option("--from", a->from, "a .gguf file or a Hugging Face model directory")->required();
  sub->add_option("--out", a->out, "the checkpoint to write (.h5)")->required();
  sub->add_flag("--force", a->force, "replace an existing file");
  sub->callback([a] { run_import(*a); });
}

}  // namespace kvt::cli

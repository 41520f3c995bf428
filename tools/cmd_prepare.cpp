// tools/cmd_prepare.cpp — `kvtrain prepare`: text files -> tokenizer (a SentencePiece BPE it trains,
// or a given .model, .gguf or tokenizer.json) -> llm.c shards.
#include <cstdio>
#include <iostream>
#include <memory>

#include "data/prepare.h"
#include "tools/commands.h"

namespace kvt::cli {

void add_prepare(CLI::App& app) {
  auto opt = std::make_shared<PrepareOptions>();
  CLI::App* cmd = app.add_subcommand(
      "prepare", "Tokenize text files into train/val token shards (llm.c format) + stats.json");
  cmd->add_option("--input", opt->inputs, "Text files; each is one document")->required();
  cmd->add_option("--out", opt->out_dir, "Output directory")->required();
  auto* vocab = cmd->add_option("--vocab-size", opt->vocab_size,
                                "Train a BPE tokenizer with this many pieces");
  auto* tok = cmd->add_option("--tokenizer", opt->tokenizer,
                              "Use this tokenizer: a SentencePiece .model, a .gguf or a tokenizer.json "
                              "(kept in OUT)");
  vocab->excludes(tok);
  tok->excludes(vocab);
  cmd->add_flag("--parse-special", opt->parse_special,
                "Special-token strings in the text (e.g. <|endoftext|>) become their ids; by default they "
                "are encoded as literal text");
  cmd->add_option("--val-fraction", opt->val_fraction,
                  "Fraction of the token stream held out for validation")
      ->capture_default_str();
  cmd->add_option("--val-block", opt->val_block,
                  "Validation is every k-th block of this many tokens, k = 1/val-fraction "
                  "(0: the stream's last val-fraction)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--shard-tokens", opt->shard_tokens, "Tokens per train shard")
      ->capture_default_str();
  cmd->add_option("--format", opt->format,
                  "Token width: auto (u16 when vocab <= 65536) | u16 | u32")
      ->capture_default_str();
  cmd->add_option("--name", opt->name, "Shard prefix: NAME_train_000000.bin, NAME_val_000000.bin")
      ->capture_default_str();

  cmd->callback([opt] {
    const CorpusStats st = prepare_corpus(*opt, &std::cout);
    std::printf(
        "prepare: %llu documents, vocab %d, %llu train tokens in %zu shard(s), %llu val tokens\n",
        static_cast<unsigned long long>(st.documents), st.vocab_size,
        static_cast<unsigned long long>(st.train_tokens), st.train_shards.size(),
        static_cast<unsigned long long>(st.val_tokens));
    std::printf(
        "prepare: train unigram entropy %.4f nats, bigram entropy %.4f nats "
        "(the val loss a trained model must beat)\n",
        st.unigram_entropy, st.bigram_entropy);
    std::printf("prepare: wrote %s/stats.json\n", opt->out_dir.c_str());
  });
}

}  // namespace kvt::cli

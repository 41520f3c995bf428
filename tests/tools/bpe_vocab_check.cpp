// bpe_vocab_check DIR — the byte-level BPE (data/bpe_gguf.h) against llama.cpp's vocab test
// pairs: for each ggml-vocab-X.gguf in DIR (tools/fetch_vocab_fixtures.sh), every text of
// X.gguf.inp must encode (special tokens literal) to the ids of its line in X.gguf.out, made by
// Hugging Face's tokenizers, and decode back to itself; the tokenizer rebuilt from its own
// to_json() must give the same ids. Exit 1 on any difference or a missing file.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "data/bpe_gguf.h"

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Mismatching cases of one vocab (0 = all equal); the number of cases in *n.
int check(const std::string& base, int* n) {
  const kvt::GgufFile f = kvt::GgufFile::open(base);
  const kvt::BpeTokenizer tok = kvt::bpe_from_gguf(f);
  // The tokenizer.json kvtrain embeds in imported checkpoints must encode the same.
  const kvt::BpeTokenizer again = kvt::BpeTokenizer::from_json_text(tok.to_json(), base + " (to_json)");
  const std::string inp = slurp(base + ".inp"), sep = "\n__ggml_vocab_test__\n";
  std::istringstream out(slurp(base + ".out"));
  int bad = 0;
  *n = 0;
  for (size_t p = 0, q; (q = inp.find(sep, p)) != std::string::npos; p = q + sep.size()) {
    const std::string text = inp.substr(p, q - p);
    std::string line;
    if (!std::getline(out, line)) throw std::runtime_error(base + ".out: fewer lines than texts");
    std::vector<int32_t> want;
    std::istringstream ls(line);
    for (int32_t id; ls >> id;) want.push_back(id);
    const std::vector<int32_t> got = tok.encode(text, false);
    const bool ok = got == want && tok.decode(got) == text && again.encode(text, false) == got &&
                    again.encode(text, true) == tok.encode(text, true);
    if (!ok) {
      std::cout << "  case " << *n << " differs: '" << text.substr(0, 60) << "' got";
      for (int32_t id : got) std::cout << ' ' << id;
      std::cout << ", want" << line << "\n";
      bad++;
    }
    ++*n;
  }
  return bad;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: bpe_vocab_check DIR\n";
    return 2;
  }
  int failed = 0;
  try {
    for (const char* v : {"gpt-2", "llama-bpe", "qwen2", "starcoder", "refact"}) {
      const std::string base = std::string(argv[1]) + "/ggml-vocab-" + v + ".gguf";
      int n = 0;
      const int bad = check(base, &n);
      std::cout << "ggml-vocab-" << v << ": " << n - bad << "/" << n << " equal\n";
      if (bad || n == 0) failed++;
    }
  } catch (const std::exception& e) {
    std::cerr << "bpe_vocab_check: " << e.what() << "\n";
    return 1;
  }
  return failed ? 1 : 0;
}

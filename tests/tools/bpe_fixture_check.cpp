// bpe_fixture_check GGUF DIR — the byte-level BPE (data/bpe_gguf.h) of a GGUF against llama.cpp's
// ids for the committed fixture text (tools/make_bpe_fixture.py, tests/data/bpe_smollm2/): every
// chunk of DIR/chunks.txt.gz must encode to the ids of DIR/ids.txt.gz, with special-token strings
// parsed ("special") and with all text plain ("literal"), and decode back to itself.
// For each differing chunk it prints the chunk, the first differing token position, the bytes
// around it and both id sequences there. Exit 1 on any difference or an unreadable file.
#include <zlib.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/bpe_gguf.h"

namespace {
std::string gunzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  const bool bad = n < 0;
  gzclose(f);
  if (bad) throw std::runtime_error(path + ": not a readable gzip file");
  return out;
}

struct Chunk {
  std::string source, text;
};

// "chunk INDEX SOURCE NBYTES\n" + NBYTES bytes + "\n", after one header line.
std::vector<Chunk> read_chunks(const std::string& path) {
  const std::string d = gunzip(path);
  const std::string header = "#kvtrain-bpe-fixture chunks v1\n";
  if (d.compare(0, header.size(), header) != 0)
    throw std::runtime_error(path + ": not a kvtrain-bpe-fixture chunks v1 file");
  std::vector<Chunk> out;
  for (size_t p = header.size(); p < d.size();) {
    const size_t e = d.find('\n', p);
    std::istringstream h(d.substr(p, e - p));
    std::string word;
    size_t idx = 0, n = 0;
    Chunk c;
    if (e == std::string::npos || !(h >> word >> idx >> c.source >> n) || word != "chunk" ||
        idx != out.size() || e + 1 + n >= d.size() || d[e + 1 + n] != '\n')
      throw std::runtime_error(path + ": bad record at byte " + std::to_string(p));
    c.text = d.substr(e + 1, n);
    out.push_back(std::move(c));
    p = e + 2 + n;
  }
  return out;
}

// "INDEX MODE ID ID ...\n" after one header line -> (index, mode) -> ids.
std::map<std::pair<size_t, std::string>, std::vector<int32_t>> read_ids(const std::string& path) {
  std::istringstream in(gunzip(path));
  std::string line;
  if (!std::getline(in, line) || line.rfind("#kvtrain-bpe-fixture ids v1", 0) != 0)
    throw std::runtime_error(path + ": not a kvtrain-bpe-fixture ids v1 file");
  std::map<std::pair<size_t, std::string>, std::vector<int32_t>> out;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    size_t idx;
    std::string mode;
    if (!(ls >> idx >> mode)) throw std::runtime_error(path + ": bad line '" + line.substr(0, 40) + "'");
    std::vector<int32_t>& ids = out[{idx, mode}];
    for (int32_t id; ls >> id;) ids.push_back(id);
  }
  return out;
}

std::string shown(const std::string& s) {  // printable, one line
  std::string o;
  for (unsigned char c : s) {
    if (c == '\n') o += "\\n";
    else if (c == '\t') o += "\\t";
    else if (c == '\r') o += "\\r";
    else if (c < 0x20 || c == 0x7F) o += "\\x" + std::string(1, "0123456789ABCDEF"[c >> 4]) + "0123456789ABCDEF"[c & 15];
    else o += char(c);
  }
  return o;
}

void print_ids(const kvt::BpeTokenizer& tok, const std::vector<int32_t>& ids, size_t from, size_t to) {
  for (size_t k = from; k < std::min(to, ids.size()); k++) {
    std::string t;
    try {
      t = tok.decode(std::vector<int32_t>{ids[k]});
    } catch (const std::exception&) {
      t = "?";
    }
    std::cout << ' ' << ids[k] << "'" << shown(t) << "'";
  }
  std::cout << "\n";
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: bpe_fixture_check GGUF DIR\n";
    return 2;
  }
  try {
    const kvt::GgufFile f = kvt::GgufFile::open(argv[1]);
    const kvt::BpeTokenizer tok = kvt::bpe_from_gguf(f);
    const std::string dir = argv[2];
    const std::vector<Chunk> chunks = read_chunks(dir + "/chunks.txt.gz");
    const auto want_ids = read_ids(dir + "/ids.txt.gz");
    int failed = 0;
    size_t tokens = 0, bytes = 0;
    for (const char* mode : {"special", "literal"}) {
      int bad = 0;
      for (size_t i = 0; i < chunks.size(); i++) {
        const Chunk& c = chunks[i];
        auto it = want_ids.find({i, mode});
        if (it == want_ids.end())
          throw std::runtime_error(dir + "/ids.txt.gz: no " + mode + " ids for chunk " + std::to_string(i));
        const std::vector<int32_t>& want = it->second;
        const std::vector<int32_t> got = tok.encode(c.text, std::string(mode) == "special");
        tokens += got.size();
        bytes += c.text.size();
        const std::string back = tok.decode(got);
        if (got == want && back == c.text) continue;
        if (bad++ >= 10) continue;  // the first 10 differing chunks of each mode in detail
        size_t k = 0;
        while (k < got.size() && k < want.size() && got[k] == want[k]) k++;
        // Byte offset of the first differing token: the decoded length of the common prefix.
        const size_t at = tok.decode(std::vector<int32_t>(want.begin(), want.begin() + k)).size();
        std::cout << mode << ": chunk " << i << " (" << c.source << ", " << c.text.size()
                  << " bytes) differs at token " << k << " (byte " << at << "): '"
                  << shown(c.text.substr(at >= 20 ? at - 20 : 0, 60)) << "'\n  llama.cpp:";
        print_ids(tok, want, k >= 2 ? k - 2 : 0, k + 8);
        std::cout << "  kvtrain:  ";
        print_ids(tok, got, k >= 2 ? k - 2 : 0, k + 8);
        if (got == want) std::cout << "  (ids equal; decode differs: '" << shown(back.substr(0, 60)) << "')\n";
      }
      std::cout << mode << ": " << chunks.size() - bad << "/" << chunks.size() << " chunks equal\n";
      failed += bad;
    }
    std::cout << bytes / 2 << " bytes, " << tokens / 2 << " tokens per mode\n";
    return failed ? 1 : 0;
  } catch (const std::exception& e) {
    std::cerr << "bpe_fixture_check: " << e.what() << "\n";
    return 1;
  }
}

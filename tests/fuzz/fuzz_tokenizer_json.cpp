// tests/fuzz/fuzz_tokenizer_json.cpp — libFuzzer harness of BpeTokenizer::from_json
// (data/bpe.cpp: JSON, model.vocab / merges / added_tokens, the pre_tokenizer object), then on
// success encode and decode of fixed strings: decode(encode(s)) == s for text without special
// tokens when the vocab has all 256 byte tokens, else only no crash.
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "data/bpe.h"
#include "tests/fuzz/fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvt;
  const std::string path = fuzz::as_file(data, size);
  fuzz::expect_clean(path, [&] {
    const BpeTokenizer tok = BpeTokenizer::from_json(path);
    std::set<int64_t> special_ids;  // the added tokens' ids (the file parsed: valid JSON)
    const nlohmann::json j = nlohmann::json::parse(data, data + size);
    if (j.contains("added_tokens") && j["added_tokens"].is_array())
      for (const auto& a : j["added_tokens"]) special_ids.insert(a["id"].get<int64_t>());
    bool all_bytes = true;
    for (int b = 0; b < 256; ++b)
      all_bytes = all_bytes && tok.token_to_id(byte_level_encode(std::string(1, char(b)))) >= 0;
    static const char* const texts[] = {"Hello, world!", " the  cat's 1234\n\n\tok",
                                        "caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80",
                                        "\xff\xfe bad \xc3 utf8", "<|endoftext|>x<s>"};
    for (const char* s : texts) {
      // Each string with special tokens parsed, then as plain text.
      for (bool special : {true, false}) {
        std::vector<int32_t> ids;
        try {
          ids = tok.encode(s, special);
        } catch (const std::runtime_error&) {
          if (all_bytes) {
            std::fprintf(stderr, "encode failed with all 256 byte tokens: '%s'\n", s);
            std::abort();
          }
          continue;
        }
        const std::string back = tok.decode(ids);
        // A plain encode cuts out no special token, so the bytes come back exactly, unless an
        // added token shares its id with a different vocab token (decode then gives the added
        // token's string, as Hugging Face's tokenizers does).
        bool shadowed = false;
        for (int32_t id : ids) shadowed = shadowed || special_ids.count(id);
        if (!special && all_bytes && !shadowed && back != s) {
          std::fprintf(stderr, "decode(encode('%s')) = '%s'\n", s, back.c_str());
          std::abort();
        }
      }
    }
  });
  return 0;
}

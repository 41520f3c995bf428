// tests/fuzz/fuzz_gguf.cpp — libFuzzer harness of the GGUF reader. Reaches GgufFile::open
// (header, metadata, tensor infos: data/gguf.cpp), then on success every typed getter on every
// key, bpe_from_gguf (data/bpe_gguf.cpp) with a short encode/decode, gguf_llama_config
// (train/gguf_llama.cpp), and read_f32 of every tensor (the dequantizers of data/gguf_quant.cpp).
#include <string>
#include <vector>

#include "data/bpe_gguf.h"
#include "data/gguf.h"
#include "tests/fuzz/fuzz_file.h"
#include "train/gguf_llama.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvt;
  const std::string path = fuzz::as_file(data, size);
  fuzz::expect_clean(path, [&] {
    const GgufFile f = GgufFile::open(path);
    for (const auto& kv : f.metadata()) {
      const std::string& k = kv.first;
      fuzz::expect_clean(path, [&] { (void)f.get_u32(k); });
      fuzz::expect_clean(path, [&] { (void)f.get_u64(k); });
      fuzz::expect_clean(path, [&] { (void)f.get_i64(k); });
      fuzz::expect_clean(path, [&] { (void)f.get_f32(k); });
      fuzz::expect_clean(path, [&] { (void)f.get_bool(k); });
      fuzz::expect_clean(path, [&] { (void)f.get_string(k); });
      fuzz::expect_clean(path, [&] { (void)f.get_string_array(k); });
      fuzz::expect_clean(path, [&] { (void)f.get_f32_array(k); });
      fuzz::expect_clean(path, [&] { (void)f.get_i64_array(k); });
    }
    fuzz::expect_clean(path, [&] {
      GgufTokenizerInfo info;
      const BpeTokenizer tok = bpe_from_gguf(f, &info);
      try {
        const std::vector<int32_t> ids = tok.encode("Hello, world 123 <|im_start|>", true);
        (void)tok.decode(ids);
      } catch (const std::runtime_error&) {  // a vocab without some byte's token
      }
    });
    fuzz::expect_clean(path, [&] { (void)gguf_llama_config(f); });
    volatile float sink = 0;
    for (const GgufTensorInfo& t : f.tensors()) {
      const std::vector<float> v = f.read_f32(t);
      if (!v.empty()) sink = sink + v[0] + v.back();
    }
  });
  return 0;
}

// tests/fuzz/fuzz_safetensors.cpp — libFuzzer harness of the safetensors reader
// (tools/safetensors.cpp): the constructor (header length, JSON header, dtypes, shapes,
// data_offsets and their tiling), then names(), metadata(), and to_f32 / f64 / i32 of every tensor.
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_file.h"
#include "tools/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvt;
  const std::string path = fuzz::as_file(data, size);
  fuzz::expect_clean(path, [&] {
    const SafetensorsReader r(path);
    for (const auto& kv : r.metadata()) (void)r.metadata(kv.first);
    volatile float sink = 0;
    for (const std::string& name : r.names()) {
      const TensorView& t = r.tensor(name);
      if (t.dtype == DType::I32) {
        (void)r.i32(name);
        fuzz::expect_clean(path, [&] { (void)r.to_f32(name); });  // refused: not a float type
        continue;
      }
      if (t.dtype == DType::F64) (void)r.f64(name);
      const std::vector<float> v = r.to_f32(name, &t.shape);
      if (!v.empty()) sink = sink + v[0] + v.back();
    }
  });
  return 0;
}

// ggufdequant — dequantizes every tensor of a GGUF file with kvtrain's reader (data/gguf.h,
// data/gguf_quant.h) and writes them as F32 safetensors, for the gguf-py parity script
// (tools/hf/gguf_dequant_parity.py):
//
//   ggufdequant --gguf IN.gguf --out OUT.safetensors
//
// Tensor <name> is written under its GGUF name with shape [ne3, ne2, ne1, ne0] cut to n_dims
// (the row-major order GgufFile::read_f32 returns); __metadata__ "type/<name>" is the ggml type
// name (Q4_1, ...).
#include <CLI/CLI.hpp>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "data/gguf.h"
#include "tools/safetensors.h"

#include "dump_common.h"

namespace {

void run(const std::string& in, const std::string& out) {
  const kvt::GgufFile f = kvt::GgufFile::open(in);
  kvt::SafetensorsWriter w;
  for (const auto& t : f.tensors()) {
    std::vector<int64_t> shape;
    for (int d = static_cast<int>(t.n_dims) - 1; d >= 0; --d) shape.push_back(t.ne[d]);
    w.add_f32(t.name, shape, f.read_f32(t));
    w.set_metadata("type/" + t.name, kvt::ggml_type_name(static_cast<uint32_t>(t.type)));
  }
  w.write(out);
  std::cout << "ggufdequant: " << out << ": " << f.tensors().size() << " tensors\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Dequantize every tensor of a GGUF file to F32 safetensors"};
  std::string in, out;
  app.add_option("--gguf", in, "input .gguf")->required();
  app.add_option("--out", out, "output .safetensors")->required();
  return kvt::dump::parse_and_run(app, argc, argv, "ggufdequant", [&] { run(in, out); });
}

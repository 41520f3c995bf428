// model/layer_plan.cpp — the per-layer plan shared by training and inference (layer_plan.h).
#include "model/layer_plan.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace kvt {

LayerParamOffsets layer_param_offsets(const ParamTable& t, const ModelConfig& cfg, int l) {
  const std::string p = "model.layers." + std::to_string(l) + ".";
  const int64_t C = cfg.d_model, H = cfg.n_heads, Hkv = cfg.kv_heads(), D = cfg.head_dim(),
                F = cfg.ffn_dim(), R = cfg.lrkv_rank;
  const KvSource src = kv_source_of_layer(cfg, l);
  LayerParamOffsets o;
  o.ln1 = t.find(p + "input_layernorm.weight").offset;
  o.q = t.find(p + "self_attn.q_proj.weight").offset;
  o.o = t.find(p + "self_attn.o_proj.weight").offset;
  o.ln2 = t.find(p + "post_attention_layernorm.weight").offset;
  o.gate_up = t.find(p + "mlp.gate_proj.weight").offset;
  o.down = t.find(p + "mlp.down_proj.weight").offset;
  std::string last = "self_attn.q_proj.weight";  // the last block of the input projection
  int64_t last_rows = H * D;
  if (cfg.lrkv()) {
    o.k_up = t.find(p + "self_attn.k_up.weight").offset;
    o.v_up = t.find(p + "self_attn.v_up.weight").offset;
    o.kv_width = static_cast<int>(2 * D + 2 * H * R);
    last = "self_attn.v_down.weight", last_rows = H * R;
  } else if (src.kind == KvSource::Kind::own) {
    o.kv_width = static_cast<int>(2 * Hkv * D);
    last = "self_attn.v_proj.weight", last_rows = Hkv * D;
  } else if (src.kind == KvSource::Kind::fused) {
    o.fuse_k_first = t.find(p + "self_attn.fuse_k_first").offset;
    o.fuse_k_last = t.find(p + "self_attn.fuse_k_last").offset;
    o.fuse_v_first = t.find(p + "self_attn.fuse_v_first").offset;
    o.fuse_v_last = t.find(p + "self_attn.fuse_v_last").offset;
  }
  if (t.find(p + last).offset != o.q + static_cast<size_t>((H * D + o.kv_width - last_rows) * C) ||
      t.find(p + "mlp.up_proj.weight").offset != o.gate_up + static_cast<size_t>(F * C))
    throw std::logic_error("parameter table layout breaks the fused q/K/V or gate/up matrices of layer " +
                           std::to_string(l));
  return o;
}

std::array<int, 2> LayerPlan::reads() const { return src.reads(layer); }

std::vector<LayerPlan> build_layer_plan(const ParamTable& table, const ModelConfig& cfg) {
  const int HD = cfg.n_heads * cfg.head_dim();
  std::vector<LayerPlan> plan(cfg.n_layers);
  for (int l = 0; l < cfg.n_layers; l++) {
    LayerPlan& p = plan[l];
    static_cast<LayerParamOffsets&>(p) = layer_param_offsets(table, cfg, l);
    p.layer = l;
    p.src = kv_source_of_layer(cfg, l);
    p.lrkv = cfg.lrkv();
    p.proj = HD + p.kv_width;
    p.kv = p.q + static_cast<size_t>(HD) * cfg.d_model;
  }
  return plan;
}

void upload_rope_tables(Ops& ops, const ModelConfig& cfg, float* cos, float* sin) {
  const int half = cfg.head_dim() / 2, P = cfg.max_seq_len;
  std::vector<float> c(static_cast<size_t>(P) * half), s(c.size());
  for (int p = 0; p < P; p++)
    for (int j = 0; j < half; j++) {
      const double inv_freq = std::pow(static_cast<double>(cfg.rope_theta), -2.0 * j / cfg.head_dim());
      const double ang = p * inv_freq;
      c[static_cast<size_t>(p) * half + j] = static_cast<float>(std::cos(ang));
      s[static_cast<size_t>(p) * half + j] = static_cast<float>(std::sin(ang));
    }
  ops.to_device(cos, c.data(), c.size() * sizeof(float));
  ops.to_device(sin, s.data(), s.size() * sizeof(float));
}

void Arena::take(float*& dst, int64_t n) {
  slots_.push_back({&dst, total_});
  total_ += (n + 15) / 16 * 16;
}

Buffer<float> Arena::carve(Ops& ops) {
  Buffer<float> buf(ops, static_cast<size_t>(total_));
  for (const Slot& s : slots_) *s.dst = buf.data() + s.off;
  return buf;
}

}  // namespace kvt

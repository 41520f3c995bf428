// tests/reference_forward.h — an independent double-precision forward of the model family for
// the inference and eviction tests (header-only). Written from docs/design.md, "The model family" with plain loops: its
// own RoPE, projections, fusion, LRKV expansion and visibility rule; it shares nothing with
// model/ but the parameter table and the KV source map.
#pragma once

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "model/kv_sharing.h"
#include "model/params.h"

namespace kvt::testutil {

// kept(l, g, s, t): whether query position t still sees position s of storage layer l, mask head
// g (g over mask heads: H_kv, or 1 for LRKV). A fixed keep-mask ignores t; eviction during a
// chunked prefill makes it depend on t (an entry evicted when the cache held n positions is seen
// by queries t < n only).
using KeptFn = std::function<bool(int layer, int mask_head, int s, int t)>;

// Plain double-precision forward of the model family (docs/design.md, "The model family"), written from the document:
// attention of layer l, KV head g at query t skips position s unless every layer it reads K or V
// from has kept(·, g, s, t). Returns logits [T, V].
inline std::vector<double> reference_logits(const ModelConfig& cfg, const ParamTable& table,
                                            const std::vector<float>& prm,
                                            const std::vector<int32_t>& tok, const KeptFn& kept) {
  const int T = static_cast<int>(tok.size()), C = cfg.d_model, H = cfg.n_heads,
            Hkv = cfg.kv_heads(), D = cfg.head_dim(), F = cfg.ffn_dim(), V = cfg.vocab_size,
            R = cfg.lrkv_rank, L = cfg.n_layers, half = D / 2;
  using Mat = std::vector<std::vector<double>>;
  auto W = [&](const std::string& name) { return prm.data() + table.find(name).offset; };
  auto linear = [&](const Mat& x, const float* w, int out, int in) {  // x [T, in] -> [T, out]
    Mat y(x.size(), std::vector<double>(out, 0.0));
    for (size_t t = 0; t < x.size(); t++)
      for (int o = 0; o < out; o++) {
        double s = 0;
        for (int i = 0; i < in; i++) s += x[t][i] * w[static_cast<size_t>(o) * in + i];
        y[t][o] = s;
      }
    return y;
  };
  auto rmsnorm = [&](const Mat& x, const float* w) {
    Mat y = x;
    for (auto& row : y) {
      double ss = 0;
      for (double v : row) ss += v * v;
      const double r = 1.0 / std::sqrt(ss / C + cfg.norm_eps);
      for (int c = 0; c < C; c++) row[c] = row[c] * r * w[c];
    }
    return y;
  };
  auto rope = [&](Mat& x, int heads) {  // rotate-half, position = row
    for (int t = 0; t < T; t++)
      for (int h = 0; h < heads; h++)
        for (int j = 0; j < half; j++) {
          const double ang = t * std::pow(static_cast<double>(cfg.rope_theta), -2.0 * j / D);
          double& a = x[t][h * D + j];
          double& b = x[t][h * D + j + half];
          const double a0 = a, b0 = b;
          a = a0 * std::cos(ang) - b0 * std::sin(ang);
          b = b0 * std::cos(ang) + a0 * std::sin(ang);
        }
  };
  Mat x(T, std::vector<double>(C));
  for (int t = 0; t < T; t++)
    for (int c = 0; c < C; c++) x[t][c] = W("model.embed_tokens.weight")[static_cast<size_t>(tok[t]) * C + c];
  std::vector<Mat> Ks(L), Vs(L);  // post-RoPE K, V of each layer as its attention reads them
  for (int l = 0; l < L; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    const KvSource src = kv_source_of_layer(cfg, l);
    const Mat a = rmsnorm(x, W("model.layers." + std::to_string(l) + ".input_layernorm.weight"));
    Mat q = linear(a, W(p + "q_proj.weight"), H * D, C);
    rope(q, H);
    int kvh = Hkv;
    std::vector<int> sources = {l};
    if (cfg.lrkv()) {
      kvh = H;
      const Mat ks = linear(a, W(p + "k_shared.weight"), D, C), vs = linear(a, W(p + "v_shared.weight"), D, C);
      const Mat zk = linear(a, W(p + "k_down.weight"), H * R, C), zv = linear(a, W(p + "v_down.weight"), H * R, C);
      const float *bk = W(p + "k_up.weight"), *bv = W(p + "v_up.weight");
      Ks[l] = Vs[l] = Mat(T, std::vector<double>(H * D));
      for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
          for (int d = 0; d < D; d++) {
            double k = ks[t][d], v = vs[t][d];
            for (int r = 0; r < R; r++) {
              k += zk[t][h * R + r] * bk[(static_cast<size_t>(h) * D + d) * R + r];
              v += zv[t][h * R + r] * bv[(static_cast<size_t>(h) * D + d) * R + r];
            }
            Ks[l][t][h * D + d] = k;
            Vs[l][t][h * D + d] = v;
          }
      rope(Ks[l], H);
    } else if (src.kind == KvSource::Kind::own) {
      Ks[l] = linear(a, W(p + "k_proj.weight"), Hkv * D, C);
      Vs[l] = linear(a, W(p + "v_proj.weight"), Hkv * D, C);
      rope(Ks[l], Hkv);
    } else if (src.kind == KvSource::Kind::reuse) {
      Ks[l] = Ks[src.k_layer];
      Vs[l] = Vs[src.v_layer];
      sources = {src.k_layer, src.v_layer};
    } else {
      const int f = src.first(), g = src.last();
      const float *akf = W(p + "fuse_k_first"), *akl = W(p + "fuse_k_last"),
                  *bvf = W(p + "fuse_v_first"), *bvl = W(p + "fuse_v_last");
      Ks[l] = Vs[l] = Mat(T, std::vector<double>(Hkv * D));
      for (int t = 0; t < T; t++)
        for (int h = 0; h < Hkv; h++)
          for (int j = 0; j < D; j++) {
            const int i = h * D + j;
            Ks[l][t][i] = akf[h * half + j % half] * Ks[f][t][i] + akl[h * half + j % half] * Ks[g][t][i];
            Vs[l][t][i] = bvf[h * D + j] * Vs[f][t][i] + bvl[h * D + j] * Vs[g][t][i];
          }
      sources = {f, g};
    }
    Mat y(T, std::vector<double>(H * D, 0.0));
    for (int t = 0; t < T; t++)
      for (int h = 0; h < H; h++) {
        const int g = h / (H / kvh), mg = cfg.lrkv() ? 0 : g;
        std::vector<double> sc(t + 1);
        std::vector<bool> vis(t + 1);
        double mx = -1e300;
        bool any = false;
        for (int s = 0; s <= t; s++) {
          vis[s] = true;
          for (int srcl : sources) vis[s] = vis[s] && kept(srcl, mg, s, t);
          if (!vis[s]) continue;
          double d = 0;
          for (int j = 0; j < D; j++) d += q[t][h * D + j] * Ks[l][s][g * D + j];
          sc[s] = d / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, sc[s]);
          any = true;
        }
        if (!any) continue;
        double z = 0;
        for (int s = 0; s <= t; s++)
          if (vis[s]) z += (sc[s] = std::exp(sc[s] - mx));
        for (int s = 0; s <= t; s++)
          if (vis[s])
            for (int j = 0; j < D; j++) y[t][h * D + j] += sc[s] / z * Vs[l][s][g * D + j];
      }
    const Mat o = linear(y, W(p + "o_proj.weight"), C, H * D);
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++) x[t][c] += o[t][c];
    const std::string m = "model.layers." + std::to_string(l) + ".";
    const Mat b = rmsnorm(x, W(m + "post_attention_layernorm.weight"));
    const Mat gt = linear(b, W(m + "mlp.gate_proj.weight"), F, C);
    const Mat up = linear(b, W(m + "mlp.up_proj.weight"), F, C);
    Mat s(T, std::vector<double>(F));
    for (int t = 0; t < T; t++)
      for (int i = 0; i < F; i++) s[t][i] = gt[t][i] / (1.0 + std::exp(-gt[t][i])) * up[t][i];
    const Mat dn = linear(s, W(m + "mlp.down_proj.weight"), C, F);
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++) x[t][c] += dn[t][c];
  }
  const Mat xf = rmsnorm(x, W("model.norm.weight"));
  const Mat lg = linear(xf, W(cfg.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"), V, C);
  std::vector<double> out;
  for (const auto& row : lg) out.insert(out.end(), row.begin(), row.end());
  return out;
}

}  // namespace kvt::testutil

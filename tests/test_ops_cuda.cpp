// tests/test_ops_cuda.cpp — compare mode of the op harness (tests/op_cases.h): every case runs on
// the CUDA backend and on the CPU backend with the same inputs; outputs and all gradients must
// agree (normalised mean squared error < 1e-7, elementwise where a case says so). The CUDA
// backend must also follow the += / = gradient convention, be bitwise deterministic and leave
// its inputs alone. attention_cache_score has its own cases here (CUDA vs CPU and vs double).
// The precisions of the hot path (kernels/ops.h, Precision) have their own tests at the end:
// bf16 GEMMs (cuBLASLt) against the CPU's bf16 emulation, TF32 against fp32, bf16 flash attention
// (cuDNN SDPA) against the CPU's bf16 attention, the bf16 weight copy, the device-sorted
// embedding backward (bitwise), the staged uploads. Without a usable GPU every test is skipped,
// saying why.
#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/common/math.h"
#include "op_cases.h"

namespace kvt::optest {
namespace {

Ops& cpu() {
  static std::unique_ptr<Ops> ops = make_ops("cpu");
  return *ops;
}

Ops& cuda() {
  static std::unique_ptr<Ops> ops = make_ops("cuda");
  return *ops;
}

std::vector<CaseParam> all_cases() {
  std::vector<CaseParam> out = small_cases();
  for (auto& p : large_cases()) out.push_back(p);
  return out;
}

class NeedsCuda : public testing::TestWithParam<CaseParam> {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "no usable CUDA device: " << why;
  }
};

// ---- every case: CUDA vs CPU ------------------------------------------------------------------
class ops_cuda : public NeedsCuda {};

TEST_P(ops_cuda, matches_cpu) { check_backends_match(cuda(), cpu(), *GetParam()); }
TEST_P(ops_cuda, is_bitwise_deterministic) { check_deterministic(cuda(), *GetParam()); }
TEST_P(ops_cuda, leaves_inputs_unchanged) { check_inputs_unchanged(cuda(), *GetParam()); }

INSTANTIATE_TEST_SUITE_P(ops, ops_cuda, testing::ValuesIn(all_cases()), case_name);

// ---- small cases: the CUDA forward vs the double reference too --------------------------------
class ops_cuda_small : public NeedsCuda {};

TEST_P(ops_cuda_small, matches_double_reference) { check_forward_reference(cuda(), *GetParam()); }

INSTANTIATE_TEST_SUITE_P(ops, ops_cuda_small, testing::ValuesIn(small_cases()), case_name);

// ---- cases with a backward: the += / = convention on the GPU ----------------------------------
class ops_cuda_backward : public NeedsCuda {};

TEST_P(ops_cuda_backward, follows_accumulate_overwrite_convention) {
  check_grad_conventions(cuda(), *GetParam());
}

INSTANTIATE_TEST_SUITE_P(ops, ops_cuda_backward, testing::ValuesIn(with_backward(all_cases())), case_name);

// ---- attention_cache_score: the CUDA kernels vs the CPU backend (and vs double) --------------
// kv holds Hkv slot lists of S slots (head stride S ld + 5), each slot [K (D) | V (D) | pad], in
// shuffled position order: positions 0 .. p0+n+1 minus a gap and some dropped at random (-1), the
// last two in the future of every query, S - (p0 + n + 2) slots empty. With Hkv > 1, head 0
// keeps nothing at or before p0 + t0 (query t0 of its group sees nothing). out is pre-filled
// with garbage: the op must overwrite all of it.
struct CacheScoreCase : OpCase {
  int n, p0, H, Hkv, D, S, ld, ldq, t0, t1;
  bool sum;
  int64_t head_stride;
  CacheScoreCase(std::string nm, int n_, int p0_, int H_, int Hkv_, int D_, int t0_, int t1_,
                 bool sum_, uint64_t seed)
      : n(n_), p0(p0_), H(H_), Hkv(Hkv_), D(D_), S(p0_ + n_ + 5), ld(2 * D_ + 1),
        ldq(H_ * D_ + 3), t0(t0_), t1(t1_), sum(sum_),
        head_stride(static_cast<int64_t>(S) * ld + 5) {
    name = std::move(nm);
    Rng rng(seed);
    add_const("q", normal_values(rng, static_cast<size_t>(n) * ldq, 1.5));
    add_const("kv", normal_values(rng, static_cast<size_t>(Hkv) * head_stride, 1.5));
    std::vector<int32_t> pos(static_cast<size_t>(Hkv) * S, -1);
    const int gap_lo = (p0 + n) / 3, gap_hi = gap_lo + (p0 + n) / 4;
    for (int g = 0; g < Hkv; ++g) {
      std::vector<int32_t> slots(S);
      for (int i = 0; i < S; ++i) slots[i] = i;
      for (int i = S - 1; i > 0; --i) std::swap(slots[i], slots[rng.below(i + 1)]);
      for (int p = 0; p < p0 + n + 2; ++p) {
        const bool keep = g == 0 && Hkv > 1 ? p > p0 + t0
                                            : (p < gap_lo || p >= gap_hi) && rng.below(5) != 0;
        if (keep) pos[static_cast<size_t>(g) * S + slots[p]] = p;
      }
    }
    add_ints("pos", std::move(pos));
    add_result("out", static_cast<size_t>(Hkv) * S);
    outputs[0].compare = Tolerance{1e-5, 1e-9};
  }
  CacheAttnShape shape() const {
    return CacheAttnShape{n, p0, H, Hkv, D, ldq, S, ld, head_stride};
  }
  void forward(Ops& ops, Buffers& b) const override {
    upload(ops, b.out[0], std::vector<float>(b.out[0].size(), 7.0f));
    ops.attention_cache_score(b.out[0].data(), b.in[0].data(), b.in[1].data(), b.ints[0].data(),
                              shape(), t0, t1, sum);
  }
  Expected reference() const override {
    const auto& q = inputs[0].values;
    const auto& kv = inputs[1].values;
    const auto& pos = ints[0].values;
    const int G = H / Hkv;
    Expected e{{std::vector<double>(static_cast<size_t>(Hkv) * S, 0.0)}, {}};
    std::vector<double> w(S);
    for (int t = t0; t < t1; ++t)
      for (int h = 0; h < H; ++h) {
        const int g = h / G;
        const int32_t* pg = pos.data() + static_cast<size_t>(g) * S;
        auto visible = [&](int i) { return pg[i] >= 0 && pg[i] <= p0 + t; };
        double mx = -1e300, z = 0;
        bool any = false;
        for (int i = 0; i < S; ++i) {
          if (!visible(i)) continue;
          double dot = 0;
          for (int d = 0; d < D; ++d)
            dot += static_cast<double>(q[static_cast<size_t>(t) * ldq + h * D + d]) *
                   kv[g * head_stride + static_cast<int64_t>(i) * ld + d];
          w[i] = dot / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, w[i]);
          any = true;
        }
        if (!any) continue;
        for (int i = 0; i < S; ++i)
          if (visible(i)) z += std::exp(w[i] - mx);
        double* o = e.outputs[0].data() + static_cast<size_t>(g) * S;
        for (int i = 0; i < S; ++i) {
          if (!visible(i)) continue;
          const double pr = std::exp(w[i] - mx) / z;
          o[i] = sum ? o[i] + pr : std::max(o[i], pr);
        }
      }
    return e;
  }
};

// (name, n, p0, H, Hkv, D, t0, t1, sum, seed): G = 3 and 1, Hkv 1 and 2 (4), t0 > 0, odd S.
std::vector<CaseParam> score_small_cases() {
  std::vector<CaseParam> c;
  add<CacheScoreCase>(c, "cache_score_max_gqa", false, 6, 5, 6, 2, 8, 2, 5, false, 301);
  add<CacheScoreCase>(c, "cache_score_sum_gqa", false, 6, 5, 6, 2, 8, 2, 5, true, 302);
  add<CacheScoreCase>(c, "cache_score_max_mqa", false, 5, 9, 3, 1, 6, 1, 5, false, 303);
  add<CacheScoreCase>(c, "cache_score_sum_mqa", false, 5, 9, 3, 1, 6, 0, 5, true, 304);
  add<CacheScoreCase>(c, "cache_score_max_mha", false, 4, 3, 2, 2, 4, 1, 4, false, 305);
  add<CacheScoreCase>(c, "cache_score_sum_mha", false, 4, 3, 2, 2, 4, 0, 4, true, 306);
  add<CacheScoreCase>(c, "cache_score_sum_one_head_prefill", false, 3, 0, 1, 1, 5, 1, 3, true, 307);
  add<CacheScoreCase>(c, "cache_score_no_rows", false, 3, 4, 6, 2, 4, 2, 2, true, 308);  // all 0
  return c;
}

std::vector<CaseParam> score_cases() {
  std::vector<CaseParam> c = score_small_cases();
  add<CacheScoreCase>(c, "large_cache_score_max_gqa", false, 64, 1984, 12, 4, 64, 16, 64, false, 311);
  add<CacheScoreCase>(c, "large_cache_score_sum_gqa", false, 48, 1000, 8, 2, 128, 0, 48, true, 312);
  add<CacheScoreCase>(c, "large_cache_score_sum_mha", false, 130, 777, 2, 2, 64, 3, 129, true, 313);
  add<CacheScoreCase>(c, "large_cache_score_max_mqa", false, 1, 2047, 3, 1, 128, 0, 1, false, 314);
  return c;
}

class ops_cuda_score : public NeedsCuda {};

TEST_P(ops_cuda_score, matches_cpu) { check_backends_match(cuda(), cpu(), *GetParam()); }
TEST_P(ops_cuda_score, is_bitwise_deterministic) { check_deterministic(cuda(), *GetParam()); }
TEST_P(ops_cuda_score, leaves_inputs_unchanged) { check_inputs_unchanged(cuda(), *GetParam()); }

INSTANTIATE_TEST_SUITE_P(ops, ops_cuda_score, testing::ValuesIn(score_cases()), case_name);

class ops_cuda_score_small : public NeedsCuda {};

TEST_P(ops_cuda_score_small, matches_double_reference) {
  check_forward_reference(cuda(), *GetParam());
}

INSTANTIATE_TEST_SUITE_P(ops, ops_cuda_score_small, testing::ValuesIn(score_small_cases()),
                         case_name);

// ================================================================================================
// Precisions of the hot path. Each test makes its own backends: the precision is set once, before
// anything runs on them.
// ================================================================================================

class CudaPrecision : public testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "no usable CUDA device: " << why;
  }
  // A CUDA and a CPU backend in precision p.
  void make(Precision p) {
    gpu_ = make_ops("cuda");
    cpu_ = make_ops("cpu");
    gpu_->set_precision(p);
    cpu_->set_precision(p);
  }
  std::unique_ptr<Ops> gpu_, cpu_;
};

Buffer<float> filled(Ops& ops, const std::vector<float>& v) {
  Buffer<float> b(ops, v.size());
  upload(ops, b, v);
  return b;
}

// A GEMM problem: params [pad | W (OC x IC) | tail] (the registered weight range; W at an odd
// float offset, so its bf16 copy is only 2-byte aligned), x [N, IC], dout [N, OC], pre-filled
// dx and dw (backward adds into dw, and into dx with accumulate_dx).
struct GemmData {
  static constexpr int N = 37, IC = 72, OC = 56, pad = 3;
  std::vector<float> params, x, dout, dx0, dw0;
  explicit GemmData(uint64_t seed) {
    Rng rng(seed);
    params = normal_values(rng, pad + size_t(OC) * IC + 5, 0.5);
    x = normal_values(rng, size_t(N) * IC);
    dout = normal_values(rng, size_t(N) * OC);
    dx0 = normal_values(rng, size_t(N) * IC);
    dw0 = normal_values(rng, size_t(OC) * IC);
  }
};

struct GemmResult {
  std::vector<float> out, dx, dw;
};

// out = x W^T; dx += dout W; dw += dout^T x, with the weight read through the registered copy.
GemmResult run_gemm(Ops& ops, const GemmData& d) {
  Buffer<float> params = filled(ops, d.params), x = filled(ops, d.x), dout = filled(ops, d.dout);
  Buffer<float> dx = filled(ops, d.dx0), dw = filled(ops, d.dw0);
  Buffer<float> out(ops, size_t(d.N) * d.OC);
  ops.set_weights(params.data(), d.params.size());
  ops.refresh_weights();
  const float* w = params.data() + d.pad;
  ops.matmul_forward(out.data(), x.data(), w, d.N, d.IC, d.OC);
  ops.matmul_backward(dx.data(), dw.data(), dout.data(), x.data(), w, d.N, d.IC, d.OC, true);
  return {download(ops, out), download(ops, dx), download(ops, dw)};
}

// bf16 products are exact in fp32, so the two backends differ only in the fp32 summation order:
// |err| <= K 2^-24 sum|terms| ~ 1e-5 here (K <= 72, |out| ~ 10); tolerance 1e-4 + 1e-5 |want|.
TEST_F(CudaPrecision, Bf16GemmMatchesCpuEmulation) {
  make(Precision::bf16);
  const GemmData d(501);
  const GemmResult got = run_gemm(*gpu_, d), want = run_gemm(*cpu_, d);
  const Tolerance tol{1e-5, 1e-4};
  expect_close("out", got.out, want.out, tol);
  expect_close("dx (+=)", got.dx, want.dx, tol);
  expect_close("dw (+=)", got.dw, want.dw, tol);
}

// A weight outside the registered range is converted on the fly: same result as inside.
TEST_F(CudaPrecision, Bf16GemmWeightOutsideRegisteredRange) {
  make(Precision::bf16);
  const GemmData d(502);
  const std::vector<float> w(d.params.begin() + d.pad, d.params.begin() + d.pad + d.OC * d.IC);
  Buffer<float> wb = filled(*gpu_, w), x = filled(*gpu_, d.x);
  Buffer<float> out(*gpu_, size_t(d.N) * d.OC);
  gpu_->matmul_forward(out.data(), x.data(), wb.data(), d.N, d.IC, d.OC);  // nothing registered
  const GemmResult want = run_gemm(*cpu_, d);
  expect_close("out", download(*gpu_, out), want.out, Tolerance{1e-5, 1e-4});
}

// TF32 rounds each input to 10 mantissa bits (relative error <= 2^-11), so each product is off by
// at most ~2^-10 relative: |tf32 - fp32| <= 2e-3 sum_k |a_k b_k| + 1e-5, checked elementwise for
// out = x W^T, dx = dx0 + dout W and dw = dw0 + dout^T x.
TEST_F(CudaPrecision, Tf32GemmNearFp32) {
  gpu_ = make_ops("cuda");
  cpu_ = make_ops("cpu");
  gpu_->set_precision(Precision::fp32_tf32);
  const GemmData d(503);
  const GemmResult got = run_gemm(*gpu_, d), want = run_gemm(*cpu_, d);
  const float* w = d.params.data() + d.pad;
  const int N = d.N, IC = d.IC, OC = d.OC;
  auto count_bad = [](const std::vector<float>& g, const std::vector<float>& r, size_t j,
                      double mag) {
    return std::fabs(double(g[j]) - r[j]) <= 2e-3 * mag + 1e-5 ? 0 : 1;
  };
  size_t bad_out = 0, bad_dx = 0, bad_dw = 0;
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double mag = 0;
      for (int i = 0; i < IC; ++i)
        mag += std::fabs(double(d.x[size_t(n) * IC + i]) * w[size_t(o) * IC + i]);
      bad_out += count_bad(got.out, want.out, size_t(n) * OC + o, mag);
    }
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < IC; ++i) {
      double mag = 0;
      for (int o = 0; o < OC; ++o)
        mag += std::fabs(double(d.dout[size_t(n) * OC + o]) * w[size_t(o) * IC + i]);
      bad_dx += count_bad(got.dx, want.dx, size_t(n) * IC + i, mag);
    }
  for (int o = 0; o < OC; ++o)
    for (int i = 0; i < IC; ++i) {
      double mag = 0;
      for (int n = 0; n < N; ++n)
        mag += std::fabs(double(d.dout[size_t(n) * OC + o]) * d.x[size_t(n) * IC + i]);
      bad_dw += count_bad(got.dw, want.dw, size_t(o) * IC + i, mag);
    }
  EXPECT_EQ(bad_out, 0u) << "out: elements outside 2e-3 sum|x w| of fp32";
  EXPECT_EQ(bad_dx, 0u) << "dx: elements outside 2e-3 sum|dout w| of fp32";
  EXPECT_EQ(bad_dw, 0u) << "dw: elements outside 2e-3 sum|dout x| of fp32";
}

// After a parameter change the bf16 copy is stale until refresh_weights(): the GEMM reads the copy.
TEST_F(CudaPrecision, RefreshWeightsAfterParameterChange) {
  make(Precision::bf16);
  const GemmData d(504), e(505);
  Buffer<float> params = filled(*gpu_, d.params), x = filled(*gpu_, d.x);
  Buffer<float> out(*gpu_, size_t(d.N) * d.OC);
  gpu_->set_weights(params.data(), d.params.size());
  const float* w = params.data() + d.pad;
  gpu_->matmul_forward(out.data(), x.data(), w, d.N, d.IC, d.OC);
  const std::vector<float> before = download(*gpu_, out);
  upload(*gpu_, params, e.params);  // new master weights, copy not refreshed
  gpu_->matmul_forward(out.data(), x.data(), w, d.N, d.IC, d.OC);
  expect_bitwise_equal("stale copy", download(*gpu_, out), before);
  gpu_->refresh_weights();
  gpu_->matmul_forward(out.data(), x.data(), w, d.N, d.IC, d.OC);
  GemmData de = d;
  de.params = e.params;
  expect_close("refreshed", download(*gpu_, out), run_gemm(*cpu_, de).out, Tolerance{1e-5, 1e-4});
}

TEST_F(CudaPrecision, Bf16SavesFlashStatistics) {
  make(Precision::bf16);
  EXPECT_EQ(gpu_->attention_saved_floats(2, 3, 5), size_t(2 * 3 * 5));
  EXPECT_FALSE(gpu_->attention_saves_probs());
  EXPECT_NE(gpu_->native_stream(), nullptr);
  auto fp32 = make_ops("cuda");
  EXPECT_EQ(fp32->attention_saved_floats(2, 3, 5), size_t(2 * 3 * 5 * 5));
  EXPECT_TRUE(fp32->attention_saves_probs());
}

// Flash attention on one fused projection output [N, ld]: q | k | v | 5 pad columns (strided
// q/k/v). dqkv has the same layout, pre-filled: dq must be overwritten, dk and dv added to, pad
// columns left alone.
struct AttnData {
  AttnShape s;
  int ld;
  std::vector<float> qkv, dout, dqkv0;
  AttnData(int B, int T, int H, int Hkv, int D, uint64_t seed) {
    ld = (H + 2 * Hkv) * D + 5;
    s = AttnShape{B, T, H, Hkv, D, ld, ld, ld};
    Rng rng(seed);
    const size_t N = size_t(B) * T;
    qkv = normal_values(rng, N * ld);
    dout = normal_values(rng, N * size_t(H) * D);
    dqkv0 = normal_values(rng, N * ld, 0.5);
  }
};

struct AttnResult {
  std::vector<float> out, stats, dqkv;
};

AttnResult run_attention(Ops& ops, const AttnData& a) {
  const AttnShape& s = a.s;
  const size_t N = size_t(s.B) * s.T;
  Buffer<float> qkv = filled(ops, a.qkv), dout = filled(ops, a.dout), dqkv = filled(ops, a.dqkv0);
  Buffer<float> out(ops, N * s.H * s.D), att(ops, ops.attention_saved_floats(s.B, s.H, s.T));
  const float* q = qkv.data();
  const float* k = q + s.H * s.D;
  const float* v = k + s.Hkv * s.D;
  ops.attention_forward(out.data(), att.data(), q, k, v, s);
  float* dq = dqkv.data();
  float* dk = dq + s.H * s.D;
  float* dv = dk + s.Hkv * s.D;
  ops.attention_backward(dq, dk, dv, dout.data(), out.data(), att.data(), q, k, v, s);
  return {download(ops, out), download(ops, att), download(ops, dqkv)};
}

// stats[b, h, t] = log sum_{s <= t} e^(q_t . k_s / sqrt(D)) on bf16-rounded q, k, in double.
std::vector<double> logsumexp_reference(const AttnData& a) {
  const AttnShape& s = a.s;
  const int G = s.H / s.Hkv;
  std::vector<double> lse(size_t(s.B) * s.H * s.T), l(s.T);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.H; ++h)
      for (int t = 0; t < s.T; ++t) {
        const float* q = a.qkv.data() + (size_t(b) * s.T + t) * a.ld + size_t(h) * s.D;
        double mx = -1e300, z = 0;
        for (int j = 0; j <= t; ++j) {
          const float* k =
              a.qkv.data() + (size_t(b) * s.T + j) * a.ld + size_t(s.H) * s.D + size_t(h / G) * s.D;
          double dot = 0;
          for (int d = 0; d < s.D; ++d)
            dot += double(math::round_bf16(q[d])) * math::round_bf16(k[d]);
          l[j] = dot / std::sqrt(double(s.D));
          mx = std::max(mx, l[j]);
        }
        for (int j = 0; j <= t; ++j) z += std::exp(l[j] - mx);
        lse[(size_t(b) * s.H + h) * s.T + t] = mx + std::log(z);
      }
  return lse;
}

// cuDNN rounds the probabilities to bf16 before P V and out/dq/dk/dv to bf16 (relative 2^-8 each),
// the CPU emulation keeps P in fp32: out agrees to 2e-2 (|out| <~ 2), the gradients to 5e-2
// (|grad| <~ 5). The CPU saves probabilities, so cuDNN's logsumexp statistics [B, H, T] are
// checked against a double reference on the same bf16 inputs, to 1e-3.
TEST_F(CudaPrecision, Bf16FlashAttentionMatchesCpu) {
  make(Precision::bf16);
  for (const auto& [H, Hkv, T] :
       {std::tuple{4, 2, 33}, std::tuple{3, 1, 64}, std::tuple{2, 2, 7}}) {
    SCOPED_TRACE("H=" + std::to_string(H) + " Hkv=" + std::to_string(Hkv) +
                 " T=" + std::to_string(T));
    const AttnData a(2, T, H, Hkv, 16, 600 + T);
    const AttnResult got = run_attention(*gpu_, a), want = run_attention(*cpu_, a);
    ASSERT_EQ(got.stats.size(), size_t(2) * H * T);
    expect_close("out", got.out, want.out, Tolerance{1e-2, 2e-2});
    expect_close("stats", got.stats, logsumexp_reference(a), Tolerance{1e-4, 1e-3});
    expect_close("dq (=), dk, dv (+=)", got.dqkv, want.dqkv, Tolerance{2e-2, 5e-2});
    size_t pad_changed = 0;
    for (size_t r = 0; r < size_t(2) * T; ++r)
      for (int c = a.ld - 5; c < a.ld; ++c)
        if (got.dqkv[r * a.ld + c] != a.dqkv0[r * a.ld + c]) ++pad_changed;
    EXPECT_EQ(pad_changed, 0u) << "padding columns of dqkv were written";
  }
}

TEST_F(CudaPrecision, Bf16FlashAttentionIsDeterministic) {
  make(Precision::bf16);
  const AttnData a(2, 40, 4, 2, 16, 700);
  const AttnResult r1 = run_attention(*gpu_, a), r2 = run_attention(*gpu_, a);
  expect_bitwise_equal("out", r1.out, r2.out);
  expect_bitwise_equal("dqkv", r1.dqkv, r2.dqkv);
}

// D = 12 is not a multiple of 8: no cuDNN engine takes it; the error is one line naming the shape.
TEST_F(CudaPrecision, Bf16FlashAttentionUnsupportedShapeThrows) {
  make(Precision::bf16);
  const AttnData a(1, 8, 2, 2, 12, 800);
  try {
    run_attention(*gpu_, a);
    FAIL() << "attention with D=12 did not throw";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("attention_forward"), std::string::npos) << m;
    EXPECT_NE(m.find("D=12"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

// Device-sorted embedding backward: bitwise the CPU's (rows of a token summed in increasing n
// into the pre-filled dwte), for many repeats of few tokens, and repeatable.
TEST_F(CudaPrecision, EmbeddingBackwardBitwiseCpu) {
  gpu_ = make_ops("cuda");
  cpu_ = make_ops("cpu");
  const int N = 300, C = 70, V = 50;
  Rng rng(900);
  std::vector<int32_t> tokens(N);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.below(V / 2) * 2);  // odd ids unused
  const std::vector<float> dout = normal_values(rng, size_t(N) * C);
  const std::vector<float> dwte0 = normal_values(rng, size_t(V) * C);
  auto run = [&](Ops& ops) {
    Buffer<float> dw = filled(ops, dwte0), g = filled(ops, dout);
    Buffer<int32_t> tok(ops, N);
    ops.to_device(tok.data(), tokens.data(), sizeof(int32_t) * N);
    ops.embedding_backward(dw.data(), g.data(), tok.data(), N, C, V);
    return download(ops, dw);
  };
  const std::vector<float> got = run(*gpu_);
  expect_bitwise_equal("dwte vs cpu", got, run(*cpu_));
  expect_bitwise_equal("dwte rerun", got, run(*gpu_));
}

// Staged uploads: the host buffer is overwritten right after each call (more calls than ring
// slots, sizes past the first buffer size); every device buffer must hold what was passed.
TEST_F(CudaPrecision, ToDeviceAsyncReusesHostBuffer) {
  gpu_ = make_ops("cuda");
  const std::vector<size_t> sizes = {1, 1000, 70000, 3, 200000, 17, 65536, 5, 131073, 9};
  std::vector<Buffer<float>> dst;
  std::vector<float> host;
  for (size_t i = 0; i < sizes.size(); ++i) {
    host.assign(sizes[i], 0.0f);
    for (size_t j = 0; j < sizes[i]; ++j) host[j] = float(i * 1000003 + j);
    dst.emplace_back(*gpu_, sizes[i]);
    gpu_->to_device_async(dst.back().data(), host.data(), sizes[i] * sizeof(float));
    std::fill(host.begin(), host.end(), -1.0f);
  }
  gpu_->synchronize();
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::vector<float> back = download(*gpu_, dst[i]);
    size_t bad = 0;
    for (size_t j = 0; j < sizes[i]; ++j) bad += back[j] != float(i * 1000003 + j);
    EXPECT_EQ(bad, 0u) << "upload " << i << " (" << sizes[i] << " floats)";
  }
}

}  // namespace
}  // namespace kvt::optest

// tests/test_ops_cuda.cpp — compare mode of the op harness (tests/op_cases.h): every case runs on
// the CUDA backend and on the CPU backend with the same inputs; outputs and all gradients must
// agree (normalised mean squared error < 1e-7, elementwise where a case says so). The CUDA
// backend must also follow the += / = gradient convention, be bitwise deterministic and leave
// its inputs alone. attention_cache_score has its own cases here (CUDA vs CPU and vs double).
// Without a usable GPU every test is skipped, saying why.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

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

}  // namespace
}  // namespace kvt::optest

// tests/test_ops_isa.cpp — the AVX-512 and AVX2 variants of the CPU kernels
// (kernels/cpu/isa_dispatch.h) give bitwise the same results: every op case of the harness
// (tests/op_cases.h, small and large shapes, plus shapes that hit every tail of the 16/8-lane
// loops), forward and backward, run once with each variant forced. On a CPU without AVX-512
// the AVX2 variant is checked against itself, run twice, and the test says so.
#include <cstdio>
#include <optional>

#include "kernels/cpu/isa_dispatch.h"
#include "op_cases.h"

namespace kvt::optest {
namespace {

Ops& cpu_ops() {
  static std::unique_ptr<Ops> ops = make_ops("cpu");
  return *ops;
}

// Restores the default ISA choice when a test ends, passed or not.
struct IsaOverride {
  explicit IsaOverride(cpu::Isa isa) { cpu::set_isa_override(isa); }
  ~IsaOverride() { cpu::set_isa_override(std::nullopt); }
};

RunResult run_with(cpu::Isa isa, const OpCase& c) {
  IsaOverride o(isa);
  return run_case(cpu_ops(), c);
}

std::vector<CaseParam> isa_cases() {
  std::vector<CaseParam> c = small_cases();
  for (CaseParam& p : large_cases()) c.push_back(p);
  // 91 = 5 * 16 + 8 + 3: the 16-step loop, the 8-step loop and the scalar tail of rowops.h.
  add<CrossEntropyCase>(c, "tails_cross_entropy", true, 7, 91, 0.5f, false, 301);
  add<RmsNormCase>(c, "tails_rmsnorm", true, 9, 91, 1e-5f, 302);
  add<SwiGluCase>(c, "tails_swiglu", true, 9, 91, 303);
  add<ReductionCase>(c, "tails_sum_and_sum_squares", false, (1 << 14) * 3 + 91, 304);
  return c;
}

class ops_isa : public testing::TestWithParam<CaseParam> {};

TEST_P(ops_isa, avx512_and_avx2_are_bitwise_equal) {
  const OpCase& c = *GetParam();
  const bool avx512 = cpu::cpu_features().avx512;
  const cpu::Isa second = avx512 ? cpu::Isa::avx512 : cpu::Isa::avx2;
  if (!avx512)
    std::printf("[ isa ] this CPU has no AVX-512: %s checks the AVX2 variant against itself\n",
                c.name.c_str());
  const RunResult a = run_with(cpu::Isa::avx2, c), b = run_with(second, c);
  const std::string vs = avx512 ? " (avx2 vs avx512)" : " (avx2 vs avx2)";
  for (size_t o = 0; o < c.outputs.size(); ++o)
    expect_bitwise_equal(c.name + " output " + c.outputs[o].name + vs, a.outputs[o], b.outputs[o]);
  for (size_t s = 0; s < c.n_scalars; ++s)
    EXPECT_EQ(std::memcmp(&a.scalars[s], &b.scalars[s], sizeof(double)), 0)
        << c.name << " scalar " << s << vs << ": " << a.scalars[s] << " vs " << b.scalars[s];
  for (size_t i = 0; i < c.inputs.size(); ++i)
    expect_bitwise_equal(c.name + " d" + c.inputs[i].name + vs, a.grads[i], b.grads[i]);
}
INSTANTIATE_TEST_SUITE_P(ops, ops_isa, testing::ValuesIn(isa_cases()), case_name);

TEST(ops_isa_dispatch, override_selects_the_variant_and_resets) {
  {
    IsaOverride o(cpu::Isa::avx2);
    EXPECT_EQ(cpu::active_isa(), cpu::Isa::avx2);
  }
  EXPECT_EQ(cpu::active_isa(), cpu::use_avx512() ? cpu::Isa::avx512 : cpu::Isa::avx2);
  if (cpu::cpu_features().avx512) {
    IsaOverride o(cpu::Isa::avx512);
    EXPECT_EQ(cpu::active_isa(), cpu::Isa::avx512);
  } else {
    EXPECT_THROW(cpu::set_isa_override(cpu::Isa::avx512), std::runtime_error);
  }
}

}  // namespace
}  // namespace kvt::optest

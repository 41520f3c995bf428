// tests/test_ops_cuda.cpp — compare mode of the op harness (tests/op_cases.h): every case runs on
// the CUDA backend and on the CPU backend with the same inputs; outputs and all gradients must
// agree (normalised mean squared error < 1e-7, elementwise where a case says so). The CUDA
// backend must also follow the += / = gradient convention, be bitwise deterministic and leave
// its inputs alone. Without a usable GPU every test is skipped, saying why.
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

}  // namespace
}  // namespace kvt::optest

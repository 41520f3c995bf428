// kernels/cpu/isa_dispatch.h — runtime AVX-512 / AVX2 dispatch of the project's own CPU kernels
// (docs/design.md, "Performance"). The build targets x86-64-v3 (AVX2 + FMA); a hot kernel is
// written once and emitted twice by KVT_ISA_VARIANTS: name_avx2 (the build's flags) and
// name_avx512 (target x86-64-v4, 16-float zmm vectors). KVT_ISA_CALL picks one per call from
// active_isa(). Rules that keep the two variants separate and equal:
//  * the OpenMP loop sits inside the variant (KVT_OMP_FOR): GCC outlines it into a function that
//    inherits the variant's target; a loop in a helper called from it would stay AVX2;
//  * helpers called from a variant are KVT_ALWAYS_INLINE (rowops.h) or plain inline math
//    (kernels/common/math.h): inlined, they are compiled for the caller's target; an out-of-line
//    copy is compiled with the build's flags, so linker COMDAT folding can only ever pick AVX2 code
//    (no translation unit is compiled with -march=x86-64-v4);
//  * no reassociation: both variants do the same IEEE operations in the same order (reductions
//    keep the fixed lanes of rowops.h), so they give bitwise the same results (tests/test_ops_isa.cpp).
#pragma once

#include <optional>

#include "kernels/cpu/cpu_info.h"

namespace kvt::cpu {

enum class Isa { avx2, avx512 };

// The variant KVT_ISA_CALL runs now: the override of set_isa_override where one is set, else
// AVX-512 when use_avx512() (cpu_info.h: the CPU has it and KVT_CPU_ISA does not force avx2).
Isa active_isa();

// Process-wide override for tests that run every dispatched kernel both ways; std::nullopt
// restores the default. Isa::avx512 on a CPU without AVX-512 throws.
void set_isa_override(std::optional<Isa> isa);

}  // namespace kvt::cpu

#if defined(__x86_64__) && defined(__GNUC__)
#define KVT_AVX512_TARGET __attribute__((target("arch=x86-64-v4")))
#else
#define KVT_AVX512_TARGET  // no AVX-512 elsewhere: both variants are the same code
#endif
#define KVT_ALWAYS_INLINE inline __attribute__((always_inline))
#define KVT_OMP_FOR _Pragma("omp parallel for schedule(static)")

// KVT_ISA_VARIANTS(name, (params), { body }) defines static void name_avx2(params) and
// name_avx512(params), both with `body`.
#define KVT_ISA_VARIANTS(name, params, ...)                          \
  [[maybe_unused]] static void name##_avx2 params __VA_ARGS__         \
  [[maybe_unused]] KVT_AVX512_TARGET static void name##_avx512 params __VA_ARGS__

// KVT_ISA_CALL(name, args...) runs the variant of active_isa().
#define KVT_ISA_CALL(name, ...)                                      \
  (::kvt::cpu::active_isa() == ::kvt::cpu::Isa::avx512 ? name##_avx512(__VA_ARGS__) \
                                                        : name##_avx2(__VA_ARGS__))

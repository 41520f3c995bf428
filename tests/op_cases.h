// tests/op_cases.h — the op test harness, in the shape of ggml's test-backend-ops.
//
// Every op of kernels/ops.h is one small case struct: a name, shapes, seeded random inputs, a
// forward(ops, buffers) that runs the op, a backward(ops, buffers) that runs the op's
// hand-written backward, and a double-precision reference of the forward. The harness runs a
// case in two modes:
//  * grad mode (tests/test_ops_grad.cpp, CPU backend): forward vs the double reference; the
//    backward vs central finite differences of the scalar objective L = sum_o sum(out_o * R_o)
//    (R fixed and random, so dL/dout = R is what backward receives) w.r.t. every differentiable
//    input; the += / = convention of every gradient element; bitwise determinism.
//  * compare mode (tests/test_ops_cuda.cpp): the CUDA backend vs the CPU backend on the same
//    inputs, outputs and all gradients (NMSE < 1e-7 plus an elementwise guard), including
//    training-sized shapes; and the CUDA backend's += / = convention and determinism.
// Every case also checks that forward and backward leave their inputs untouched.
// Adding an op = adding one case struct here and listing it in small_cases() / large_cases().
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/common/rng.h"
#include "kernels/ops.h"

namespace kvt::optest {

// ================================================================================================
// Case description
// ================================================================================================

// How the backward writes one element of an input's gradient buffer (ops.h conventions):
// Overwrite (=), or Accumulate (+=). An element the op never writes (a padding column between
// strided rows) is Accumulate with gradient zero: whatever the buffer held must survive.
enum class Grad : uint8_t { Overwrite, Accumulate };

struct Tolerance {
  double rtol = 0, atol = 0;  // |got - want| <= atol + rtol * |want|
};

struct Input {
  std::string name;
  std::vector<float> values;
  bool differentiable = false;
  std::vector<Grad> grad;  // per element, when differentiable
};

struct IntInput {
  std::string name;
  std::vector<int32_t> values;
};

struct Output {
  std::string name;
  size_t size = 0;
  bool in_loss = false;   // L includes sum(out * r); false: state saved for backward, or a result
  std::vector<float> r;   // the fixed weights of L, = dL/dout (when in_loss)
  // Compare mode: NMSE against the CPU result by default; elementwise where set (an output
  // such as AdamW's updated parameter is dominated by the old value, which NMSE would hide).
  std::optional<Tolerance> compare;
};

// What the double-precision reference predicts for a forward pass.
struct Expected {
  std::vector<std::vector<double>> outputs;  // one per Output, in order
  std::vector<double> scalars;               // one per scalar result
};

// Backend memory of one case. grad[i] is allocated for differentiable inputs only.
struct Buffers {
  std::vector<Buffer<float>> in, grad, out, dout;
  std::vector<Buffer<int32_t>> ints;
  std::vector<double> scalars;  // host results of reductions
};

class OpCase {
 public:
  virtual ~OpCase() = default;

  std::string name;  // [A-Za-z0-9_]: it becomes part of the test name
  std::vector<Input> inputs;
  std::vector<IntInput> ints;
  std::vector<Output> outputs;
  size_t n_scalars = 0;
  // Forward vs the double reference, per element.
  Tolerance forward_tol{1e-5, 1e-6};
  // Backward vs central differences (step fd_step, L in double from float outputs), per element
  // and as ||analytic - numeric|| / ||numeric||. Measured on the CPU backend with h = 1e-2 (the
  // best step: smaller ones are dominated by float rounding of the outputs): max abs error
  // <= 7e-5, relative norm error <= 4e-5 for every case but RMSNorm's dx and cross-entropy,
  // which set their own; the defaults leave about 5x of margin.
  Tolerance grad_tol{1e-3, 3e-4};
  double grad_norm_tol = 2e-4;
  double fd_step = 1e-2;

  // Runs the op(s) on b.in / b.ints into b.out / b.scalars. Must leave b.in unchanged.
  virtual void forward(Ops& ops, Buffers& b) const = 0;
  // Runs the backward after forward: reads b.dout (= R) and b.out, writes b.grad.
  virtual void backward(Ops& ops, Buffers& b) const { (void)ops, (void)b; }
  // The forward in double precision, from the host inputs.
  virtual Expected reference() const = 0;

  bool has_backward() const {
    return std::any_of(inputs.begin(), inputs.end(), [](const Input& i) { return i.differentiable; });
  }

 protected:
  // A differentiable input whose whole gradient follows one convention.
  size_t add_input(std::string n, std::vector<float> v, Grad g) {
    std::vector<Grad> kinds(v.size(), g);
    return add_input(std::move(n), std::move(v), std::move(kinds));
  }
  size_t add_input(std::string n, std::vector<float> v, std::vector<Grad> kinds) {
    inputs.push_back({std::move(n), std::move(v), true, std::move(kinds)});
    return inputs.size() - 1;
  }
  // An input that gets no gradient (tables, frozen weights, optimizer state).
  size_t add_const(std::string n, std::vector<float> v) {
    inputs.push_back({std::move(n), std::move(v), false, {}});
    return inputs.size() - 1;
  }
  size_t add_ints(std::string n, std::vector<int32_t> v) {
    ints.push_back({std::move(n), std::move(v)});
    return ints.size() - 1;
  }
  // An output that enters L with random weights R ~ N(0, 1).
  size_t add_output(std::string n, size_t size, Rng& rng) {
    std::vector<float> r(size);
    for (auto& x : r) x = static_cast<float>(rng.normal());
    outputs.push_back({std::move(n), size, true, std::move(r), std::nullopt});
    return outputs.size() - 1;
  }
  // An output that enters L with one weight for every element (a loss scale).
  size_t add_output_scaled(std::string n, size_t size, float weight) {
    outputs.push_back({std::move(n), size, true, std::vector<float>(size, weight), std::nullopt});
    return outputs.size() - 1;
  }
  // An output that is not part of L (saved state, or the result of a forward-only op).
  size_t add_result(std::string n, size_t size) {
    outputs.push_back({std::move(n), size, false, {}, std::nullopt});
    return outputs.size() - 1;
  }
};

// The value-parameter of the test suites: a case built on first use. The large cases hold
// megabytes of random inputs and ctest runs every test in its own process, so registering a
// test must not build them. The list states whether the case has a backward (to pick the
// suites it joins); building it checks that statement.
class CaseParam {
 public:
  CaseParam(std::string name, bool has_backward, std::function<std::unique_ptr<OpCase>()> make)
      : name_(std::move(name)), has_backward_(has_backward),
        slot_(std::make_shared<Slot>(std::move(make))) {}
  const std::string& name() const { return name_; }
  bool has_backward() const { return has_backward_; }
  const OpCase& operator*() const {
    std::call_once(slot_->once, [this] {
      slot_->c = slot_->make();
      if (slot_->c->name != name_ || slot_->c->has_backward() != has_backward_)
        throw std::logic_error("op case list: '" + name_ + "' is declared with" +
                               (has_backward_ ? "" : "out") + " a backward, built as '" +
                               slot_->c->name + "'" + (slot_->c->has_backward() ? " with" : " without") +
                               " one");
    });
    return *slot_->c;
  }
  friend void PrintTo(const CaseParam& p, std::ostream* os) { *os << p.name_; }

 private:
  struct Slot {
    explicit Slot(std::function<std::unique_ptr<OpCase>()> m) : make(std::move(m)) {}
    std::function<std::unique_ptr<OpCase>()> make;
    std::once_flag once;
    std::unique_ptr<OpCase> c;
  };
  std::string name_;
  bool has_backward_;
  std::shared_ptr<Slot> slot_;
};

inline std::string case_name(const testing::TestParamInfo<CaseParam>& info) {
  return info.param.name();
}

inline std::vector<CaseParam> with_backward(const std::vector<CaseParam>& cases) {
  std::vector<CaseParam> out;
  for (const CaseParam& p : cases)
    if (p.has_backward()) out.push_back(p);
  return out;
}

inline std::vector<float> normal_values(Rng& rng, size_t n, double scale = 1.0) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(scale * rng.normal());
  return v;
}

// ================================================================================================
// Running a case on a backend
// ================================================================================================

inline void upload(Ops& ops, Buffer<float>& dst, const std::vector<float>& src) {
  ops.to_device(dst.data(), src.data(), src.size() * sizeof(float));
}

inline std::vector<float> download(Ops& ops, const Buffer<float>& src) {
  std::vector<float> h(src.size());
  ops.to_host(h.data(), src.data(), src.bytes());
  return h;
}

inline Buffers make_buffers(Ops& ops, const OpCase& c) {
  Buffers b;
  for (const Input& in : c.inputs) {
    b.in.emplace_back(ops, in.values.size());
    upload(ops, b.in.back(), in.values);
    b.grad.emplace_back();
    if (in.differentiable) b.grad.back() = Buffer<float>(ops, in.values.size());
  }
  for (const IntInput& in : c.ints) {
    b.ints.emplace_back(ops, in.values.size());
    ops.to_device(b.ints.back().data(), in.values.data(), in.values.size() * sizeof(int32_t));
  }
  for (const Output& o : c.outputs) {
    b.out.emplace_back(ops, o.size);
    b.dout.emplace_back(ops, o.size);
    if (o.in_loss) upload(ops, b.dout.back(), o.r);
  }
  b.scalars.assign(c.n_scalars, 0.0);
  return b;
}

struct RunResult {
  std::vector<std::vector<float>> outputs;
  std::vector<double> scalars;
  std::vector<std::vector<float>> grads;         // empty for inputs without a gradient
  std::vector<std::vector<float>> inputs_after;  // input buffers after forward (+ backward)
};

struct RunOptions {
  int backward_calls = 1;  // 0: forward only
  // Initial contents of the gradient buffers (one per input; ignored for non-differentiable
  // ones); zero when absent.
  const std::vector<std::vector<float>>* grad_init = nullptr;
};

inline RunResult run_case(Ops& ops, const OpCase& c, RunOptions opt = {}) {
  Buffers b = make_buffers(ops, c);
  if (opt.grad_init) {
    for (size_t i = 0; i < c.inputs.size(); ++i)
      if (c.inputs[i].differentiable) upload(ops, b.grad[i], (*opt.grad_init)[i]);
  }
  c.forward(ops, b);
  for (int k = 0; k < opt.backward_calls && c.has_backward(); ++k) c.backward(ops, b);
  ops.synchronize();
  RunResult r;
  for (const auto& o : b.out) r.outputs.push_back(download(ops, o));
  r.scalars = b.scalars;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    r.grads.push_back(c.inputs[i].differentiable && opt.backward_calls > 0
                          ? download(ops, b.grad[i])
                          : std::vector<float>{});
    r.inputs_after.push_back(download(ops, b.in[i]));
  }
  return r;
}

// L = sum over loss outputs of sum(out * R), in double from the float outputs.
inline double objective(const OpCase& c, const std::vector<std::vector<float>>& outs) {
  double L = 0;
  for (size_t o = 0; o < c.outputs.size(); ++o) {
    if (!c.outputs[o].in_loss) continue;
    for (size_t j = 0; j < outs[o].size(); ++j)
      L += static_cast<double>(outs[o][j]) * static_cast<double>(c.outputs[o].r[j]);
  }
  return L;
}

// ================================================================================================
// Checks (gtest assertions; each reports the worst element of a failing tensor)
// ================================================================================================

// Elementwise |got - want| <= atol + rtol |want|; also fails on any non-finite value.
template <typename G, typename W>
void expect_close(const std::string& what, const std::vector<G>& got, const std::vector<W>& want,
                  Tolerance tol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0, worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    double err = std::fabs(g - w), lim = tol.atol + tol.rtol * std::fabs(w);
    bool ok = err <= lim;  // false for NaN
    double excess = ok ? err - lim : (std::isfinite(err) ? err - lim : 1e300);
    if (!ok) ++bad;
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size()
                     << " elements out of tolerance (rtol " << tol.rtol << ", atol " << tol.atol
                     << "); worst [" << worst << "] got " << static_cast<double>(got[worst])
                     << " want " << static_cast<double>(want[worst]);
}

inline void expect_bitwise_equal(const std::string& what, const std::vector<float>& a,
                                 const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size()) << what;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0 && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << a.size()
                     << " elements differ bitwise; first [" << first << "] " << a[first]
                     << " vs " << b[first];
}

// Forward outputs and scalars vs the double-precision reference.
inline void check_forward_reference(Ops& ops, const OpCase& c) {
  RunResult r = run_case(ops, c, {.backward_calls = 0});
  Expected e = c.reference();
  ASSERT_EQ(e.outputs.size(), c.outputs.size());
  ASSERT_EQ(e.scalars.size(), c.n_scalars);
  for (size_t o = 0; o < c.outputs.size(); ++o)
    expect_close(c.name + " output " + c.outputs[o].name, r.outputs[o], e.outputs[o],
                 c.forward_tol);
  expect_close(c.name + " scalars", r.scalars, e.scalars, c.forward_tol);
}

// The backward vs central finite differences of L w.r.t. every element of every
// differentiable input: dL/dx ~ (L(x+h) - L(x-h)) / (x+h - (x-h)), the step taken as the
// difference of the two float inputs actually used.
inline void check_finite_differences(Ops& ops, const OpCase& c) {
  ASSERT_TRUE(c.has_backward()) << c.name;
  RunResult r = run_case(ops, c);
  Buffers b = make_buffers(ops, c);
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const Input& in = c.inputs[i];
    if (!in.differentiable) continue;
    std::vector<float> x = in.values;
    std::vector<double> numeric(x.size());
    auto loss_at = [&](float xi, size_t j) {
      x[j] = xi;
      upload(ops, b.in[i], x);
      c.forward(ops, b);
      ops.synchronize();
      std::vector<std::vector<float>> outs;
      for (const auto& o : b.out) outs.push_back(download(ops, o));
      return objective(c, outs);
    };
    for (size_t j = 0; j < x.size(); ++j) {
      const float x0 = in.values[j];
      const float xp = x0 + static_cast<float>(c.fd_step), xm = x0 - static_cast<float>(c.fd_step);
      const double lp = loss_at(xp, j), lm = loss_at(xm, j);
      x[j] = x0;
      numeric[j] = (lp - lm) / (static_cast<double>(xp) - static_cast<double>(xm));
    }
    upload(ops, b.in[i], in.values);
    const std::vector<float>& analytic = r.grads[i];
    expect_close(c.name + " d" + in.name + " (analytic vs finite differences)", analytic, numeric,
                 c.grad_tol);
    double diff2 = 0, ref2 = 0;
    for (size_t j = 0; j < x.size(); ++j) {
      diff2 += (analytic[j] - numeric[j]) * (analytic[j] - numeric[j]);
      ref2 += numeric[j] * numeric[j];
    }
    EXPECT_GT(ref2, 0.0) << c.name << " d" << in.name << ": L does not depend on this input";
    EXPECT_LE(std::sqrt(diff2 / std::max(ref2, 1e-300)), c.grad_norm_tol)
        << c.name << " d" << in.name << ": relative norm error of the gradient";
  }
}

// The += / = convention of every gradient element: with the gradient buffers pre-filled with
// nonzero values P, an Overwrite element must end as G (the gradient from zeroed buffers,
// bitwise) and an Accumulate element as P + G; and a second backward call adds G once more to
// Accumulate elements and leaves Overwrite elements at G. A backward may add its terms one by
// one onto the buffer (a sum over rows), so the rounding of P + G scales with the gradient's
// size, not with the element: the tolerance has a 1e-4 rms(G) term; a wrong convention is off
// by a whole |P| or |G|.
inline void check_grad_conventions(Ops& ops, const OpCase& c) {
  ASSERT_TRUE(c.has_backward()) << c.name;
  RunResult base = run_case(ops, c);
  Rng rng(0xF111ull);
  std::vector<std::vector<float>> prefill(c.inputs.size());
  for (size_t i = 0; i < c.inputs.size(); ++i)
    if (c.inputs[i].differentiable) prefill[i] = normal_values(rng, c.inputs[i].values.size(), 3.0);
  RunResult filled = run_case(ops, c, {.backward_calls = 1, .grad_init = &prefill});
  RunResult twice = run_case(ops, c, {.backward_calls = 2});
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const Input& in = c.inputs[i];
    if (!in.differentiable) continue;
    const std::vector<float>& G = base.grads[i];
    double g2 = 0;
    for (float g : G) g2 += static_cast<double>(g) * g;
    const Tolerance sum_tol{1e-5, 1e-4 * std::sqrt(g2 / static_cast<double>(G.size())) + 1e-6};
    std::vector<double> want_filled(G.size()), want_twice(G.size());
    size_t n_overwrite = 0;
    for (size_t j = 0; j < G.size(); ++j) {
      const bool acc = in.grad[j] == Grad::Accumulate;
      n_overwrite += !acc;
      want_filled[j] = acc ? static_cast<double>(prefill[i][j]) + G[j] : G[j];
      want_twice[j] = acc ? 2.0 * G[j] : G[j];
    }
    expect_close(c.name + " d" + in.name + " onto a pre-filled buffer", filled.grads[i],
                 want_filled, sum_tol);
    expect_close(c.name + " d" + in.name + " after two backward calls", twice.grads[i],
                 want_twice, sum_tol);
    if (n_overwrite > 0) {
      std::vector<float> got_ow, want_ow, got_twice_ow;
      for (size_t j = 0; j < G.size(); ++j)
        if (in.grad[j] == Grad::Overwrite) {
          got_ow.push_back(filled.grads[i][j]);
          got_twice_ow.push_back(twice.grads[i][j]);
          want_ow.push_back(G[j]);
        }
      expect_bitwise_equal(c.name + " d" + in.name + " overwritten elements (pre-filled)", got_ow,
                           want_ow);
      expect_bitwise_equal(c.name + " d" + in.name + " overwritten elements (two calls)",
                           got_twice_ow, want_ow);
    }
  }
}

// Forward and backward leave the inputs untouched (they are const in ops.h).
inline void check_inputs_unchanged(Ops& ops, const OpCase& c) {
  RunResult r = run_case(ops, c);
  for (size_t i = 0; i < c.inputs.size(); ++i)
    expect_bitwise_equal(c.name + " input " + c.inputs[i].name + " after forward+backward",
                         r.inputs_after[i], c.inputs[i].values);
}

// Two runs from fresh buffers give bitwise equal outputs, scalars and gradients.
inline void check_deterministic(Ops& ops, const OpCase& c) {
  RunResult a = run_case(ops, c), b = run_case(ops, c);
  for (size_t o = 0; o < c.outputs.size(); ++o)
    expect_bitwise_equal(c.name + " output " + c.outputs[o].name + " (run 1 vs 2)",
                         a.outputs[o], b.outputs[o]);
  for (size_t s = 0; s < c.n_scalars; ++s)
    EXPECT_EQ(std::memcmp(&a.scalars[s], &b.scalars[s], sizeof(double)), 0)
        << c.name << " scalar " << s << ": " << a.scalars[s] << " vs " << b.scalars[s];
  for (size_t i = 0; i < c.inputs.size(); ++i)
    expect_bitwise_equal(c.name + " d" + c.inputs[i].name + " (run 1 vs 2)", a.grads[i],
                         b.grads[i]);
}

// Normalised mean squared error sum (a-b)^2 / sum b^2 (b the reference); when b is all zero,
// the plain sum of squares of a. NaN when a holds a non-finite value.
inline double nmse(const std::vector<float>& a, const std::vector<float>& b) {
  double d2 = 0, b2 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    d2 += d * d;
    b2 += static_cast<double>(b[i]) * b[i];
  }
  return b2 > 0 ? d2 / b2 : d2;
}

// NMSE over the tensor, and elementwise |got - ref| <= 1e-3 (|ref| + rms(ref)): NMSE alone
// would let one wrong element of a large tensor through (a bad tail block, say).
inline void expect_nmse(const std::string& what, const std::vector<float>& got,
                        const std::vector<float>& ref, double max_nmse) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  const double e = nmse(got, ref);
  EXPECT_TRUE(e < max_nmse) << what << ": normalised mean squared error " << e << " (limit "
                            << max_nmse << ")";
  double ref2 = 0;
  for (float v : ref) ref2 += static_cast<double>(v) * v;
  const double rms = ref.empty() ? 0.0 : std::sqrt(ref2 / static_cast<double>(ref.size()));
  expect_close(what + " (elementwise)", got, ref, Tolerance{1e-3, 1e-3 * rms + 1e-30});
}

// Compare mode: everything `test` computes vs what `ref` (the CPU backend) computes.
inline void check_backends_match(Ops& test, Ops& ref, const OpCase& c, double max_nmse = 1e-7) {
  RunResult a = run_case(test, c), b = run_case(ref, c);
  const std::string tag = c.name + " " + test.name() + " vs " + ref.name();
  for (size_t o = 0; o < c.outputs.size(); ++o) {
    const std::string what = tag + " output " + c.outputs[o].name;
    if (c.outputs[o].compare)
      expect_close(what, a.outputs[o], b.outputs[o], *c.outputs[o].compare);
    else
      expect_nmse(what, a.outputs[o], b.outputs[o], max_nmse);
  }
  expect_close(tag + " scalars", a.scalars, b.scalars, Tolerance{1e-9, 1e-12});
  for (size_t i = 0; i < c.inputs.size(); ++i)
    if (c.inputs[i].differentiable)
      expect_nmse(tag + " d" + c.inputs[i].name, a.grads[i], b.grads[i], max_nmse);
}

// ================================================================================================
// The cases, one per op (variants are constructor arguments)
// ================================================================================================

// ---- embedding: out[n] = wte[tokens[n]];  dwte[tokens[n]] += dout[n] --------------------------
struct EmbeddingCase : OpCase {
  int64_t N;
  int C, V;
  // Tokens repeat (every one drawn from the first V/2 + 1 ids), so dwte sums several rows.
  EmbeddingCase(std::string n, int64_t N_, int C_, int V_, uint64_t seed) : N(N_), C(C_), V(V_) {
    name = std::move(n);
    Rng rng(seed);
    add_input("wte", normal_values(rng, static_cast<size_t>(V) * C), Grad::Accumulate);
    std::vector<int32_t> tok(N);
    for (auto& t : tok) t = static_cast<int32_t>(rng.below(V / 2 + 1));
    tok[0] = tok[N - 1] = V - 1;  // the last id is valid too
    add_ints("tokens", std::move(tok));
    add_output("out", static_cast<size_t>(N) * C, rng);
    forward_tol = {0, 0};  // a copy
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.embedding_forward(b.out[0].data(), b.ints[0].data(), b.in[0].data(), N, C);
  }
  void backward(Ops& ops, Buffers& b) const override {
    ops.embedding_backward(b.grad[0].data(), b.dout[0].data(), b.ints[0].data(), N, C, V);
  }
  Expected reference() const override {
    Expected e{{std::vector<double>(static_cast<size_t>(N) * C)}, {}};
    for (int64_t n = 0; n < N; ++n)
      for (int c = 0; c < C; ++c)
        e.outputs[0][n * C + c] = inputs[0].values[static_cast<size_t>(ints[0].values[n]) * C + c];
    return e;
  }
};

// ---- RMSNorm: out = x * rstd * w,  rstd = 1/sqrt(mean x^2 + eps);  dx +=, dw += -------------
struct RmsNormCase : OpCase {
  int64_t N;
  int C;
  float eps;
  RmsNormCase(std::string n, int64_t N_, int C_, float eps_, uint64_t seed) : N(N_), C(C_), eps(eps_) {
    name = std::move(n);
    Rng rng(seed);
    std::vector<float> x = normal_values(rng, static_cast<size_t>(N) * C);
    for (int64_t r = 0; r < N; ++r)  // rows of different scale: rstd varies
      for (int c = 0; c < C; ++c) x[r * C + c] *= 0.3f + 0.7f * static_cast<float>(r % 4);
    std::vector<float> w(C);
    for (auto& v : w) v = static_cast<float>(1.0 + 0.5 * rng.normal());
    add_input("x", std::move(x), Grad::Accumulate);
    add_input("w", std::move(w), Grad::Accumulate);
    add_output("out", static_cast<size_t>(N) * C, rng);
    add_result("rstd", static_cast<size_t>(N));
    grad_tol = {1e-3, 1e-3};  // small rows (scale 0.3) are curved: FD error up to 2.2e-4
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.rmsnorm_forward(b.out[0].data(), b.out[1].data(), b.in[0].data(), b.in[1].data(), N, C, eps);
  }
  void backward(Ops& ops, Buffers& b) const override {
    ops.rmsnorm_backward(b.grad[0].data(), b.grad[1].data(), b.dout[0].data(), b.in[0].data(),
                         b.in[1].data(), b.out[1].data(), N, C);
  }
  Expected reference() const override {
    const auto& x = inputs[0].values;
    const auto& w = inputs[1].values;
    Expected e{{std::vector<double>(x.size()), std::vector<double>(N)}, {}};
    for (int64_t n = 0; n < N; ++n) {
      double ms = 0;
      for (int c = 0; c < C; ++c) ms += static_cast<double>(x[n * C + c]) * x[n * C + c];
      const double rstd = 1.0 / std::sqrt(ms / C + eps);
      e.outputs[1][n] = rstd;
      for (int c = 0; c < C; ++c) e.outputs[0][n * C + c] = x[n * C + c] * rstd * w[c];
    }
    return e;
  }
};

// ---- matmul: out = x W^T;  dx (= or +=) dout W;  dw += dout^T x ----------------------------
enum class MatmulGrads { OverwriteDx, AccumulateDx, NoDx, NoDw };

struct MatmulCase : OpCase {
  int64_t N;
  int IC, OC;
  MatmulGrads mode;
  MatmulCase(std::string n, int64_t N_, int IC_, int OC_, MatmulGrads mode_, uint64_t seed)
      : N(N_), IC(IC_), OC(OC_), mode(mode_) {
    name = std::move(n);
    Rng rng(seed);
    std::vector<float> x = normal_values(rng, static_cast<size_t>(N) * IC);
    std::vector<float> w = normal_values(rng, static_cast<size_t>(OC) * IC, 1.0 / std::sqrt(IC));
    if (mode == MatmulGrads::NoDx) add_const("x", std::move(x));
    else add_input("x", std::move(x), mode == MatmulGrads::AccumulateDx ? Grad::Accumulate : Grad::Overwrite);
    if (mode == MatmulGrads::NoDw) add_const("w", std::move(w));
    else add_input("w", std::move(w), Grad::Accumulate);
    add_output("out", static_cast<size_t>(N) * OC, rng);
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.matmul_forward(b.out[0].data(), b.in[0].data(), b.in[1].data(), N, IC, OC);
  }
  void backward(Ops& ops, Buffers& b) const override {
    float* dx = mode == MatmulGrads::NoDx ? nullptr : b.grad[0].data();
    float* dw = mode == MatmulGrads::NoDw ? nullptr : b.grad[1].data();
    ops.matmul_backward(dx, dw, b.dout[0].data(), b.in[0].data(), b.in[1].data(), N, IC, OC,
                        mode == MatmulGrads::AccumulateDx);
  }
  Expected reference() const override {
    const auto& x = inputs[0].values;
    const auto& w = inputs[1].values;
    Expected e{{std::vector<double>(static_cast<size_t>(N) * OC)}, {}};
    for (int64_t n = 0; n < N; ++n)
      for (int o = 0; o < OC; ++o) {
        double acc = 0;
        for (int i = 0; i < IC; ++i) acc += static_cast<double>(x[n * IC + i]) * w[static_cast<size_t>(o) * IC + i];
        e.outputs[0][n * OC + o] = acc;
      }
    return e;
  }
};

// ---- RoPE (rotate-half), in place on a strided [B, T, nh, D] view at absolute pos0 + t ------
// The case copies its input x [B*T, ld] to out and rotates the columns [off, off + nh*D) there;
// the other columns pass through. Backward copies dout to dx and rotates back in place.
struct RopeCase : OpCase {
  int B, T, nh, D, ld, off, pos0, max_pos;
  static constexpr double kTheta = 10000.0;
  RopeCase(std::string n, int B_, int T_, int nh_, int D_, int pad, int off_, int pos0_, uint64_t seed)
      : B(B_), T(T_), nh(nh_), D(D_), ld(nh_ * D_ + pad), off(off_), pos0(pos0_),
        max_pos(pos0_ + T_ + 3) {
    name = std::move(n);
    Rng rng(seed);
    add_input("x", normal_values(rng, static_cast<size_t>(B) * T * ld), Grad::Overwrite);
    std::vector<float> cs(static_cast<size_t>(max_pos) * (D / 2)), sn(cs.size());
    for (int p = 0; p < max_pos; ++p)
      for (int j = 0; j < D / 2; ++j) {
        cs[static_cast<size_t>(p) * (D / 2) + j] = static_cast<float>(std::cos(angle(p, j)));
        sn[static_cast<size_t>(p) * (D / 2) + j] = static_cast<float>(std::sin(angle(p, j)));
      }
    add_const("cos", std::move(cs));
    add_const("sin", std::move(sn));
    add_output("out", static_cast<size_t>(B) * T * ld, rng);
  }
  double angle(int p, int j) const { return p * std::pow(kTheta, -2.0 * j / D); }
  void forward(Ops& ops, Buffers& b) const override {
    ops.copy(b.out[0].data(), b.in[0].data(), b.in[0].bytes());
    ops.rope_forward(b.out[0].data() + off, ld, B, T, nh, D, pos0, b.in[1].data(), b.in[2].data());
  }
  void backward(Ops& ops, Buffers& b) const override {
    ops.copy(b.grad[0].data(), b.dout[0].data(), b.dout[0].bytes());
    ops.rope_backward(b.grad[0].data() + off, ld, B, T, nh, D, pos0, b.in[1].data(), b.in[2].data());
  }
  Expected reference() const override {
    const auto& x = inputs[0].values;
    Expected e{{std::vector<double>(x.begin(), x.end())}, {}};
    auto& y = e.outputs[0];
    for (int bt = 0; bt < B * T; ++bt) {
      const int p = pos0 + bt % T;
      for (int h = 0; h < nh; ++h)
        for (int j = 0; j < D / 2; ++j) {
          const size_t i1 = static_cast<size_t>(bt) * ld + off + h * D + j, i2 = i1 + D / 2;
          const double c = std::cos(angle(p, j)), s = std::sin(angle(p, j));
          y[i1] = x[i1] * c - x[i2] * s;
          y[i2] = x[i2] * c + x[i1] * s;
        }
    }
    return e;
  }
};

// ---- causal GQA attention with strided q/k/v -------------------------------------------------
// Fused layout: one input qkv [N, ld], q | k | v column blocks (H, Hkv, Hkv heads of D) and a
// 3-column pad: ldq = ldk = ldv = ld. Split layout: q [N, H*D + 2] and kv [N, ld_kv] with k at
// column 0 and v at column Hkv*D + 5 (a gap between them): ldq != ldk. The q block's gradient is
// overwritten, k's and v's accumulate, pad/gap columns are never written.
struct AttentionCase : OpCase {
  AttnShape s;
  bool fused;
  size_t q_in = 0, kv_in = 0;             // input index of q and of k/v
  size_t q_off = 0, k_off = 0, v_off = 0;  // column offsets inside those inputs
  AttentionCase(std::string n, int B, int T, int H, int Hkv, int D, bool fused_, uint64_t seed)
      : fused(fused_) {
    name = std::move(n);
    s.B = B, s.T = T, s.H = H, s.Hkv = Hkv, s.D = D;
    Rng rng(seed);
    const size_t N = static_cast<size_t>(B) * T;
    if (fused) {
      const int ld = (H + 2 * Hkv) * D + 3;
      s.ldq = s.ldk = s.ldv = ld;
      k_off = static_cast<size_t>(H) * D, v_off = static_cast<size_t>(H + Hkv) * D;
      std::vector<Grad> g(N * ld, Grad::Accumulate);
      for (size_t r = 0; r < N; ++r)
        for (size_t c = 0; c < k_off; ++c) g[r * ld + c] = Grad::Overwrite;
      q_in = kv_in = add_input("qkv", normal_values(rng, N * ld), std::move(g));
    } else {
      s.ldq = H * D + 2;
      s.ldk = s.ldv = 2 * Hkv * D + 5;
      k_off = 0, v_off = static_cast<size_t>(Hkv) * D + 5;
      std::vector<Grad> g(N * s.ldq, Grad::Accumulate);
      for (size_t r = 0; r < N; ++r)
        for (int c = 0; c < H * D; ++c) g[r * s.ldq + c] = Grad::Overwrite;
      q_in = add_input("q", normal_values(rng, N * s.ldq), std::move(g));
      kv_in = add_input("kv", normal_values(rng, N * s.ldk), Grad::Accumulate);
    }
    add_output("out", N * H * D, rng);
    add_result("att", static_cast<size_t>(B) * H * T * T);
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.attention_forward(b.out[0].data(), b.out[1].data(), b.in[q_in].data() + q_off,
                          b.in[kv_in].data() + k_off, b.in[kv_in].data() + v_off, s);
  }
  void backward(Ops& ops, Buffers& b) const override {
    ops.attention_backward(b.grad[q_in].data() + q_off, b.grad[kv_in].data() + k_off,
                           b.grad[kv_in].data() + v_off, b.dout[0].data(), b.out[0].data(),
                           b.out[1].data(),
                           b.in[q_in].data() + q_off, b.in[kv_in].data() + k_off,
                           b.in[kv_in].data() + v_off, s);
  }
  // Explicit loops in double: scores, causal softmax, weighted sum of values.
  Expected reference() const override {
    const auto& qv = inputs[q_in].values;
    const auto& kvv = inputs[kv_in].values;
    const int B = s.B, T = s.T, H = s.H, D = s.D, G = s.H / s.Hkv;
    Expected e{{std::vector<double>(static_cast<size_t>(B) * T * H * D),
                std::vector<double>(static_cast<size_t>(B) * H * T * T, 0.0)}, {}};
    auto q = [&](int b, int t, int h, int d) { return static_cast<double>(qv[(static_cast<size_t>(b) * T + t) * s.ldq + q_off + h * D + d]); };
    auto k = [&](int b, int t, int g, int d) { return static_cast<double>(kvv[(static_cast<size_t>(b) * T + t) * s.ldk + k_off + g * D + d]); };
    auto v = [&](int b, int t, int g, int d) { return static_cast<double>(kvv[(static_cast<size_t>(b) * T + t) * s.ldv + v_off + g * D + d]); };
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int t = 0; t < T; ++t) {
          const int g = h / G;
          std::vector<double> p(t + 1);
          double mx = -1e300, z = 0;
          for (int u = 0; u <= t; ++u) {
            double dot = 0;
            for (int d = 0; d < D; ++d) dot += q(b, t, h, d) * k(b, u, g, d);
            p[u] = dot / std::sqrt(static_cast<double>(D));
            mx = std::max(mx, p[u]);
          }
          for (int u = 0; u <= t; ++u) z += (p[u] = std::exp(p[u] - mx));
          double* att = &e.outputs[1][((static_cast<size_t>(b) * H + h) * T + t) * T];
          for (int u = 0; u <= t; ++u) att[u] = p[u] / z;
          for (int d = 0; d < D; ++d) {
            double acc = 0;
            for (int u = 0; u <= t; ++u) acc += att[u] * v(b, u, g, d);
            e.outputs[0][(static_cast<size_t>(b) * T + t) * H * D + h * D + d] = acc;
          }
        }
    return e;
  }
};

// ---- FusedKV: out = w_first ⊙ first + w_last ⊙ last per (KV head, channel) --------------------
// first and last are column blocks of wider rows (as K/V blocks of a storage layer's fused
// projection): first at column 2 of rows of Hkv*D + 3, last at column 0 of rows of Hkv*D + 5;
// out has rows of Hkv*D + 4 (its pad stays zero). pair_tied: keys, one weight per RoPE pair.
struct KvFuseCase : OpCase {
  int64_t N;
  int Hkv, D;
  bool pair_tied;
  int ld_first, ld_last, ldo;
  static constexpr int kOffFirst = 2;
  KvFuseCase(std::string n, int64_t N_, int Hkv_, int D_, bool pair_tied_, uint64_t seed)
      : N(N_), Hkv(Hkv_), D(D_), pair_tied(pair_tied_), ld_first(Hkv_ * D_ + 3),
        ld_last(Hkv_ * D_ + 5), ldo(Hkv_ * D_ + 4) {
    name = std::move(n);
    Rng rng(seed);
    const size_t nw = static_cast<size_t>(Hkv) * (pair_tied ? D / 2 : D);
    add_input("first", normal_values(rng, static_cast<size_t>(N) * ld_first), Grad::Accumulate);
    add_input("last", normal_values(rng, static_cast<size_t>(N) * ld_last), Grad::Accumulate);
    add_input("w_first", normal_values(rng, nw), Grad::Accumulate);
    add_input("w_last", normal_values(rng, nw), Grad::Accumulate);
    add_output("out", static_cast<size_t>(N) * ldo, rng);
  }
  int channel(int j) const { return pair_tied ? j % (D / 2) : j; }
  int n_channels() const { return pair_tied ? D / 2 : D; }
  void forward(Ops& ops, Buffers& b) const override {
    ops.kv_fuse_forward(b.out[0].data(), ldo, b.in[0].data() + kOffFirst, ld_first, b.in[1].data(),
                        ld_last, b.in[2].data(), b.in[3].data(), N, Hkv, D, pair_tied);
  }
  void backward(Ops& ops, Buffers& b) const override {
    ops.kv_fuse_backward(b.grad[0].data() + kOffFirst, b.grad[1].data(), b.grad[2].data(),
                         b.grad[3].data(), b.dout[0].data(), ldo, b.in[0].data() + kOffFirst,
                         ld_first, b.in[1].data(), ld_last, b.in[2].data(), b.in[3].data(), N, Hkv,
                         D, pair_tied);
  }
  Expected reference() const override {
    const auto &f = inputs[0].values, &l = inputs[1].values;
    const auto &wf = inputs[2].values, &wl = inputs[3].values;
    Expected e{{std::vector<double>(static_cast<size_t>(N) * ldo, 0.0)}, {}};
    for (int64_t n = 0; n < N; ++n)
      for (int h = 0; h < Hkv; ++h)
        for (int j = 0; j < D; ++j) {
          const size_t w = static_cast<size_t>(h) * n_channels() + channel(j);
          e.outputs[0][n * ldo + h * D + j] =
              static_cast<double>(wf[w]) * f[n * ld_first + kOffFirst + h * D + j] +
              static_cast<double>(wl[w]) * l[n * ld_last + h * D + j];
        }
    return e;
  }
};

// ---- LRKV: out[n,h,:] = shared[n,:] + up_h lat[n,h,:]  (K_h = X W_shared + (X U_h) B_h^T) ------
// shared: rows of D + 3; lat: column 1 of rows of H*R + 2; out: rows of H*D + 3 (pad stays 0).
struct LrkvCase : OpCase {
  int64_t N;
  int H, D, R;
  int lds, ldl, ldo;
  static constexpr int kOffLat = 1;
  LrkvCase(std::string n, int64_t N_, int H_, int D_, int R_, uint64_t seed)
      : N(N_), H(H_), D(D_), R(R_), lds(D_ + 3), ldl(H_ * R_ + 2), ldo(H_ * D_ + 3) {
    name = std::move(n);
    Rng rng(seed);
    add_input("shared", normal_values(rng, static_cast<size_t>(N) * lds), Grad::Accumulate);
    add_input("lat", normal_values(rng, static_cast<size_t>(N) * ldl), Grad::Accumulate);
    add_input("up", normal_values(rng, static_cast<size_t>(H) * D * R, 1.0 / std::sqrt(R)),
              Grad::Accumulate);
    add_output("out", static_cast<size_t>(N) * ldo, rng);
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.lrkv_expand_forward(b.out[0].data(), ldo, b.in[0].data(), lds, b.in[1].data() + kOffLat,
                            ldl, b.in[2].data(), N, H, D, R);
  }
  void backward(Ops& ops, Buffers& b) const override {
    ops.lrkv_expand_backward(b.grad[0].data(), lds, b.grad[1].data() + kOffLat, b.grad[2].data(),
                             b.dout[0].data(), ldo, b.in[1].data() + kOffLat, ldl, b.in[2].data(),
                             N, H, D, R);
  }
  Expected reference() const override {
    const auto &sh = inputs[0].values, &lat = inputs[1].values, &up = inputs[2].values;
    Expected e{{std::vector<double>(static_cast<size_t>(N) * ldo, 0.0)}, {}};
    for (int64_t n = 0; n < N; ++n)
      for (int h = 0; h < H; ++h)
        for (int d = 0; d < D; ++d) {
          double acc = sh[n * lds + d];
          for (int r = 0; r < R; ++r)
            acc += static_cast<double>(lat[n * ldl + kOffLat + h * R + r]) *
                   up[(static_cast<size_t>(h) * D + d) * R + r];
          e.outputs[0][n * ldo + h * D + d] = acc;
        }
    return e;
  }
};

// ---- bias_add: out = x + bias (broadcast over rows);  dbias += sum_n dout ----------------------
// The case copies x to out and adds the bias there in place (as the gate's q projection does);
// x's gradient would be the identity, so x is a constant and only dbias is checked.
struct BiasAddCase : OpCase {
  int64_t N;
  int C;
  BiasAddCase(std::string n, int64_t N_, int C_, uint64_t seed) : N(N_), C(C_) {
    name = std::move(n);
    Rng rng(seed);
    add_const("x", normal_values(rng, static_cast<size_t>(N) * C));
    add_input("bias", normal_values(rng, static_cast<size_t>(C)), Grad::Accumulate);
    add_output("out", static_cast<size_t>(N) * C, rng);
    forward_tol = {1e-7, 0};  // one float addition
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.copy(b.out[0].data(), b.in[0].data(), b.in[0].bytes());
    ops.bias_add_forward(b.out[0].data(), b.in[1].data(), N, C);
  }
  void backward(Ops& ops, Buffers& b) const override {
    ops.bias_add_backward(b.grad[1].data(), b.dout[0].data(), N, C);
  }
  Expected reference() const override {
    const auto &x = inputs[0].values, &bias = inputs[1].values;
    Expected e{{std::vector<double>(x.size())}, {}};
    for (int64_t n = 0; n < N; ++n)
      for (int c = 0; c < C; ++c)
        e.outputs[0][n * C + c] = static_cast<double>(x[n * C + c]) + bias[c];
    return e;
  }
};

// ---- gate score: score[n,h] = mean_g 1 / (1 + sum_s e^(l_gs - l_g)) ---------------------------
// l_g = q_g·k / sqrt(Dg) + bias[h,g], l_gs = q_g·sinks[h,s] / sqrt(Dg). q, k are N(0, 1) (the
// gate normalises them to rms 1), so the logits are O(1) and the probabilities stay away from 0
// and 1: finite differences see a smooth function. dq, dk are overwritten, dsinks, dbias += .
struct GateScoreCase : OpCase {
  int64_t N;
  int Hkv, G, Dg, S;
  GateScoreCase(std::string n, int64_t N_, int Hkv_, int G_, int Dg_, int S_, uint64_t seed)
      : N(N_), Hkv(Hkv_), G(G_), Dg(Dg_), S(S_) {
    name = std::move(n);
    Rng rng(seed);
    add_input("q", normal_values(rng, static_cast<size_t>(N) * Hkv * G * Dg), Grad::Overwrite);
    add_input("k", normal_values(rng, static_cast<size_t>(N) * Hkv * Dg), Grad::Overwrite);
    add_input("sinks", normal_values(rng, static_cast<size_t>(Hkv) * S * Dg), Grad::Accumulate);
    add_input("bias", normal_values(rng, static_cast<size_t>(Hkv) * G, 0.5), Grad::Accumulate);
    add_output("score", static_cast<size_t>(N) * Hkv, rng);
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.gate_score_forward(b.out[0].data(), b.in[0].data(), b.in[1].data(), b.in[2].data(),
                           b.in[3].data(), N, Hkv, G, Dg, S);
  }
  void backward(Ops& ops, Buffers& b) const override {
    ops.gate_score_backward(b.grad[0].data(), b.grad[1].data(), b.grad[2].data(), b.grad[3].data(),
                            b.dout[0].data(), b.in[0].data(), b.in[1].data(), b.in[2].data(),
                            b.in[3].data(), N, Hkv, G, Dg, S);
  }
  Expected reference() const override {
    const auto &q = inputs[0].values, &k = inputs[1].values;
    const auto &sinks = inputs[2].values, &bias = inputs[3].values;
    const double scale = 1.0 / std::sqrt(static_cast<double>(Dg));
    Expected e{{std::vector<double>(static_cast<size_t>(N) * Hkv)}, {}};
    for (int64_t n = 0; n < N; ++n)
      for (int h = 0; h < Hkv; ++h) {
        double mean = 0;
        for (int g = 0; g < G; ++g) {
          const size_t qo = ((static_cast<size_t>(n) * Hkv + h) * G + g) * Dg;
          const size_t ko = (static_cast<size_t>(n) * Hkv + h) * Dg;
          double lg = 0;
          for (int d = 0; d < Dg; ++d) lg += static_cast<double>(q[qo + d]) * k[ko + d];
          lg = lg * scale + bias[static_cast<size_t>(h) * G + g];
          double denom = 1;
          for (int s = 0; s < S; ++s) {
            double ls = 0;
            for (int d = 0; d < Dg; ++d)
              ls += static_cast<double>(q[qo + d]) * sinks[(static_cast<size_t>(h) * S + s) * Dg + d];
            denom += std::exp(ls * scale - lg);
          }
          mean += 1.0 / denom;
        }
        e.outputs[0][n * Hkv + h] = mean / G;
      }
    return e;
  }
};

// ---- KVzip score: out[b,g,p] = max_{t in [t0,t1), h of group g} att[b,h,t,p], p < P --------
// att is a causal softmax-like tensor (rows of random positive weights normalised to sum 1,
// zeros above the diagonal), as attention_forward saves it. Forward only.
struct KvzipScoreCase : OpCase {
  int B, H, Hg, T, t0, t1, P;
  KvzipScoreCase(std::string n, int B_, int H_, int Hg_, int T_, int t0_, int t1_, int P_,
                 uint64_t seed)
      : B(B_), H(H_), Hg(Hg_), T(T_), t0(t0_), t1(t1_), P(P_) {
    name = std::move(n);
    Rng rng(seed);
    std::vector<float> att(static_cast<size_t>(B) * H * T * T, 0.0f);
    std::vector<double> w(T);
    for (size_t row = 0; row < static_cast<size_t>(B) * H * T; ++row) {
      const int t = static_cast<int>(row % T);
      double sum = 0;
      for (int s = 0; s <= t; ++s) sum += w[s] = std::exp(2.0 * rng.normal());
      for (int s = 0; s <= t; ++s) att[row * T + s] = static_cast<float>(w[s] / sum);
    }
    add_const("att", std::move(att));
    add_result("out", static_cast<size_t>(B) * Hg * P);
    forward_tol = {0, 0};  // a max: exact
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.kvzip_score(b.out[0].data(), b.in[0].data(), B, H, Hg, T, t0, t1, P);
  }
  Expected reference() const override {
    const auto& att = inputs[0].values;
    const int hpg = H / Hg;
    Expected e{{std::vector<double>(static_cast<size_t>(B) * Hg * P)}, {}};
    for (int b = 0; b < B; ++b)
      for (int g = 0; g < Hg; ++g)
        for (int p = 0; p < P; ++p) {
          double m = -1;
          for (int h = g * hpg; h < (g + 1) * hpg; ++h)
            for (int t = t0; t < t1; ++t)
              m = std::max(m, static_cast<double>(att[((static_cast<size_t>(b) * H + h) * T + t) * T + p]));
          e.outputs[0][(static_cast<size_t>(b) * Hg + g) * P + p] = m;
        }
    return e;
  }
};

// ---- attention over a KV cache: n queries at p0.. over per-head slot lists ------------------
// kv holds Hkv slot lists of S slots (head stride S * ld), each slot [K (D) | V (D) | pad]; pos
// gives each slot's absolute position. The positions are a shuffled permutation (slot order is
// not position order), some slots are empty (-1) or in the future of early queries, each head
// keeps a different set, and head 0 keeps nothing before p0 + 1 (the first query of its group
// sees nothing: zero output; with Hkv > 1). Forward only.
struct CacheAttentionCase : OpCase {
  int n, p0, H, Hkv, D, S, ld, ldq;
  CacheAttentionCase(std::string nm, int n_, int p0_, int H_, int Hkv_, int D_, uint64_t seed)
      : n(n_), p0(p0_), H(H_), Hkv(Hkv_), D(D_), S(p0_ + n_ + 3), ld(2 * D_ + 1),
        ldq(H_ * D_ + 3) {
    name = std::move(nm);
    Rng rng(seed);
    add_const("q", normal_values(rng, static_cast<size_t>(n) * ldq, 1.5));
    add_const("kv", normal_values(rng, static_cast<size_t>(Hkv) * S * ld, 1.5));
    std::vector<int32_t> pos(static_cast<size_t>(Hkv) * S, -1);
    for (int g = 0; g < Hkv; ++g) {
      std::vector<int32_t> slots(S);
      for (int i = 0; i < S; ++i) slots[i] = i;
      for (int i = S - 1; i > 0; --i) std::swap(slots[i], slots[rng.next_u64() % (i + 1)]);
      for (int p = 0; p < p0 + n; ++p) {
        const bool keep = g == 0 && Hkv > 1 ? p > p0 : rng.next_u64() % 4 != 0 || p == 0;
        if (keep) pos[static_cast<size_t>(g) * S + slots[p]] = p;
      }
    }
    add_ints("pos", std::move(pos));
    add_result("out", static_cast<size_t>(n) * H * D);
  }
  CacheAttnShape shape() const {
    return CacheAttnShape{n, p0, H, Hkv, D, ldq, S, ld, static_cast<int64_t>(S) * ld};
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.attention_cache_forward(b.out[0].data(), b.in[0].data(), b.in[1].data(),
                                b.in[1].data() + D, b.ints[0].data(), shape());
  }
  Expected reference() const override {
    const auto& q = inputs[0].values;
    const auto& kv = inputs[1].values;
    const auto& pos = ints[0].values;
    const int G = H / Hkv;
    Expected e{{std::vector<double>(static_cast<size_t>(n) * H * D, 0.0)}, {}};
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < H; ++h) {
        const int g = h / G;
        const size_t base = static_cast<size_t>(g) * S * ld;
        std::vector<double> w(S, 0.0);
        double mx = -1e300, sum = 0;
        bool any = false;
        for (int i = 0; i < S; ++i) {
          const int p = pos[static_cast<size_t>(g) * S + i];
          if (p < 0 || p > p0 + t) continue;
          double dot = 0;
          for (int d = 0; d < D; ++d)
            dot += static_cast<double>(q[static_cast<size_t>(t) * ldq + h * D + d]) *
                   kv[base + static_cast<size_t>(i) * ld + d];
          w[i] = dot / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, w[i]);
          any = true;
        }
        if (!any) continue;
        for (int i = 0; i < S; ++i) {
          const int p = pos[static_cast<size_t>(g) * S + i];
          w[i] = p < 0 || p > p0 + t ? 0.0 : std::exp(w[i] - mx);
          sum += w[i];
        }
        for (int i = 0; i < S; ++i)
          for (int d = 0; d < D; ++d)
            e.outputs[0][(static_cast<size_t>(t) * H + h) * D + d] +=
                w[i] / sum * kv[base + static_cast<size_t>(i) * ld + D + d];
      }
    return e;
  }
};

// ---- SwiGLU: out = silu(gate) * up on rows [gate | up] ---------------------------------------
struct SwiGluCase : OpCase {
  int64_t N;
  int F;
  SwiGluCase(std::string n, int64_t N_, int F_, uint64_t seed) : N(N_), F(F_) {
    name = std::move(n);
    Rng rng(seed);
    add_input("gate_up", normal_values(rng, static_cast<size_t>(N) * 2 * F, 2.5), Grad::Overwrite);
    add_output("out", static_cast<size_t>(N) * F, rng);
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.swiglu_forward(b.out[0].data(), b.in[0].data(), N, F);
  }
  void backward(Ops& ops, Buffers& b) const override {
    ops.swiglu_backward(b.grad[0].data(), b.dout[0].data(), b.in[0].data(), N, F);
  }
  Expected reference() const override {
    const auto& gu = inputs[0].values;
    Expected e{{std::vector<double>(static_cast<size_t>(N) * F)}, {}};
    for (int64_t n = 0; n < N; ++n)
      for (int f = 0; f < F; ++f) {
        const double a = gu[n * 2 * F + f], u = gu[n * 2 * F + F + f];
        e.outputs[0][n * F + f] = a / (1.0 + std::exp(-a)) * u;
      }
    return e;
  }
};

// ---- residual: out = a + b;  da += dout, db += dout ------------------------------------------
// aliased: out aliases a in the forward, and da aliases dout in the backward ("left as is").
struct ResidualCase : OpCase {
  int64_t n;
  bool aliased;
  ResidualCase(std::string nm, int64_t n_, bool aliased_, uint64_t seed) : n(n_), aliased(aliased_) {
    name = std::move(nm);
    Rng rng(seed);
    add_input("a", normal_values(rng, n), aliased ? Grad::Overwrite : Grad::Accumulate);
    add_input("b", normal_values(rng, n), Grad::Accumulate);
    add_output("out", n, rng);
    forward_tol = {1e-7, 0};  // one float addition
  }
  void forward(Ops& ops, Buffers& b) const override {
    if (aliased) {
      ops.copy(b.out[0].data(), b.in[0].data(), b.in[0].bytes());
      ops.residual_forward(b.out[0].data(), b.out[0].data(), b.in[1].data(), n);
    } else {
      ops.residual_forward(b.out[0].data(), b.in[0].data(), b.in[1].data(), n);
    }
  }
  void backward(Ops& ops, Buffers& b) const override {
    if (aliased) {
      ops.copy(b.grad[0].data(), b.dout[0].data(), b.dout[0].bytes());
      ops.residual_backward(b.grad[0].data(), b.grad[1].data(), b.grad[0].data(), n);
    } else {
      ops.residual_backward(b.grad[0].data(), b.grad[1].data(), b.dout[0].data(), n);
    }
  }
  Expected reference() const override {
    Expected e{{std::vector<double>(n)}, {}};
    for (int64_t i = 0; i < n; ++i)
      e.outputs[0][i] = static_cast<double>(inputs[0].values[i]) + inputs[1].values[i];
    return e;
  }
};

// ---- fused softmax cross-entropy; L = dloss * sum_n losses[n] ---------------------------------
// Row 1 is shifted by +90 (exp overflows float without the max subtraction). in_place: dlogits
// aliases logits (the case copies logits into the gradient buffer first).
struct CrossEntropyCase : OpCase {
  int64_t N;
  int V;
  float dloss;
  bool in_place;
  CrossEntropyCase(std::string n, int64_t N_, int V_, float dloss_, bool in_place_, uint64_t seed)
      : N(N_), V(V_), dloss(dloss_), in_place(in_place_) {
    name = std::move(n);
    Rng rng(seed);
    std::vector<float> logits = normal_values(rng, static_cast<size_t>(N) * V, 2.0);
    if (N > 1)
      for (int j = 0; j < V; ++j) logits[V + j] += 90.0f;
    std::vector<int32_t> tgt(N);
    for (auto& t : tgt) t = static_cast<int32_t>(rng.below(V));
    tgt[0] = V - 1;
    add_input("logits", std::move(logits), Grad::Overwrite);
    add_ints("targets", std::move(tgt));
    add_output_scaled("losses", N, dloss);
    forward_tol = {1e-5, 5e-5};  // float logsumexp of logits near 90
    // The losses near 90 carry float rounding ~1e-5 into L: FD error up to 4e-4, norm 2.2e-4.
    grad_tol = {1e-3, 2e-3};
    grad_norm_tol = 1e-3;
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.cross_entropy_forward(b.out[0].data(), b.in[0].data(), b.ints[0].data(), N, V);
  }
  void backward(Ops& ops, Buffers& b) const override {
    if (in_place) {
      ops.copy(b.grad[0].data(), b.in[0].data(), b.in[0].bytes());
      ops.cross_entropy_backward(b.grad[0].data(), b.grad[0].data(), b.ints[0].data(), N, V, dloss);
    } else {
      ops.cross_entropy_backward(b.grad[0].data(), b.in[0].data(), b.ints[0].data(), N, V, dloss);
    }
  }
  // loss = log sum_j exp(l_j) - l_target, log-sum-exp in double around the row maximum.
  Expected reference() const override {
    const auto& l = inputs[0].values;
    Expected e{{std::vector<double>(N)}, {}};
    for (int64_t n = 0; n < N; ++n) {
      double mx = -1e300, z = 0;
      for (int j = 0; j < V; ++j) mx = std::max(mx, static_cast<double>(l[n * V + j]));
      for (int j = 0; j < V; ++j) z += std::exp(l[n * V + j] - mx);
      e.outputs[0][n] = mx + std::log(z) - l[n * V + ints[0].values[n]];
    }
    return e;
  }
};

// ---- scale: x *= s (its own adjoint: dx = s dout) --------------------------------------------
struct ScaleCase : OpCase {
  int64_t n;
  float s;
  ScaleCase(std::string nm, int64_t n_, float s_, uint64_t seed) : n(n_), s(s_) {
    name = std::move(nm);
    Rng rng(seed);
    add_input("x", normal_values(rng, n), Grad::Overwrite);
    add_output("out", n, rng);
    forward_tol = {1e-7, 0};
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.copy(b.out[0].data(), b.in[0].data(), b.in[0].bytes());
    ops.scale(b.out[0].data(), s, n);
  }
  void backward(Ops& ops, Buffers& b) const override {
    ops.copy(b.grad[0].data(), b.dout[0].data(), b.dout[0].bytes());
    ops.scale(b.grad[0].data(), s, n);
  }
  Expected reference() const override {
    Expected e{{std::vector<double>(n)}, {}};
    for (int64_t i = 0; i < n; ++i) e.outputs[0][i] = static_cast<double>(inputs[0].values[i]) * s;
    return e;
  }
};

// ---- reductions: sum_squares(x) and sum(x), double results on the host ------------------------
struct ReductionCase : OpCase {
  int64_t n;
  ReductionCase(std::string nm, int64_t n_, uint64_t seed) : n(n_) {
    name = std::move(nm);
    Rng rng(seed);
    std::vector<float> x = normal_values(rng, n);
    for (int64_t i = 0; i < n; i += 7) x[i] *= 1000.0f;  // mixed magnitudes
    add_const("x", std::move(x));
    n_scalars = 2;
    forward_tol = {1e-10, 1e-9};  // both accumulate in double
  }
  void forward(Ops& ops, Buffers& b) const override {
    b.scalars[0] = ops.sum_squares(b.in[0].data(), n);
    b.scalars[1] = ops.sum(b.in[0].data(), n);
  }
  Expected reference() const override {
    Expected e{{}, {0.0, 0.0}};
    for (float v : inputs[0].values) {
      e.scalars[0] += static_cast<double>(v) * v;
      e.scalars[1] += v;
    }
    return e;
  }
};

// ---- AdamW step t on one tensor (PyTorch semantics, decoupled weight decay) --------------------
// Inputs p, grad, m, v; outputs the updated p, m, v. At t = 1 the moments start at zero.
struct AdamWCase : OpCase {
  int64_t n, t;
  float lr, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd, grad_scale;
  AdamWCase(std::string nm, int64_t n_, int64_t t_, float lr_, float wd_, float grad_scale_, uint64_t seed)
      : n(n_), t(t_), lr(lr_), wd(wd_), grad_scale(grad_scale_) {
    name = std::move(nm);
    Rng rng(seed);
    add_const("p", normal_values(rng, n));
    add_const("grad", normal_values(rng, n, 2.0));
    std::vector<float> m(n, 0.0f), v(n, 0.0f);
    if (t > 1) {
      m = normal_values(rng, n, 0.5);
      for (auto& x : v) x = static_cast<float>(0.05 + 0.5 * rng.uniform());
    }
    add_const("m", std::move(m));
    add_const("v", std::move(v));
    for (const char* o : {"p", "m", "v"}) {
      add_result(o, n);
      outputs.back().compare = Tolerance{1e-6, 1e-7};
    }
    forward_tol = {1e-6, 1e-7};
  }
  void forward(Ops& ops, Buffers& b) const override {
    for (int i = 0; i < 3; ++i) {
      const int src = i == 0 ? 0 : i + 1;  // p, m, v
      ops.copy(b.out[i].data(), b.in[src].data(), b.in[src].bytes());
    }
    ops.adamw_update(b.out[0].data(), b.in[1].data(), b.out[1].data(), b.out[2].data(), n, lr,
                     beta1, beta2, eps, wd, t, grad_scale);
  }
  Expected reference() const override {
    Expected e{{std::vector<double>(n), std::vector<double>(n), std::vector<double>(n)}, {}};
    const double b1 = beta1, b2 = beta2;
    const double bc1 = 1 - std::pow(b1, static_cast<double>(t)), bc2 = 1 - std::pow(b2, static_cast<double>(t));
    for (int64_t i = 0; i < n; ++i) {
      const double g = static_cast<double>(inputs[1].values[i]) * grad_scale;
      const double m = b1 * inputs[2].values[i] + (1 - b1) * g;
      const double v = b2 * inputs[3].values[i] + (1 - b2) * g * g;
      const double p = inputs[0].values[i];
      e.outputs[0][i] = p - lr * ((m / bc1) / (std::sqrt(v / bc2) + eps) + wd * p);
      e.outputs[1][i] = m;
      e.outputs[2][i] = v;
    }
    return e;
  }
};

// ---- SGD with momentum on one tensor (PyTorch SGD, dampening 0) ------------------------------
// Inputs p, grad, buf; outputs the updated p and buf.
struct SgdCase : OpCase {
  int64_t n;
  float lr, momentum, wd, grad_scale;
  SgdCase(std::string nm, int64_t n_, float lr_, float momentum_, float wd_, float grad_scale_,
          uint64_t seed)
      : n(n_), lr(lr_), momentum(momentum_), wd(wd_), grad_scale(grad_scale_) {
    name = std::move(nm);
    Rng rng(seed);
    add_const("p", normal_values(rng, n));
    add_const("grad", normal_values(rng, n, 2.0));
    add_const("buf", normal_values(rng, n, 0.5));
    for (const char* o : {"p", "buf"}) {
      add_result(o, n);
      outputs.back().compare = Tolerance{1e-6, 1e-7};
    }
    forward_tol = {1e-6, 1e-7};
  }
  void forward(Ops& ops, Buffers& b) const override {
    ops.copy(b.out[0].data(), b.in[0].data(), b.in[0].bytes());
    ops.copy(b.out[1].data(), b.in[2].data(), b.in[2].bytes());
    ops.sgd_update(b.out[0].data(), b.in[1].data(), b.out[1].data(), n, lr, momentum, wd, grad_scale);
  }
  Expected reference() const override {
    Expected e{{std::vector<double>(n), std::vector<double>(n)}, {}};
    for (int64_t i = 0; i < n; ++i) {
      const double p = inputs[0].values[i];
      const double g = static_cast<double>(inputs[1].values[i]) * grad_scale + wd * p;
      const double buf = momentum * static_cast<double>(inputs[2].values[i]) + g;
      e.outputs[0][i] = p - lr * buf;
      e.outputs[1][i] = buf;
    }
    return e;
  }
};

// ================================================================================================
// Case lists
// ================================================================================================

// Appends a case built (on first use) as C(name, args...).
template <typename C, typename... Args>
void add(std::vector<CaseParam>& list, const std::string& name, bool has_backward, Args... args) {
  list.emplace_back(name, has_backward, [=] { return std::make_unique<C>(name, args...); });
}

// Small shapes for grad mode (finite differences touch every input element) and compare mode.
inline std::vector<CaseParam> small_cases() {
  std::vector<CaseParam> c;
  add<EmbeddingCase>(c, "embedding", true, 12, 5, 7, 101);
  add<RmsNormCase>(c, "rmsnorm", true, 6, 10, 1e-5f, 102);
  add<MatmulCase>(c, "matmul_dx_overwrite", true, 7, 9, 5, MatmulGrads::OverwriteDx, 103);
  add<MatmulCase>(c, "matmul_dx_accumulate", true, 7, 9, 5, MatmulGrads::AccumulateDx, 104);
  add<MatmulCase>(c, "matmul_no_dx", true, 4, 6, 3, MatmulGrads::NoDx, 105);
  add<MatmulCase>(c, "matmul_frozen_w", true, 4, 6, 3, MatmulGrads::NoDw, 106);
  add<RopeCase>(c, "rope_pos7_strided", true, 2, 3, 3, 8, 5, 2, 7, 107);
  add<RopeCase>(c, "rope_pos0", true, 1, 4, 2, 4, 0, 0, 0, 108);
  add<AttentionCase>(c, "attention_gqa_fused", true, 2, 5, 4, 2, 6, true, 109);
  add<AttentionCase>(c, "attention_mqa_fused", true, 2, 5, 4, 1, 6, true, 110);
  add<AttentionCase>(c, "attention_mha_fused", true, 1, 4, 2, 2, 4, true, 111);
  add<AttentionCase>(c, "attention_gqa_split", true, 2, 4, 6, 3, 4, false, 112);
  add<CacheAttentionCase>(c, "attention_cache_gqa", false, 5, 7, 4, 2, 6, 134);
  add<CacheAttentionCase>(c, "attention_cache_decode_mqa", false, 1, 11, 3, 1, 4, 135);
  add<CacheAttentionCase>(c, "attention_cache_prefill_mha", false, 6, 0, 2, 2, 8, 136);
  add<KvFuseCase>(c, "kv_fuse_keys_pair_tied", true, 6, 2, 6, true, 122);
  add<KvFuseCase>(c, "kv_fuse_values", true, 5, 3, 4, false, 123);
  add<LrkvCase>(c, "lrkv_expand", true, 5, 3, 4, 2, 124);
  add<BiasAddCase>(c, "bias_add", true, 7, 5, 125);
  add<BiasAddCase>(c, "bias_add_chunks", true, 150, 3, 126);  // 3 row chunks
  add<GateScoreCase>(c, "gate_score", true, 7, 2, 2, 4, 3, 127);
  add<GateScoreCase>(c, "gate_score_chunks", true, 70, 1, 3, 2, 2, 128);  // 2 row chunks
  add<KvzipScoreCase>(c, "kvzip_score_groups", false, 2, 4, 2, 9, 5, 9, 5, 129);
  add<KvzipScoreCase>(c, "kvzip_score_all_heads", false, 1, 6, 1, 8, 3, 7, 6, 130);
  add<KvzipScoreCase>(c, "kvzip_score_per_head", false, 2, 3, 3, 6, 2, 6, 4, 131);
  add<SwiGluCase>(c, "swiglu", true, 5, 7, 113);
  add<ResidualCase>(c, "residual", true, 23, false, 114);
  add<ResidualCase>(c, "residual_aliased", true, 23, true, 115);
  add<CrossEntropyCase>(c, "cross_entropy", true, 6, 11, 0.37f, false, 116);
  add<CrossEntropyCase>(c, "cross_entropy_in_place", true, 5, 9, 1.5f, true, 117);
  add<ScaleCase>(c, "scale", true, 37, -0.75f, 118);
  add<ReductionCase>(c, "sum_and_sum_squares", false, 1001, 119);
  add<AdamWCase>(c, "adamw_t1", false, 33, 1, 0.05f, 0.1f, 1.0f, 120);
  add<AdamWCase>(c, "adamw_t3_grad_scale", false, 33, 3, 0.05f, 0.1f, 0.5f, 121);
  add<SgdCase>(c, "sgd_momentum", false, 33, 0.2f, 0.9f, 0.0f, 1.0f, 132);
  add<SgdCase>(c, "sgd_momentum_decay_scale", false, 33, 0.05f, 0.5f, 0.1f, 0.5f, 133);
  return c;
}

// Training-sized shapes for compare mode (no finite differences).
inline std::vector<CaseParam> large_cases() {
  std::vector<CaseParam> c;
  add<EmbeddingCase>(c, "large_embedding", true, 1024, 128, 4096, 201);
  add<RmsNormCase>(c, "large_rmsnorm", true, 256, 768, 1e-5f, 202);
  add<MatmulCase>(c, "large_matmul_dx_overwrite", true, 256, 512, 384, MatmulGrads::OverwriteDx, 203);
  add<MatmulCase>(c, "large_matmul_dx_accumulate", true, 256, 512, 384, MatmulGrads::AccumulateDx, 204);
  add<MatmulCase>(c, "large_matmul_odd", true, 77, 129, 65, MatmulGrads::OverwriteDx, 205);
  add<RopeCase>(c, "large_rope", true, 2, 128, 8, 64, 7, 3, 100, 206);
  add<AttentionCase>(c, "large_attention_gqa_fused", true, 2, 128, 8, 2, 64, true, 207);
  add<AttentionCase>(c, "large_attention_mqa_fused", true, 2, 96, 8, 1, 64, true, 208);
  add<AttentionCase>(c, "large_attention_mha_split", true, 1, 130, 4, 4, 32, false, 209);
  add<CacheAttentionCase>(c, "large_attention_cache_gqa", false, 64, 1984, 8, 2, 64, 227);
  add<CacheAttentionCase>(c, "large_attention_cache_decode", false, 1, 2047, 8, 4, 128, 228);
  add<KvFuseCase>(c, "large_kv_fuse_keys_pair_tied", true, 256, 4, 64, true, 218);
  add<KvFuseCase>(c, "large_kv_fuse_values", true, 256, 2, 128, false, 219);
  add<LrkvCase>(c, "large_lrkv_expand", true, 256, 8, 64, 24, 220);
  add<BiasAddCase>(c, "large_bias_add", true, 1000, 768, 221);
  add<GateScoreCase>(c, "large_gate_score", true, 1024, 4, 4, 16, 16, 222);
  add<GateScoreCase>(c, "large_gate_score_odd", true, 777, 2, 3, 16, 16, 223);
  add<KvzipScoreCase>(c, "large_kvzip_score_groups", false, 2, 8, 2, 256, 160, 256, 128, 224);
  add<KvzipScoreCase>(c, "large_kvzip_score_all_heads", false, 1, 8, 1, 300, 100, 290, 96, 225);
  add<SwiGluCase>(c, "large_swiglu", true, 256, 1024, 210);
  add<ResidualCase>(c, "large_residual", true, 1 << 18, false, 211);
  add<ResidualCase>(c, "large_residual_aliased", true, (1 << 18) + 5, true, 212);
  add<CrossEntropyCase>(c, "large_cross_entropy", true, 64, 4096, 1.0f / 64, false, 213);
  add<CrossEntropyCase>(c, "large_cross_entropy_in_place", true, 33, 4099, 0.25f, true, 214);
  add<ScaleCase>(c, "large_scale", true, (1 << 20) + 3, 0.125f, 215);
  add<ReductionCase>(c, "large_sum_and_sum_squares", false, (1 << 22) + 3, 216);
  add<AdamWCase>(c, "large_adamw_t3", false, (1 << 20) + 5, 3, 3e-4f, 0.1f, 0.25f, 217);
  add<SgdCase>(c, "large_sgd_momentum", false, (1 << 20) + 5, 0.2f, 0.9f, 0.01f, 0.5f, 226);
  return c;
}

}  // namespace kvt::optest

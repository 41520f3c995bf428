// model/eviction.cpp — the eviction budget rule and the evaluation of one context.
#include "model/eviction.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/common/rng.h"

namespace kvt {

namespace {
constexpr uint64_t kRandomPolicyPurpose = 0x72616e646f6dull;  // "random"

// -log softmax(logits)[target], in double
double token_nll(const float* logits, int V, int32_t target) {
  double mx = logits[0];
  for (int i = 1; i < V; i++) mx = std::max(mx, static_cast<double>(logits[i]));
  double z = 0;
  for (int i = 0; i < V; i++) z += std::exp(logits[i] - mx);
  return std::log(z) + mx - logits[target];
}
}  // namespace

EvictPolicy parse_evict_policy(const std::string& name) {
  if (name == "full") return EvictPolicy::full;
  if (name == "gates") return EvictPolicy::gates;
  if (name == "kvzip") return EvictPolicy::kvzip;
  if (name == "recent") return EvictPolicy::recent;
  if (name == "random") return EvictPolicy::random;
  throw std::invalid_argument("unknown eviction policy '" + name +
                              "' (expected gates, kvzip, recent, random or full)");
}

std::string to_string(EvictPolicy p) {
  switch (p) {
    case EvictPolicy::full: return "full";
    case EvictPolicy::gates: return "gates";
    case EvictPolicy::kvzip: return "kvzip";
    case EvictPolicy::recent: return "recent";
    case EvictPolicy::random: return "random";
  }
  return "?";
}

// ---- Evictor --------------------------------------------------------------------------------

Evictor::Evictor(InferenceModel& model, const EvictionOptions& opt)
    : m_(model), opt_(opt), layers_(gate_layers(model.config())), M_(model.mask_heads()),
      E_(static_cast<int>(layers_.size()) * M_), cap_(model.capacity()),
      score_(static_cast<size_t>(E_) * cap_, 0.0f),
      until_(static_cast<size_t>(E_) * cap_, std::numeric_limits<int>::max()) {
  if (!(opt.keep > 0.0 && opt.keep <= 1.0))
    throw std::invalid_argument("keep ratio must be in (0, 1], got " + std::to_string(opt.keep));
  if (opt.sinks < 0 || opt.recent < 0)
    throw std::invalid_argument("sinks and recent window must be >= 0");
}

std::span<float> Evictor::scores(int storage_index, int head) {
  if (storage_index < 0 || storage_index >= static_cast<int>(layers_.size()) || head < 0 || head >= M_)
    throw std::out_of_range("evictor: entry (" + std::to_string(storage_index) + ", " +
                            std::to_string(head) + ") out of range");
  return {score_.data() + (static_cast<size_t>(storage_index) * M_ + head) * cap_,
          static_cast<size_t>(cap_)};
}

int64_t Evictor::evict(int len) {
  const int64_t budget = std::llround(opt_.keep * static_cast<double>(len) * E_);
  struct Cand {
    float score;
    int pos, e;
  };
  std::vector<Cand> cand;
  int64_t fixed = 0;
  for (int e = 0; e < E_; e++) {
    const int layer = layers_[e / M_], head = e % M_;
    for (int p = 0; p < len; p++) {
      if (!m_.kept(layer, head, p)) continue;
      if (p < opt_.sinks || p >= len - opt_.recent) fixed++;
      else cand.push_back({score_[static_cast<size_t>(e) * cap_ + p], p, e});
    }
  }
  const int64_t room = std::max<int64_t>(0, budget - fixed);
  if (room >= static_cast<int64_t>(cand.size())) return 0;
  // One threshold across layers and heads: keep the `room` best (score, newer, lower entry).
  auto better = [](const Cand& a, const Cand& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.pos != b.pos) return a.pos > b.pos;
    return a.e < b.e;
  };
  std::nth_element(cand.begin(), cand.begin() + room, cand.end(), better);
  for (auto it = cand.begin() + room; it != cand.end(); ++it) {
    m_.set_keep(layers_[it->e / M_], it->e % M_, it->pos, false);
    until_[static_cast<size_t>(it->e) * cap_ + it->pos] = len;
  }
  return static_cast<int64_t>(cand.size()) - room;
}

int64_t Evictor::kept_entries(int len) const {
  int64_t n = 0;
  for (int e = 0; e < E_; e++)
    for (int p = 0; p < len; p++) n += m_.kept(layers_[e / M_], e % M_, p);
  return n;
}

int Evictor::visible_until(int storage_index, int head, int pos) const {
  return until_.at((static_cast<size_t>(storage_index) * M_ + head) * cap_ + pos);
}

// ---- one context ----------------------------------------------------------------------------

EvictionResult evaluate_eviction(InferenceModel& model, const EvictionOptions& opt,
                                 std::span<const int32_t> context,
                                 std::span<const int32_t> continuation,
                                 std::span<const int32_t> prompt, GateModel* gates,
                                 const std::vector<float>* oracle) {
  const ModelConfig& cfg = model.config();
  const int P = static_cast<int>(context.size()), N = static_cast<int>(continuation.size()),
            Q = static_cast<int>(prompt.size()), V = cfg.vocab_size, cap = model.capacity();
  if (P < 1) throw std::invalid_argument("eviction eval: empty context");
  if (Q < 1) throw std::invalid_argument("eviction eval: the repeat prompt is empty");
  if (opt.chunk < 1) throw std::invalid_argument("eviction eval: chunk must be >= 1");
  if (P + N > cap || 2 * P + Q > cap)
    throw std::length_error("context of " + std::to_string(P) + " tokens: context + continuation (" +
                            std::to_string(P + N) + ") and context + prompt + context (" +
                            std::to_string(2 * P + Q) + ") must fit model.max_seq_len " +
                            std::to_string(cap));
  Evictor ev(model, opt);  // checks the keep ratio
  const std::vector<int> layers = gate_layers(cfg);
  const int M = model.mask_heads(), E = ev.entries_per_position();
  if (opt.policy == EvictPolicy::gates && !gates)
    throw std::invalid_argument("policy gates needs gates (--gates FILE)");
  if (opt.policy == EvictPolicy::kvzip &&
      (!oracle || oracle->size() != static_cast<size_t>(E) * P))
    throw std::invalid_argument("policy kvzip needs the context's KVzip scores [" +
                                std::to_string(E) + ", " + std::to_string(P) + "]");

  for (int e = 0; e < E; e++) {
    std::span<float> s = ev.scores(e / M, e % M);
    Rng rng(derive_seed(opt.seed, kRandomPolicyPurpose, static_cast<uint64_t>(e)));
    for (int p = 0; p < P; p++) {
      if (opt.policy == EvictPolicy::kvzip) s[p] = (*oracle)[static_cast<size_t>(e) * P + p];
      else if (opt.policy == EvictPolicy::recent) s[p] = static_cast<float>(p);
      else if (opt.policy == EvictPolicy::random) s[p] = static_cast<float>(rng.uniform());
    }
  }

  model.reset();
  std::vector<float> last;
  {
    // The gates score each chunk's new entries while the context is prefilled, and only then.
    struct ObserverScope {
      InferenceModel& m;
      ~ObserverScope() { m.set_hidden_observer({}); }
    } scope{model};
    if (opt.policy == EvictPolicy::gates)
      model.set_hidden_observer([&](int layer, const float* h, int pos0, int n) {
        const int si = static_cast<int>(std::find(layers.begin(), layers.end(), layer) - layers.begin());
        const std::vector<float> s = gates->forward(layer, h, n);  // [n, M]
        for (int m = 0; m < M; m++) {
          std::span<float> dst = ev.scores(si, m);
          for (int i = 0; i < n; i++) dst[pos0 + i] = s[static_cast<size_t>(i) * M + m];
        }
      });
    for (int i = 0; i < P; i += opt.chunk) {
      const int n = std::min(opt.chunk, P - i);
      last = model.prefill(context.data() + i, n, false);
      if (opt.policy != EvictPolicy::full) ev.evict(i + n);
    }
  }

  EvictionResult r;
  r.entries_total = static_cast<int64_t>(P) * E;
  r.entries_kept = ev.kept_entries(P);
  r.kv_bytes = model.kv_bytes();
  r.kv_bytes_kept = model.kv_bytes_kept();

  if (N > 0) {
    double nll = token_nll(last.data(), V, continuation[0]);
    if (N > 1) {
      const std::vector<float> lg = model.prefill(continuation.data(), N - 1, true);
      for (int i = 1; i < N; i++) nll += token_nll(lg.data() + static_cast<size_t>(i - 1) * V, V, continuation[i]);
    }
    r.continuation_loss = nll / N;
    r.continuation_tokens = N;
    model.truncate(P);
  }
  std::vector<int32_t> rec(prompt.begin(), prompt.end());
  rec.insert(rec.end(), context.begin(), context.end() - 1);
  const std::vector<float> lg = model.prefill(rec.data(), static_cast<int>(rec.size()), true);
  double nll = 0;
  for (int i = 0; i < P; i++) nll += token_nll(lg.data() + static_cast<size_t>(Q - 1 + i) * V, V, context[i]);
  r.reconstruction_loss = nll / P;
  r.reconstruction_tokens = P;
  model.truncate(P);
  return r;
}

}  // namespace kvt

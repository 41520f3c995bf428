// model/eviction.cpp — the eviction budget rule and the evaluation of one context.
#include "model/eviction.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <stdexcept>

#include "kernels/common/rng.h"
#include "model/eviction_tasks.h"
#include "model/kv_sharing.h"

namespace kvt {

namespace {
constexpr uint64_t kRandomPolicyPurpose = 0x72616e646f6dull;  // "random"
}  // namespace

EvictPolicy parse_evict_policy(const std::string& name) {
  if (name == "full") return EvictPolicy::full;
  if (name == "gates") return EvictPolicy::gates;
  if (name == "kvzip") return EvictPolicy::kvzip;
  if (name == "streaming" || name == "recent") return EvictPolicy::streaming;
  if (name == "snapkv") return EvictPolicy::snapkv;
  if (name == "random") return EvictPolicy::random;
  throw std::invalid_argument("unknown eviction policy '" + name +
                              "' (expected full, kvzip, gates, streaming, snapkv or random)");
}

std::string to_string(EvictPolicy p) {
  switch (p) {
    case EvictPolicy::full: return "full";
    case EvictPolicy::gates: return "gates";
    case EvictPolicy::kvzip: return "kvzip";
    case EvictPolicy::streaming: return "streaming";
    case EvictPolicy::snapkv: return "snapkv";
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

void Evictor::set_window(int sinks, int recent) {
  if (sinks < 0 || recent < 0) throw std::invalid_argument("sinks and recent window must be >= 0");
  opt_.sinks = sinks;
  opt_.recent = recent;
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

// ---- compressing a context ------------------------------------------------------------------

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// SnapKV scores into the evictor: the attention probe (sum over the window's queries) per
// reading layer, averaged over each KV head's query heads, folded by max into the storage layers
// it reads, then max-pooled over positions.
class SnapKvScores {
 public:
  SnapKvScores(InferenceModel& m, Evictor& ev, int P)
      : m_(m), ev_(ev), cfg_(m.config()), P_(P), layers_(gate_layers(cfg_)),
        acc_(static_cast<size_t>(cfg_.n_layers) * m.mask_heads() * P, 0.0f) {
    const int w = std::min(ev.options().snapkv_window, P);
    const int G = cfg_.lrkv() ? cfg_.n_heads : cfg_.n_heads / cfg_.kv_heads();
    m.set_attention_probe({P - w, P, /*sum=*/true,
                           [this, G](int layer, int head, const int32_t* pos, const float* s, int n) {
                             const int mh = cfg_.lrkv() ? 0 : head;
                             float* a = acc_.data() + (static_cast<size_t>(layer) * m_.mask_heads() + mh) * P_;
                             for (int i = 0; i < n; i++)
                               if (pos[i] >= 0 && pos[i] < P_) a[pos[i]] += s[i] / static_cast<float>(G);
                           }});
  }
  ~SnapKvScores() { m_.set_attention_probe({}); }
  void write() {
    const int M = m_.mask_heads(), half = ev_.options().snapkv_pool / 2;
    std::vector<float> folded(layers_.size() * M * static_cast<size_t>(P_), 0.0f);
    for (int l = 0; l < cfg_.n_layers; l++) {
      for (int target : kv_source_of_layer(cfg_, l).reads(l)) {
        const size_t si = std::find(layers_.begin(), layers_.end(), target) - layers_.begin();
        for (int m = 0; m < M; m++)
          for (int p = 0; p < P_; p++) {
            float& f = folded[(si * M + m) * P_ + p];
            f = std::max(f, acc_[(static_cast<size_t>(l) * M + m) * P_ + p]);
          }
      }
    }
    for (size_t si = 0; si < layers_.size(); si++)
      for (int m = 0; m < M; m++) {
        const float* f = folded.data() + (si * M + m) * P_;
        std::span<float> dst = ev_.scores(static_cast<int>(si), m);
        for (int p = 0; p < P_; p++) {
          float best = f[p];
          for (int q = std::max(0, p - half); q <= std::min(P_ - 1, p + half); q++) best = std::max(best, f[q]);
          dst[p] = best;
        }
      }
  }

 private:
  InferenceModel& m_;
  Evictor& ev_;
  const ModelConfig& cfg_;
  int P_;
  std::vector<int> layers_;
  std::vector<float> acc_;  // [layers, mask heads, P]
};
}  // namespace

CompressResult compress_context(InferenceModel& model, Evictor& ev, std::span<const int32_t> context,
                                GateModel* gates, const std::vector<float>* oracle) {
  const EvictionOptions& opt = ev.options();
  const ModelConfig& cfg = model.config();
  const int P = static_cast<int>(context.size()), M = model.mask_heads(), E = ev.entries_per_position();
  if (P < 1) throw std::invalid_argument("eviction: empty context");
  if (opt.chunk < 1) throw std::invalid_argument("eviction: chunk must be >= 1");
  if (P > model.capacity())
    throw std::length_error("context of " + std::to_string(P) + " tokens exceeds model.max_seq_len " +
                            std::to_string(model.capacity()));
  if (opt.policy == EvictPolicy::gates && !gates)
    throw std::invalid_argument("policy gates needs gates (--gates FILE)");
  if (opt.policy == EvictPolicy::kvzip && (!oracle || oracle->size() != static_cast<size_t>(E) * P))
    throw std::invalid_argument("policy kvzip needs the context's KVzip scores [" + std::to_string(E) +
                                ", " + std::to_string(P) + "]");
  for (int e = 0; e < E; e++) {
    std::span<float> s = ev.scores(e / M, e % M);
    Rng rng(derive_seed(opt.seed, kRandomPolicyPurpose, static_cast<uint64_t>(e)));
    for (int p = 0; p < P; p++) {
      if (opt.policy == EvictPolicy::kvzip) s[p] = (*oracle)[static_cast<size_t>(e) * P + p];
      else if (opt.policy == EvictPolicy::streaming) s[p] = static_cast<float>(p);
      else if (opt.policy == EvictPolicy::random) s[p] = static_cast<float>(rng.uniform());
    }
  }
  const std::vector<int> layers = gate_layers(cfg);
  CompressResult r;
  const auto t0 = Clock::now();
  model.reset();
  {
    // The gates score each chunk's new entries while the context is prefilled, and only then.
    struct ObserverScope {
      InferenceModel& m;
      ~ObserverScope() { m.set_hidden_observer({}); }
    } scope{model};
    if (opt.policy == EvictPolicy::gates)
      model.set_hidden_observer([&](int layer, const float* h, int pos0, int n) {
        const auto g0 = Clock::now();
        const int si = static_cast<int>(std::find(layers.begin(), layers.end(), layer) - layers.begin());
        const std::vector<float> s = gates->forward(layer, h, n);  // [n, M], on the host: synchronous
        for (int m = 0; m < M; m++) {
          std::span<float> dst = ev.scores(si, m);
          for (int i = 0; i < n; i++) dst[pos0 + i] = s[static_cast<size_t>(i) * M + m];
        }
        r.gate_seconds += seconds_since(g0);
      });
    std::unique_ptr<SnapKvScores> snap;
    if (opt.policy == EvictPolicy::snapkv) snap = std::make_unique<SnapKvScores>(model, ev, P);
    const bool every_chunk = opt.policy != EvictPolicy::full && opt.policy != EvictPolicy::snapkv;
    for (int i = 0; i < P; i += opt.chunk) {
      const int n = std::min(opt.chunk, P - i);
      r.last_logits = model.prefill(context.data() + i, n, false);
      if (every_chunk && ev.evict(i + n) > 0 && opt.compact) model.compact();
    }
    if (snap) {
      snap->write();
      if (ev.evict(P) > 0 && opt.compact) model.compact();
    }
  }
  model.ops().synchronize();
  r.seconds = seconds_since(t0);
  r.entries_total = static_cast<int64_t>(P) * E;
  r.entries_kept = ev.kept_entries(P);
  r.kv_bytes = model.kv_bytes();
  r.kv_bytes_kept = model.kv_bytes_kept();
  r.kv_alloc_bytes = model.kv_capacity_bytes();
  r.kv_peak_bytes = model.kv_peak_bytes();
  return r;
}

// ---- one context ----------------------------------------------------------------------------

EvictionResult evaluate_eviction(InferenceModel& model, const EvictionOptions& opt,
                                 std::span<const int32_t> context,
                                 std::span<const int32_t> continuation,
                                 std::span<const int32_t> prompt, GateModel* gates,
                                 const std::vector<float>* oracle) {
  const int P = static_cast<int>(context.size()), N = static_cast<int>(continuation.size()),
            Q = static_cast<int>(prompt.size()), cap = model.capacity();
  if (P < 1) throw std::invalid_argument("eviction eval: empty context");
  if (Q < 1) throw std::invalid_argument("eviction eval: the repeat prompt is empty");
  if (opt.chunk < 1) throw std::invalid_argument("eviction eval: chunk must be >= 1");
  if (P + N > cap || 2 * P + Q > cap)
    throw std::length_error("context of " + std::to_string(P) + " tokens: context + continuation (" +
                            std::to_string(P + N) + ") and context + prompt + context (" +
                            std::to_string(2 * P + Q) + ") must fit model.max_seq_len " +
                            std::to_string(cap));
  Evictor ev(model, opt);  // checks the keep ratio
  const CompressResult c = compress_context(model, ev, context, gates, oracle);
  const std::vector<float>& last = c.last_logits;
  EvictionResult r;
  r.entries_total = c.entries_total;
  r.entries_kept = c.entries_kept;
  r.kv_bytes = c.kv_bytes;
  r.kv_bytes_kept = c.kv_bytes_kept;

  if (N > 0) {
    r.continuation_loss = continuation_nll(model, last, continuation);
    r.continuation_tokens = N;
  }
  r.reconstruction_loss = reconstruct(model, prompt, context).nll;
  r.reconstruction_tokens = P;
  return r;
}

}  // namespace kvt

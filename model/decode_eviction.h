// model/decode_eviction.h — eviction while generating (docs/kvzip.md, "Decode-time eviction"):
// the hidden states of the new tokens are buffered as they pass (backend memory, grown as
// needed); every `every`
// tokens they are scored at once (the gates; or the position for streaming, uniform for random),
// and the evictor evicts down to its budget again over the whole cache, with its sinks and recent
// window (the reference keeps 4 sinks and the 128 newest), one threshold across layers and heads,
// then compacts. The context's entries keep the scores they had.
#pragma once

#include <cstdint>
#include <vector>

#include "model/eviction.h"
#include "model/gates.h"
#include "model/inference.h"

namespace kvt {

class DecodeEvictor {
 public:
  // Attaches to the model (its hidden observer) from position model.length() on. The evictor's
  // policy must be gates (then gates is required), streaming or random. Throws
  // std::invalid_argument otherwise.
  DecodeEvictor(InferenceModel& model, Evictor& ev, GateModel* gates, int every = 128);
  ~DecodeEvictor();
  DecodeEvictor(const DecodeEvictor&) = delete;
  DecodeEvictor& operator=(const DecodeEvictor&) = delete;

  // Call after each forward (a decode or a prefill): once `every` positions wait, scores them
  // and evicts. Returns the entries evicted now.
  int64_t step();
  int evictions() const { return evictions_; }       // rounds run
  double gate_seconds() const { return gate_seconds_; }

 private:
  InferenceModel& m_;
  Evictor& ev_;
  GateModel* gates_;
  void reserve(int rows);     // the buffer holds at least `rows` positions per layer
  int every_, start_, rows_;  // positions [start_, length()) wait; the buffer holds rows_
  std::vector<int> layers_, storage_of_;  // storage layers (gate_layers); per layer its index or -1
  Buffer<float> hidden_;  // [storage layers, rows_, C]
  int evictions_ = 0;
  double gate_seconds_ = 0;
};

}  // namespace kvt

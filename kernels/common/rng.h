// kernels/common/rng.h — a small, portable, seedable RNG (SplitMix64). Unlike std::mt19937 +
// std::normal_distribution, its streams are identical on every standard library, so an init or a
// data permutation is reproducible anywhere.
#pragma once

#include <cmath>
#include <cstdint>

namespace kvt {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : state_(seed) {}
  uint64_t state() const { return state_; }
  void set_state(uint64_t s) { state_ = s; }

  uint64_t next_u64() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // uniform in [0, 1) with 53 bits
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  // uniform integer in [0, n) (n > 0), rejection-free multiply-shift (bias < 2^-64 n)
  uint64_t below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next_u64()) * n) >> 64);
  }
  // standard normal (Box-Muller, one value per call)
  double normal() {
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  uint64_t state_;
};

// Derives an independent seed for a purpose (init, epoch permutation, ...) from a base seed.
inline uint64_t derive_seed(uint64_t base, uint64_t purpose, uint64_t index = 0) {
  Rng r(base ^ (purpose * 0xD1B54A32D192ED03ull) ^ (index * 0x9E3779B97F4A7C15ull));
  r.next_u64();
  return r.next_u64();
}

}  // namespace kvt

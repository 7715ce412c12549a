// Deterministic mutations of valid qcow2 images for the differential test: bit flips and
// byte sets aimed at the header, the L1/L2 entries, the refcount structures and compressed
// data, truncations, and mutations that know the format (an L2 offset moved onto another
// structure, reserved bits, the zero bit of version 2, compressed sector counts, subcluster
// bitmaps that contradict themselves, header fields set to the values at their limits).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "differential/qcow2_layout.h"

namespace qcowfs_test {

// A small deterministic generator (splitmix64): the same seed gives the same mutants with
// any compiler and standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  // Returns a value in [0, n) (0 when n is 0).
  uint64_t Below(uint64_t n) { return n ? Next() % n : 0; }
  // Returns true with probability percent/100.
  bool Chance(unsigned percent) { return Below(100) < percent; }

 private:
  uint64_t state_;
};

struct Mutant {
  std::vector<uint8_t> bytes;
  std::string description;  // what was changed, one clause per mutation
};

// Returns a mutant of `seed` (whose layout is `layout`) with one to three mutations, the
// same for the same rng_seed.
Mutant Mutate(std::span<const uint8_t> seed, const Qcow2Layout& layout, uint64_t rng_seed);

}  // namespace qcowfs_test

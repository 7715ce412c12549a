// Helpers the case builders share, and every case in the order the test instantiates
// them (the order gives each case its parameter index).
#include "crafted_cases.h"

#include <utility>

namespace qcowfs_test::crafted {

Built Done(const CraftedImage& im) { return {im.Build(), im.options().virtual_size / 512 * 512}; }

CraftedOptions Opt(uint32_t cluster_bits, uint64_t virtual_size) {
  CraftedOptions o;
  o.cluster_bits = cluster_bits;
  o.virtual_size = virtual_size;
  return o;
}

std::vector<uint8_t> Deflated(uint64_t size, uint64_t seed) {
  return Deflate(CompressibleBytes(size, seed));
}

const std::vector<Case>& AllCases() {
  static const std::vector<Case> all = [] {
    std::vector<Case> v;
    for (auto group : {SharingCases, RefcountCases, CompressionCases, LayoutCases, FormatCases,
                       TruncationCases, OverlapCases, RandomCases}) {
      for (Case& k : group()) v.push_back(std::move(k));
    }
    return v;
  }();
  return all;
}

}  // namespace qcowfs_test::crafted

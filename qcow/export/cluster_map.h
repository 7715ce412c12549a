// A set of cluster indices stored as sorted runs, with rank/select queries. Memory grows
// with the number of runs, never with the range the indices span.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace qcow {

class ClusterMap {
 public:
  // A run of `count` consecutive indices starting at `first`; `rank` is the number of
  // indices in the map below `first`.
  struct Run {
    uint64_t first;
    uint64_t count;
    uint64_t rank;
  };

  // Collects runs in any order, overlapping or not, and merges them on Build().
  class Builder {
   public:
    // Adds [first, first + count). Runs with count 0 are ignored.
    void Add(uint64_t first, uint64_t count);
    // Adds every cluster of 2^cluster_bits bytes that holds any byte of
    // [offset, offset + length).
    void AddBytes(uint64_t offset, uint64_t length, uint32_t cluster_bits);
    // Returns the map; the builder is left empty.
    ClusterMap Build();

   private:
    std::vector<Run> runs_;
    bool sorted_ = true;
  };

  ClusterMap() = default;

  // Returns the number of indices in the map.
  uint64_t size() const { return runs_.empty() ? 0 : runs_.back().rank + runs_.back().count; }
  // Returns the merged runs in increasing order; adjacent runs are never touching.
  std::span<const Run> runs() const { return runs_; }
  // Returns whether index i is in the map.
  bool Contains(uint64_t i) const;
  // Returns the number of indices in the map that are below i.
  uint64_t Rank(uint64_t i) const;
  // Returns the k-th smallest index (k < size()).
  uint64_t Select(uint64_t k) const;
  // Returns the position in runs() of the run holding the k-th index (k < size()).
  size_t RunOfRank(uint64_t k) const;
  // Returns the position of the first run that ends after i (runs().size() if none).
  size_t FirstRunEndingAfter(uint64_t i) const;
  // Returns the map of indices i / divisor for every index i in this map (e.g. the L2 tables
  // that data clusters need). Costs one pass over the runs.
  ClusterMap Coarsen(uint64_t divisor) const;
  // Returns the indices in a or b, and the indices in both. One pass over both.
  static ClusterMap Union(const ClusterMap& a, const ClusterMap& b);
  static ClusterMap Intersection(const ClusterMap& a, const ClusterMap& b);

 private:
  explicit ClusterMap(std::vector<Run> runs) : runs_(std::move(runs)) {}
  std::vector<Run> runs_;
};

}  // namespace qcow

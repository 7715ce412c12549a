// A set of byte ranges [start, end), merged on insert. Memory grows with the number of
// disjoint ranges.
#pragma once

#include <cstdint>
#include <functional>
#include <map>

namespace qcow {

class RangeSet {
 public:
  // Adds [start, end).
  void Insert(uint64_t start, uint64_t end);
  // Returns whether every byte of [start, end) is in the set.
  bool Covers(uint64_t start, uint64_t end) const;
  // Calls fn(start, end) for each maximal sub-range of [start, end) NOT in the set.
  void ForEachGap(uint64_t start, uint64_t end,
                  const std::function<void(uint64_t, uint64_t)>& fn) const;

 private:
  std::map<uint64_t, uint64_t> ranges_;  // start -> end, disjoint and not touching
};

}  // namespace qcow

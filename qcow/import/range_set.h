// A set of byte ranges [start, end), merged on insert. Memory grows with the number of
// disjoint ranges (memory_bytes() says how much).
#pragma once

#include <cstdint>
#include <functional>
#include <map>

namespace qcow {

class RangeSet {
 public:
  // Adds [start, end).
  void Insert(uint64_t start, uint64_t end);
  // Removes [start, end).
  void Erase(uint64_t start, uint64_t end);
  // Returns whether every byte of [start, end) is in the set.
  bool Covers(uint64_t start, uint64_t end) const;
  // Returns whether any byte of [start, end) is in the set.
  bool Overlaps(uint64_t start, uint64_t end) const;
  // Calls fn(start, end) for each maximal sub-range of [start, end) NOT in the set.
  void ForEachGap(uint64_t start, uint64_t end,
                  const std::function<void(uint64_t, uint64_t)>& fn) const;
  // Calls fn(start, end) for each maximal sub-range of [start, end) in the set.
  void ForEachIn(uint64_t start, uint64_t end,
                 const std::function<void(uint64_t, uint64_t)>& fn) const;
  // Returns the end of the range in the set that holds `start`, or `start` if none does.
  uint64_t CoveredUpTo(uint64_t start) const;
  // Returns the total number of bytes in the set.
  uint64_t bytes() const { return bytes_; }
  // Returns the end of the highest range, or 0 when empty.
  uint64_t end() const { return ranges_.empty() ? 0 : ranges_.rbegin()->second; }
  bool empty() const { return ranges_.empty(); }
  // Returns an estimate of the heap memory the set uses.
  uint64_t memory_bytes() const { return ranges_.size() * kNodeBytes; }

 private:
  // A std::map node of two uint64_t on a 64-bit libstdc++, with malloc's overhead.
  static constexpr uint64_t kNodeBytes = 64;
  std::map<uint64_t, uint64_t> ranges_;  // start -> end, disjoint and not touching
  uint64_t bytes_ = 0;
};

}  // namespace qcow

// Image bytes the decoder has used and no longer needs, kept a while longer in memory and
// pushed out oldest first. A structure named after they were decoded (a contrived image
// whose compressed data a later table shares with another structure) may still find them;
// what falls out is gone for good. The decoder counts this memory with its own.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <span>
#include <vector>

namespace qcow {

class RecentBytes {
 public:
  explicit RecentBytes(uint64_t capacity) : capacity_(capacity) {}

  // Keeps bytes at offset (replacing any held there); calls evicted(lo, hi) for each range
  // pushed out to make room.
  void Put(uint64_t offset, std::span<const uint8_t> bytes,
           const std::function<void(uint64_t, uint64_t)>& evicted);
  // Calls fn(offset, bytes) for every held piece of [start, end), in order.
  void Visit(uint64_t start, uint64_t end,
             const std::function<void(uint64_t, std::span<const uint8_t>)>& fn) const;
  // Removes every piece that overlaps [start, end), whole, calling fn(offset, bytes) for
  // each first (to keep them elsewhere).
  void Take(uint64_t start, uint64_t end,
            const std::function<void(uint64_t, std::span<const uint8_t>)>& fn);
  // Forgets everything, calling evicted(lo, hi) for each range.
  void Clear(const std::function<void(uint64_t, uint64_t)>& evicted);
  uint64_t memory_bytes() const { return bytes_ + pieces_.size() * kPieceOverhead; }

 private:
  static constexpr uint64_t kPieceOverhead = 128;
  void Erase(uint64_t start, uint64_t end);

  uint64_t capacity_;
  uint64_t bytes_ = 0;
  std::map<uint64_t, std::vector<uint8_t>> pieces_;  // disjoint
  std::deque<uint64_t> order_;                       // piece offsets, oldest first
};

}  // namespace qcow

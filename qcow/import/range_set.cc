#include "qcow/import/range_set.h"

#include <algorithm>

namespace qcow {

void RangeSet::Insert(uint64_t start, uint64_t end) {
  if (start >= end) return;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin() && std::prev(it)->second >= start) --it;
  while (it != ranges_.end() && it->first <= end) {
    start = std::min(start, it->first);
    end = std::max(end, it->second);
    bytes_ -= it->second - it->first;
    it = ranges_.erase(it);
  }
  ranges_.emplace(start, end);
  bytes_ += end - start;
}

void RangeSet::Erase(uint64_t start, uint64_t end) {
  if (start >= end) return;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin() && std::prev(it)->second > start) --it;
  while (it != ranges_.end() && it->first < end) {
    const uint64_t a = it->first, b = it->second;
    bytes_ -= b - a;
    it = ranges_.erase(it);
    if (a < start) {
      ranges_.emplace(a, start);
      bytes_ += start - a;
    }
    if (b > end) {
      ranges_.emplace(end, b);
      bytes_ += b - end;
      break;
    }
  }
}

bool RangeSet::Covers(uint64_t start, uint64_t end) const {
  if (start >= end) return true;
  auto it = ranges_.upper_bound(start);
  if (it == ranges_.begin()) return false;
  --it;
  return it->first <= start && it->second >= end;
}

bool RangeSet::Overlaps(uint64_t start, uint64_t end) const {
  if (start >= end) return false;
  auto it = ranges_.lower_bound(end);  // first range starting at or after end
  if (it == ranges_.begin()) return false;
  return std::prev(it)->second > start;
}

void RangeSet::ForEachGap(uint64_t start, uint64_t end,
                          const std::function<void(uint64_t, uint64_t)>& fn) const {
  uint64_t pos = start;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin() && std::prev(it)->second > start) --it;
  for (; it != ranges_.end() && it->first < end && pos < end; ++it) {
    if (it->first > pos) fn(pos, it->first);
    pos = std::max(pos, it->second);
  }
  if (pos < end) fn(pos, end);
}

void RangeSet::ForEachIn(uint64_t start, uint64_t end,
                         const std::function<void(uint64_t, uint64_t)>& fn) const {
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin() && std::prev(it)->second > start) --it;
  for (; it != ranges_.end() && it->first < end; ++it) {
    const uint64_t lo = std::max(start, it->first), hi = std::min(end, it->second);
    if (lo < hi) fn(lo, hi);
  }
}

uint64_t RangeSet::CoveredUpTo(uint64_t start) const {
  auto it = ranges_.upper_bound(start);
  if (it == ranges_.begin()) return start;
  --it;
  return it->second > start ? it->second : start;
}

}  // namespace qcow

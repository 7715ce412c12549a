#include "qcow/range_set.h"

#include <algorithm>

namespace qcow {

void RangeSet::Insert(uint64_t start, uint64_t end) {
  if (start >= end) return;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin() && std::prev(it)->second >= start) --it;
  while (it != ranges_.end() && it->first <= end) {
    start = std::min(start, it->first);
    end = std::max(end, it->second);
    it = ranges_.erase(it);
  }
  ranges_.emplace(start, end);
}

bool RangeSet::Covers(uint64_t start, uint64_t end) const {
  if (start >= end) return true;
  auto it = ranges_.upper_bound(start);
  if (it == ranges_.begin()) return false;
  --it;
  return it->first <= start && it->second >= end;
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

}  // namespace qcow

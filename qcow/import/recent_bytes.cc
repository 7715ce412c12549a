#include "qcow/import/recent_bytes.h"

#include <algorithm>

namespace qcow {

void RecentBytes::Erase(uint64_t start, uint64_t end) {
  auto it = pieces_.upper_bound(start);
  if (it != pieces_.begin() && std::prev(it)->first + std::prev(it)->second.size() > start) --it;
  while (it != pieces_.end() && it->first < end) {
    bytes_ -= it->second.size();
    it = pieces_.erase(it);  // its offset stays in order_ and is skipped when it comes up
  }
}

void RecentBytes::Put(uint64_t offset, std::span<const uint8_t> bytes,
                      const std::function<void(uint64_t, uint64_t)>& evicted) {
  if (bytes.empty()) return;
  Erase(offset, offset + bytes.size());
  if (bytes.size() > capacity_) return evicted(offset, offset + bytes.size());
  while (bytes_ + bytes.size() > capacity_ && !order_.empty()) {
    const uint64_t oldest = order_.front();
    order_.pop_front();
    auto it = pieces_.find(oldest);
    if (it == pieces_.end()) continue;
    evicted(it->first, it->first + it->second.size());
    bytes_ -= it->second.size();
    pieces_.erase(it);
  }
  pieces_.emplace(offset, std::vector<uint8_t>(bytes.begin(), bytes.end()));
  order_.push_back(offset);
  bytes_ += bytes.size();
}

void RecentBytes::Visit(uint64_t start, uint64_t end,
                        const std::function<void(uint64_t, std::span<const uint8_t>)>& fn) const {
  auto it = pieces_.upper_bound(start);
  if (it != pieces_.begin() && std::prev(it)->first + std::prev(it)->second.size() > start) --it;
  for (; it != pieces_.end() && it->first < end; ++it) {
    const uint64_t lo = std::max(start, it->first);
    const uint64_t hi = std::min(end, it->first + it->second.size());
    if (lo < hi) fn(lo, std::span(it->second).subspan(lo - it->first, hi - lo));
  }
}

void RecentBytes::Take(uint64_t start, uint64_t end,
                       const std::function<void(uint64_t, std::span<const uint8_t>)>& fn) {
  auto it = pieces_.upper_bound(start);
  if (it != pieces_.begin() && std::prev(it)->first + std::prev(it)->second.size() > start) --it;
  while (it != pieces_.end() && it->first < end) {
    fn(it->first, it->second);
    bytes_ -= it->second.size();
    it = pieces_.erase(it);
  }
}

void RecentBytes::Clear(const std::function<void(uint64_t, uint64_t)>& evicted) {
  for (const auto& [off, b] : pieces_) evicted(off, off + b.size());
  pieces_.clear();
  order_.clear();
  bytes_ = 0;
}

}  // namespace qcow

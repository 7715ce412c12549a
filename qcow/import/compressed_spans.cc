#include "qcow/import/compressed_spans.h"

#include <algorithm>

namespace qcow {
namespace {
// A std::map node with its vector, with malloc's overhead.
constexpr uint64_t kSpanNodeBytes = 128;
}  // namespace

bool CompressedSpans::Add(const Key& span, uint64_t guest) {
  longest_ = std::max(longest_, span.second - span.first);
  auto [it, added] = spans_.try_emplace(span);
  it->second.guests.push_back(guest);
  ++guests_;
  return added;
}

std::vector<uint64_t> CompressedSpans::Remove(const Key& span) {
  auto node = spans_.extract(span);
  guests_ -= node.mapped().guests.size();
  return std::move(node.mapped().guests);
}

std::vector<CompressedSpans::Key> CompressedSpans::Overlapping(uint64_t a, uint64_t b) const {
  std::vector<Key> out;
  // No span starts more than longest_ bytes before a byte it holds.
  for (auto it = spans_.lower_bound({a > longest_ ? a - longest_ : 0, 0});
       it != spans_.end() && it->first.first < b; ++it) {
    if (it->first.second > a) out.push_back(it->first);
  }
  return out;
}

void CompressedSpans::ForEach(const std::function<void(const Key&)>& fn) const {
  for (const auto& [span, s] : spans_) fn(span);
}

uint64_t CompressedSpans::memory_bytes() const {
  return spans_.size() * kSpanNodeBytes + guests_ * sizeof(uint64_t);
}

}  // namespace qcow

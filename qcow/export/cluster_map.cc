#include "qcow/export/cluster_map.h"

#include <algorithm>
#include <cassert>

namespace qcow {

void ClusterMap::Builder::Add(uint64_t first, uint64_t count) {
  if (count == 0) return;
  if (!runs_.empty()) {
    Run& last = runs_.back();
    if (first >= last.first && first <= last.first + last.count) {
      // Overlaps or touches the last run: extend it in place (the common, sorted case).
      last.count = std::max(last.first + last.count, first + count) - last.first;
      return;
    }
    if (first < last.first) sorted_ = false;
  }
  runs_.push_back({first, count, 0});
}

void ClusterMap::Builder::AddBytes(uint64_t offset, uint64_t length, uint32_t cluster_bits) {
  if (length == 0) return;
  const uint64_t first = offset >> cluster_bits;
  const uint64_t last = (offset + length - 1) >> cluster_bits;
  Add(first, last - first + 1);
}

ClusterMap ClusterMap::Builder::Build() {
  std::vector<Run> in = std::move(runs_);
  runs_.clear();
  if (!sorted_) {
    std::sort(in.begin(), in.end(), [](const Run& a, const Run& b) { return a.first < b.first; });
  }
  sorted_ = true;
  std::vector<Run> out;
  out.reserve(in.size());
  for (const Run& r : in) {
    if (!out.empty() && r.first <= out.back().first + out.back().count) {
      Run& last = out.back();
      last.count = std::max(last.first + last.count, r.first + r.count) - last.first;
    } else {
      out.push_back(r);
    }
  }
  uint64_t rank = 0;
  for (Run& r : out) {
    r.rank = rank;
    rank += r.count;
  }
  out.shrink_to_fit();
  return ClusterMap(std::move(out));
}

size_t ClusterMap::FirstRunEndingAfter(uint64_t i) const {
  auto it = std::upper_bound(runs_.begin(), runs_.end(), i,
                             [](uint64_t v, const Run& r) { return v < r.first + r.count; });
  return static_cast<size_t>(it - runs_.begin());
}

bool ClusterMap::Contains(uint64_t i) const {
  size_t r = FirstRunEndingAfter(i);
  return r < runs_.size() && runs_[r].first <= i;
}

uint64_t ClusterMap::Rank(uint64_t i) const {
  size_t r = FirstRunEndingAfter(i);
  if (r == runs_.size()) return size();
  const Run& run = runs_[r];
  return run.rank + (i > run.first ? i - run.first : 0);
}

size_t ClusterMap::RunOfRank(uint64_t k) const {
  assert(k < size());
  auto it = std::upper_bound(runs_.begin(), runs_.end(), k,
                             [](uint64_t v, const Run& r) { return v < r.rank; });
  return static_cast<size_t>(it - runs_.begin()) - 1;
}

uint64_t ClusterMap::Select(uint64_t k) const {
  const Run& run = runs_[RunOfRank(k)];
  return run.first + (k - run.rank);
}

ClusterMap ClusterMap::Coarsen(uint64_t divisor) const {
  Builder b;
  for (const Run& r : runs_) {
    uint64_t lo = r.first / divisor, hi = (r.first + r.count - 1) / divisor;
    b.Add(lo, hi - lo + 1);
  }
  return b.Build();
}

ClusterMap ClusterMap::Union(const ClusterMap& a, const ClusterMap& b) {
  Builder out;
  size_t i = 0, j = 0;
  while (i < a.runs_.size() || j < b.runs_.size()) {
    const bool take_a =
        j == b.runs_.size() || (i < a.runs_.size() && a.runs_[i].first <= b.runs_[j].first);
    const Run& r = take_a ? a.runs_[i++] : b.runs_[j++];
    out.Add(r.first, r.count);
  }
  return out.Build();
}

ClusterMap ClusterMap::Intersection(const ClusterMap& a, const ClusterMap& b) {
  Builder out;
  size_t i = 0, j = 0;
  while (i < a.runs_.size() && j < b.runs_.size()) {
    const Run &x = a.runs_[i], &y = b.runs_[j];
    const uint64_t lo = std::max(x.first, y.first);
    const uint64_t hi = std::min(x.first + x.count, y.first + y.count);
    if (lo < hi) out.Add(lo, hi - lo);
    if (x.first + x.count < y.first + y.count) {
      ++i;
    } else {
      ++j;
    }
  }
  return out.Build();
}

}  // namespace qcow

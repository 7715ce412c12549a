#include "qcow/import/run_index.h"

#include <algorithm>
#include <cstdint>
#include <set>

namespace qcow {
namespace {

// Chunks split above this many segments; a std::map node of bookkeeping per chunk.
constexpr size_t kMaxChunk = 512;
constexpr uint64_t kChunkOverhead = 96;

}  // namespace

RunIndex::Pos RunIndex::Seek(uint64_t host) {
  if (chunks_.empty()) return {chunks_.end(), 0};
  auto c = chunks_.upper_bound({host, UINT64_MAX});
  if (c != chunks_.begin()) --c;
  auto& v = c->second;
  size_t i = std::partition_point(v.begin(), v.end(),
                                  [&](const Segment& s) { return s.host + s.length <= host; }) -
             v.begin();
  // Identical duplicates may straddle a chunk boundary: step back over them.
  for (;;) {
    if (i > 0) {
      if (c->second[i - 1].host + c->second[i - 1].length > host) {
        --i;
        continue;
      }
      break;
    }
    if (c == chunks_.begin()) break;
    auto prev = std::prev(c);
    const Segment& last = prev->second.back();
    if (last.host + last.length <= host) break;
    c = prev;
    i = c->second.size() - 1;
  }
  if (i == c->second.size()) {
    ++c;
    i = 0;
  }
  return {c, i};
}

void RunIndex::Rekey(Chunks::iterator chunk) {
  if (chunk->second.empty()) return;
  const Key key{chunk->second.front().host, chunk->second.front().guest};
  if (chunk->first == key) return;
  auto node = chunks_.extract(chunk);
  node.key() = key;
  chunks_.insert(std::move(node));
}

void RunIndex::Insert(const Segment& s) {
  ++count_;
  if (chunks_.empty()) {
    chunks_[{s.host, s.guest}].push_back(s);
    memory_ += kChunkOverhead + chunks_.begin()->second.capacity() * sizeof(Segment);
    return;
  }
  auto c = chunks_.upper_bound({s.host, s.guest});
  if (c != chunks_.begin()) --c;
  auto& v = c->second;
  auto at = std::upper_bound(v.begin(), v.end(), s, [](const Segment& x, const Segment& y) {
    return x.host != y.host ? x.host < y.host : x.guest < y.guest;
  });
  const uint64_t before = v.capacity();
  v.insert(at, s);
  memory_ += (v.capacity() - before) * sizeof(Segment);
  if (v.size() > kMaxChunk) {
    const uint64_t old = v.capacity();
    std::vector<Segment> upper(v.begin() + kMaxChunk / 2, v.end());
    v.erase(v.begin() + kMaxChunk / 2, v.end());
    v.shrink_to_fit();
    memory_ = memory_ - old * sizeof(Segment) + v.capacity() * sizeof(Segment) + kChunkOverhead +
              upper.capacity() * sizeof(Segment);
    const Key key{upper.front().host, upper.front().guest};
    chunks_.emplace(key, std::move(upper));
  }
  Rekey(c);
}

void RunIndex::Erase(Pos p) {
  --count_;
  auto& v = p.chunk->second;
  v.erase(v.begin() + static_cast<std::ptrdiff_t>(p.index));
  if (v.empty()) {
    memory_ -= kChunkOverhead + v.capacity() * sizeof(Segment);
    chunks_.erase(p.chunk);
    return;
  }
  Rekey(p.chunk);
}

void RunIndex::Add(uint64_t host, uint64_t guest, uint64_t length) {
  if (length == 0) return;
  const uint64_t end = host + length;
  if (!Overlaps(host, end)) {
    // The common case: a new range, often continuing the one before it in both host and
    // guest order (a sequentially written image), which then just grows.
    Pos p = Seek(host == 0 ? 0 : host - 1);
    if (p.chunk != chunks_.end()) {
      Segment& s = p.chunk->second[p.index];
      const bool alone = p.index + 1 < p.chunk->second.size()
                             ? p.chunk->second[p.index + 1].host != s.host
                             : std::next(p.chunk) == chunks_.end() ||
                                   std::next(p.chunk)->second.front().host != s.host;
      const bool first = p.index > 0 ? p.chunk->second[p.index - 1].host != s.host
                                     : p.chunk == chunks_.begin() ||
                                           std::prev(p.chunk)->second.back().host != s.host;
      if (s.host + s.length == host && s.guest + s.length == guest && alone && first) {
        s.length += length;
        return;
      }
    }
    Insert({host, length, guest});
    return;
  }
  // The same range as segments already there (a cluster shared whole, the usual case):
  // ranges are disjoint or identical, so all that overlap it are that range too.
  if (Pos p = Seek(host); p.chunk != chunks_.end() && p.chunk->second[p.index].host == host &&
                          p.chunk->second[p.index].length == length) {
    Insert({host, length, guest});
    return;
  }
  // Shared host bytes: take out every segment overlapping the new one, cut them all at each
  // other's boundaries and put the pieces back, so that ranges stay disjoint or identical.
  std::vector<Segment> taken;
  for (Pos p = Seek(host); p.chunk != chunks_.end();) {
    const Segment s = p.chunk->second[p.index];
    if (s.host >= end) break;
    taken.push_back(s);
    Erase(p);
    p = Seek(host);
  }
  taken.push_back({host, length, guest});
  std::set<uint64_t> cuts;
  for (const Segment& s : taken) cuts.insert({s.host, s.host + s.length});
  for (const Segment& s : taken) {
    for (auto it = cuts.upper_bound(s.host); it != cuts.end() && *it <= s.host + s.length; ++it) {
      const uint64_t lo = *std::prev(it) < s.host ? s.host : *std::prev(it);
      Insert({lo, *it - lo, s.guest + (lo - s.host)});
    }
  }
}

void RunIndex::ForEach(uint64_t a, uint64_t b,
                       const std::function<void(uint64_t, uint64_t, uint64_t)>& fn) const {
  if (a >= b) return;
  Pos p = const_cast<RunIndex*>(this)->Seek(a);
  auto c = p.chunk;
  size_t i = p.index;
  for (; c != chunks_.end(); ++c, i = 0) {
    for (; i < c->second.size(); ++i) {
      const Segment& s = c->second[i];
      if (s.host >= b) return;
      const uint64_t lo = std::max(a, s.host), hi = std::min(b, s.host + s.length);
      if (lo < hi) fn(lo, hi, s.guest + (lo - s.host));
    }
  }
}

void RunIndex::ForAll(const std::function<void(uint64_t, uint64_t, uint64_t)>& fn) const {
  for (const auto& [key, v] : chunks_) {
    for (const Segment& s : v) fn(s.host, s.guest, s.length);
  }
}

bool RunIndex::Overlaps(uint64_t a, uint64_t b) const {
  if (a >= b) return false;
  Pos p = const_cast<RunIndex*>(this)->Seek(a);
  return p.chunk != chunks_.end() && p.chunk->second[p.index].host < b;
}

}  // namespace qcow

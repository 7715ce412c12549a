// Where the data clusters of an image go while it is decoded: host byte ranges of the image
// file mapped to guest ranges of the disk. A host range that several L2 entries name (a
// shared cluster) maps to several guest ranges. Kept compact, as sorted segments of 24
// bytes in chunks, with contiguous clusters merged into one segment, because fragmented
// images have a segment per cluster.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

namespace qcow {

class RunIndex {
 public:
  // Maps host [host, host + length) to guest [guest, guest + length).
  void Add(uint64_t host, uint64_t guest, uint64_t length);
  // Calls fn(host_lo, host_hi, guest_lo) for every guest range mapped from host bytes in
  // [a, b), clipped to [a, b), in host order; shared host bytes are reported once per guest.
  void ForEach(uint64_t a, uint64_t b,
               const std::function<void(uint64_t, uint64_t, uint64_t)>& fn) const;
  // Calls fn(host, guest, length) for every segment.
  void ForAll(const std::function<void(uint64_t, uint64_t, uint64_t)>& fn) const;
  // Returns whether any host byte of [a, b) is mapped.
  bool Overlaps(uint64_t a, uint64_t b) const;
  // Returns an estimate of the heap memory used.
  uint64_t memory_bytes() const { return memory_; }
  uint64_t segments() const { return count_; }

 private:
  struct Segment {
    uint64_t host, length, guest;
  };
  // Keyed by the first segment's (host, guest): unique, although segments of a shared
  // cluster have the same host.
  using Key = std::pair<uint64_t, uint64_t>;
  using Chunks = std::map<Key, std::vector<Segment>>;
  struct Pos {
    Chunks::iterator chunk;
    size_t index;
  };

  // Returns the position of the first segment (in host order) that ends after `host`;
  // chunk is chunks_.end() when there is none. Segments are pairwise disjoint or identical
  // in their host ranges, so their ends grow with their starts.
  Pos Seek(uint64_t host);
  void Insert(const Segment& s);
  void Erase(Pos p);
  void Rekey(Chunks::iterator chunk);

  Chunks chunks_;
  uint64_t count_ = 0;
  uint64_t memory_ = 0;
};

}  // namespace qcow

// The compressed clusters the decoder waits on: each span of image bytes [start, end) that
// a compressed L2 descriptor names, with the guest offsets that name it (identical
// descriptors share one decode) and whether it is being decompressed. Found by any byte
// range they overlap, in O(log n) however long the spans; memory counted per span and per
// guest offset.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

namespace qcow {

class CompressedSpans {
 public:
  using Key = std::pair<uint64_t, uint64_t>;  // host [start, end) of the span

  // Adds a descriptor of `span` for guest offset `guest`; returns whether the span is new.
  bool Add(const Key& span, uint64_t guest);
  // Returns whether `span` is waiting (added and not removed).
  bool Waiting(const Key& span) const { return spans_.count(span) != 0; }
  // Returns the guest offsets that name a waiting span, the first one first.
  const std::vector<uint64_t>& Guests(const Key& span) const { return spans_.at(span).guests; }
  bool InFlight(const Key& span) const { return spans_.at(span).in_flight; }
  void SetInFlight(const Key& span, bool in_flight) { spans_.at(span).in_flight = in_flight; }
  // Removes a waiting span; returns the guest offsets that named it.
  std::vector<uint64_t> Remove(const Key& span);
  // Returns the waiting spans that overlap [a, b), in order.
  std::vector<Key> Overlapping(uint64_t a, uint64_t b) const;
  // Calls fn(span) for every waiting span, in order.
  void ForEach(const std::function<void(const Key&)>& fn) const;
  bool empty() const { return spans_.empty(); }
  // Returns the first waiting span; only when !empty().
  const Key& first() const { return spans_.begin()->first; }
  // Returns an estimate of the heap memory used.
  uint64_t memory_bytes() const;

 private:
  struct Span {
    std::vector<uint64_t> guests;
    bool in_flight = false;
  };
  std::map<Key, Span> spans_;
  uint64_t longest_ = 0;  // the longest span ever added: where a search for overlaps begins
  uint64_t guests_ = 0;   // guest offsets held, over all spans
};

}  // namespace qcow

// The decoder's first stage: what an L1 or L2 table claims of the guest disk, entry by
// entry, decoded by qcow/format/l2_entry.h and clipped to the disk. Pure code: the decoder
// turns claims into work (tables to wait for, data runs to route, compressed spans to
// decompress, ranges to zero).
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "qcow/format/image_header.h"

namespace qcow {

struct Claim {
  enum class Kind {
    kL2Table,      // L1: the L2 table at `host` maps [guest, guest + length)
    kData,         // bytes at `host` in the image
    kZero,         // reads as zeros
    kUnallocated,  // left to the backing file (zeros without one)
    kCompressed,   // the cluster, compressed in [host, host_end)
  };
  Kind kind;
  uint64_t guest;   // first guest byte
  uint64_t length;  // guest bytes, clipped to the virtual size
  uint64_t host;    // see kind; 0 for zero and unallocated ranges
  // Compressed: the end of its span. Otherwise the end of the host cluster the entry names
  // (a data cluster, a preallocated zero or unallocated one, an L2 table), 0 for none.
  uint64_t host_end;
};

using ClaimFn = std::function<void(const Claim&)>;

// Calls fn for what each L1 entry claims, in guest order: an L2 table, or an unallocated
// range. Entries past the disk are not read. Throws FormatError naming the entry.
void ClaimL1(const ImageInfo& info, std::span<const uint8_t> l1, const ClaimFn& fn);

// Calls fn for what each entry of the L2 table named by L1 entry l1_index claims, in guest
// order (adjacent subclusters of one kind merged). Throws FormatError naming the first bad
// entry; the claims of the entries before it were made.
void ClaimL2(const ImageInfo& info, std::span<const uint8_t> l2, uint64_t l1_index,
             const ClaimFn& fn);

}  // namespace qcow

// One L2 table entry decoded into what each byte range of its guest cluster reads as
// (qcow2.txt, "Cluster mapping", "Extended L2 Entries", "Compressed Clusters Descriptor"),
// with QEMU's reading of it (block/qcow2.h, qcow2_get_subcluster_type).
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "qcow/format/image_header.h"

namespace qcow {

struct L2Piece {
  enum class Kind {
    kData,         // bytes at `host` in the image file
    kZero,         // reads as zeros, whatever the backing file holds
    kUnallocated,  // reads from the backing file (zeros without one)
    kCompressed,   // the whole cluster, compressed at [host, host_end)
  };
  Kind kind;
  uint64_t offset;  // from the start of the guest cluster
  uint64_t length;
  // Data: the host offset of the piece's first byte. Zero and unallocated: the same when
  // the cluster has a host cluster (a preallocated zero cluster, a partly allocated
  // extended-L2 cluster), else 0. Compressed: the first byte of the compressed data.
  uint64_t host;
  uint64_t host_end;  // compressed: the end of the sectors the descriptor names
};

// The pieces of one cluster, in order; adjacent subclusters of one kind are merged.
struct L2Pieces {
  std::array<L2Piece, 32> piece;
  unsigned count = 0;
  std::span<const L2Piece> view() const { return {piece.data(), count}; }
};

// Decodes the entry of a cluster: w0 is the 64-bit descriptor, w1 the subcluster bitmap
// (extended L2 only, else 0). Throws FormatError with what is wrong, to be prefixed with
// where the entry is ("has the zero bit set, which version 2 does not allow").
L2Pieces DecodeL2Entry(const ImageInfo& info, uint64_t w0, uint64_t w1);

// Returns the L2 table offset an L1 entry names (0: none). Throws FormatError, to be
// prefixed with where the entry is, when reserved bits are set or it is not aligned.
uint64_t DecodeL1Entry(const ImageInfo& info, uint64_t entry);

}  // namespace qcow

#include "qcow/format/l2_entry.h"

#include <string>

#include "qcow/format/errors.h"
#include "qcow/format/format.h"

namespace qcow {
namespace {

// Reserved bits (qcow2.txt, "Cluster mapping"): L1 bits 0-8 and 56-62; standard L2 bits
// 1-8 and 56-61. QEMU ignores them when reading but `qemu-img check` reports them.
constexpr uint64_t kL1Reserved = 0x7f000000000001ffull;
constexpr uint64_t kL2StdReserved = 0x3f000000000001feull;
// "Extended L2 Entries": 32 subclusters, allocation bits 0-31 and zero bits 32-63.
constexpr unsigned kSubclusters = 32;

void Add(L2Pieces& out, L2Piece::Kind kind, uint64_t offset, uint64_t length, uint64_t host) {
  if (out.count > 0) {
    L2Piece& last = out.piece[out.count - 1];
    const bool contiguous_host =
        (last.host == 0 && host == 0) || (last.host != 0 && last.host + last.length == host);
    if (last.kind == kind && last.offset + last.length == offset && contiguous_host) {
      last.length += length;
      return;
    }
  }
  out.piece[out.count++] = {kind, offset, length, host, 0};
}

}  // namespace

uint64_t DecodeL1Entry(const ImageInfo& info, uint64_t e) {
  if (e & kL1Reserved) {
    Refuse("is " + Hex(e) + "; its reserved bits (0-8, 56-62) must be zero");
  }
  const uint64_t off = e & kL1OffsetMask;
  if (off % info.cluster_size != 0) {
    Refuse("points to an L2 table at " + Hex(off) + ", not aligned to the " +
           std::to_string(info.cluster_size) + "-byte cluster size");
  }
  return off;
}

L2Pieces DecodeL2Entry(const ImageInfo& info, uint64_t w0, uint64_t w1) {
  const uint64_t c = info.cluster_size;
  const uint32_t bits = info.header.cluster_bits;
  L2Pieces out;
  if (w0 & kOflagCompressed) {
    // Compressed Clusters Descriptor: x = 62 - (cluster_bits - 8).
    const unsigned x = 62 - (bits - 8);
    const uint64_t host = w0 & ((uint64_t{1} << x) - 1);
    const uint64_t extra_sectors = (w0 >> x) & ((uint64_t{1} << (bits - 8)) - 1);
    if (host >= kMaxHostOffset) Refuse("has a compressed offset beyond 2^56");
    if (w1 != 0) Refuse("is compressed but its subcluster bitmap is not zero");
    const uint64_t end = (host / kSectorSize + 1 + extra_sectors) * kSectorSize;
    out.piece[out.count++] = {L2Piece::Kind::kCompressed, 0, c, host, end};
    return out;
  }
  if (w0 & kL2StdReserved) {
    Refuse("is " + Hex(w0) + "; its reserved bits (1-8, 56-61) must be zero");
  }
  const uint64_t off = w0 & kL2OffsetMask;
  if (off % c != 0) {
    Refuse("points to data at " + Hex(off) + ", not aligned to the cluster size");
  }
  if (!info.extended_l2) {
    // QEMU reads the zero bit only without subclusters; version 2 has no zero clusters.
    const bool zero_flag = w0 & kOflagZero;
    if (zero_flag && info.header.version == 2) {
      Refuse("has the zero bit set, which version 2 does not allow");
    }
    const auto kind = zero_flag  ? L2Piece::Kind::kZero
                      : off != 0 ? L2Piece::Kind::kData
                                 : L2Piece::Kind::kUnallocated;
    Add(out, kind, 0, c, off);
    return out;
  }
  const uint32_t alloc = static_cast<uint32_t>(w1), zeros = static_cast<uint32_t>(w1 >> 32);
  if (alloc & zeros) {
    Refuse("has subcluster bitmap " + Hex(w1) + ": a subcluster cannot be both allocated and zero");
  }
  if (alloc && off == 0) Refuse("has allocated subclusters but no host cluster");
  const uint64_t sc = c / kSubclusters;
  for (unsigned k = 0; k < kSubclusters; ++k) {
    const auto kind = alloc & (1u << k)   ? L2Piece::Kind::kData
                      : zeros & (1u << k) ? L2Piece::Kind::kZero
                                          : L2Piece::Kind::kUnallocated;
    Add(out, kind, k * sc, sc, off ? off + k * sc : 0);
  }
  return out;
}

}  // namespace qcow

#include "qcow/import/table_claims.h"

#include <algorithm>
#include <string>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/format/l2_entry.h"

namespace qcow {

void ClaimL1(const ImageInfo& info, std::span<const uint8_t> l1, const ClaimFn& fn) {
  const uint64_t v = info.virtual_size, c = info.cluster_size;
  const uint64_t span = c * info.l2_entries;
  for (uint64_t i = 0; i < l1.size() / kTableEntrySize; ++i) {
    const uint64_t guest = i * span;
    if (guest >= v) break;  // entries past the disk describe nothing of it
    uint64_t off = 0;
    try {
      off = DecodeL1Entry(info, LoadBe64(&l1[i * kTableEntrySize]));
    } catch (const FormatError& e) {
      Refuse("L1 entry " + std::to_string(i) + " " + e.what());
    }
    const uint64_t n = std::min(span, v - guest);
    if (off == 0) {
      fn({Claim::Kind::kUnallocated, guest, n, 0, 0});
    } else {
      fn({Claim::Kind::kL2Table, guest, n, off, off + c});
    }
  }
}

void ClaimL2(const ImageInfo& info, std::span<const uint8_t> l2, uint64_t l1_index,
             const ClaimFn& fn) {
  const uint64_t c = info.cluster_size, v = info.virtual_size;
  for (uint64_t j = 0; j < info.l2_entries; ++j) {
    const uint64_t guest = (l1_index * info.l2_entries + j) * c;
    if (guest >= v) break;
    const uint8_t* p = &l2[j * info.l2_entry_size];
    L2Pieces pieces;
    try {
      pieces = DecodeL2Entry(info, LoadBe64(p), info.extended_l2 ? LoadBe64(p + 8) : 0);
    } catch (const FormatError& e) {
      Refuse("L2 entry " + std::to_string(j) + " of L1 entry " + std::to_string(l1_index) +
             " (guest offset " + std::to_string(guest) + ") " + e.what());
    }
    for (const L2Piece& piece : pieces.view()) {
      const uint64_t g = guest + piece.offset;
      if (g >= v) break;
      Claim claim{Claim::Kind::kData, g, std::min(piece.length, v - g), 0, 0};
      switch (piece.kind) {
        case L2Piece::Kind::kCompressed:
          claim.kind = Claim::Kind::kCompressed;
          claim.host = piece.host;
          claim.host_end = piece.host_end;
          fn(claim);
          continue;
        case L2Piece::Kind::kData:
          claim.host = piece.host;
          break;
        case L2Piece::Kind::kZero:
          claim.kind = Claim::Kind::kZero;
          break;
        case L2Piece::Kind::kUnallocated:
          claim.kind = Claim::Kind::kUnallocated;
          break;
      }
      // A host cluster (data, or a preallocated zero or unallocated one) is part of the file.
      if (piece.host != 0) claim.host_end = piece.host - piece.offset + c;
      fn(claim);
    }
  }
}

}  // namespace qcow

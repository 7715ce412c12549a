#include "differential/qcow2_layout.h"

#include <algorithm>
#include <stdexcept>

namespace qcowfs_test {
namespace {

// qcow2.txt, "Header".
constexpr HeaderField kFields[] = {
    {"magic", 0, 4},
    {"version", 4, 4},
    {"backing_file_offset", 8, 8},
    {"backing_file_size", 16, 4},
    {"cluster_bits", 20, 4},
    {"size", 24, 8},
    {"crypt_method", 32, 4},
    {"l1_size", 36, 4},
    {"l1_table_offset", 40, 8},
    {"refcount_table_offset", 48, 8},
    {"refcount_table_clusters", 56, 4},
    {"nb_snapshots", 60, 4},
    {"snapshots_offset", 64, 8},
    {"incompatible_features", 72, 8},
    {"compatible_features", 80, 8},
    {"autoclear_features", 88, 8},
    {"refcount_order", 96, 4},
    {"header_length", 100, 4},
    {"compression_type", 104, 1},
};
constexpr size_t kV2Fields = 13;  // up to snapshots_offset
constexpr uint32_t kV2HeaderLength = 72;
// Bits 9-55 of L1, L2 and refcount table entries hold offsets (qcow2.txt).
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;
constexpr uint64_t kCompressedBit = 1ull << 62;
constexpr uint64_t kSector = 512;

}  // namespace

std::span<const HeaderField> HeaderFields(uint32_t version) {
  return version >= 3 ? std::span<const HeaderField>(kFields)
                      : std::span<const HeaderField>(kFields, kV2Fields);
}

const char* RegionName(Region::Kind kind) {
  switch (kind) {
    case Region::Kind::kHeader:
      return "header";
    case Region::Kind::kExtension:
      return "header extension";
    case Region::Kind::kBackingName:
      return "backing file name";
    case Region::Kind::kL1Entry:
      return "L1 entry";
    case Region::Kind::kL2Entry:
      return "L2 entry";
    case Region::Kind::kRefcountEntry:
      return "refcount table entry";
    case Region::Kind::kRefcountBlock:
      return "refcount block";
    case Region::Kind::kData:
      return "data cluster";
    case Region::Kind::kCompressed:
      return "compressed cluster";
    case Region::Kind::kSnapshotTable:
      return "snapshot table";
  }
  return "?";
}

std::vector<Region> Qcow2Layout::Of(Region::Kind kind) const {
  std::vector<Region> out;
  for (const Region& r : regions) {
    if (r.kind == kind) out.push_back(r);
  }
  return out;
}

uint64_t LoadBe(std::span<const uint8_t> bytes, uint64_t offset, uint32_t width) {
  uint64_t v = 0;
  for (uint32_t i = 0; i < width; ++i) {
    v = v << 8 | (offset + i < bytes.size() ? bytes[offset + i] : 0);
  }
  return v;
}

void StoreBe(std::vector<uint8_t>& bytes, uint64_t offset, uint32_t width, uint64_t value) {
  for (uint32_t i = 0; i < width; ++i) {
    if (offset + i < bytes.size()) {
      bytes[offset + i] = static_cast<uint8_t>(value >> (8 * (width - 1 - i)));
    }
  }
}

Qcow2Layout ScanQcow2(std::span<const uint8_t> b) {
  Qcow2Layout l;
  if (b.size() < kV2HeaderLength || LoadBe(b, 0, 4) != 0x514649fb) {
    throw std::runtime_error("not a qcow2 image");
  }
  l.file_size = b.size();
  l.version = static_cast<uint32_t>(LoadBe(b, 4, 4));
  l.cluster_bits = static_cast<uint32_t>(LoadBe(b, 20, 4));
  l.cluster_size = uint64_t{1} << l.cluster_bits;
  l.size = LoadBe(b, 24, 8);
  l.l1_size = static_cast<uint32_t>(LoadBe(b, 36, 4));
  l.l1_table_offset = LoadBe(b, 40, 8);
  l.refcount_table_offset = LoadBe(b, 48, 8);
  const uint64_t refcount_table_clusters = LoadBe(b, 56, 4);
  const uint64_t nb_snapshots = LoadBe(b, 60, 4), snapshots_offset = LoadBe(b, 64, 8);
  const uint64_t backing_offset = LoadBe(b, 8, 8), backing_size = LoadBe(b, 16, 4);
  if (l.version >= 3) {
    l.header_length = static_cast<uint32_t>(LoadBe(b, 100, 4));
    l.refcount_order = static_cast<uint32_t>(LoadBe(b, 96, 4));
    l.extended_l2 = LoadBe(b, 72, 8) & (1u << 4);
  } else {
    l.header_length = kV2HeaderLength;
  }
  auto add = [&](Region::Kind kind, uint64_t offset, uint64_t length) {
    if (offset >= b.size()) return;
    l.regions.push_back({kind, offset, std::min<uint64_t>(length, b.size() - offset)});
  };
  add(Region::Kind::kHeader, 0, l.header_length);
  // Extensions: from the header's end up to the backing file name or the end marker.
  const uint64_t ext_end = backing_offset ? backing_offset : l.cluster_size;
  for (uint64_t pos = l.header_length; pos + 8 <= ext_end;) {
    const uint64_t type = LoadBe(b, pos, 4), len = LoadBe(b, pos + 4, 4);
    add(Region::Kind::kExtension, pos, 8 + (len + 7) / 8 * 8);
    if (type == 0) break;
    pos += 8 + (len + 7) / 8 * 8;
  }
  if (backing_offset) add(Region::Kind::kBackingName, backing_offset, backing_size);

  for (uint64_t i = 0; i < l.l1_size; ++i) {
    const uint64_t at = l.l1_table_offset + i * 8;
    add(Region::Kind::kL1Entry, at, 8);
    const uint64_t l2 = LoadBe(b, at, 8) & kOffsetMask;
    if (l2 != 0) l.l2_tables.push_back(l2);
  }
  const uint64_t entry_size = l.extended_l2 ? 16 : 8;
  for (uint64_t table : l.l2_tables) {
    for (uint64_t at = table; at < table + l.cluster_size; at += entry_size) {
      const uint64_t w = LoadBe(b, at, 8), bitmap = l.extended_l2 ? LoadBe(b, at + 8, 8) : 0;
      if (w == 0 && bitmap == 0) continue;
      add(Region::Kind::kL2Entry, at, entry_size);
      if (w & kCompressedBit) {
        // qcow2.txt, "Compressed Clusters Descriptor": x = 62 - (cluster_bits - 8).
        const uint32_t x = 62 - (l.cluster_bits - 8);
        const uint64_t offset = w & ((1ull << x) - 1);
        const uint64_t sectors = ((w >> x) & ((1ull << (l.cluster_bits - 8)) - 1)) + 1;
        add(Region::Kind::kCompressed, offset, (offset / kSector + sectors) * kSector - offset);
      } else if ((w & kOffsetMask) != 0) {
        add(Region::Kind::kData, w & kOffsetMask, l.cluster_size);
      }
    }
  }
  const uint64_t rt_entries = refcount_table_clusters * l.cluster_size / 8;
  for (uint64_t i = 0; i < rt_entries; ++i) {
    const uint64_t at = l.refcount_table_offset + i * 8;
    const uint64_t block = LoadBe(b, at, 8) & ~uint64_t{511};
    if (block == 0) continue;
    add(Region::Kind::kRefcountEntry, at, 8);
    add(Region::Kind::kRefcountBlock, block, l.cluster_size);
  }
  if (nb_snapshots > 0) {
    // qcow2.txt, "Snapshots": 40 fixed bytes, extra data, id and name, padded to 8.
    uint64_t pos = snapshots_offset;
    for (uint64_t i = 0; i < nb_snapshots && pos + 40 <= b.size(); ++i) {
      const uint64_t id = LoadBe(b, pos + 12, 2), name = LoadBe(b, pos + 14, 2),
                     extra = LoadBe(b, pos + 36, 4);
      pos += (40 + extra + id + name + 7) / 8 * 8;
    }
    add(Region::Kind::kSnapshotTable, snapshots_offset, pos - snapshots_offset);
  }
  return l;
}

}  // namespace qcowfs_test

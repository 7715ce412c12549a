// Where the structures of a valid qcow2 image lie, read straight from its bytes with the
// field offsets of qcow2.txt, for the differential test's mutator. It depends on nothing in
// qcow/, so that a mutation aimed at a structure is aimed by the spec, not by the reader
// under test. Only images made by qemu-img are scanned: it trusts their fields.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace qcowfs_test {

// A header field: its byte offset and width (qcow2.txt, "Header").
struct HeaderField {
  const char* name;
  uint32_t offset;
  uint32_t width;  // 1, 4 or 8 bytes
};

// The fields of a version 3 header (version 2 images have the first eleven).
std::span<const HeaderField> HeaderFields(uint32_t version);

// One byte range of the image and what it holds.
struct Region {
  enum class Kind : uint8_t {
    kHeader,         // the header proper: [0, header_length)
    kExtension,      // one header extension, its 8-byte type and length first
    kBackingName,    // the backing file name
    kL1Entry,        // 8 bytes
    kL2Entry,        // 8 bytes, 16 with extended L2; only entries that are not all zero
    kRefcountEntry,  // a refcount table entry, 8 bytes
    kRefcountBlock,  // a whole refcount block cluster
    kData,           // a data cluster (its allocated part)
    kCompressed,     // a compressed cluster's bytes, as its descriptor names them
    kSnapshotTable,  // the snapshot table
  };
  Kind kind;
  uint64_t offset;
  uint64_t length;
};

// Returns the name of a region kind, for mutation descriptions.
const char* RegionName(Region::Kind kind);

struct Qcow2Layout {
  uint32_t version = 0;
  uint32_t cluster_bits = 0;
  uint64_t cluster_size = 0;
  uint64_t size = 0;  // the header's virtual size
  uint32_t header_length = 0;
  uint32_t refcount_order = 4;
  bool extended_l2 = false;
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  uint64_t refcount_table_offset = 0;
  uint64_t file_size = 0;
  std::vector<uint64_t> l2_tables;  // offsets of the active L2 tables
  std::vector<Region> regions;      // in no particular order

  // Returns the regions of one kind.
  std::vector<Region> Of(Region::Kind kind) const;
};

// Scans a qcow2 image made by qemu-img. Throws std::runtime_error when it is not one.
Qcow2Layout ScanQcow2(std::span<const uint8_t> image);

// Big-endian loads and stores on a byte vector (the image's byte order).
uint64_t LoadBe(std::span<const uint8_t> bytes, uint64_t offset, uint32_t width);
void StoreBe(std::vector<uint8_t>& bytes, uint64_t offset, uint32_t width, uint64_t value);

}  // namespace qcowfs_test

// The qcow2 header (cluster 0) as a plain struct with the spec's field names, and pure
// encode/decode functions over byte spans.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace qcow {

struct QcowHeader {
  uint32_t magic = 0;
  uint32_t version = 0;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 0;
  uint64_t size = 0;
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  // Version 3 only; version 2 decodes them as the values v2 implies.
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = 0;
  uint8_t compression_type = 0;  // only present when header_length > 104

  bool operator==(const QcowHeader&) const = default;
};

// One entry of the feature name table header extension.
struct FeatureName {
  uint8_t type;  // 0 incompatible, 1 compatible, 2 autoclear
  uint8_t bit;
  std::string name;
};

// Returns the feature names qcowfs writes into images it produces (the bits QEMU 7.2 knows).
const std::vector<FeatureName>& KnownFeatureNames();

// What cluster 0 holds beyond the fixed fields, for images with a backing file.
struct HeaderExtras {
  std::string backing_file;    // "" for none
  std::string backing_format;  // the backing format extension ("" for none)
  uint64_t cluster_size = 0;   // the room there is (0: no limit)
};

// Returns the encoded header: the fixed fields, the backing format extension, a feature
// name table extension (left out when the cluster has no room for it), the end marker and
// the backing file name, whose offset and size it sets in the fixed fields. The result is
// shorter than a cluster; the rest of cluster 0 is zero. Throws UsageError if the fields do
// not fit (header_length not 72/104.., a name longer than 1023 bytes or than the cluster).
std::vector<uint8_t> EncodeHeader(const QcowHeader& header, const HeaderExtras& extras = {});

// Returns the fixed fields decoded from the start of an image. Only checks what is needed to
// decode (magic, version, that the bytes are long enough); throws FormatError otherwise.
QcowHeader DecodeHeader(std::span<const uint8_t> bytes);

}  // namespace qcow

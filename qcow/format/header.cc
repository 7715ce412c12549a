#include "qcow/format/header.h"

#include <algorithm>
#include <cstring>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"

namespace qcow {

// Field offsets from qcow2.txt, "Header".
namespace {
constexpr size_t kOffMagic = 0, kOffVersion = 4, kOffBackingFileOffset = 8,
                 kOffBackingFileSize = 16, kOffClusterBits = 20, kOffSize = 24,
                 kOffCryptMethod = 32, kOffL1Size = 36, kOffL1TableOffset = 40,
                 kOffRefcountTableOffset = 48, kOffRefcountTableClusters = 56, kOffNbSnapshots = 60,
                 kOffSnapshotsOffset = 64, kOffIncompatible = 72, kOffCompatible = 80,
                 kOffAutoclear = 88, kOffRefcountOrder = 96, kOffHeaderLength = 100,
                 kOffCompressionType = 104;
}  // namespace

const std::vector<FeatureName>& KnownFeatureNames() {
  static const std::vector<FeatureName> names = {
      {0, 0, "dirty bit"},        {0, 1, "corrupt bit"},         {0, 2, "external data file"},
      {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
      {2, 0, "bitmaps"},          {2, 1, "raw external data"},
  };
  return names;
}

std::vector<uint8_t> EncodeHeader(const QcowHeader& header, const HeaderExtras& extras) {
  QcowHeader h = header;
  const uint32_t header_length = h.version == 2 ? kV2HeaderLength : h.header_length;
  if (h.version == 3 && (header_length < kV3MinHeaderLength || header_length % 8 != 0)) {
    throw UsageError("header_length is " + std::to_string(header_length) +
                     "; version 3 needs a multiple of 8 that is at least 104");
  }
  if (extras.backing_file.size() > 1023) {
    throw UsageError("the backing file name is " + std::to_string(extras.backing_file.size()) +
                     " bytes; qcow2 allows at most 1023");
  }
  // Header extensions start right after the header (qcow2.txt, "Header extensions"), each
  // padded to 8 bytes; the backing file name follows the end marker.
  const auto padded = [](uint64_t n) { return (n + 7) / 8 * 8; };
  const uint64_t format_ext =
      extras.backing_format.empty() ? 0 : 8 + padded(extras.backing_format.size());
  const auto& names = KnownFeatureNames();
  const uint64_t names_len = names.size() * kFeatureNameEntrySize;
  uint64_t size = header_length + format_ext + 8 + names_len + 8 + extras.backing_file.size();
  const bool with_names = extras.cluster_size == 0 || size <= extras.cluster_size;
  if (!with_names) size -= 8 + names_len;
  if (extras.cluster_size != 0 && size > extras.cluster_size) {
    throw UsageError("the header with a backing file name of " +
                     std::to_string(extras.backing_file.size()) + " bytes does not fit a " +
                     std::to_string(extras.cluster_size) + "-byte cluster");
  }
  std::vector<uint8_t> out(size, 0);
  uint8_t* p = out.data();
  uint8_t* ext = p + header_length;
  if (format_ext) {
    StoreBe32(ext, kExtBackingFormat);
    StoreBe32(ext + 4, static_cast<uint32_t>(extras.backing_format.size()));
    std::memcpy(ext + 8, extras.backing_format.data(), extras.backing_format.size());
    ext += format_ext;
  }
  if (with_names) {
    StoreBe32(ext, kExtFeatureNameTable);
    StoreBe32(ext + 4, static_cast<uint32_t>(names_len));
    uint8_t* entry = ext + 8;
    for (const auto& n : names) {
      entry[0] = n.type;
      entry[1] = n.bit;
      std::memcpy(entry + 2, n.name.data(), std::min<size_t>(n.name.size(), kFeatureNameLength));
      entry += kFeatureNameEntrySize;
    }
    ext = entry;
  }
  ext += 8;  // the end-of-extensions marker (type 0, length 0) is zeros already
  if (!extras.backing_file.empty()) {
    h.backing_file_offset = static_cast<uint64_t>(ext - p);
    h.backing_file_size = static_cast<uint32_t>(extras.backing_file.size());
    std::memcpy(ext, extras.backing_file.data(), extras.backing_file.size());
  }
  StoreBe32(p + kOffMagic, h.magic);
  StoreBe32(p + kOffVersion, h.version);
  StoreBe64(p + kOffBackingFileOffset, h.backing_file_offset);
  StoreBe32(p + kOffBackingFileSize, h.backing_file_size);
  StoreBe32(p + kOffClusterBits, h.cluster_bits);
  StoreBe64(p + kOffSize, h.size);
  StoreBe32(p + kOffCryptMethod, h.crypt_method);
  StoreBe32(p + kOffL1Size, h.l1_size);
  StoreBe64(p + kOffL1TableOffset, h.l1_table_offset);
  StoreBe64(p + kOffRefcountTableOffset, h.refcount_table_offset);
  StoreBe32(p + kOffRefcountTableClusters, h.refcount_table_clusters);
  StoreBe32(p + kOffNbSnapshots, h.nb_snapshots);
  StoreBe64(p + kOffSnapshotsOffset, h.snapshots_offset);
  if (h.version >= 3) {
    StoreBe64(p + kOffIncompatible, h.incompatible_features);
    StoreBe64(p + kOffCompatible, h.compatible_features);
    StoreBe64(p + kOffAutoclear, h.autoclear_features);
    StoreBe32(p + kOffRefcountOrder, h.refcount_order);
    StoreBe32(p + kOffHeaderLength, header_length);
    if (header_length > kOffCompressionType) p[kOffCompressionType] = h.compression_type;
  }
  return out;
}

QcowHeader DecodeHeader(std::span<const uint8_t> bytes) {
  if (bytes.size() < kV2HeaderLength) {
    throw FormatError("image is " + std::to_string(bytes.size()) +
                      " bytes long; a qcow2 header needs at least 72");
  }
  const uint8_t* p = bytes.data();
  QcowHeader h;
  h.magic = LoadBe32(p + kOffMagic);
  if (h.magic != kQcowMagic) {
    throw FormatError("magic is 0x" + [&] {
      char buf[16];
      std::snprintf(buf, sizeof buf, "%08x", h.magic);
      return std::string(buf);
    }() + "; qcow2 needs 0x514649fb (\"QFI\\xfb\")");
  }
  h.version = LoadBe32(p + kOffVersion);
  if (h.version != 2 && h.version != 3) {
    throw FormatError("version is " + std::to_string(h.version) + "; qcow2 allows 2 or 3");
  }
  h.backing_file_offset = LoadBe64(p + kOffBackingFileOffset);
  h.backing_file_size = LoadBe32(p + kOffBackingFileSize);
  h.cluster_bits = LoadBe32(p + kOffClusterBits);
  h.size = LoadBe64(p + kOffSize);
  h.crypt_method = LoadBe32(p + kOffCryptMethod);
  h.l1_size = LoadBe32(p + kOffL1Size);
  h.l1_table_offset = LoadBe64(p + kOffL1TableOffset);
  h.refcount_table_offset = LoadBe64(p + kOffRefcountTableOffset);
  h.refcount_table_clusters = LoadBe32(p + kOffRefcountTableClusters);
  h.nb_snapshots = LoadBe32(p + kOffNbSnapshots);
  h.snapshots_offset = LoadBe64(p + kOffSnapshotsOffset);
  if (h.version == 2) {
    h.header_length = kV2HeaderLength;
    return h;
  }
  if (bytes.size() < kV3MinHeaderLength) {
    throw FormatError("image is " + std::to_string(bytes.size()) +
                      " bytes long; a version 3 header needs at least 104");
  }
  h.incompatible_features = LoadBe64(p + kOffIncompatible);
  h.compatible_features = LoadBe64(p + kOffCompatible);
  h.autoclear_features = LoadBe64(p + kOffAutoclear);
  h.refcount_order = LoadBe32(p + kOffRefcountOrder);
  h.header_length = LoadBe32(p + kOffHeaderLength);
  if (h.header_length > kOffCompressionType && bytes.size() > kOffCompressionType) {
    h.compression_type = p[kOffCompressionType];
  }
  return h;
}

}  // namespace qcow

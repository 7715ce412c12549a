#include "qcow/format/image_header.h"

#include <algorithm>
#include <cstdio>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"

namespace qcow {
namespace {

// QEMU's limits (block/qcow2.h): at most 65536 snapshots, backing file names at most 1023
// bytes.
constexpr uint32_t kMaxSnapshots = 65536;
constexpr uint32_t kMaxBackingFileName = 1023;
constexpr uint64_t kKnownIncompatible = kIncompatDirty | kIncompatCorrupt | kIncompatDataFile |
                                        kIncompatCompression | kIncompatExtendedL2;
// Extended L2 entries need 32 subclusters of at least 512 bytes: cluster_bits >= 14.
constexpr uint32_t kMinExtendedL2ClusterBits = 14;

void CheckTableOffset(const char* field, uint64_t offset, uint64_t cluster_size) {
  if (offset % cluster_size != 0) {
    Refuse(std::string(field) + " is " + Hex(offset) + "; it must be a multiple of the " +
           std::to_string(cluster_size) + "-byte cluster size");
  }
  if (offset >= kMaxHostOffset) {
    Refuse(std::string(field) + " is " + Hex(offset) + "; offsets must be below 2^56");
  }
}

std::string FeatureLabel(const ImageInfo& info, uint8_t type, unsigned bit) {
  for (const auto& f : info.feature_names) {
    if (f.type == type && f.bit == bit) return " (\"" + f.name + "\")";
  }
  return "";
}

// Walks the header extensions from `start` to `end`, as QEMU does: they stop at type 0
// or at `end` (the backing file name, or the end of cluster 0), and each must fit before
// `end`.
void ParseExtensions(std::span<const uint8_t> c0, uint64_t start, uint64_t end, ImageInfo& info) {
  const std::string where = end < c0.size()
                                ? "the backing file name at offset " + std::to_string(end)
                                : "the end of cluster 0 (" + std::to_string(c0.size()) + " bytes)";
  for (uint64_t pos = start; pos < end;) {
    if (pos + 8 > end) {
      Refuse("header extension at offset " + std::to_string(pos) + " runs past " + where);
    }
    const uint32_t type = LoadBe32(&c0[pos]);
    const uint32_t len = LoadBe32(&c0[pos + 4]);
    const uint64_t data = pos + 8;
    if (len > end - data) {
      Refuse("header extension " + Hex(type) + " at offset " + std::to_string(pos) +
             " has length " + std::to_string(len) + ", past " + where);
    }
    if (type == kExtEnd) return;
    switch (type) {
      case kExtFeatureNameTable:
        for (uint64_t e = 0; e + kFeatureNameEntrySize <= len; e += kFeatureNameEntrySize) {
          const uint8_t* p = &c0[data + e];
          size_t n = 0;
          while (n < kFeatureNameLength && p[2 + n]) ++n;
          info.feature_names.push_back({p[0], p[1], std::string(p + 2, p + 2 + n)});
        }
        break;
      case kExtFullDiskEncryption:
        Refuse(
            "the image has a full disk encryption header extension; qcowfs cannot read "
            "encrypted images");
      case kExtBitmaps:
        if (len >= kBitmapsExtLength) {
          info.bitmap_directory_size = LoadBe64(&c0[data + 8]);
          info.bitmap_directory_offset = LoadBe64(&c0[data + 16]);
        }
        break;
      case kExtDataFileName:
        Refuse(
            "the image names an external data file; qcowfs reads only images that hold "
            "their own data");
      case kExtBackingFormat:
        info.backing_format.assign(c0.begin() + data, c0.begin() + data + len);
        break;
      default:
        break;  // backing format name and unknown extensions may be skipped
    }
    pos = data + (uint64_t{len} + 7) / 8 * 8;
  }
}

}  // namespace

std::string BackingFileName(const QcowHeader& h, std::span<const uint8_t> head) {
  if (h.backing_file_offset == 0 || h.backing_file_size > kMaxBackingFileName ||
      h.backing_file_offset > head.size() ||
      h.backing_file_size > head.size() - h.backing_file_offset) {
    return "";
  }
  const auto* p = head.data() + h.backing_file_offset;
  return std::string(p, p + h.backing_file_size);
}

uint64_t HeaderBytesNeeded(std::span<const uint8_t> have) {
  if (have.size() < kV3MinHeaderLength) return kV3MinHeaderLength;
  const uint32_t bits = LoadBe32(&have[20]);
  if (bits < kMinClusterBits || bits > kMaxClusterBits) return kV3MinHeaderLength;
  return uint64_t{1} << bits;
}

ImageInfo ParseImageHeader(std::span<const uint8_t> c0,
                           const std::function<void(const std::string&)>& warn) {
  ImageInfo info;
  QcowHeader& h = info.header;
  h = DecodeHeader(c0);
  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits) {
    Refuse("cluster_bits is " + std::to_string(h.cluster_bits) + "; qcow2 allows 9..21");
  }
  info.cluster_size = uint64_t{1} << h.cluster_bits;
  if (c0.size() < info.cluster_size) {
    Refuse("the image ends at byte " + std::to_string(c0.size()) + ", inside its first cluster (" +
           std::to_string(info.cluster_size) + " bytes)");
  }
  c0 = c0.first(info.cluster_size);
  if (h.version == 3) {
    // The spec asks for a multiple of 8; QEMU reads any length, and so does qcowfs.
    if (h.header_length < kV3MinHeaderLength || h.header_length > info.cluster_size) {
      Refuse("header_length is " + std::to_string(h.header_length) +
             "; version 3 needs 104 up to the cluster size");
    }
    if (h.refcount_order > 6) {
      Refuse("refcount_order is " + std::to_string(h.refcount_order) + "; qcow2 allows 0..6");
    }
  }
  ParseExtensions(
      c0, h.header_length,
      h.backing_file_offset != 0 ? std::min<uint64_t>(h.backing_file_offset, c0.size()) : c0.size(),
      info);
  if (!(h.autoclear_features & kAutoclearBitmaps)) {
    // QEMU ignores bitmaps whose autoclear bit a program unaware of them cleared.
    info.bitmap_directory_offset = info.bitmap_directory_size = 0;
  } else if (info.bitmap_directory_size != 0 &&
             (info.bitmap_directory_offset % info.cluster_size != 0 ||
              info.bitmap_directory_offset > kMaxHostOffset ||
              info.bitmap_directory_size > kMaxHostOffset - info.bitmap_directory_offset)) {
    Refuse("the bitmap directory at " + Hex(info.bitmap_directory_offset) + " (" +
           std::to_string(info.bitmap_directory_size) +
           " bytes) is not cluster-aligned or lies past 2^56");
  }

  if (h.crypt_method != 0) {
    Refuse("crypt_method is " + std::to_string(h.crypt_method) +
           (h.crypt_method == 1   ? " (AES)"
            : h.crypt_method == 2 ? " (LUKS)"
                                  : "") +
           "; qcowfs reads only unencrypted images (crypt_method 0)");
  }
  const uint64_t unknown = h.incompatible_features & ~kKnownIncompatible;
  if (unknown) {
    unsigned bit = static_cast<unsigned>(__builtin_ctzll(unknown));
    Refuse("incompatible_features has unknown bit " + std::to_string(bit) +
           FeatureLabel(info, 0, bit) + " set; qcowfs understands bits 0-4");
  }
  if (h.incompatible_features & kIncompatCorrupt) {
    Refuse(
        "incompatible_features has the corrupt bit (1) set; repair the image with "
        "'qemu-img check -r all' first");
  }
  if (h.incompatible_features & kIncompatDataFile) {
    Refuse(
        "incompatible_features has the external data file bit (2) set; qcowfs reads "
        "only images that hold their own data");
  }
  info.compression_type = h.compression_type;
  const bool compression_bit = h.incompatible_features & kIncompatCompression;
  if (h.compression_type > kCompressionZstd) {
    Refuse("compression_type is " + std::to_string(h.compression_type) +
           "; qcow2 allows 0 (deflate) or 1 (zstd)");
  }
  if (compression_bit != (h.compression_type != kCompressionDeflate)) {
    Refuse("compression_type is " + std::to_string(h.compression_type) +
           " but the compression type bit (3) of incompatible_features is " +
           (compression_bit ? "set" : "clear") + "; the bit must be set exactly for zstd");
  }
  info.extended_l2 = h.incompatible_features & kIncompatExtendedL2;
  if (info.extended_l2 && h.cluster_bits < kMinExtendedL2ClusterBits) {
    Refuse("extended L2 entries need cluster_bits of at least 14; cluster_bits is " +
           std::to_string(h.cluster_bits));
  }
  info.l2_entry_size = info.extended_l2 ? 16 : 8;
  info.l2_entries = info.cluster_size / info.l2_entry_size;
  info.dirty = h.incompatible_features & kIncompatDirty;
  if (info.dirty && warn) {
    warn(
        "the image's dirty bit is set (it was not closed cleanly); reading it anyway: "
        "refcounts are not needed to read it");
  }

  if (h.backing_file_offset != 0 && h.backing_file_size != 0) {
    // As QEMU: a name of length 0 is no backing file.
    info.backing_file = BackingFileName(h, c0);
    if (info.backing_file.empty()) {
      Refuse("backing_file_offset " + std::to_string(h.backing_file_offset) +
             " and backing_file_size " + std::to_string(h.backing_file_size) +
             " do not name a backing file inside cluster 0 (of at most 1023 bytes)");
    }
  }

  if (h.size > (uint64_t{1} << 62)) {
    Refuse("size is " + std::to_string(h.size) + " bytes; qcowfs allows at most 2^62");
  }
  info.virtual_size = h.size / kSectorSize * kSectorSize;
  // As QEMU counts them: for the size as written, before it is rounded down to a sector.
  const uint64_t l2_span = info.cluster_size * info.l2_entries;
  const uint64_t l1_needed = DivRoundUp(h.size, l2_span);
  if (uint64_t{h.l1_size} * kTableEntrySize > kMaxL1Bytes) {
    Refuse("l1_size is " + std::to_string(h.l1_size) + " entries (" +
           std::to_string(uint64_t{h.l1_size} * 8) + " bytes); qcow2 allows at most 32 MiB");
  }
  if (h.l1_size < l1_needed) {
    Refuse("l1_size is " + std::to_string(h.l1_size) + "; a size of " + std::to_string(h.size) +
           " bytes needs at least " + std::to_string(l1_needed) + " entries");
  }
  if (h.l1_size > 0) {
    CheckTableOffset("l1_table_offset", h.l1_table_offset, info.cluster_size);
    if (h.l1_table_offset == 0) Refuse("l1_table_offset is 0, inside the header cluster");
  }
  CheckTableOffset("refcount_table_offset", h.refcount_table_offset, info.cluster_size);
  if (uint64_t{h.refcount_table_clusters} * info.cluster_size > kMaxRefcountTableBytes) {
    Refuse("refcount_table_clusters is " + std::to_string(h.refcount_table_clusters) +
           "; the refcount table may hold at most 8 MiB");
  }
  if (h.nb_snapshots > kMaxSnapshots) {
    Refuse("nb_snapshots is " + std::to_string(h.nb_snapshots) + "; qcow2 allows at most 65536");
  }
  if (h.nb_snapshots > 0) {
    CheckTableOffset("snapshots_offset", h.snapshots_offset, info.cluster_size);
  } else if (h.snapshots_offset % info.cluster_size != 0) {
    // QEMU checks the alignment even of an empty table.
    Refuse("snapshots_offset is " + Hex(h.snapshots_offset) + "; it must be a multiple of the " +
           std::to_string(info.cluster_size) + "-byte cluster size, even with no snapshots");
  }
  return info;
}

void RefuseBackingFile(const ImageInfo& info) {
  if (info.backing_file.empty()) return;
  Refuse("the image has a backing file '" + info.backing_file +
         "'; import it with --delta onto a disk that holds that backing file's disk, or make "
         "it standalone with qemu-img convert first");
}

}  // namespace qcow

#include "qcow/format/vhd.h"

#include <cstring>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"

namespace qcow {
namespace {

// Field offsets of "Hard Disk Footer Format".
constexpr size_t kFooterFeatures = 8, kFooterVersion = 12, kFooterDataOffset = 16,
                 kFooterTimeStamp = 24, kFooterCreatorApp = 28, kFooterCreatorVersion = 32,
                 kFooterCreatorOs = 36, kFooterOriginalSize = 40, kFooterCurrentSize = 48,
                 kFooterGeometry = 56, kFooterDiskType = 60, kFooterChecksum = 64,
                 kFooterUniqueId = 68, kFooterSavedState = 84;
// Field offsets of "Dynamic Disk Header Format".
constexpr size_t kHeaderDataOffset = 8, kHeaderTableOffset = 16, kHeaderVersion = 24,
                 kHeaderMaxEntries = 28, kHeaderBlockSize = 32, kHeaderChecksum = 36,
                 kHeaderParentId = 40, kHeaderParentTime = 56, kHeaderParentName = 64,
                 kHeaderParentNameSize = 512, kHeaderLocators = 576, kLocatorSize = 24;
// "File Format Version" and "Header Version": 1.0.
constexpr uint32_t kVersion1 = 0x00010000;

void CheckChecksum(std::span<const uint8_t> s, size_t offset, const char* what) {
  const uint32_t stored = LoadBe32(&s[offset]);
  const uint32_t computed = VhdChecksum(s, offset);
  if (stored != computed) {
    Refuse(std::string(what) + " checksum is " + Hex(stored) + " but its bytes sum to " +
           Hex(computed) + ": the " + what + " is damaged");
  }
}

void AppendUtf8(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xc0 | c >> 6);
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xe0 | c >> 12);
    out += static_cast<char>(0x80 | (c >> 6 & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | c >> 18);
    out += static_cast<char>(0x80 | (c >> 12 & 0x3f));
    out += static_cast<char>(0x80 | (c >> 6 & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  }
}

}  // namespace

uint32_t VhdChecksum(std::span<const uint8_t> structure, size_t checksum_offset) {
  uint32_t sum = 0;
  for (size_t i = 0; i < structure.size(); ++i) {
    if (i >= checksum_offset && i < checksum_offset + 4) continue;
    sum += structure[i];
  }
  return ~sum;
}

VhdFooter DecodeVhdFooter(std::span<const uint8_t> bytes) {
  if (bytes.size() < kVhdFooterSize) {
    Refuse("the VHD footer needs 512 bytes; there are " + std::to_string(bytes.size()));
  }
  const auto s = bytes.first(kVhdFooterSize);
  if (std::memcmp(s.data(), "conectix", 8) != 0) {
    Refuse("the VHD footer's cookie is not \"conectix\": not a VHD, or a damaged one");
  }
  CheckChecksum(s, kFooterChecksum, "footer");
  VhdFooter f;
  f.features = LoadBe32(&s[kFooterFeatures]);
  f.file_format_version = LoadBe32(&s[kFooterVersion]);
  if (f.file_format_version != kVersion1) {
    Refuse("the VHD footer's file format version is " + Hex(f.file_format_version) +
           "; VHD 1.0 is 0x10000");
  }
  f.data_offset = LoadBe64(&s[kFooterDataOffset]);
  f.time_stamp = LoadBe32(&s[kFooterTimeStamp]);
  f.creator_application.assign(reinterpret_cast<const char*>(&s[kFooterCreatorApp]), 4);
  f.creator_version = LoadBe32(&s[kFooterCreatorVersion]);
  f.creator_host_os = LoadBe32(&s[kFooterCreatorOs]);
  f.original_size = LoadBe64(&s[kFooterOriginalSize]);
  f.current_size = LoadBe64(&s[kFooterCurrentSize]);
  f.cylinders = LoadBe16(&s[kFooterGeometry]);
  f.heads = s[kFooterGeometry + 2];
  f.sectors_per_track = s[kFooterGeometry + 3];
  f.disk_type = LoadBe32(&s[kFooterDiskType]);
  if (f.disk_type != kVhdFixed && f.disk_type != kVhdDynamic && f.disk_type != kVhdDifferencing) {
    Refuse("the VHD footer's disk type is " + std::to_string(f.disk_type) +
           "; VHD knows 2 (fixed), 3 (dynamic) and 4 (differencing)");
  }
  f.checksum = LoadBe32(&s[kFooterChecksum]);
  std::memcpy(f.unique_id.data(), &s[kFooterUniqueId], 16);
  f.saved_state = s[kFooterSavedState];
  return f;
}

VhdDynamicHeader DecodeVhdDynamicHeader(std::span<const uint8_t> bytes) {
  if (bytes.size() < kVhdDynamicHeaderSize) {
    Refuse("the VHD dynamic disk header needs 1024 bytes; there are " +
           std::to_string(bytes.size()));
  }
  const auto s = bytes.first(kVhdDynamicHeaderSize);
  if (std::memcmp(s.data(), "cxsparse", 8) != 0) {
    Refuse("the VHD dynamic disk header's cookie is not \"cxsparse\"");
  }
  CheckChecksum(s, kHeaderChecksum, "dynamic disk header");
  VhdDynamicHeader h;
  h.data_offset = LoadBe64(&s[kHeaderDataOffset]);
  h.table_offset = LoadBe64(&s[kHeaderTableOffset]);
  h.header_version = LoadBe32(&s[kHeaderVersion]);
  if (h.header_version != kVersion1) {
    Refuse("the VHD dynamic disk header's version is " + Hex(h.header_version) +
           "; VHD 1.0 is 0x10000");
  }
  h.max_table_entries = LoadBe32(&s[kHeaderMaxEntries]);
  h.block_size = LoadBe32(&s[kHeaderBlockSize]);
  if (h.block_size < 512 || (h.block_size & (h.block_size - 1)) != 0) {
    Refuse("the VHD block size is " + std::to_string(h.block_size) +
           "; it must be a power of two of at least 512 bytes");
  }
  h.checksum = LoadBe32(&s[kHeaderChecksum]);
  std::memcpy(h.parent_unique_id.data(), &s[kHeaderParentId], 16);
  h.parent_time_stamp = LoadBe32(&s[kHeaderParentTime]);
  h.parent_unicode_name = Utf16ToUtf8(s.subspan(kHeaderParentName, kHeaderParentNameSize), true);
  for (size_t i = 0; i < h.parent_locators.size(); ++i) {
    const uint8_t* p = &s[kHeaderLocators + i * kLocatorSize];
    h.parent_locators[i] = {LoadBe32(p), LoadBe32(p + 4), LoadBe32(p + 8), LoadBe64(p + 16)};
    const VhdParentLocator& l = h.parent_locators[i];
    // An entry in use names data at platform_data_offset, platform_data_length bytes long in
    // platform_data_space sectors: readers add them, so neither end may pass 2^64.
    if (l.platform_code == 0) continue;
    const std::string entry = "the VHD parent locator " + std::to_string(i) +
                              ": platform_data_offset " + std::to_string(l.platform_data_offset);
    if (l.platform_data_length > UINT64_MAX - l.platform_data_offset) {
      Refuse(entry + " plus platform_data_length " + std::to_string(l.platform_data_length) +
             " pass 2^64");
    }
    if (uint64_t{l.platform_data_space} * kSectorSize > UINT64_MAX - l.platform_data_offset) {
      Refuse(entry + " plus platform_data_space " + std::to_string(l.platform_data_space) +
             " sectors pass 2^64");
    }
  }
  return h;
}

std::string Utf16ToUtf8(std::span<const uint8_t> bytes, bool big_endian) {
  std::string out;
  const auto unit = [&](size_t i) -> uint32_t {
    return big_endian ? (uint32_t{bytes[i]} << 8 | bytes[i + 1])
                      : (uint32_t{bytes[i + 1]} << 8 | bytes[i]);
  };
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    uint32_t c = unit(i);
    if (c == 0) break;
    if (c >= 0xd800 && c < 0xdc00 && i + 3 < bytes.size()) {
      const uint32_t low = unit(i + 2);
      if (low >= 0xdc00 && low < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
        i += 2;
      } else {
        c = 0xfffd;
      }
    } else if (c >= 0xd800 && c < 0xe000) {
      c = 0xfffd;
    }
    AppendUtf8(out, c);
  }
  return out;
}

}  // namespace qcow

// The VHD format's on-disk structures (Microsoft's "Virtual Hard Disk Image Format
// Specification" v1.0): the footer every VHD ends with, and the dynamic disk header of
// dynamic and differencing disks, with the spec's field names, decoded by pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

namespace qcow {

// "Hard Disk Footer Format": 512 bytes, all integers big-endian.
inline constexpr size_t kVhdFooterSize = 512;
// "Dynamic Disk Header Format": 1024 bytes.
inline constexpr size_t kVhdDynamicHeaderSize = 1024;
// "Disk Type" values.
inline constexpr uint32_t kVhdFixed = 2, kVhdDynamic = 3, kVhdDifferencing = 4;
// "Block Allocation Table": an unallocated block.
inline constexpr uint32_t kVhdUnallocated = 0xffffffff;
// "Parent Locator Entries": platform codes.
inline constexpr uint32_t kVhdW2ku = 0x57326b75, kVhdW2ru = 0x57327275, kVhdMacX = 0x4d616358;

struct VhdFooter {
  uint32_t features = 0;
  uint32_t file_format_version = 0;
  uint64_t data_offset = 0;  // the dynamic header's offset; all ones for fixed disks
  uint32_t time_stamp = 0;
  std::string creator_application;  // four characters, e.g. "qem2", "tap\0"
  uint32_t creator_version = 0;
  uint32_t creator_host_os = 0;
  uint64_t original_size = 0;
  uint64_t current_size = 0;  // the guest size in bytes
  uint16_t cylinders = 0;
  uint8_t heads = 0, sectors_per_track = 0;
  uint32_t disk_type = 0;
  uint32_t checksum = 0;
  std::array<uint8_t, 16> unique_id{};
  uint8_t saved_state = 0;
};

struct VhdParentLocator {
  uint32_t platform_code = 0;
  uint32_t platform_data_space = 0;   // sectors reserved for the data
  uint32_t platform_data_length = 0;  // bytes of locator data
  uint64_t platform_data_offset = 0;  // where it is in the file
};

struct VhdDynamicHeader {
  uint64_t data_offset = 0;
  uint64_t table_offset = 0;  // the Block Allocation Table
  uint32_t header_version = 0;
  uint32_t max_table_entries = 0;
  uint32_t block_size = 0;
  uint32_t checksum = 0;
  std::array<uint8_t, 16> parent_unique_id{};
  uint32_t parent_time_stamp = 0;
  std::string parent_unicode_name;  // converted to UTF-8
  std::array<VhdParentLocator, 8> parent_locators{};
};

// What a reader keeps of a VHD: its footer, its dynamic disk header (dynamic and
// differencing disks), and where things are in its file.
struct VhdMetadata {
  VhdFooter footer;
  VhdDynamicHeader header;     // dynamic and differencing disks
  uint64_t footer_offset = 0;  // the footer used: the file's last sector, or 0 (the copy)
  uint64_t data_end = 0;       // blocks must end here: the footer at the end, or the file's end
  uint32_t bitmap_bytes = 0;   // a block's sector bitmap, whole sectors
  uint64_t guest_size = 0;     // the disk's size as QEMU reads it
};

// Returns the one's complement of the sum of the bytes of `structure`, the bytes of the
// checksum field at `checksum_offset` taken as zero ("Checksum" in both structures).
uint32_t VhdChecksum(std::span<const uint8_t> structure, size_t checksum_offset);

// Decodes a footer (at least 512 bytes). Throws FormatError naming the field, the value
// and what is allowed: the cookie "conectix", the checksum, the file format version
// 1.0, a known disk type.
VhdFooter DecodeVhdFooter(std::span<const uint8_t> bytes);

// Decodes a dynamic disk header (at least 1024 bytes). Throws FormatError for the cookie
// "cxsparse", the checksum, the header version 1.0, or a block size that is not a power of
// two of at least one sector.
VhdDynamicHeader DecodeVhdDynamicHeader(std::span<const uint8_t> bytes);

// Returns UTF-16 text (big-endian, as in the header's parent name, or little-endian, as in
// W2ku/W2ru locators) as UTF-8, up to the first NUL. Unpaired surrogates become U+FFFD.
std::string Utf16ToUtf8(std::span<const uint8_t> bytes, bool big_endian);

}  // namespace qcow

// A test-only VHD writer (Microsoft "Virtual Hard Disk Image Format Specification" v1.0):
// fixed, dynamic and differencing disks built in memory, with the guest content the chain
// must read kept alongside, and knobs that damage the file for refusal tests.
//
// Written from the specification alone, independently of qcow/format/vhd.h and every other
// qcow/ header, so that it can catch the project's VHD reader where both could share a
// misreading. Its own output is judged by qemu-img and libvhdi (vhd_writer_test.cc).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace qcowfs_test {

using VhdUuid = std::array<uint8_t, 16>;

inline constexpr uint32_t kVhdSectorSize = 512;
inline constexpr uint32_t kVhdDefaultBlockSize = 2u << 20;
// Footer disk types.
inline constexpr uint32_t kVhdTypeFixed = 2;
inline constexpr uint32_t kVhdTypeDynamic = 3;
inline constexpr uint32_t kVhdTypeDifferencing = 4;
// Parent locator platform codes (the four ASCII characters as a big-endian integer).
inline constexpr uint32_t kVhdPlatformMacX = 0x4D616358;  // "MacX": file URL, UTF-8
inline constexpr uint32_t kVhdPlatformW2ru = 0x57327275;  // "W2ru": relative path, UTF-16LE
inline constexpr uint32_t kVhdPlatformW2ku = 0x57326B75;  // "W2ku": absolute path, UTF-16LE

// A random (version 4) unique id.
VhdUuid RandomVhdUuid();
// Seconds since 2000-01-01 00:00:00 UTC, the VHD time stamp of now.
uint32_t VhdTimestampNow();

// Disk geometry by the specification's CHS algorithm, from the size in bytes.
struct VhdGeometry {
  uint16_t cylinders;
  uint8_t heads;
  uint8_t sectors_per_track;
};
VhdGeometry VhdChsGeometry(uint64_t size);

// One parent locator entry: its platform code and the text of its data area, decoded
// (stored as UTF-8 for MacX and as UTF-16LE for every other code).
struct VhdLocator {
  uint32_t code;
  std::string text;
};

// The locators Differencing() writes for a parent path.
enum class VhdLocatorKind {
  kMacX,  // "file://./sub/p.vhd" ("file:///abs/p.vhd" for an absolute path)
  kW2ru,  // ".\sub\p.vhd" (the path with backslashes if absolute, as blktap writes it)
  kW2ku,  // "C:\abs\p.vhd" for an absolute path; ".\sub\p.vhd" for a relative one
};
VhdLocator MakeVhdLocator(VhdLocatorKind kind, const std::string& parent_path);

struct VhdOptions {
  uint64_t size = 0;  // guest size in bytes, a multiple of 512 (differencing: 0, the parent's)
  uint32_t disk_type = kVhdTypeDynamic;
  uint32_t block_size = kVhdDefaultBlockSize;  // dynamic and differencing disks
  VhdUuid unique_id = RandomVhdUuid();
  std::string creator_app = std::string("tap\0", 4);  // 4 bytes; qemu sizes "tap\0" disks by
                                                      // current size, not by geometry
  uint32_t creator_version = 0x00010003;
  std::string creator_os = "Wi2k";  // 4 bytes: "Wi2k" or "Mac "
  uint32_t timestamp = VhdTimestampNow();
};

// Damage and layout variations applied by Save()/Serialize() only: the guest content and
// Expected() stay those of the undamaged image.
struct VhdQuirks {
  // Which footer copies get a wrong checksum (dynamic and differencing disks have two).
  enum class Where { kNone, kEnd, kCopy, kBoth };
  Where bad_footer_checksum = Where::kNone;
  bool bad_header_checksum = false;
  // Disk type field written instead of the real one (checksum kept right), e.g. 5.
  std::optional<uint32_t> disk_type_field;
  // Raw BAT entries written instead of the real ones (block index -> sector offset), e.g.
  // past the end of the file, or 1 (the dynamic header).
  std::map<uint32_t, uint32_t> bat_overrides;
  // Parent unique id written in a differencing header instead of the parent's.
  std::optional<VhdUuid> parent_unique_id;
  // Zero bytes appended after the footer, as in a logical volume bigger than the VHD
  // (blktap then finds the footer copy at offset 0). Dynamic and differencing disks only.
  uint64_t lv_padding = 0;
  // Zero bytes between the last block and the footer at the end (a multiple of 512), as
  // blktap leaves in a logical volume bigger than the data: the footer is at its very end.
  uint64_t footer_gap = 0;
  // Locator data space in bytes (as blktap writes it) instead of sectors (the spec).
  bool locator_space_in_bytes = false;
  // Byte filling the data of sectors whose bitmap bit is clear inside allocated blocks;
  // unset: zeros in dynamic disks (qemu ignores the bitmap and must read the same), junk
  // (0xE5) in differencing disks, to catch readers that ignore the bitmap.
  std::optional<uint8_t> unset_sector_fill;
  // Alignment of the first block and of every block in the file (a multiple of 512).
  uint32_t block_alignment = kVhdSectorSize;
};

// Where Serialize() puts things, for tests that damage or check a file.
struct VhdLayout {
  uint64_t header_offset = 0;  // dynamic header (0 for fixed disks)
  uint64_t bat_offset = 0;
  uint64_t bat_bytes = 0;                 // sector-padded
  uint32_t bitmap_bytes = 0;              // sector bitmap in front of each block
  std::vector<uint64_t> locator_offsets;  // data areas, in entry order
  std::vector<uint64_t> block_offsets;    // per block, 0 = unallocated
  uint64_t footer_offset = 0;             // the footer at the end (after footer_gap)
  uint64_t file_size = 0;                 // without lv_padding
};

class VhdImage {
 public:
  // A fixed or dynamic disk, all zeros.
  explicit VhdImage(const VhdOptions& options);
  // A differencing disk over parent (copied: later writes to parent do not show through).
  // parent_path is how the child names its parent: relative to the child's directory
  // ('/'-separated) or absolute. The header's parent unicode name is its base name;
  // `locators` says which locator entries to write, in that order.
  VhdImage(const VhdOptions& options, const VhdImage& parent, const std::string& parent_path,
           const std::vector<VhdLocatorKind>& locators);

  static VhdImage Fixed(uint64_t size);
  static VhdImage Dynamic(uint64_t size, uint32_t block_size = kVhdDefaultBlockSize);
  static VhdImage Differencing(
      const VhdImage& parent, const std::string& parent_path,
      const std::vector<VhdLocatorKind>& locators = {VhdLocatorKind::kMacX, VhdLocatorKind::kW2ru,
                                                     VhdLocatorKind::kW2ku},
      uint32_t block_size = kVhdDefaultBlockSize);

  // Writes guest bytes at any offset and length. In dynamic and differencing disks it
  // allocates blocks in the order first written and sets the bitmap bit of every sector
  // touched; the untouched bytes of such a sector keep what the chain read before (the
  // parent's content in a differencing disk).
  void Write(uint64_t offset, std::span<const uint8_t> data);
  // Allocates a block with no bitmap bit set (it must still read as before).
  void AllocateBlock(uint32_t block);

  // Replaces the locator entries (any code, any text; none for "no usable locator").
  void SetLocators(std::vector<VhdLocator> locators) { locators_ = std::move(locators); }
  // Replaces the header's parent unicode name ("" leaves it empty).
  void SetParentUnicodeName(const std::string& name) { parent_name_ = name; }

  // The guest content of the chain up to this layer.
  const std::vector<uint8_t>& Expected() const { return expected_; }
  const VhdUuid& uuid() const { return options_.unique_id; }
  const VhdOptions& options() const { return options_; }
  uint64_t size() const { return options_.size; }
  uint32_t disk_type() const { return options_.disk_type; }
  const std::vector<VhdLocator>& locators() const { return locators_; }
  // Whether this layer holds the sector (bitmap bit set; always true for fixed disks).
  bool SectorPresent(uint64_t sector) const;

  VhdLayout Layout(const VhdQuirks& quirks = {}) const;
  std::vector<uint8_t> Serialize(const VhdQuirks& quirks = {}) const;
  // Writes Serialize(quirks) to path (replacing it); throws on error.
  void Save(const std::string& path, const VhdQuirks& quirks = {}) const;

 private:
  uint32_t block_count() const;
  uint32_t sectors_per_block() const { return options_.block_size / kVhdSectorSize; }
  void MarkSector(uint64_t sector);
  std::vector<uint8_t> Footer(const VhdQuirks& quirks, bool corrupt) const;
  std::vector<uint8_t> DynamicHeader(const VhdQuirks& quirks, const VhdLayout& layout) const;

  VhdOptions options_;
  std::vector<uint8_t> expected_;
  // Dynamic and differencing disks: bitmap bit per sector, and blocks in allocation order.
  std::vector<bool> present_;
  std::vector<bool> allocated_;
  std::vector<uint32_t> allocation_order_;
  // Differencing disks.
  VhdUuid parent_uuid_{};
  uint32_t parent_timestamp_ = 0;
  std::string parent_name_;
  std::vector<VhdLocator> locators_;
};

// Extends each run of present sectors of img to the end of its 8-sector group (one bitmap
// byte), rewriting the bytes the chain already reads there: the content stays the same, and
// libvhdi 20210425, which reads a bitmap byte from its first set bit to its end as set,
// reads it right (see vhd_writer_test.cc).
void PadForLibvhdi(VhdImage& img);

}  // namespace qcowfs_test

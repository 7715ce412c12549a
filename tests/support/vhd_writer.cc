// The test-only VHD writer: the file layout is computed from the in-memory state at save
// time (footer copy, dynamic header, BAT, parent locator data, blocks in allocation order,
// footer), so the same image can be saved undamaged and with any VhdQuirks.
#include "vhd_writer.h"

#include <algorithm>
#include <ctime>
#include <fstream>
#include <random>
#include <stdexcept>

namespace qcowfs_test {
namespace {

constexpr uint64_t kFooterSize = 512;
constexpr uint64_t kHeaderSize = 1024;
constexpr uint64_t kHeaderOffset = kFooterSize;  // right after the footer copy
constexpr uint32_t kUnusedBlock = 0xFFFFFFFF;
constexpr uint32_t kMaxLocators = 8;
constexpr uint8_t kDifferencingJunk = 0xE5;

uint64_t RoundUp(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

void Put16(std::vector<uint8_t>& b, size_t at, uint16_t v) {
  b[at] = uint8_t(v >> 8);
  b[at + 1] = uint8_t(v);
}
void Put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = uint8_t(v >> (24 - 8 * i));
}
void Put64(std::vector<uint8_t>& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = uint8_t(v >> (56 - 8 * i));
}
void PutBytes(std::vector<uint8_t>& b, size_t at, const void* p, size_t n) {
  std::copy_n(static_cast<const uint8_t*>(p), n, b.begin() + at);
}

// One's complement of the byte sum, the checksum field (at `field`) taken as zero.
uint32_t Checksum(const std::vector<uint8_t>& b, size_t field) {
  uint32_t sum = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i < field || i >= field + 4) sum += b[i];
  }
  return ~sum;
}

// UTF-8 to UTF-16 code units (names in tests may well be non-ASCII).
std::u16string Utf16(const std::string& s) {
  std::u16string out;
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = s[i];
    uint32_t cp;
    size_t len;
    if (c < 0x80) {
      cp = c, len = 1;
    } else if ((c >> 5) == 6) {
      cp = c & 0x1F, len = 2;
    } else if ((c >> 4) == 14) {
      cp = c & 0x0F, len = 3;
    } else if ((c >> 3) == 30) {
      cp = c & 0x07, len = 4;
    } else {
      throw std::invalid_argument("bad UTF-8 in " + s);
    }
    if (i + len > s.size()) throw std::invalid_argument("truncated UTF-8 in " + s);
    for (size_t k = 1; k < len; ++k) cp = cp << 6 | (uint8_t(s[i + k]) & 0x3F);
    i += len;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out.push_back(char16_t(0xD800 + (cp >> 10)));
      out.push_back(char16_t(0xDC00 + (cp & 0x3FF)));
    } else {
      out.push_back(char16_t(cp));
    }
  }
  return out;
}

std::vector<uint8_t> Utf16Bytes(const std::string& s, bool big_endian) {
  std::vector<uint8_t> out;
  for (char16_t u : Utf16(s)) {
    const uint8_t hi = uint8_t(u >> 8), lo = uint8_t(u);
    out.push_back(big_endian ? hi : lo);
    out.push_back(big_endian ? lo : hi);
  }
  return out;
}

// The bytes of a locator's data area.
std::vector<uint8_t> LocatorData(const VhdLocator& l) {
  if (l.code == kVhdPlatformMacX) return {l.text.begin(), l.text.end()};
  return Utf16Bytes(l.text, /*big_endian=*/false);
}

std::string Backslashed(std::string s) {
  std::replace(s.begin(), s.end(), '/', '\\');
  return s;
}

void CheckFourBytes(const std::string& s, const char* what) {
  if (s.size() != 4) throw std::invalid_argument(std::string(what) + " must be 4 bytes");
}

}  // namespace

VhdUuid RandomVhdUuid() {
  static std::mt19937_64 rng{std::random_device{}()};
  VhdUuid id;
  for (auto& b : id) b = uint8_t(rng());
  id[6] = (id[6] & 0x0F) | 0x40;  // version 4
  id[8] = (id[8] & 0x3F) | 0x80;  // RFC 4122 variant
  return id;
}

uint32_t VhdTimestampNow() {
  constexpr time_t kY2k = 946684800;  // 2000-01-01 00:00:00 UTC in Unix time
  return uint32_t(time(nullptr) - kY2k);
}

VhdGeometry VhdChsGeometry(uint64_t size) {
  // The specification's algorithm (appendix "CHS Calculation"), word for word.
  uint64_t total = size / kVhdSectorSize;
  uint64_t spt, heads, cth;
  if (total > 65535ull * 16 * 255) total = 65535ull * 16 * 255;
  if (total >= 65535ull * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = total / spt;
  } else {
    spt = 17;
    cth = total / spt;
    heads = (cth + 1023) / 1024;
    if (heads < 4) heads = 4;
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = total / spt;
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = total / spt;
    }
  }
  return {uint16_t(cth / heads), uint8_t(heads), uint8_t(spt)};
}

VhdLocator MakeVhdLocator(VhdLocatorKind kind, const std::string& parent_path) {
  const bool absolute = !parent_path.empty() && parent_path[0] == '/';
  std::string rel = parent_path;
  if (!absolute && rel.rfind("./", 0) == 0) rel = rel.substr(2);
  switch (kind) {
    case VhdLocatorKind::kMacX:
      return {kVhdPlatformMacX, absolute ? "file://" + parent_path : "file://./" + rel};
    case VhdLocatorKind::kW2ru:
      return {kVhdPlatformW2ru, absolute ? Backslashed(parent_path) : ".\\" + Backslashed(rel)};
    case VhdLocatorKind::kW2ku:
      return {kVhdPlatformW2ku,
              absolute ? "C:" + Backslashed(parent_path) : ".\\" + Backslashed(rel)};
  }
  throw std::invalid_argument("unknown locator kind");
}

VhdImage::VhdImage(const VhdOptions& options) : options_(options) {
  if (options_.disk_type != kVhdTypeFixed && options_.disk_type != kVhdTypeDynamic) {
    throw std::invalid_argument("VhdImage: fixed or dynamic without a parent");
  }
  if (options_.size == 0 || options_.size % kVhdSectorSize) {
    throw std::invalid_argument("VhdImage: size must be a positive multiple of 512");
  }
  CheckFourBytes(options_.creator_app, "creator_app");
  CheckFourBytes(options_.creator_os, "creator_os");
  expected_.assign(options_.size, 0);
  if (options_.disk_type != kVhdTypeFixed) {
    if (options_.block_size == 0 || options_.block_size % kVhdSectorSize) {
      throw std::invalid_argument("VhdImage: block size must be a positive multiple of 512");
    }
    if ((options_.size + options_.block_size - 1) / options_.block_size > UINT32_MAX - 1) {
      throw std::invalid_argument("VhdImage: too many blocks");
    }
    present_.assign(options_.size / kVhdSectorSize, false);
    allocated_.assign(block_count(), false);
  }
}

VhdImage::VhdImage(const VhdOptions& options, const VhdImage& parent,
                   const std::string& parent_path, const std::vector<VhdLocatorKind>& locators)
    : VhdImage([&] {
        // Checked and sized as a dynamic disk, then turned into a differencing one.
        // A child of another size: libvhdi refuses to read past its parent's end, so there
        // would be no judge for what such a chain reads.
        if (options.size != 0 && options.size != parent.size()) {
          throw std::invalid_argument("VhdImage: a differencing disk has its parent's size");
        }
        VhdOptions o = options;
        o.disk_type = kVhdTypeDynamic;
        o.size = parent.size();
        return o;
      }()) {
  options_.disk_type = kVhdTypeDifferencing;
  expected_ = parent.expected_;  // what the chain reads until this layer writes
  parent_uuid_ = parent.uuid();
  parent_timestamp_ = parent.options_.timestamp;
  parent_name_ = parent_path.substr(parent_path.find_last_of('/') + 1);
  for (VhdLocatorKind k : locators) locators_.push_back(MakeVhdLocator(k, parent_path));
}

VhdImage VhdImage::Fixed(uint64_t size) {
  VhdOptions o;
  o.size = size;
  o.disk_type = kVhdTypeFixed;
  return VhdImage(o);
}

VhdImage VhdImage::Dynamic(uint64_t size, uint32_t block_size) {
  VhdOptions o;
  o.size = size;
  o.block_size = block_size;
  return VhdImage(o);
}

VhdImage VhdImage::Differencing(const VhdImage& parent, const std::string& parent_path,
                                const std::vector<VhdLocatorKind>& locators, uint32_t block_size) {
  VhdOptions o;
  o.block_size = block_size;
  return VhdImage(o, parent, parent_path, locators);
}

uint32_t VhdImage::block_count() const {
  return uint32_t((options_.size + options_.block_size - 1) / options_.block_size);
}

void VhdImage::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset > size() || data.size() > size() - offset) {
    throw std::out_of_range("VhdImage::Write past the end of the disk");
  }
  if (data.empty()) return;
  std::copy(data.begin(), data.end(), expected_.begin() + offset);
  if (disk_type() == kVhdTypeFixed) return;
  // Untouched bytes of a touched sector already hold what the chain read there before,
  // so the layer stores the whole sector from expected_.
  const uint64_t last = (offset + data.size() - 1) / kVhdSectorSize;
  for (uint64_t s = offset / kVhdSectorSize; s <= last; ++s) MarkSector(s);
}

void VhdImage::AllocateBlock(uint32_t block) {
  if (disk_type() == kVhdTypeFixed || block >= block_count()) {
    throw std::out_of_range("VhdImage::AllocateBlock: no such block");
  }
  if (!allocated_[block]) {
    allocated_[block] = true;
    allocation_order_.push_back(block);
  }
}

void VhdImage::MarkSector(uint64_t sector) {
  AllocateBlock(uint32_t(sector / sectors_per_block()));
  present_[sector] = true;
}

bool VhdImage::SectorPresent(uint64_t sector) const {
  if (disk_type() == kVhdTypeFixed) return sector < size() / kVhdSectorSize;
  return sector < present_.size() && present_[sector];
}

VhdLayout VhdImage::Layout(const VhdQuirks& quirks) const {
  VhdLayout l;
  if (disk_type() == kVhdTypeFixed) {
    if (quirks.footer_gap) throw std::invalid_argument("a fixed disk's footer follows its data");
    l.footer_offset = size();
    l.file_size = size() + kFooterSize;
    return l;
  }
  if (quirks.block_alignment == 0 || quirks.block_alignment % kVhdSectorSize) {
    throw std::invalid_argument("VhdQuirks: block alignment must be a multiple of 512");
  }
  if (locators_.size() > kMaxLocators) throw std::invalid_argument("more than 8 locators");
  l.header_offset = kHeaderOffset;
  l.bat_offset = kHeaderOffset + kHeaderSize;
  l.bat_bytes = RoundUp(uint64_t{block_count()} * 4, kVhdSectorSize);
  l.bitmap_bytes = uint32_t(RoundUp((sectors_per_block() + 7) / 8, kVhdSectorSize));
  uint64_t at = l.bat_offset + l.bat_bytes;
  for (const VhdLocator& loc : locators_) {
    l.locator_offsets.push_back(at);
    at += std::max<uint64_t>(RoundUp(LocatorData(loc).size(), kVhdSectorSize), kVhdSectorSize);
  }
  l.block_offsets.assign(block_count(), 0);
  for (uint32_t b : allocation_order_) {
    at = RoundUp(at, quirks.block_alignment);
    l.block_offsets[b] = at;
    at += l.bitmap_bytes + options_.block_size;
  }
  if (quirks.footer_gap % kVhdSectorSize) {
    throw std::invalid_argument("VhdQuirks: footer gap must be a multiple of 512");
  }
  l.footer_offset = at + quirks.footer_gap;
  l.file_size = l.footer_offset + kFooterSize;
  return l;
}

std::vector<uint8_t> VhdImage::Footer(const VhdQuirks& quirks, bool corrupt) const {
  std::vector<uint8_t> f(kFooterSize, 0);
  PutBytes(f, 0, "conectix", 8);
  Put32(f, 8, 2);  // features: "reserved", always set
  Put32(f, 12, 0x00010000);
  Put64(f, 16, disk_type() == kVhdTypeFixed ? ~uint64_t{0} : kHeaderOffset);
  Put32(f, 24, options_.timestamp);
  PutBytes(f, 28, options_.creator_app.data(), 4);
  Put32(f, 32, options_.creator_version);
  PutBytes(f, 36, options_.creator_os.data(), 4);
  Put64(f, 40, size());  // original size
  Put64(f, 48, size());  // current size
  const VhdGeometry g = VhdChsGeometry(size());
  Put16(f, 56, g.cylinders);
  f[58] = g.heads;
  f[59] = g.sectors_per_track;
  Put32(f, 60, quirks.disk_type_field.value_or(disk_type()));
  PutBytes(f, 68, options_.unique_id.data(), 16);
  f[84] = 0;  // saved state
  Put32(f, 64, Checksum(f, 64) ^ (corrupt ? 0x00010000u : 0u));
  return f;
}

std::vector<uint8_t> VhdImage::DynamicHeader(const VhdQuirks& quirks,
                                             const VhdLayout& layout) const {
  std::vector<uint8_t> h(kHeaderSize, 0);
  PutBytes(h, 0, "cxsparse", 8);
  Put64(h, 8, ~uint64_t{0});  // data offset: unused
  Put64(h, 16, layout.bat_offset);
  Put32(h, 24, 0x00010000);
  Put32(h, 28, block_count());
  Put32(h, 32, options_.block_size);
  if (disk_type() == kVhdTypeDifferencing) {
    const VhdUuid parent = quirks.parent_unique_id.value_or(parent_uuid_);
    PutBytes(h, 40, parent.data(), 16);
    Put32(h, 56, parent_timestamp_);
    const std::vector<uint8_t> name = Utf16Bytes(parent_name_, /*big_endian=*/true);
    if (name.size() > 512) throw std::invalid_argument("parent unicode name too long");
    PutBytes(h, 64, name.data(), name.size());
    for (size_t i = 0; i < locators_.size(); ++i) {
      const size_t e = 576 + 24 * i;
      const uint64_t len = LocatorData(locators_[i]).size();
      const uint64_t space = std::max<uint64_t>(RoundUp(len, kVhdSectorSize), kVhdSectorSize);
      Put32(h, e, locators_[i].code);
      Put32(h, e + 4, uint32_t(quirks.locator_space_in_bytes ? space : space / kVhdSectorSize));
      Put32(h, e + 8, uint32_t(len));
      Put64(h, e + 16, layout.locator_offsets[i]);
    }
  }
  Put32(h, 36, Checksum(h, 36) ^ (quirks.bad_header_checksum ? 0x00010000u : 0u));
  return h;
}

std::vector<uint8_t> VhdImage::Serialize(const VhdQuirks& quirks) const {
  using Where = VhdQuirks::Where;
  const VhdLayout l = Layout(quirks);
  const bool end_bad =
      quirks.bad_footer_checksum == Where::kEnd || quirks.bad_footer_checksum == Where::kBoth;
  const bool copy_bad =
      quirks.bad_footer_checksum == Where::kCopy || quirks.bad_footer_checksum == Where::kBoth;
  std::vector<uint8_t> out(l.file_size + quirks.lv_padding, 0);
  const auto put = [&](uint64_t at, const std::vector<uint8_t>& bytes) {
    std::copy(bytes.begin(), bytes.end(), out.begin() + at);
  };
  if (disk_type() == kVhdTypeFixed) {
    if (quirks.lv_padding) throw std::invalid_argument("a fixed disk has no footer copy");
    put(0, expected_);
    put(l.footer_offset, Footer(quirks, end_bad));
    return out;
  }
  put(0, Footer(quirks, copy_bad));
  put(l.header_offset, DynamicHeader(quirks, l));
  for (uint32_t b = 0; b < block_count(); ++b) {
    uint32_t entry =
        l.block_offsets[b] ? uint32_t(l.block_offsets[b] / kVhdSectorSize) : kUnusedBlock;
    if (auto o = quirks.bat_overrides.find(b); o != quirks.bat_overrides.end()) entry = o->second;
    Put32(out, l.bat_offset + 4 * uint64_t{b}, entry);
  }
  for (size_t i = 0; i < locators_.size(); ++i)
    put(l.locator_offsets[i], LocatorData(locators_[i]));
  const uint8_t fill = quirks.unset_sector_fill.value_or(
      disk_type() == kVhdTypeDifferencing ? kDifferencingJunk : 0);
  const uint64_t spb = sectors_per_block();
  for (uint32_t b : allocation_order_) {
    const uint64_t bitmap = l.block_offsets[b], data = bitmap + l.bitmap_bytes;
    for (uint64_t i = 0; i < spb; ++i) {
      const uint64_t sector = uint64_t{b} * spb + i;
      uint8_t* dst = &out[data + i * kVhdSectorSize];
      if (SectorPresent(sector)) {
        out[bitmap + i / 8] |= uint8_t(0x80 >> (i % 8));  // MSB first
        std::copy_n(expected_.begin() + sector * kVhdSectorSize, kVhdSectorSize, dst);
      } else {
        std::fill_n(dst, kVhdSectorSize, fill);
      }
    }
  }
  put(l.footer_offset, Footer(quirks, end_bad));
  return out;
}

void VhdImage::Save(const std::string& path, const VhdQuirks& quirks) const {
  const std::vector<uint8_t> bytes = Serialize(quirks);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  f.close();
  if (!f) throw std::runtime_error("VhdImage::Save: cannot write " + path);
}

void PadForLibvhdi(VhdImage& img) {
  const uint64_t sectors = img.size() / kVhdSectorSize;
  for (uint64_t group = 0; group < sectors; group += 8) {
    const uint64_t end = std::min(group + 8, sectors);
    uint64_t first = group;
    while (first < end && !img.SectorPresent(first)) ++first;
    if (first == end) continue;
    const std::vector<uint8_t> same(img.Expected().begin() + first * kVhdSectorSize,
                                    img.Expected().begin() + end * kVhdSectorSize);
    img.Write(first * kVhdSectorSize, same);
  }
}

}  // namespace qcowfs_test

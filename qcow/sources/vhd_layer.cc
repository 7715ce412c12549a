#include "qcow/sources/vhd_layer.h"

#include <algorithm>
#include <cstring>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/sources/layer_reader.h"
#include "qcow/sources/paths.h"

namespace qcow {
namespace {

using Kind = ChainExtent::Kind;

bool HasCookie(std::span<const uint8_t> s) {
  return s.size() >= 8 && std::memcmp(s.data(), "conectix", 8) == 0;
}

VhdFooter Footer(std::span<const uint8_t> s, const std::string& path, uint64_t at) {
  try {
    return DecodeVhdFooter(s);
  } catch (const FormatError& e) {
    Refuse(path + ": the VHD footer at " + std::to_string(at) + ": " + e.what());
  }
}

// The parent locator data longer than this is not a path.
constexpr uint32_t kMaxLocatorBytes = 64 * 1024;
// The largest VHD: 2040 GiB (QEMU's and blktap's limit).
constexpr uint64_t kVhdMaxSize = uint64_t{2040} << 30;
// The smallest block size read (see ReadVhdMetadata).
constexpr uint32_t kMinBlockSize = 4096;

// Returns the path a locator's data names, with '/' separators; "" when it names none.
// Windows paths lose their drive letter (an absolute W2ku path is found by its name).
std::string LocatorPath(uint32_t code, std::span<const uint8_t> data) {
  std::string text;
  if (code == kVhdMacX) {
    text.assign(reinterpret_cast<const char*>(data.data()), data.size());
    text = text.substr(0, text.find('\0'));
    if (text.rfind("file://", 0) == 0) text = text.substr(7);
    return text;
  }
  text = Utf16ToUtf8(data, false);
  std::replace(text.begin(), text.end(), '\\', '/');
  if (text.size() >= 2 && text[1] == ':') return BaseName(text);  // "C:/dir/parent.vhd"
  return text;
}

}  // namespace

uint64_t VhdGuestSize(const VhdFooter& f) {
  // Hyper-V, QEMU's "qem2", Disk2vhd, XenConverter and XenServer's tapdisk size the disk
  // by the current size; every other creator (Virtual PC, older QEMU, ...) by the geometry.
  const std::string& app = f.creator_application;
  const bool current = app == "win " || app == "qem2" || app == "d2v " || app == "CTXS" ||
                       app == std::string("tap\0", 4);
  const bool max_chs = f.cylinders == 65535 && f.heads == 16 && f.sectors_per_track == 255;
  if (!current && !max_chs) {
    return uint64_t{f.cylinders} * f.heads * f.sectors_per_track * kSectorSize;
  }
  return f.current_size / kSectorSize * kSectorSize;  // whole sectors, as QEMU reads it
}

const char* VhdDiskTypeName(uint32_t disk_type) {
  switch (disk_type) {
    case kVhdFixed:
      return "fixed";
    case kVhdDynamic:
      return "dynamic";
    default:
      return "differencing";
  }
}

std::string UuidText(std::span<const uint8_t, 16> id) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < id.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[id[i] >> 4];
    out += kHex[id[i] & 15];
  }
  return out;
}

std::optional<VhdMetadata> ReadVhdMetadata(int fd, const std::string& path, uint64_t file_size,
                                           std::span<const uint8_t> head, bool volume) {
  if (file_size < kVhdFooterSize) return std::nullopt;
  std::vector<uint8_t> tail(kVhdFooterSize);
  const uint64_t tail_at = file_size - kVhdFooterSize;
  tail.resize(PreadUpTo(fd, path, tail_at, tail.data(), tail.size()));
  const bool at_end = HasCookie(tail);
  const bool at_start = HasCookie(head);
  if (!at_end && !at_start) return std::nullopt;

  VhdMetadata m;
  if (at_end) {
    m.footer = Footer(tail, path, tail_at);
    m.footer_offset = m.data_end = tail_at;
    if (at_start && (m.footer.disk_type != kVhdFixed || volume)) {
      // A VHD in a logical volume larger than itself keeps its footer where its data ends;
      // the end of the volume may hold an older VHD's footer, of any type (LVM SRs hold
      // dynamic and differencing VHDs only). The copy at offset 0 tells (a damaged copy
      // does not: the footer at the end is the one that counts). In a file, whose end is the
      // VHD's, a fixed footer there is the VHD's own: its offset 0 is guest data.
      std::optional<VhdFooter> copy;
      try {
        copy = DecodeVhdFooter(head);
      } catch (const FormatError&) {
      }
      if (copy && copy->unique_id != m.footer.unique_id && copy->disk_type != kVhdFixed) {
        m.footer = *copy;
        m.footer_offset = 0;
        m.data_end = file_size;
      }
    }
  } else {
    m.footer = Footer(head, path, 0);
    if (m.footer.disk_type == kVhdFixed) {
      Refuse(path +
             ": a fixed VHD's footer is at offset 0 instead of its end: the file is damaged");
    }
    m.footer_offset = 0;
    m.data_end = file_size;  // a VHD in a larger logical volume: its end is not known
  }
  m.guest_size = VhdGuestSize(m.footer);
  if (m.guest_size > kVhdMaxSize) {
    Refuse(path + ": the VHD's size is " + std::to_string(m.guest_size) +
           " bytes, past the VHD limit of 2040 GiB: the footer is damaged");
  }
  if (m.footer.disk_type == kVhdFixed) {
    if (m.guest_size > m.data_end) {
      Refuse(path + ": the fixed VHD's footer says " + std::to_string(m.guest_size) +
             " bytes but the file holds " + std::to_string(m.data_end) +
             " before its footer: the file is truncated");
    }
    return m;
  }

  const uint64_t h = m.footer.data_offset;
  if (h < kVhdFooterSize || h > m.data_end || kVhdDynamicHeaderSize > m.data_end - h) {
    Refuse(path + ": the VHD footer places the dynamic disk header at " + std::to_string(h) +
           ", outside the file's " + std::to_string(m.data_end) + " bytes of data");
  }
  std::vector<uint8_t> header(kVhdDynamicHeaderSize);
  PreadUpTo(fd, path, h, header.data(), header.size());
  try {
    m.header = DecodeVhdDynamicHeader(header);
  } catch (const FormatError& e) {
    Refuse(path + ": " + e.what());
  }
  const VhdDynamicHeader& d = m.header;
  if (d.block_size < kMinBlockSize) {
    // The specification gives such blocks a one-sector bitmap, QEMU none: the readers
    // disagree about every byte, so neither reading can be trusted.
    Refuse(path + ": the VHD block size is " + std::to_string(d.block_size) +
           " bytes; qcowfs reads blocks of 4096 bytes and more (readers disagree about the "
           "sector bitmap of smaller ones)");
  }
  if (uint64_t{d.max_table_entries} * d.block_size < m.guest_size) {
    Refuse(path + ": the VHD's Block Allocation Table has " + std::to_string(d.max_table_entries) +
           " entries of " + std::to_string(d.block_size) + " bytes, too few for its " +
           std::to_string(m.guest_size) + " bytes");
  }
  const uint64_t bat = d.table_offset, bat_bytes = uint64_t{d.max_table_entries} * 4;
  if (bat > m.data_end || bat_bytes > m.data_end - bat) {
    Refuse(path + ": the VHD's Block Allocation Table (" + std::to_string(d.max_table_entries) +
           " entries at " + std::to_string(bat) + ") lies past the end of the file's " +
           std::to_string(m.data_end) + " bytes of data: the file is truncated");
  }
  const uint64_t sectors_per_block = d.block_size / kSectorSize;
  m.bitmap_bytes = static_cast<uint32_t>(RoundUpToSector((sectors_per_block + 7) / 8));
  return m;
}

std::vector<VhdParentCandidate> VhdParentCandidates(const Layer& child,
                                                    const std::vector<std::string>& search_path) {
  const VhdDynamicHeader& d = child.vhd->header;
  std::vector<std::string> names;
  for (const VhdParentLocator& l : d.parent_locators) {
    if (l.platform_code != kVhdW2ku && l.platform_code != kVhdW2ru && l.platform_code != kVhdMacX) {
      continue;
    }
    if (l.platform_data_length == 0) continue;
    if (l.platform_data_length > kMaxLocatorBytes) {
      Refuse(child.path + ": a parent locator's data is " + std::to_string(l.platform_data_length) +
             " bytes long, too long for a path");
    }
    if (l.platform_data_offset > child.file_size ||
        l.platform_data_length > child.file_size - l.platform_data_offset) {
      Refuse(child.path + ": a parent locator's data (" + std::to_string(l.platform_data_length) +
             " bytes at " + std::to_string(l.platform_data_offset) +
             ") lies outside the file: the file is damaged");
    }
    std::vector<uint8_t> data(l.platform_data_length);
    PreadUpTo(child.fd, child.path, l.platform_data_offset, data.data(), data.size());
    if (std::string name = LocatorPath(l.platform_code, data); !name.empty()) {
      names.push_back(std::move(name));
    }
  }
  std::vector<VhdParentCandidate> out;
  auto add = [&](const std::string& path, const std::string& named_as) {
    for (const VhdParentCandidate& c : out) {
      if (c.path == path) return;
    }
    out.push_back({path, named_as});
  };
  for (const std::string& n : names) {
    std::string relative = n;  // "./parent.vhd", as blktap writes it, is "parent.vhd"
    while (relative.rfind("./", 0) == 0) relative.erase(0, 2);
    add(n.front() == '/' ? n : DirName(child.path) + "/" + relative, n);
  }
  if (!d.parent_unicode_name.empty()) names.push_back(d.parent_unicode_name);
  for (const std::string& dir : search_path) {
    for (const std::string& n : names) add(dir + "/" + BaseName(n), BaseName(n));
  }
  if (!d.parent_unicode_name.empty() && out.empty()) {
    add(DirName(child.path) + "/" + BaseName(d.parent_unicode_name),
        BaseName(d.parent_unicode_name));
  }
  return out;
}

std::vector<ChainExtent> VhdBlockExtents(const Layer& layer, uint32_t depth) {
  const VhdMetadata& m = *layer.vhd;
  const VhdDynamicHeader& d = m.header;
  const uint64_t block = d.block_size, size = layer.virtual_size;
  const uint64_t entries = std::min<uint64_t>(d.max_table_entries, (size + block - 1) / block);
  // What a block must not overlap: the footer copy, the header, the BAT, the locators.
  std::vector<std::pair<uint64_t, uint64_t>> metadata = {
      {0, kVhdFooterSize},
      {m.footer.data_offset, m.footer.data_offset + kVhdDynamicHeaderSize},
      {d.table_offset, d.table_offset + RoundUpToSector(uint64_t{d.max_table_entries} * 4)}};
  for (const VhdParentLocator& l : d.parent_locators) {
    if (l.platform_code != 0 && l.platform_data_length != 0) {
      metadata.emplace_back(l.platform_data_offset,
                            l.platform_data_offset + l.platform_data_length);
    }
  }
  std::vector<std::pair<uint64_t, uint64_t>> blocks;  // [start, end) in the file, to check
  std::vector<ChainExtent> out;
  std::vector<uint8_t> bitmap(m.bitmap_bytes);
  constexpr uint64_t kChunk = 64 * 1024;  // BAT entries read at once
  std::vector<uint8_t> bat(kChunk * 4);
  for (uint64_t first = 0; first < entries; first += kChunk) {
    const uint64_t n = std::min(kChunk, entries - first);
    PreadUpTo(layer.fd, layer.path, d.table_offset + first * 4, bat.data(), n * 4);
    for (uint64_t i = 0; i < n; ++i) {
      const uint32_t sector = LoadBe32(&bat[i * 4]);
      if (sector == kVhdUnallocated) continue;
      const uint64_t b = first + i, guest = b * block;
      const uint64_t used =
          RoundUpToSector(std::min(block, size - guest));  // the last may be short
      const uint64_t start = uint64_t{sector} * kSectorSize, end = start + m.bitmap_bytes + used;
      const std::string where = layer.path + ": BAT entry " + std::to_string(b) +
                                " (guest offset " + std::to_string(guest) + ") points to " +
                                std::to_string(start);
      if (end > m.data_end) {
        Refuse(where + ", so its block ends past the file's " + std::to_string(m.data_end) +
               " bytes of data: the file is truncated or damaged");
      }
      for (const auto& [lo, hi] : metadata) {
        if (start < hi && lo < end) {
          Refuse(where + ", so its block overlaps the VHD's metadata at " + std::to_string(lo) +
                 ": the file is damaged");
        }
      }
      blocks.emplace_back(start, end);
      PreadUpTo(layer.fd, layer.path, start, bitmap.data(), bitmap.size());
      // Runs of set bits (most significant bit first) are sectors this layer defines.
      const uint64_t sectors = used / kSectorSize;
      const uint64_t data = start + m.bitmap_bytes;
      const auto set = [&](uint64_t k) { return (bitmap[k / 8] >> (7 - k % 8)) & 1; };
      for (uint64_t s = 0; s < sectors;) {
        if (s % 8 == 0 && bitmap[s / 8] == 0) {
          s += 8;
          continue;
        }
        if (!set(s)) {
          ++s;
          continue;
        }
        uint64_t e = s + 1;
        while (e < sectors) {
          if (e % 8 == 0 && bitmap[e / 8] == 0xff) {
            e += 8;
          } else if (set(e)) {
            ++e;
          } else {
            break;
          }
        }
        e = std::min(e, sectors);
        ChainExtent x;
        x.guest = guest + s * kSectorSize;
        x.length = std::min(e * kSectorSize, size - guest) - s * kSectorSize;
        x.host = data + s * kSectorSize;
        x.depth = depth;
        x.kind = Kind::kData;
        x.has_host = true;
        out.push_back(x);
        s = e;
      }
    }
  }
  std::sort(blocks.begin(), blocks.end());
  for (size_t i = 1; i < blocks.size(); ++i) {
    if (blocks[i].first < blocks[i - 1].second) {
      Refuse(layer.path + ": two BAT entries point to overlapping blocks at " +
             std::to_string(blocks[i - 1].first) + " and " + std::to_string(blocks[i].first) +
             ": the file is damaged");
    }
  }
  return out;
}

}  // namespace qcow

#include "crafted_image.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

#include "test_util.h"

namespace qcowfs_test {
namespace {

// qcow2.txt, "Cluster mapping": offset bits 9-55 of L1 and standard L2 entries; bit 62
// compressed, bit 63 copied, bit 0 (standard L2, no subclusters) reads as zeros.
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;
constexpr uint64_t kCopied = 1ull << 63;
constexpr uint64_t kCompressedBit = 1ull << 62;
constexpr uint64_t kZeroBit = 1;
// qcow2.txt, "Header": incompatible feature bits 3 (compression type) and 4 (extended L2).
constexpr uint64_t kIncompatCompression = 1ull << 3;
constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;
// qcow2.txt, "Compressed Clusters Descriptor": spans count 512-byte sectors.
constexpr uint64_t kSector = 512;

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void Be(uint8_t* p, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}

uint64_t LoadBe(const std::vector<uint8_t>& img, uint64_t off) {
  uint64_t v = 0;
  for (uint64_t i = 0; i < 8; ++i) v = v << 8 | (off + i < img.size() ? img[off + i] : 0);
  return v;
}

void Put(std::vector<uint8_t>& img, uint64_t off, std::span<const uint8_t> bytes) {
  if (off + bytes.size() > img.size()) img.resize(off + bytes.size());
  std::copy(bytes.begin(), bytes.end(), img.begin() + static_cast<std::ptrdiff_t>(off));
}

}  // namespace

CraftedImage::CraftedImage(const CraftedOptions& options) : o_(options) {
  if (o_.cluster_bits < 9 || o_.cluster_bits > 21) throw std::invalid_argument("cluster_bits");
  if (o_.version != 2 && o_.version != 3) throw std::invalid_argument("version");
  if (o_.refcount_order > 6) throw std::invalid_argument("refcount_order");
  if (o_.version == 2 &&
      (o_.refcount_order != 4 || o_.compression != Compression::kDeflate || o_.extended_l2)) {
    throw std::invalid_argument("version 2 has 16-bit refcounts, deflate and no extended L2");
  }
  if (o_.version == 3 && o_.header_length == 0) o_.header_length = 112;
  const uint64_t c = cluster_size();
  l1_size_ = o_.l1_size ? o_.l1_size
                        : static_cast<uint32_t>((o_.virtual_size + l2_span() - 1) / l2_span());
  end_ = c;  // the header cluster
  if (o_.tables_first) {
    refcount_table_ = {Allocate(), 1};
    block_slots_.push_back(Allocate());
    l1_offset_ = Allocate(std::max<uint64_t>(1, RoundUp(uint64_t{l1_size_} * 8, c) / c));
  }
}

uint64_t CraftedImage::Allocate(uint64_t clusters) {
  const uint64_t off = RoundUp(end_, cluster_size());
  end_ = off + clusters * cluster_size();
  return off;
}

void CraftedImage::Extend(uint64_t end) { end_ = std::max(end_, end); }

void CraftedImage::PlaceL1(uint64_t offset) {
  l1_offset_ = offset;
  Extend(offset + std::max<uint64_t>(1, RoundUp(uint64_t{l1_size_} * 8, cluster_size())));
}

void CraftedImage::PlaceRefcountTable(uint64_t offset, uint32_t clusters) {
  refcount_table_ = {offset, clusters};
  Extend(offset + clusters * cluster_size());
}

void CraftedImage::AddRefcountBlockSlot(uint64_t offset) {
  block_slots_.push_back(offset);
  Extend(offset + cluster_size());
}

uint64_t CraftedImage::AddL2Table(uint64_t l1_index, std::optional<uint64_t> offset) {
  const uint64_t off = offset ? *offset : Allocate();
  tables_.try_emplace(off, std::vector<uint8_t>(cluster_size()));
  SetL1Entry(l1_index, off);
  Extend(off + cluster_size());
  return off;
}

void CraftedImage::SetL1Entry(uint64_t index, uint64_t raw) {
  if (index >= l1_size_) throw std::out_of_range("L1 index " + std::to_string(index));
  l1_[index] = raw;
}

void CraftedImage::SetL2Entry(uint64_t table_offset, uint64_t index, uint64_t word,
                              uint64_t bitmap) {
  if (index >= l2_entries()) throw std::out_of_range("L2 index " + std::to_string(index));
  auto& t = tables_.try_emplace(table_offset, std::vector<uint8_t>(cluster_size())).first->second;
  const uint64_t size = o_.extended_l2 ? 16 : 8;
  Be(&t[index * size], word, 8);
  if (o_.extended_l2) Be(&t[index * size + 8], bitmap, 8);
  Extend(table_offset + cluster_size());
}

std::vector<uint8_t>& CraftedImage::TableFor(uint64_t guest, uint64_t* index) {
  const uint64_t l1_index = guest / l2_span();
  auto it = l1_.find(l1_index);
  if (it == l1_.end() || (it->second & kOffsetMask) == 0) AddL2Table(l1_index);
  const uint64_t off = l1_.at(l1_index) & kOffsetMask;
  *index = guest % l2_span() / cluster_size();
  return tables_.try_emplace(off, std::vector<uint8_t>(cluster_size())).first->second;
}

void CraftedImage::MapRaw(uint64_t guest, uint64_t word, uint64_t bitmap) {
  uint64_t index = 0;
  auto& t = TableFor(guest, &index);
  const uint64_t size = o_.extended_l2 ? 16 : 8;
  Be(&t[index * size], word, 8);
  if (o_.extended_l2) Be(&t[index * size + 8], bitmap, 8);
}

void CraftedImage::MapData(uint64_t guest, uint64_t host) {
  MapRaw(guest, host, o_.extended_l2 ? 0xffffffffull : 0);
}

void CraftedImage::MapZero(uint64_t guest, uint64_t host) {
  if (o_.extended_l2) return MapRaw(guest, host, 0xffffffff00000000ull);
  MapRaw(guest, host | kZeroBit);
}

void CraftedImage::MapSubclusters(uint64_t guest, uint64_t host, uint32_t alloc, uint32_t zero) {
  MapRaw(guest, host, uint64_t{zero} << 32 | alloc);
}

void CraftedImage::MapCompressed(uint64_t guest, const CompressedSpan& span) {
  MapRaw(guest, CompressedEntry(span));
}

uint64_t CraftedImage::CompressedEntry(const CompressedSpan& span) const {
  const unsigned x = 62 - (o_.cluster_bits - 8);
  if (span.sectors == 0 || span.sectors - 1 >= (uint64_t{1} << (o_.cluster_bits - 8)) ||
      span.offset >= (uint64_t{1} << x)) {
    throw std::out_of_range("compressed span does not fit a descriptor");
  }
  return kCompressedBit | (span.sectors - 1) << x | span.offset;
}

void CraftedImage::PutData(uint64_t offset, std::span<const uint8_t> bytes) {
  data_.emplace_back(offset, std::vector<uint8_t>(bytes.begin(), bytes.end()));
  Extend(offset + bytes.size());
}

uint64_t CraftedImage::AddDataCluster(uint64_t seed) {
  const uint64_t off = Allocate();
  PutData(off, RandomBytes(cluster_size(), seed));
  return off;
}

CompressedSpan CraftedImage::PutCompressed(uint64_t offset, std::span<const uint8_t> compressed,
                                           uint64_t extra_sectors) {
  PutData(offset, compressed);
  return {offset, RoundUp(offset % kSector + compressed.size(), kSector) / kSector + extra_sectors};
}

CompressedSpan CraftedImage::PackCompressed(std::span<const uint8_t> compressed) {
  if (packed_end_ == 0 || packed_limit_ != end_) {
    packed_end_ = Allocate();
    packed_limit_ = end_;
  }
  const uint64_t off = packed_end_;
  while (off + compressed.size() > packed_limit_) packed_limit_ = Allocate() + cluster_size();
  packed_end_ = off + compressed.size();
  return PutCompressed(off, compressed);
}

void CraftedImage::AddReference(uint64_t offset, uint64_t length) {
  extra_refs_.emplace_back(offset, length);
}

void CraftedImage::OverrideRefcount(uint64_t cluster, uint64_t value) {
  refcount_overrides_[cluster] = value;
}

void CraftedImage::OverrideRefcountTableEntry(uint64_t index, uint64_t raw) {
  table_overrides_[index] = raw;
}

std::vector<uint8_t> CraftedImage::EncodeHeader(uint64_t l1_offset, uint64_t rt_offset,
                                                uint32_t rt_clusters) const {
  const uint64_t length = o_.version == 2 ? 72 : o_.header_length;
  std::vector<uint8_t> h(std::max<uint64_t>(length, 112));
  Be(&h[0], 0x514649fb, 4);  // "QFI\xfb"
  Be(&h[4], o_.version, 4);
  Be(&h[20], o_.cluster_bits, 4);
  Be(&h[24], o_.virtual_size, 8);
  Be(&h[36], l1_size_, 4);
  Be(&h[40], l1_size_ ? l1_offset : 0, 8);
  Be(&h[48], rt_offset, 8);
  Be(&h[56], rt_clusters, 4);
  if (o_.version == 3) {
    uint64_t incompatible = 0;
    if (o_.compression == Compression::kZstd) incompatible |= kIncompatCompression;
    if (o_.extended_l2) incompatible |= kIncompatExtendedL2;
    Be(&h[72], incompatible, 8);
    Be(&h[96], o_.refcount_order, 4);
    Be(&h[100], o_.header_length, 4);
    if (o_.header_length > 104) h[104] = static_cast<uint8_t>(o_.compression);
  }
  h.resize(length);
  h.insert(h.end(), extensions_.begin(), extensions_.end());
  h.resize(h.size() + 8, 0);  // end of header extensions
  return h;
}

std::vector<uint8_t> CraftedImage::Build() const {
  const uint64_t c = cluster_size();
  const uint64_t bits = uint64_t{1} << o_.refcount_order;
  const uint64_t per_block = c * 8 / bits;
  uint64_t end = end_;
  auto append = [&](uint64_t clusters) {
    const uint64_t off = RoundUp(end, c);
    end = off + clusters * c;
    return off;
  };
  const uint64_t l1_bytes = uint64_t{l1_size_} * 8;
  const uint64_t l1_offset =
      l1_offset_ ? *l1_offset_ : append(std::max<uint64_t>(1, RoundUp(l1_bytes, c) / c));
  uint64_t rt_offset = 0;
  uint32_t rt_clusters = 0;
  if (refcount_table_) {
    std::tie(rt_offset, rt_clusters) = *refcount_table_;
  } else {
    // Room for the blocks of a file twice as large as it is now.
    const uint64_t entries = (end / c * 2 + 64) / per_block + 2;
    rt_clusters = static_cast<uint32_t>(RoundUp(entries * 8, c) / c);
    rt_offset = append(rt_clusters);
  }

  std::vector<uint8_t> img(end);
  for (const auto& [off, bytes] : data_) Put(img, off, bytes);
  for (const auto& [off, table] : tables_) Put(img, off, table);
  std::vector<uint8_t> l1(l1_bytes);
  for (const auto& [i, e] : l1_) Be(&l1[i * 8], e, 8);
  Put(img, l1_offset, l1);
  Put(img, 0, EncodeHeader(l1_offset, rt_offset, rt_clusters));

  // Count references as qemu-img check does (qcow2-refcount.c, calculate_refcounts).
  std::map<uint64_t, uint64_t> refs;
  auto touch = [&](uint64_t off, uint64_t len) {
    for (uint64_t k = off / c; len && k <= (off + len - 1) / c; ++k) ++refs[k];
  };
  const uint64_t entry_size = o_.extended_l2 ? 16 : 8;
  const unsigned x = 62 - (o_.cluster_bits - 8);
  std::vector<uint64_t> walked;
  touch(0, c);
  touch(l1_offset, l1_bytes);
  for (uint64_t i = 0; i < l1_size_; ++i) {
    const uint64_t l2 = LoadBe(img, l1_offset + i * 8) & kOffsetMask;
    if (l2 == 0) continue;
    touch(l2, c);
    if (l2 % c) continue;
    walked.push_back(l2);
    for (uint64_t j = 0; j < l2_entries(); ++j) {
      const uint64_t w = LoadBe(img, l2 + j * entry_size);
      if (w & kCompressedBit) {
        const uint64_t coffset = w & ((uint64_t{1} << x) - 1);
        const uint64_t sectors = ((w >> x) & ((uint64_t{1} << (o_.cluster_bits - 8)) - 1)) + 1;
        touch(coffset, sectors * kSector - coffset % kSector);
      } else if (w & kOffsetMask) {
        touch(w & kOffsetMask, c);
      }
    }
  }
  touch(rt_offset, uint64_t{rt_clusters} * c);
  for (const auto& [off, len] : extra_refs_) touch(off, len);
  // Every block that covers a counted cluster gets a slot; slots count themselves. Clusters
  // past what the refcount table can describe (named by garbage read as tables) get none:
  // check reports them.
  const uint64_t table_entries = uint64_t{rt_clusters} * c / 8;
  std::map<uint64_t, uint64_t> blocks;  // block index -> offset
  size_t next_slot = 0;
  // Gives the block covering cluster k a slot; returns whether one was added.
  auto cover = [&](uint64_t k) {
    if (blocks.count(k / per_block) || k / per_block >= table_entries) return false;
    const uint64_t off = next_slot < block_slots_.size() ? block_slots_[next_slot++] : append(1);
    blocks[k / per_block] = off;
    touch(off, c);
    return true;
  };
  for (bool added = true; added;) {
    added = false;
    for (const auto& [k, n] : refs) {
      if ((added = cover(k))) break;
    }
    for (const auto& [k, v] : refcount_overrides_) {
      if (!added && v) added = cover(k);
    }
  }
  std::map<uint64_t, uint64_t> stored = refs;
  for (const auto& [k, v] : refcount_overrides_) stored[k] = v;
  // Clusters without a block read as refcount 0.
  std::erase_if(stored, [&](const auto& kv) { return !blocks.count(kv.first / per_block); });
  const uint64_t max = bits == 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
  for (const auto& [k, v] : stored) {
    if (v > max) {
      throw std::runtime_error("cluster " + std::to_string(k) + " needs refcount " +
                               std::to_string(v) + "; " + std::to_string(bits) + "-bit refcounts");
    }
  }

  if (o_.auto_copied) {
    auto copied = [&](uint64_t pos, uint64_t target) {
      const uint64_t w = LoadBe(img, pos);
      auto it = stored.find(target / c);
      const bool one = it != stored.end() && it->second == 1;
      uint8_t b[8];
      Be(b, one ? w | kCopied : w & ~kCopied, 8);
      Put(img, pos, b);
    };
    for (uint64_t i = 0; i < l1_size_; ++i) {
      const uint64_t l2 = LoadBe(img, l1_offset + i * 8) & kOffsetMask;
      if (l2) copied(l1_offset + i * 8, l2);
    }
    for (uint64_t l2 : walked) {
      for (uint64_t j = 0; j < l2_entries(); ++j) {
        const uint64_t w = LoadBe(img, l2 + j * entry_size);
        if (!(w & kCompressedBit) && (w & kOffsetMask))
          copied(l2 + j * entry_size, w & kOffsetMask);
      }
    }
  }

  std::vector<uint8_t> table(uint64_t{rt_clusters} * c);
  for (const auto& [index, off] : blocks) Be(&table[index * 8], off, 8);
  for (const auto& [index, raw] : table_overrides_) {
    if (index * 8 >= table.size()) throw std::out_of_range("refcount table index");
    Be(&table[index * 8], raw, 8);
  }
  img.resize(std::max<uint64_t>(img.size(), end));
  Put(img, rt_offset, table);
  for (const auto& [index, off] : blocks) {
    std::vector<uint8_t> block(c);
    for (auto it = stored.lower_bound(index * per_block);
         it != stored.end() && it->first < (index + 1) * per_block; ++it) {
      const uint64_t i = it->first - index * per_block, v = it->second;
      if (bits >= 8) {
        Be(&block[i * bits / 8], v, static_cast<int>(bits / 8));
      } else {
        // Sub-byte refcounts fill each byte from its least significant bits (QEMU's
        // get_refcount_ro0..2).
        const uint64_t per_byte = 8 / bits;
        block[i / per_byte] |= static_cast<uint8_t>(v << (i % per_byte * bits));
      }
    }
    Put(img, off, block);
  }
  if (file_size_) img.resize(*file_size_);
  stored_ = std::move(stored);
  return img;
}

std::vector<uint8_t> Deflate(std::span<const uint8_t> data) {
  z_stream s{};
  // QEMU's qcow2_compress: raw deflate (-12: 4 KiB window), memLevel 9.
  if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
    throw std::runtime_error("deflateInit2 failed");
  }
  std::vector<uint8_t> out(deflateBound(&s, data.size()));
  s.next_in = const_cast<Bytef*>(data.data());
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  const int ret = deflate(&s, Z_FINISH);
  out.resize(s.total_out);
  deflateEnd(&s);
  if (ret != Z_STREAM_END) throw std::runtime_error("deflate failed");
  return out;
}

std::vector<uint8_t> DeflateStored(std::span<const uint8_t> data) {
  std::vector<uint8_t> out;
  uint64_t pos = 0;
  do {
    const uint64_t n = std::min<uint64_t>(data.size() - pos, 65535);
    const bool last = pos + n == data.size();
    // RFC 1951 3.2.4: BFINAL, BTYPE 00, then LEN and NLEN little-endian, then the bytes.
    out.push_back(last ? 1 : 0);
    out.push_back(static_cast<uint8_t>(n));
    out.push_back(static_cast<uint8_t>(n >> 8));
    out.push_back(static_cast<uint8_t>(~n));
    out.push_back(static_cast<uint8_t>(~n >> 8));
    out.insert(out.end(), data.begin() + static_cast<std::ptrdiff_t>(pos),
               data.begin() + static_cast<std::ptrdiff_t>(pos + n));
    pos += n;
  } while (pos < data.size());
  return out;
}

std::vector<uint8_t> ZstdFrame(std::span<const uint8_t> data, bool checksum) {
  ZSTD_CCtx* ctx = ZSTD_createCCtx();
  if (!ctx) throw std::runtime_error("ZSTD_createCCtx failed");
  ZSTD_CCtx_setParameter(ctx, ZSTD_c_checksumFlag, checksum ? 1 : 0);
  std::vector<uint8_t> out(ZSTD_compressBound(data.size()));
  const size_t n = ZSTD_compress2(ctx, out.data(), out.size(), data.data(), data.size());
  ZSTD_freeCCtx(ctx);
  if (ZSTD_isError(n)) throw std::runtime_error("ZSTD_compress2 failed");
  out.resize(n);
  return out;
}

std::vector<uint8_t> ZstdSkippableFrame(uint64_t n) {
  // RFC 8878 3.1.2: magic 0x184D2A50..5F, then the size, both little-endian.
  std::vector<uint8_t> out = {0x50, 0x2a, 0x4d, 0x18};
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.resize(out.size() + n, 0x5a);
  return out;
}

std::vector<uint8_t> CompressibleBytes(uint64_t n, uint64_t seed) {
  std::vector<uint8_t> out;
  out.reserve(n + 64);
  char line[64];
  for (uint64_t i = 0; out.size() < n; ++i) {
    const int len = std::snprintf(line, sizeof line, "seed %llu line %llu\n",
                                  static_cast<unsigned long long>(seed),
                                  static_cast<unsigned long long>(i * (seed % 7 + 1)));
    out.insert(out.end(), line, line + len);
  }
  out.resize(n);
  return out;
}

}  // namespace qcowfs_test

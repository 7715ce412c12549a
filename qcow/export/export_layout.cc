#include "qcow/export/export_layout.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"

namespace qcow {
namespace {

// Writes bytes [within, within + n) of a cluster made of big-endian entries of
// `entry_size` bytes whose i-th value is value(i).
template <typename ValueFn>
void FillEntries(uint64_t within, uint64_t n, unsigned entry_size, uint8_t* out, ValueFn value) {
  auto store = [entry_size](uint8_t* at, uint64_t v) {
    if (entry_size == 8) {
      StoreBe64(at, v);
    } else {
      StoreBe16(at, static_cast<uint16_t>(v));
    }
  };
  uint64_t end = within + n;
  uint64_t e = within / entry_size;
  // Whole entries straight into `out`; only a partial first or last entry goes through tmp.
  if (within % entry_size == 0) {
    for (; (e + 1) * entry_size <= end; ++e) store(out + (e * entry_size - within), value(e));
  }
  for (; e * entry_size < end; ++e) {
    uint8_t tmp[8];
    store(tmp, value(e));
    uint64_t lo = std::max(e * entry_size, within), hi = std::min((e + 1) * entry_size, end);
    std::memcpy(out + (lo - within), tmp + (lo - e * entry_size), hi - lo);
  }
}

std::string SizeText(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && bytes % 1024 == 0 && u < 6) bytes /= 1024, ++u;
  return std::to_string(bytes) + " " + kUnits[u];
}

// The number of clusters of each metadata region of an image.
struct Shape {
  uint64_t l1_size, l1_clusters, l2_clusters, refcount_blocks, refcount_tables;
};

// Returns the L1 indices whose L2 table has an entry: for data or zero clusters.
ClusterMap TablesFor(const ClusterMap& data, const ClusterMap& zero, uint64_t per_table) {
  if (zero.size() == 0) return data.Coarsen(per_table);
  return ClusterMap::Union(data.Coarsen(per_table), zero.Coarsen(per_table));
}

// Returns the clusters of `map` below `limit` (and not in `without`, when given).
ClusterMap Clip(const ClusterMap& map, uint64_t limit, const ClusterMap* without = nullptr) {
  ClusterMap::Builder b;
  for (const auto& r : map.runs()) {
    if (r.first >= limit) break;
    const uint64_t end = std::min(r.first + r.count, limit);
    if (!without) {
      b.Add(r.first, end - r.first);
      continue;
    }
    for (uint64_t i = r.first; i < end;) {
      // Skip the part in `without`, keep the part before its next run.
      const size_t k = without->FirstRunEndingAfter(i);
      if (k < without->runs().size() && without->runs()[k].first <= i) {
        i = without->runs()[k].first + without->runs()[k].count;
        continue;
      }
      const uint64_t next = k < without->runs().size() ? without->runs()[k].first : end;
      const uint64_t stop = std::min(end, next);
      b.Add(i, stop - i);
      i = stop;
    }
  }
  return b.Build();
}

// Returns the shape of an image of virtual_size bytes with 2^bits-byte clusters of which
// `data` are allocated and `zero` are zero clusters.
Shape ShapeOf(uint64_t virtual_size, uint32_t bits, const ClusterMap& data,
              const ClusterMap& zero) {
  const uint64_t cluster = uint64_t{1} << bits, per_table = cluster / kTableEntrySize;
  Shape s{};
  s.l1_size = DivRoundUp(DivRoundUp(virtual_size, cluster), per_table);
  s.l1_clusters = DivRoundUp(s.l1_size, per_table);
  s.l2_clusters = TablesFor(data, zero, per_table).size();
  // Refcount blocks count every used cluster including themselves and the refcount table,
  // so iterate until the numbers stop growing.
  const uint64_t per_block = cluster * 8 / (1u << ExportLayout::kRefcountOrder);
  const uint64_t others = 1 + s.l1_clusters + s.l2_clusters + data.size();
  s.refcount_blocks = DivRoundUp(others, per_block);
  s.refcount_tables = DivRoundUp(s.refcount_blocks, per_table);
  for (;;) {
    const uint64_t need = DivRoundUp(others + s.refcount_blocks + s.refcount_tables, per_block);
    if (need <= s.refcount_blocks) break;
    s.refcount_blocks = need;
    s.refcount_tables = DivRoundUp(s.refcount_blocks, per_table);
  }
  return s;
}

// Returns why QEMU could not open an image of this shape, or "" when it could
// (block/qcow2.c: at most 32 MiB of L1 table and 8 MiB of refcount table).
std::string TooLarge(const Shape& s, uint32_t bits) {
  if (s.l1_size * kTableEntrySize > kMaxL1Bytes) {
    return "needs an L1 table of " + std::to_string(s.l1_size * kTableEntrySize) +
           " bytes, and QEMU opens at most 32 MiB";
  }
  if ((s.refcount_tables << bits) > kMaxRefcountTableBytes) {
    return "needs a refcount table of " + std::to_string(s.refcount_tables << bits) +
           " bytes, and QEMU opens at most 8 MiB";
  }
  return "";
}

}  // namespace

ExportLayout::ExportLayout(uint64_t source_size, uint32_t cluster_bits, ClusterMap data,
                           const DeltaOptions* delta)
    : source_size_(source_size), cluster_bits_(cluster_bits) {
  if (cluster_bits < kMinClusterBits || cluster_bits > kMaxClusterBits) {
    throw UsageError("cluster size is 2^" + std::to_string(cluster_bits) +
                     " bytes; qcow2 allows 512 B to 2 MiB (cluster_bits 9..21)");
  }
  cluster_size_ = uint64_t{1} << cluster_bits;
  entries_per_table_ = cluster_size_ / kTableEntrySize;
  if (source_size > (uint64_t{1} << 62)) {
    throw UsageError("source size " + std::to_string(source_size) + " bytes is too large");
  }
  virtual_size_ = DivRoundUp(source_size, kSectorSize) * kSectorSize;
  const uint64_t guest_clusters = DivRoundUp(virtual_size_, cluster_size_);
  // Keep only clusters inside the virtual disk.
  data_ = Clip(data, guest_clusters);
  if (delta) {
    zero_ = Clip(delta->zero, guest_clusters, &data_);
    backing_file_ = delta->backing_file;
  }
  const Shape shape = ShapeOf(virtual_size_, cluster_bits, data_, zero_);
  if (const std::string why = TooLarge(shape, cluster_bits); !why.empty()) {
    // A larger cluster makes both tables smaller: name the smallest one QEMU can open.
    uint32_t bits = cluster_bits + 1;
    while (
        bits < kMaxClusterBits &&
        !TooLarge(ShapeOf(virtual_size_, bits, data_.Coarsen(uint64_t{1} << (bits - cluster_bits)),
                          zero_.Coarsen(uint64_t{1} << (bits - cluster_bits))),
                  bits)
             .empty()) {
      ++bits;
    }
    throw UsageError("a " + SizeText(virtual_size_) + " disk with " + SizeText(cluster_size_) +
                     " clusters and " + SizeText(data_.size() * cluster_size_) + " of data " + why +
                     ": use a cluster size of at least " + SizeText(uint64_t{1} << bits));
  }
  l1_size_ = shape.l1_size;
  l2_ = TablesFor(data_, zero_, entries_per_table_);
  l1_clusters_ = shape.l1_clusters;
  const uint64_t tables = shape.refcount_tables, blocks = shape.refcount_blocks;
  refcount_table_clusters_ = tables;
  refcount_block_clusters_ = blocks;
  refcount_block_start_ = refcount_table_start_ + tables;
  l1_start_ = refcount_block_start_ + blocks;
  l2_start_ = l1_start_ + l1_clusters_;
  data_start_ = l2_start_ + l2_.size();
  total_clusters_ = data_start_ + data_.size();

  header_.magic = kQcowMagic;
  header_.version = 3;
  header_.cluster_bits = cluster_bits;
  header_.size = virtual_size_;
  header_.l1_size = static_cast<uint32_t>(l1_size_);
  header_.l1_table_offset = l1_clusters_ ? l1_start_ * cluster_size_ : 0;
  header_.refcount_table_offset = refcount_table_start_ * cluster_size_;
  header_.refcount_table_clusters = static_cast<uint32_t>(tables);
  header_.refcount_order = kRefcountOrder;
  header_.header_length = kV3HeaderLength;
  header_.compression_type = kCompressionDeflate;
  HeaderExtras extras;
  extras.cluster_size = cluster_size_;
  if (delta) {
    extras.backing_file = delta->backing_file;
    extras.backing_format = delta->backing_format;
  }
  header_bytes_ = EncodeHeader(header_, extras);
  header_ = DecodeHeader(header_bytes_);  // with the backing file's offset and size
}

uint64_t ExportLayout::L1Entry(uint64_t index) const {
  if (index >= l1_size_ || !l2_.Contains(index)) return 0;
  return ((l2_start_ + l2_.Rank(index)) << cluster_bits_) | kOflagCopied;
}

uint64_t ExportLayout::L2Entry(uint64_t l2_cluster, uint64_t index) const {
  uint64_t guest = l2_.Select(l2_cluster) * entries_per_table_ + index;
  if (!data_.Contains(guest)) return zero_.size() && zero_.Contains(guest) ? kOflagZero : 0;
  return ((data_start_ + data_.Rank(guest)) << cluster_bits_) | kOflagCopied;
}

void ExportLayout::FillMetadata(uint64_t offset, uint8_t* out, uint64_t length) const {
  while (length > 0) {
    const uint64_t cluster = offset >> cluster_bits_;
    const uint64_t within = offset & (cluster_size_ - 1);
    const uint64_t n = std::min(length, cluster_size_ - within);
    if (cluster == 0) {
      uint64_t have = within < header_bytes_.size() ? header_bytes_.size() - within : 0;
      uint64_t copy = std::min(n, have);
      std::memcpy(out, header_bytes_.data() + within, copy);
      std::memset(out + copy, 0, n - copy);
    } else if (cluster < refcount_block_start_) {
      const uint64_t base = (cluster - refcount_table_start_) * entries_per_table_;
      FillEntries(within, n, 8, out, [&](uint64_t e) {
        uint64_t block = base + e;
        return block < refcount_block_clusters_ ? (refcount_block_start_ + block) << cluster_bits_
                                                : 0;
      });
    } else if (cluster < l1_start_) {
      const uint64_t per_block = cluster_size_ * 8 / (1u << kRefcountOrder);
      const uint64_t base = (cluster - refcount_block_start_) * per_block;
      FillEntries(within, n, 2, out,
                  [&](uint64_t e) { return base + e < total_clusters_ ? 1 : 0; });
    } else if (cluster < l2_start_) {
      const uint64_t base = (cluster - l1_start_) * entries_per_table_;
      FillEntries(within, n, 8, out, [&](uint64_t e) { return L1Entry(base + e); });
    } else {
      const uint64_t l2_cluster = cluster - l2_start_;
      FillEntries(within, n, 8, out, [&](uint64_t e) { return L2Entry(l2_cluster, e); });
    }
    offset += n;
    out += n;
    length -= n;
  }
}

uint64_t ExportLayout::Plan(uint64_t offset, uint64_t length, std::vector<uint8_t>& scratch,
                            std::vector<ExportSegment>& segments) const {
  segments.clear();
  const uint64_t image_end = image_size();
  if (offset >= image_end) return 0;
  const uint64_t end = offset + std::min(length, image_end - offset);
  const uint64_t meta_end = data_offset();
  uint64_t pos = offset;
  auto push = [&](ExportSegment::Kind kind, uint64_t position, uint64_t n) {
    if (!segments.empty()) {
      ExportSegment& last = segments.back();
      bool contiguous =
          kind == ExportSegment::Kind::kZero || last.position + last.length == position;
      if (last.kind == kind && contiguous) {
        last.length += n;
        return;
      }
    }
    segments.push_back({kind, position, n});
  };
  if (pos < meta_end) {
    const uint64_t n = std::min(end, meta_end) - pos;
    scratch.resize(n);
    FillMetadata(pos, scratch.data(), n);
    push(ExportSegment::Kind::kBytes, 0, n);
    pos += n;
  }
  while (pos < end) {
    const uint64_t k = (pos - meta_end) >> cluster_bits_;
    const uint64_t within = (pos - meta_end) & (cluster_size_ - 1);
    const auto& run = data_.runs()[data_.RunOfRank(k)];
    const uint64_t src = ((run.first + (k - run.rank)) << cluster_bits_) + within;
    const uint64_t run_left = ((run.rank + run.count - k) << cluster_bits_) - within;
    const uint64_t n = std::min(end - pos, run_left);
    const uint64_t from_source = src < source_size_ ? std::min(n, source_size_ - src) : 0;
    if (from_source) push(ExportSegment::Kind::kSource, src, from_source);
    if (n > from_source) push(ExportSegment::Kind::kZero, 0, n - from_source);
    pos += n;
  }
  return end - offset;
}

}  // namespace qcow

#include "qcow/stream_decoder.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "qcow/byte_order.h"
#include "qcow/decompress.h"
#include "qcow/format.h"

namespace qcow {
namespace {

// Reserved bits (qcow2.txt, "Cluster mapping"): L1 bits 0-8 and 56-62; standard L2 bits
// 1-8 and 56-61.
constexpr uint64_t kL1Reserved = 0x7f000000000001ffull;
constexpr uint64_t kL2StdReserved = 0x3f000000000001feull;
// Extended L2: 32 subclusters, allocation bits 0-31 and zero bits 32-63 of the bitmap.
constexpr unsigned kSubclusters = 32;

std::string TableName(bool l1, uint64_t l1_index) {
  return l1 ? std::string("the L1 table") : "the L2 table of L1 entry " + std::to_string(l1_index);
}

}  // namespace

StreamDecoder::StreamDecoder(ImageSink& sink, DecoderOptions options)
    : sink_(sink), options_(std::move(options)), spool_(options_.spool) {}

StreamDecoder::~StreamDecoder() = default;

void StreamDecoder::Feed(uint64_t offset, std::span<const uint8_t> bytes) {
  if (finished_) Refuse("image bytes arrived after the end of the image");
  if (bytes.empty()) return;
  if (offset > kMaxHostOffset || bytes.size() > kMaxHostOffset - offset) {
    Refuse("write at offset " + std::to_string(offset) + " lies beyond 2^56, past any qcow2 image");
  }
  file_end_ = std::max(file_end_, offset + bytes.size());
  Dispatch(offset, bytes);
}

void StreamDecoder::SetSize(uint64_t size) {
  if (size > kMaxHostOffset) Refuse("image size " + std::to_string(size) + " lies beyond 2^56");
  set_size_ = std::max(set_size_.value_or(0), size);
}

void StreamDecoder::Dispatch(uint64_t a, std::span<const uint8_t> bytes) {
  if (!info_) {
    // The usual case, the image from its first byte: parse the header straight from the
    // chunk and route the rest, so that nothing waits in the spool.
    if (a == 0 && spool_.bytes() == 0 && bytes.size() >= kV3MinHeaderLength &&
        bytes.size() >= HeaderBytesNeeded(bytes)) {
      ParseHeader(bytes.first(HeaderBytesNeeded(bytes)));
    } else {
      spool_.Put(a, bytes);
      TryParseHeader();
      return;
    }
  }
  const uint64_t b = a + bytes.size();
  const uint64_t c = info_->cluster_size;
  std::vector<std::pair<uint64_t, uint64_t>> claimed;
  if (a < c) claimed.emplace_back(a, std::min(b, c));  // cluster 0 was already parsed

  std::vector<uint64_t> done_tables;
  auto t = tables_.upper_bound(a);
  if (t != tables_.begin() && std::prev(t)->first + std::prev(t)->second.length > a) --t;
  for (; t != tables_.end() && t->first < b; ++t) {
    const uint64_t lo = std::max(a, t->first), hi = std::min(b, t->first + t->second.length);
    if (lo >= hi) continue;
    FeedTable(t->first, lo, bytes.subspan(lo - a, hi - lo));
    claimed.emplace_back(lo, hi);
    if (t->second.got.Covers(0, t->second.length)) done_tables.push_back(t->first);
  }

  std::vector<uint64_t> run_keys;
  auto r = runs_.upper_bound(a);
  if (r != runs_.begin() && std::prev(r)->first + std::prev(r)->second.length > a) --r;
  for (; r != runs_.end() && r->first < b; ++r) run_keys.push_back(r->first);
  for (uint64_t key : run_keys) {
    const Run run = runs_.at(key);
    claimed.emplace_back(std::max(a, key), std::min(b, key + run.length));
    WriteRun(key, a, bytes);
  }

  std::vector<std::multimap<uint64_t, Compressed>::iterator> done_compressed;
  for (auto it = compressed_.lower_bound(a > max_compressed_span_ ? a - max_compressed_span_ : 0);
       it != compressed_.end() && it->first < b; ++it) {
    if (it->second.end <= a) continue;
    FeedCompressed(it, a, bytes);
    // The first and last sectors may also belong to a neighbour whose L2 table has not
    // arrived yet: claim only the interior, so that those stay in the spool too.
    const uint64_t own_lo = (it->first / kSectorSize + 1) * kSectorSize;
    const uint64_t own_hi = it->second.end - kSectorSize;
    const uint64_t lo = std::max(a, own_lo), hi = std::min(b, own_hi);
    if (lo < hi) claimed.emplace_back(lo, hi);
    if (it->second.got.Covers(0, it->second.end - it->first)) done_compressed.push_back(it);
  }

  // Tables completed by this chunk may map more of it: finish them first.
  const uint64_t generation = consumers_added_;
  for (auto it : done_compressed) CompleteCompressed(it, it->second.end);
  for (uint64_t key : done_tables) CompleteTable(key);
  const bool new_consumers = consumers_added_ != generation;
  if (tree_complete_ && !new_consumers) return;  // what nobody claimed is unreferenced

  std::sort(claimed.begin(), claimed.end());
  std::vector<std::pair<uint64_t, uint64_t>> gaps;
  uint64_t pos = a;
  for (const auto& [lo, hi] : claimed) {
    if (lo > pos) gaps.emplace_back(pos, lo);
    pos = std::max(pos, hi);
  }
  if (pos < b) gaps.emplace_back(pos, b);
  for (const auto& [lo, hi] : gaps) {
    if (new_consumers) {
      Dispatch(lo, bytes.subspan(lo - a, hi - lo));  // new consumers may claim it now
      continue;
    }
    // Bytes nobody claims wait in the spool until the whole tree is known.
    ignored_.ForEachGap(
        lo, hi, [&](uint64_t x, uint64_t y) { spool_.Put(x, bytes.subspan(x - a, y - x)); });
  }
}

void StreamDecoder::TryParseHeader() {
  std::vector<uint8_t> head;
  auto read = [&](uint64_t n) {
    if (!spool_.Covers(0, n)) return false;
    head.assign(n, 0);
    spool_.Visit(0, n, [&](uint64_t off, std::span<const uint8_t> b) {
      std::memcpy(head.data() + off, b.data(), b.size());
    });
    return true;
  };
  if (!read(kV3MinHeaderLength)) return;
  const uint64_t need = HeaderBytesNeeded(head);
  if (need > head.size() && !read(need)) return;
  ParseHeader(head);
}

void StreamDecoder::ParseHeader(std::span<const uint8_t> head) {
  ImageInfo info = ParseImageHeader(head, options_.warn);
  if (info.virtual_size > options_.target_size) {
    throw TooLargeError("the image's virtual size is " + std::to_string(info.virtual_size) +
                        " bytes; the target holds only " + std::to_string(options_.target_size));
  }
  if (options_.on_header) options_.on_header(info);
  info_ = std::move(info);
  spool_.Erase(0, info_->cluster_size);
  const QcowHeader& h = info_->header;
  if (h.l1_size > 0) {
    // The rest of the L1 table's last cluster belongs to it too: nothing else can be there.
    const uint64_t l1_end = h.l1_table_offset + uint64_t{h.l1_size} * kTableEntrySize;
    const uint64_t c = info_->cluster_size;
    ignored_.Insert(l1_end, (l1_end + c - 1) / c * c);
    AddTable(TableKind::kL1, h.l1_table_offset, uint64_t{h.l1_size} * kTableEntrySize, 0);
  } else {
    l1_parsed_ = true;
  }
  if (h.refcount_table_clusters > 0 && h.refcount_table_offset != 0) {
    AddTable(TableKind::kRefcountTable, h.refcount_table_offset,
             uint64_t{h.refcount_table_clusters} * info_->cluster_size, 0);
  }
  CheckTreeComplete();
}

void StreamDecoder::AddTable(TableKind kind, uint64_t start, uint64_t length, uint64_t l1_index) {
  const bool l1 = kind == TableKind::kL1;
  auto describe = [&] {
    return kind == TableKind::kRefcountTable ? std::string("the refcount table")
                                             : TableName(l1, l1_index);
  };
  if (start < info_->cluster_size) {
    Refuse(describe() + " at " + Hex(start) + " overlaps the header cluster");
  }
  auto next = tables_.lower_bound(start);
  if ((next != tables_.end() && next->first < start + length) ||
      (next != tables_.begin() &&
       std::prev(next)->first + std::prev(next)->second.length > start)) {
    Refuse(describe() + " at " + Hex(start) + " overlaps another table");
  }
  tables_.emplace(start, Table{kind, length, l1_index, {}, {}});
  ++consumers_added_;
  if (kind != TableKind::kRefcountTable) ++pending_tree_tables_;
  spool_.Visit(start, start + length,
               [&](uint64_t off, std::span<const uint8_t> b) { FeedTable(start, off, b); });
  spool_.Erase(start, start + length);
  if (tables_.at(start).got.Covers(0, length)) CompleteTable(start);
}

void StreamDecoder::FeedTable(uint64_t key, uint64_t offset, std::span<const uint8_t> bytes) {
  Table& t = tables_.at(key);
  if (t.bytes.empty()) t.bytes.assign(t.length, 0);
  std::memcpy(t.bytes.data() + (offset - key), bytes.data(), bytes.size());
  t.got.Insert(offset - key, offset - key + bytes.size());
}

void StreamDecoder::CompleteTable(uint64_t key) {
  auto node = tables_.extract(key);
  Table& t = node.mapped();
  if (t.bytes.empty()) t.bytes.assign(t.length, 0);
  switch (t.kind) {
    case TableKind::kL1:
      ParseL1(t);
      l1_parsed_ = true;
      --pending_tree_tables_;
      break;
    case TableKind::kL2:
      ParseL2(t);
      --pending_tree_tables_;
      break;
    case TableKind::kRefcountTable:
      ParseRefcountTable(t);
      break;
  }
  CheckTreeComplete();
}

void StreamDecoder::ParseL1(const Table& t) {
  const uint64_t c = info_->cluster_size, v = info_->virtual_size;
  const uint64_t span = c * info_->l2_entries;
  for (uint64_t i = 0; i < t.length / kTableEntrySize; ++i) {
    const uint64_t guest = i * span;
    if (guest >= v) break;  // entries past the disk describe nothing of it
    const uint64_t e = LoadBe64(&t.bytes[i * kTableEntrySize]);
    if (e & kL1Reserved) {
      Refuse("L1 entry " + std::to_string(i) + " is " + Hex(e) +
             "; its reserved bits (0-8, 56-62) must be zero");
    }
    const uint64_t off = e & kL1OffsetMask;
    if (off == 0) {
      ZeroGuest(guest, std::min(span, v - guest));
    } else if (off % c != 0) {
      Refuse("L1 entry " + std::to_string(i) + " points to an L2 table at " + Hex(off) +
             ", not aligned to the " + std::to_string(c) + "-byte cluster size");
    } else {
      AddTable(TableKind::kL2, off, c, i);
    }
  }
}

void StreamDecoder::ParseL2(const Table& t) {
  const ImageInfo& in = *info_;
  const uint64_t c = in.cluster_size, v = in.virtual_size;
  const uint32_t bits = in.header.cluster_bits;
  for (uint64_t j = 0; j < in.l2_entries; ++j) {
    const uint64_t guest = (t.l1_index * in.l2_entries + j) * c;
    if (guest >= v) break;
    const uint8_t* p = &t.bytes[j * in.l2_entry_size];
    const uint64_t w0 = LoadBe64(p);
    const uint64_t w1 = in.extended_l2 ? LoadBe64(p + 8) : 0;
    auto where = [&] {
      return "L2 entry " + std::to_string(j) + " of L1 entry " + std::to_string(t.l1_index) +
             " (guest offset " + std::to_string(guest) + ")";
    };
    if (w0 & kOflagCompressed) {
      // Compressed Clusters Descriptor: x = 62 - (cluster_bits - 8).
      const unsigned x = 62 - (bits - 8);
      const uint64_t host = w0 & ((uint64_t{1} << x) - 1);
      const uint64_t extra_sectors = (w0 >> x) & ((uint64_t{1} << (bits - 8)) - 1);
      if (host >= kMaxHostOffset) Refuse(where() + " has a compressed offset beyond 2^56");
      if (w1 != 0) Refuse(where() + " is compressed but its subcluster bitmap is not zero");
      const uint64_t end = (host / kSectorSize + 1 + extra_sectors) * kSectorSize;
      AddCompressed(host, end, guest);
      continue;
    }
    if (w0 & kL2StdReserved) {
      Refuse(where() + " is " + Hex(w0) + "; its reserved bits (1-8, 56-61) must be zero");
    }
    const uint64_t off = w0 & kL2OffsetMask;
    const bool zero_flag = w0 & kOflagZero;
    if (zero_flag && (in.header.version == 2 || in.extended_l2)) {
      Refuse(where() + " has the zero bit set, which " +
             (in.extended_l2 ? "extended L2 entries do not have" : "version 2 does not allow"));
    }
    if (off % c != 0) {
      Refuse(where() + " points to data at " + Hex(off) + ", not aligned to the cluster size");
    }
    if (!in.extended_l2) {
      if (zero_flag || off == 0) {
        ZeroGuest(guest, std::min(c, v - guest));
      } else {
        AddRun(off, guest, c);
      }
      continue;
    }
    const uint32_t alloc = static_cast<uint32_t>(w1), zeros = static_cast<uint32_t>(w1 >> 32);
    if (alloc & zeros) {
      Refuse(where() + " has subcluster bitmap " + Hex(w1) +
             ": a subcluster cannot be both allocated and zero");
    }
    if (alloc && off == 0) {
      Refuse(where() + " has allocated subclusters but no host cluster");
    }
    const uint64_t sc = c / kSubclusters;
    for (unsigned k = 0; k < kSubclusters; ++k) {
      const uint64_t g = guest + k * sc;
      if (g >= v) break;
      if (alloc & (1u << k)) {
        AddRun(off + k * sc, g, sc);
      } else {
        ZeroGuest(g, std::min(sc, v - g));  // zero or unallocated: no backing file, zeros
      }
    }
  }
}

void StreamDecoder::ParseRefcountTable(const Table& t) {
  // Refcount blocks are not needed to read the disk: drop their bytes as they come.
  for (uint64_t i = 0; i < t.length / kTableEntrySize; ++i) {
    const uint64_t off = LoadBe64(&t.bytes[i * kTableEntrySize]) & ~uint64_t{0x1ff};
    if (off == 0 || off >= kMaxHostOffset) continue;
    ignored_.Insert(off, off + info_->cluster_size);
    ++consumers_added_;
    spool_.Erase(off, off + info_->cluster_size);
  }
}

void StreamDecoder::AddRun(uint64_t host, uint64_t guest, uint64_t length) {
  if (host < info_->cluster_size) {
    Refuse("guest offset " + std::to_string(guest) + " maps to " + Hex(host) +
           ", inside the header cluster");
  }
  auto next = runs_.lower_bound(host);
  auto clash = [&](uint64_t other) {
    Refuse("host offset " + Hex(host) + " holds data for two guest offsets (" +
           std::to_string(other) + " and " + std::to_string(guest) + ")");
  };
  if (next != runs_.end() && next->first < host + length) clash(next->second.guest);
  uint64_t key = host;
  if (next != runs_.begin()) {
    auto prev = std::prev(next);
    const uint64_t prev_end = prev->first + prev->second.length;
    if (prev_end > host) clash(prev->second.guest + (host - prev->first));
    if (prev_end == host && prev->second.guest + prev->second.length == guest) {
      prev->second.length += length;  // contiguous in both: one run
      key = prev->first;
    }
  }
  if (key == host) runs_.emplace(host, Run{length, guest});
  ++consumers_added_;
  pending_run_bytes_ += length;
  // Data that arrived before its L2 table.
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> early;
  spool_.Visit(host, host + length, [&](uint64_t off, std::span<const uint8_t> b) {
    early.emplace_back(off, std::vector<uint8_t>(b.begin(), b.end()));
  });
  spool_.Erase(host, host + length);
  for (auto& [off, b] : early) {
    auto it = runs_.upper_bound(off);
    WriteRun(std::prev(it)->first, off, b);
  }
}

void StreamDecoder::WriteRun(uint64_t key, uint64_t offset, std::span<const uint8_t> bytes) {
  const Run run = runs_.at(key);
  const uint64_t lo = std::max(offset, key);
  const uint64_t hi = std::min(offset + bytes.size(), key + run.length);
  if (lo >= hi) return;
  WriteGuest(run.guest + (lo - key), bytes.data() + (lo - offset), hi - lo);
  pending_run_bytes_ -= hi - lo;
  // Each host byte is consumed once: keep only what has not arrived.
  runs_.erase(key);
  if (lo > key) runs_.emplace(key, Run{lo - key, run.guest});
  if (hi < key + run.length) runs_.emplace(hi, Run{key + run.length - hi, run.guest + (hi - key)});
}

void StreamDecoder::AddCompressed(uint64_t start, uint64_t end, uint64_t guest) {
  if (start < info_->cluster_size) {
    Refuse("compressed data for guest offset " + std::to_string(guest) + " starts at " +
           Hex(start) + ", inside the header cluster");
  }
  max_compressed_span_ = std::max(max_compressed_span_, end - start);
  auto it = compressed_.emplace(start, Compressed{end, guest, {}, {}});
  ++consumers_added_;
  spool_.Visit(start, end,
               [&](uint64_t off, std::span<const uint8_t> b) { FeedCompressed(it, off, b); });
  // A neighbour may share the first and the last sector; the rest is this cluster's own.
  const uint64_t own_lo = (start / kSectorSize + 1) * kSectorSize;
  if (end > own_lo + kSectorSize) spool_.Erase(own_lo, end - kSectorSize);
  if (it->second.got.Covers(0, end - start)) CompleteCompressed(it, end);
}

void StreamDecoder::FeedCompressed(std::multimap<uint64_t, Compressed>::iterator it,
                                   uint64_t offset, std::span<const uint8_t> bytes) {
  Compressed& cc = it->second;
  const uint64_t lo = std::max(offset, it->first);
  const uint64_t hi = std::min(offset + bytes.size(), cc.end);
  if (lo >= hi) return;
  if (cc.bytes.empty()) cc.bytes.assign(cc.end - it->first, 0);
  std::memcpy(cc.bytes.data() + (lo - it->first), bytes.data() + (lo - offset), hi - lo);
  cc.got.Insert(lo - it->first, hi - it->first);
}

void StreamDecoder::CompleteCompressed(std::multimap<uint64_t, Compressed>::iterator it,
                                       uint64_t data_end) {
  Compressed& cc = it->second;
  const uint64_t c = info_->cluster_size;
  if (cc.bytes.empty()) cc.bytes.assign(cc.end - it->first, 0);
  const uint64_t n = std::min(cc.end, data_end) - it->first;
  std::vector<uint8_t> out(c);
  const std::span<const uint8_t> in(cc.bytes.data(), n);
  const bool ok =
      info_->compression_type == kCompressionZstd ? ZstdCluster(in, out) : InflateCluster(in, out);
  if (!ok) {
    Refuse(std::string("compressed cluster for guest offset ") + std::to_string(cc.guest) + " (" +
           std::to_string(n) + " bytes at " + Hex(it->first) + ") does not " +
           (info_->compression_type == kCompressionZstd ? "zstd" : "deflate") +
           "-decompress to exactly " + std::to_string(c) + " bytes");
  }
  WriteGuest(cc.guest, out.data(), c);
  compressed_.erase(it);
}

void StreamDecoder::WriteGuest(uint64_t guest, const uint8_t* data, uint64_t n) {
  const uint64_t v = info_->virtual_size;
  if (guest >= v) return;
  n = std::min(n, v - guest);
  sink_.Write(guest, data, n);
  guest_written_ += n;
}

void StreamDecoder::ZeroGuest(uint64_t guest, uint64_t n) {
  const uint64_t v = info_->virtual_size;
  if (guest >= v || n == 0) return;
  n = std::min(n, v - guest);
  if (zero_length_ && zero_start_ + zero_length_ == guest) {
    zero_length_ += n;
    return;
  }
  FlushZeros();
  zero_start_ = guest;
  zero_length_ = n;
}

void StreamDecoder::FlushZeros() {
  if (zero_length_) sink_.Zero(zero_start_, zero_length_);
  zero_length_ = 0;
}

void StreamDecoder::CheckTreeComplete() {
  if (tree_complete_ || !info_ || !l1_parsed_ || pending_tree_tables_ != 0) return;
  // Every consumer exists now: what nobody claimed is unreferenced and can go.
  tree_complete_ = true;
  spool_.Clear();
}

void StreamDecoder::Finish() {
  if (finished_) return;
  const uint64_t size = ImageSize();
  // Bytes below the image size that never arrived read as zeros (writers that skip holes).
  auto zero_fill_spool = [&](uint64_t lo, uint64_t hi) {
    std::vector<uint8_t> zeros;
    std::vector<std::pair<uint64_t, uint64_t>> gaps;
    uint64_t pos = lo;
    spool_.Visit(lo, hi, [&](uint64_t off, std::span<const uint8_t> b) {
      if (off > pos) gaps.emplace_back(pos, off);
      pos = off + b.size();
    });
    if (pos < hi) gaps.emplace_back(pos, hi);
    for (auto [x, y] : gaps) {
      zeros.assign(y - x, 0);
      spool_.Put(x, zeros);
    }
  };
  if (!info_) {
    uint64_t need = kV3MinHeaderLength;
    for (int step = 0; step < 2 && !info_; ++step) {
      if (size < need) {
        Refuse("the image ends at byte " + std::to_string(size) + ", inside its header (" +
               std::to_string(need) + " bytes needed)");
      }
      zero_fill_spool(0, need);
      std::vector<uint8_t> head(need);
      spool_.Visit(0, need, [&](uint64_t off, std::span<const uint8_t> b) {
        std::memcpy(head.data() + off, b.data(), b.size());
      });
      need = HeaderBytesNeeded(head);
      TryParseHeader();
    }
    if (!info_) Refuse("the image ends before its header is complete");
  }
  while (!tables_.empty()) {
    auto it = tables_.begin();
    const Table& t = it->second;
    if (it->first + t.length > size) {
      const std::string name = t.kind == TableKind::kRefcountTable
                                   ? std::string("the refcount table")
                                   : TableName(t.kind == TableKind::kL1, t.l1_index);
      Refuse(name + " at " + Hex(it->first) + " (" + std::to_string(t.length) +
             " bytes) lies past the end of the image (" + std::to_string(size) + " bytes)");
    }
    CompleteTable(it->first);
  }
  for (const auto& [host, run] : runs_) {
    if (host + run.length > size) {
      Refuse("data for guest offset " + std::to_string(run.guest) + " at host offset " + Hex(host) +
             " lies past the end of the image (" + std::to_string(size) +
             " bytes): the image is truncated");
    }
  }
  for (const auto& [host, run] : runs_) ZeroGuest(run.guest, run.length);
  runs_.clear();
  pending_run_bytes_ = 0;
  while (!compressed_.empty()) {
    auto it = compressed_.begin();
    if (it->first >= size) {
      Refuse("compressed data for guest offset " + std::to_string(it->second.guest) + " at " +
             Hex(it->first) + " lies past the end of the image (" + std::to_string(size) +
             " bytes): the image is truncated");
    }
    // The span may run past the end of the file; decompress what the file holds.
    CompleteCompressed(it, size);
  }
  FlushZeros();
  spool_.Clear();
  finished_ = true;
}

}  // namespace qcow

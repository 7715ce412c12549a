// The image's structures as the decoder meets them: header, L1 and L2 tables, data and
// compressed clusters, the refcount table (read only to learn where the image ends).
#include <algorithm>
#include <cstring>

#include "qcow/format/byte_order.h"
#include "qcow/format/decompress.h"
#include "qcow/format/format.h"
#include "qcow/import/stream_decoder.h"
#include "qcow/import/table_claims.h"

namespace qcow {
namespace {

std::string L2Name(uint64_t l1_index) {
  return "the L2 table of L1 entry " + std::to_string(l1_index);
}

}  // namespace

void StreamDecoder::TryParseHeader() {
  std::vector<uint8_t> head(kV3MinHeaderLength);
  if (!spool_.Covers(0, head.size()) || !TryReadHeld(0, head.size(), head.data())) return;
  const uint64_t need = HeaderBytesNeeded(head);
  if (need > head.size()) {
    if (!spool_.Covers(0, need)) return;
    head.resize(need);
    if (!TryReadHeld(0, need, head.data())) return;
  }
  ParseHeader(head);
}

void StreamDecoder::ParseHeader(std::span<const uint8_t> head) {
  // Warnings wait until the header is accepted: a refused image gets its one line alone.
  std::vector<std::string> warnings;
  ImageInfo info = ParseImageHeader(head, [&](const std::string& w) { warnings.push_back(w); });
  if (!options_.delta) RefuseBackingFile(info);
  const uint64_t target = options_.target_size;
  if (info.virtual_size > target && info.virtual_size > RoundUpToSector(target)) {
    throw TooLargeError("the image's virtual size is " + std::to_string(info.virtual_size) +
                        " bytes; the target holds only " + std::to_string(options_.target_size));
  }
  if (options_.on_header) options_.on_header(info);
  if (options_.warn) {
    for (const std::string& w : warnings) options_.warn(w);
  }
  info_ = std::move(info);
  // A delta's unallocated ranges keep what the backing file put on the target.
  writer_.emplace(sink_, info_->virtual_size, target,
                  options_.keep_unallocated || (options_.delta && !info_->backing_file.empty()));
  const uint64_t c = info_->cluster_size;
  const QcowHeader& h = info_->header;
  structure_end_ = c;
  if (h.refcount_table_clusters > 0 && h.refcount_table_offset != 0) {
    refcount_table_offset_ = h.refcount_table_offset;
    refcount_table_length_ = uint64_t{h.refcount_table_clusters} * c;
    structure_end_ = std::max(structure_end_, refcount_table_offset_ + refcount_table_length_);
    ParseRefcountTable();
  }
  // Internal snapshots' table and the bitmap directory (which QEMU validates on open: it
  // must arrive) are part of the image too.
  if (h.nb_snapshots > 0 && h.snapshots_offset < kMaxHostOffset) {
    structure_end_ = std::max(structure_end_, h.snapshots_offset + 1);
  }
  if (info_->bitmap_directory_size) {
    structure_end_ =
        std::max(structure_end_, info_->bitmap_directory_offset + info_->bitmap_directory_size);
  }
  if (h.l1_size > 0) {
    l1_offset_ = h.l1_table_offset;
    l1_length_ = uint64_t{h.l1_size} * kTableEntrySize;
    structure_end_ = std::max(structure_end_, l1_offset_ + l1_length_);
    ++pending_tables_;
    if (received_.Covers(l1_offset_, l1_offset_ + l1_length_)) CompleteL1();
  } else {
    l1_parsed_ = true;
  }
  CheckTreeComplete();
}

// The refcount table is not needed to read the disk; it only tells where the image's
// refcount blocks are, and so how far the image extends. Entries are not trusted for more.
void StreamDecoder::ParseRefcountTable() {
  const uint64_t a = refcount_table_offset_, b = a + refcount_table_length_;
  if (refcount_table_parsed_ || !received_.Covers(a, b)) return;
  refcount_table_parsed_ = true;
  std::vector<uint8_t> bytes(b - a);
  if (!TryReadHeld(a, b, bytes.data())) return;
  const uint64_t c = info_->cluster_size;
  for (uint64_t i = 0; i < bytes.size(); i += kTableEntrySize) {
    const uint64_t block = LoadBe64(&bytes[i]) & ~uint64_t{0x1ff};
    if (block == 0 || block >= kMaxHostOffset || block % c != 0) continue;
    structure_end_ = std::max(structure_end_, block + c);
    refcount_blocks_.emplace_back(block, i / kTableEntrySize);
  }
  std::sort(refcount_blocks_.begin(), refcount_blocks_.end());
  // Blocks, or parts of them, that arrived before the table: scan what is still held (the
  // rest of a block is scanned as it arrives).
  std::vector<uint8_t> held;
  for (const auto& [block, index] : refcount_blocks_) {
    received_.ForEachIn(block, block + c, [&](uint64_t lo, uint64_t hi) {
      held.resize(hi - lo);
      if (TryReadHeld(lo, hi, held.data())) ScanRefcounts(lo, held);
    });
  }
}

// Raises structure_end_ past the last cluster that refcount block bytes [a, a + size)
// count as in use.
void StreamDecoder::ScanRefcounts(uint64_t a, std::span<const uint8_t> bytes) {
  const uint64_t c = info_->cluster_size, b = a + bytes.size();
  const unsigned bits = 1u << info_->header.refcount_order;
  const uint64_t per_block = c * 8 / bits;
  auto it = std::lower_bound(refcount_blocks_.begin(), refcount_blocks_.end(),
                             std::pair<uint64_t, uint64_t>{a >= c ? a - c + 1 : 0, 0});
  for (; it != refcount_blocks_.end() && it->first < b; ++it) {
    const uint64_t lo = std::max(a, it->first), hi = std::min(b, it->first + c);
    // The last non-zero byte of this block's part, and the last entry in use within it
    // (entries under 8 bits are packed from the least significant bit).
    uint64_t k = hi;
    while (k > lo && bytes[k - 1 - a] == 0) --k;
    if (k == lo) continue;
    const uint64_t byte = k - 1 - it->first;
    const uint8_t v = bytes[k - 1 - a];
    const unsigned top_bit = 31 - static_cast<unsigned>(__builtin_clz(v));
    const uint64_t entry = bits >= 8 ? byte * 8 / bits : byte * (8 / bits) + top_bit / bits;
    const uint64_t cluster = it->second * per_block + entry;
    if (cluster < kMaxHostOffset / c) structure_end_ = std::max(structure_end_, cluster * c + 1);
  }
}

void StreamDecoder::CompleteL1() {
  const std::vector<uint8_t> bytes = ReadHeld(l1_offset_, l1_offset_ + l1_length_, "the L1 table");
  ParseL1(bytes);
  // Only now: the L2 tables it names may have completed while it was being parsed.
  l1_parsed_ = true;
  --pending_tables_;
  CheckTreeComplete();
}

void StreamDecoder::ParseL1(std::span<const uint8_t> bytes) {
  ClaimL1(*info_, bytes, [&](const Claim& claim) {
    if (claim.kind == Claim::Kind::kL2Table) {
      AddL2(claim.host, claim.guest / (info_->cluster_size * info_->l2_entries));
    } else {
      writer_->Unallocated(claim.guest, claim.length);
    }
  });
}

void StreamDecoder::AddL2(uint64_t offset, uint64_t l1_index) {
  const uint64_t c = info_->cluster_size;
  structure_end_ = std::max(structure_end_, offset + c);
  auto [it, added] = l2_tables_.try_emplace(offset);
  it->second.l1_indices.push_back(l1_index);
  ++l2_names_;
  if (!added) {
    // A table named twice describes two parts of the disk: parse it again for this one.
    if (it->second.parsed) {
      std::vector<CompressedKey> spans;
      ParseL2(ReadHeld(offset, offset + c, L2Name(l1_index)), l1_index, &spans);
      CompleteSpans(spans);
    }
    return;
  }
  ++pending_tables_;
  if (received_.Covers(offset, offset + c)) CompleteL2(it);
}

void StreamDecoder::CompleteL2(std::map<uint64_t, L2Table>::iterator it) {
  const uint64_t off = it->first;
  const std::vector<uint64_t> names = it->second.l1_indices;
  const std::vector<uint8_t> bytes = ReadHeld(off, off + info_->cluster_size, L2Name(names[0]));
  // Compressed clusters are decoded once every name of the table is parsed, so that
  // identical descriptors in it (and in its other names) share one decode.
  std::vector<CompressedKey> spans;
  for (uint64_t l1_index : names) ParseL2(bytes, l1_index, &spans);
  it->second.parsed = true;
  --pending_tables_;
  CompleteSpans(spans);
  CheckTreeComplete();
}

void StreamDecoder::CompleteSpans(const std::vector<CompressedKey>& spans) {
  for (const auto& key : spans) {
    uint64_t avail = 0;
    if (compressed_.Waiting(key) && !compressed_.InFlight(key) && CompressedReady(key, &avail)) {
      SubmitCompressed(key, avail);
    }
  }
  UpdateMemory();
}

void StreamDecoder::ParseL2(std::span<const uint8_t> bytes, uint64_t l1_index,
                            std::vector<CompressedKey>* spans) {
  ClaimL2(*info_, bytes, l1_index, [&](const Claim& claim) {
    switch (claim.kind) {
      case Claim::Kind::kCompressed:
        if (decoded_spans_) NoteSpan(claim.host, claim.guest, claim.host_end, 0);
        AddCompressed(claim.host, claim.host_end, claim.guest);
        spans->emplace_back(claim.host, claim.host_end);
        return;
      case Claim::Kind::kData:
        AddRun(claim.host, claim.guest, claim.length);
        break;
      case Claim::Kind::kZero:
        writer_->Zero(claim.guest, claim.length);
        break;
      case Claim::Kind::kUnallocated:
      case Claim::Kind::kL2Table:
        writer_->Unallocated(claim.guest, claim.length);
        break;
    }
    structure_end_ = std::max(structure_end_, claim.host_end);
  });
}

void StreamDecoder::AddRun(uint64_t host, uint64_t guest, uint64_t length) {
  const uint64_t v = info_->virtual_size;
  if (guest >= v) return;
  length = std::min(length, v - guest);
  // What arrived of it already is read where it is held before this run exists, and
  // delivered now: from the spool, or from a guest offset that shares the cluster.
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> early;
  std::vector<std::pair<uint64_t, uint64_t>> have;
  received_.ForEachIn(host, host + length,
                      [&](uint64_t a, uint64_t b) { have.emplace_back(a, b); });
  for (const auto& [a, b] : have) {
    early.emplace_back(a, ReadHeld(a, b, "data for guest offset " + std::to_string(guest)));
  }
  runs_.Add(host, guest, length);
  uint64_t got = 0;
  for (const auto& [a, bytes] : early) {
    writer_->Write(guest + (a - host), bytes.data(), bytes.size());
    got += bytes.size();
    spool_.Erase(a, a + bytes.size());  // the target holds them now
  }
  pending_run_bytes_ += length - got;
}

void StreamDecoder::AddCompressed(uint64_t start, uint64_t end, uint64_t guest) {
  compressed_max_end_ = std::max(compressed_max_end_, end);
  if (!compressed_.Waiting({start, end}) && released_.Overlaps(start, start + 1)) {
    // Its data was decoded already, for another descriptor.
    return ShareDecodedCompressed(start, end, guest);
  }
  if (compressed_.Add({start, end}, guest)) {
    // Bytes of it that another cluster's decode set aside are held again until it is done.
    recent_.Take(start, end,
                 [&](uint64_t off, std::span<const uint8_t> bytes) { spool_.Put(off, bytes); });
  }
}

// A compressed span is ready once everything up to its first byte that was decoded for
// another cluster (normally: its end) has arrived.
bool StreamDecoder::CompressedReady(const CompressedKey& key, uint64_t* avail_end) const {
  uint64_t r = key.second;
  released_.ForEachIn(key.first, key.second, [&](uint64_t lo, uint64_t) { r = std::min(r, lo); });
  if (r <= key.first || !received_.Covers(key.first, r)) return false;
  *avail_end = r;
  return true;
}

std::string StreamDecoder::CompressedName(const CompressedKey& key) const {
  return "compressed cluster for guest offset " + std::to_string(compressed_.Guests(key).front()) +
         " (" + std::to_string(key.second - key.first) + " bytes at " + Hex(key.first) + ")";
}

bool StreamDecoder::CompleteCompressed(const CompressedKey& key, uint64_t avail_end,
                                       uint64_t pad_end, bool must) {
  std::vector<uint8_t> in = ReadHeld(key.first, avail_end, CompressedName(key));
  // Past the end of the image file QEMU reads zeros.
  if (pad_end > avail_end) in.resize(pad_end - key.first, 0);
  std::vector<uint8_t> out(info_->cluster_size);
  const std::optional<uint64_t> used = DecompressCluster(info_->compression_type, in, out);
  return ApplyCompressed(key, avail_end, pad_end, must, used, out);
}

void StreamDecoder::SubmitCompressed(const CompressedKey& key, uint64_t avail_end) {
  if (!inflate_) {
    const unsigned n = options_.threads ? options_.threads : InflatePool::AvailableCpus();
    inflate_ = std::make_unique<InflatePool>(n, info_->compression_type);
  }
  std::unique_ptr<InflateJob> job = inflate_->NewJob();
  job->start = key.first;
  job->end = key.second;
  job->avail_end = avail_end;
  job->in.resize(avail_end - key.first);
  if (!TryReadHeld(key.first, avail_end, job->in.data())) {
    ReadHeld(key.first, avail_end, CompressedName(key));  // throws, saying why
  }
  job->out.resize(info_->cluster_size);
  compressed_.SetInFlight(key, true);
  inflate_->Submit(std::move(job));
  Drain(false);
}

void StreamDecoder::Drain(bool all) {
  if (!inflate_) return;
  // Jobs in flight: a few per thread, and a small part of the spool's memory budget.
  const uint64_t max_jobs = 4 * uint64_t{std::max(inflate_->threads(), 1u)};
  const uint64_t max_bytes = options_.spool.memory / 8;
  for (;;) {
    const bool over = inflate_->in_flight() > max_jobs || inflate_->bytes() > max_bytes;
    std::unique_ptr<InflateJob> job = inflate_->Next(all || over);
    if (!job) break;
    const CompressedKey key{job->start, job->end};
    compressed_.SetInFlight(key, false);
    // Applying earlier clusters lets bytes go; should that cut this span's bytes (crafted
    // images whose spans overlap), decode it as one at a time would have, from what is held.
    uint64_t avail = 0;
    if (!CompressedReady(key, &avail)) {
      inflate_->Recycle(std::move(job));
      continue;
    }
    if (avail != job->avail_end) {
      inflate_->Recycle(std::move(job));
      CompleteCompressed(key, avail, avail, true);
      continue;
    }
    ApplyCompressed(key, avail, avail, true, job->used, job->out);
    inflate_->Recycle(std::move(job));
  }
  UpdateMemory();
}

bool StreamDecoder::ApplyCompressed(const CompressedKey& key, uint64_t avail_end, uint64_t pad_end,
                                    bool must, std::optional<uint64_t> used,
                                    std::span<const uint8_t> out) {
  const uint64_t start = key.first, end = key.second;
  const uint64_t c = info_->cluster_size;
  const bool zstd = info_->compression_type == kCompressionZstd;
  if (!used) {
    if (!must) return false;
    if (pad_end < end) {
      Refuse(CompressedName(key) +
             " runs into compressed data that qcowfs had already decoded for another "
             "cluster and dropped: qcowfs cannot decode overlapping compressed clusters");
    }
    Refuse(CompressedName(key) + " does not " + (zstd ? "zstd" : "deflate") +
           "-decompress to exactly " + std::to_string(c) + " bytes");
  }
  // QEMU reads zeros past the end of the file, but a stream that needs them was cut short.
  if (pad_end > avail_end && *used > avail_end - start) {
    Refuse(CompressedName(key) + " is cut short by the end of the image (" +
           std::to_string(avail_end) + " bytes): the image is truncated");
  }
  const std::vector<uint64_t> guests = compressed_.Remove(key);
  const uint64_t v = info_->virtual_size;
  uint64_t whole = UINT64_MAX;  // a guest offset that received the whole cluster
  for (uint64_t guest : guests) {
    writer_->Write(guest, out.data(), c);
    if (guest < v && v - guest >= c) whole = guest;
  }
  const uint64_t data_end = start + std::min<uint64_t>(*used, avail_end - start);
  compressed_end_ = std::max(compressed_end_, data_end);
  if (!tree_complete_) {
    // Later tables may name the same data again: remember where its cluster went.
    if (decoded_spans_) NoteSpan(start, whole, end, *used);
    if (whole == UINT64_MAX) {
      last_cluster_start_ = start;
      last_cluster_.assign(out.begin(), out.end());
    }
  }
  // Only this cluster used these bytes (unless another waiting one shares them); once the
  // tree is known, nothing can need the rest of the span either.
  Drop(start, data_end, /*decoded=*/true);
  if (tree_complete_) Drop(data_end, end);
  return true;
}

// Records that compressed data at `start` (span end `end`, `used` bytes of stream, 0 when
// not known) decoded into the cluster at `guest` (UINT64_MAX: none whole).
void StreamDecoder::NoteSpan(uint64_t start, uint64_t guest, uint64_t end, uint64_t used) {
  const uint64_t c = info_->cluster_size, v = info_->virtual_size;
  if (guest != UINT64_MAX && (guest >= v || v - guest < c)) guest = UINT64_MAX;
  auto [it, added] = decoded_spans_->try_emplace(start, DecodedSpan{guest, end, used});
  if (added) return;
  DecodedSpan& d = it->second;
  if (used ||
      (d.used == 0 && compressed_.Waiting({start, d.end}) && !compressed_.Waiting({start, end}))) {
    // A decode happened (or this descriptor's data is no longer waiting while the one noted
    // is): its facts replace what was noted.
    d.used = used;
    d.end = end;
  }
  if (d.guest == UINT64_MAX) d.guest = guest;
}

// A compressed descriptor whose data was decoded, dropped and pushed out of recent_ for an
// earlier one at the same start: the decoded cluster is in the target at that one's guest
// offset (or in last_cluster_).
void StreamDecoder::ShareDecodedCompressed(uint64_t start, uint64_t end, uint64_t guest) {
  const uint64_t c = info_->cluster_size, v = info_->virtual_size;
  auto who = [&] {
    return "compressed cluster for guest offset " + std::to_string(guest) + " at " + Hex(start);
  };
  if (!decoded_spans_) {
    // First need: index the compressed descriptors of the tables parsed so far (all tables
    // are held until the whole tree is known); decodes from now on add what they learn.
    decoded_spans_ = std::make_unique<std::unordered_map<uint64_t, DecodedSpan>>();
    const ImageInfo& in = *info_;
    for (const auto& [off, t] : l2_tables_) {
      if (!t.parsed) continue;
      const std::vector<uint8_t> bytes = ReadHeld(off, off + c, L2Name(t.l1_indices[0]));
      for (uint64_t l1_index : t.l1_indices) {
        // Parsed before: the entries are valid.
        ClaimL2(in, bytes, l1_index, [&](const Claim& claim) {
          if (claim.kind == Claim::Kind::kCompressed) {
            NoteSpan(claim.host, claim.guest, claim.host_end, 0);
          }
        });
      }
    }
  }
  auto it = decoded_spans_->find(start);
  if (it == decoded_spans_->end() || compressed_.Waiting({start, it->second.end})) {
    Refuse(who() +
           " starts inside compressed data that qcowfs had already decoded for another "
           "cluster and dropped: qcowfs cannot decode overlapping compressed clusters");
  }
  const DecodedSpan d = it->second;
  // A shorter span reads the same only if it still holds the whole stream.
  if (end < d.end && (d.used == 0 || end - start < d.used)) {
    Refuse(who() + " names compressed data decoded earlier with a shorter span (" +
           std::to_string(end - start) + " bytes instead of " + std::to_string(d.end - start) +
           ") that may not hold its whole stream");
  }
  const uint64_t need = std::min(c, v - guest);
  std::vector<uint8_t> out(c);
  if (d.guest != UINT64_MAX) {
    if (options_.reread) {
      // Checking a file: decode the data again from the file itself.
      std::vector<uint8_t> in(d.end - start);
      options_.reread(start, in.data(), in.size());
      if (!DecompressCluster(info_->compression_type, in, out)) {
        Refuse(who() + " does not decompress on a second reading");
      }
    } else {
      writer_->Read(d.guest, out.data(), need);
    }
  } else if (last_cluster_start_ == start && !last_cluster_.empty()) {
    out = last_cluster_;
  } else {
    Refuse(who() + " shares compressed data whose decoded cluster qcowfs no longer holds");
  }
  writer_->Write(guest, out.data(), need);
}

}  // namespace qcow

// Routing of image bytes: where each arriving byte goes, what is kept, what is read back.
#include "qcow/import/stream_decoder.h"

#include <algorithm>
#include <cstring>

#include "qcow/format/format.h"

namespace qcow {
namespace {

// Bytes compared or read back at a time.
constexpr uint64_t kReadChunk = 1u << 20;
// Bookkeeping per table and per waiting compressed cluster: a std::map node with its
// vector, with malloc's overhead.
constexpr uint64_t kTableNodeBytes = 128;
constexpr uint64_t kDecodedSpanBytes = 64;
// Decoded compressed data stays a while in memory (RecentBytes), for contrived images that
// share it: a sixty-fourth of the spool's memory (4 MiB by default), at least 64 KiB.
constexpr uint64_t kRecentShare = 64, kMinRecent = 64u << 10;

std::string Range(uint64_t a, uint64_t b) { return Hex(a) + ".." + Hex(b); }

}  // namespace

StreamDecoder::StreamDecoder(ImageSink& sink, DecoderOptions options)
    : sink_(sink),
      options_(std::move(options)),
      spool_(options_.spool),
      recent_(std::max<uint64_t>(options_.spool.memory / kRecentShare, kMinRecent)) {}

StreamDecoder::~StreamDecoder() = default;

void StreamDecoder::Feed(uint64_t offset, std::span<const uint8_t> bytes) {
  if (finished_) Refuse("image bytes arrived after the end of the image");
  if (bytes.empty()) return;
  if (offset > kMaxHostOffset || bytes.size() > kMaxHostOffset - offset) {
    Refuse("write at offset " + std::to_string(offset) + " lies beyond 2^56, past any qcow2 image");
  }
  history_.Write(offset, bytes.size());
  const uint64_t end = offset + bytes.size();
  if (received_.Overlaps(offset, end)) CheckRewrite(offset, bytes);
  std::vector<std::pair<uint64_t, uint64_t>> fresh;
  received_.ForEachGap(offset, end, [&](uint64_t a, uint64_t b) { fresh.emplace_back(a, b); });
  for (const auto& [a, b] : fresh) {
    received_.Insert(a, b);
    Take(a, bytes.subspan(a - offset, b - a));
  }
  Drain(false);
  UpdateMemory();
}

int64_t StreamDecoder::FeedFrom(uint64_t offset, int fd, uint64_t max, const std::string& from) {
  if (finished_ || !writer_) return kNotMoved;
  uint64_t guest = 0;
  const uint64_t n = MovableRun(offset, max, &guest);
  if (n == 0 || n < options_.min_move) return kNotMoved;
  const int64_t moved = writer_->WriteFrom(guest, fd, n, from);
  if (moved == ByteMover::kCannotMove) return kNotMoved;
  if (moved <= 0) return moved;
  probe_ = kProbeRead;
  // What Take does with bytes that only a data run maps, but their writing.
  const uint64_t end = offset + static_cast<uint64_t>(moved);
  history_.Write(offset, end - offset);
  received_.Insert(offset, end);
  pending_run_bytes_ -= end - offset;
  CompleteWaiting(offset, end);
  Drain(false);
  UpdateMemory();
  return moved;
}

// Bytes that have not arrived, all mapped by the first run at a and by no other (a cluster
// the image shares takes Feed's path), below the end of the target. Tables and compressed
// data that overlap them (crafted images) are read back from the target, as after Take. A
// refcount block that is also data (a corrupt image) is not scanned: its counts only tell
// how far past a complete disk to read on.
uint64_t StreamDecoder::MovableRun(uint64_t a, uint64_t max, uint64_t* guest) const {
  if (!info_ || a >= kMaxHostOffset) return 0;
  uint64_t b = a + std::min(max, kMaxHostOffset - a);
  received_.ForEachIn(a, b, [&](uint64_t lo, uint64_t) { b = std::min(b, lo); });
  if (b <= a) return 0;
  uint64_t run_end = 0;
  bool first = true, movable = true;
  runs_.ForEach(a, b, [&](uint64_t lo, uint64_t hi, uint64_t g) {
    if (first) {
      first = false;
      movable = lo == a;
      run_end = hi;
      *guest = g;
    } else if (lo < run_end) {
      movable = false;  // shared
    }
  });
  if (first || !movable || *guest >= writer_->end()) return 0;
  b = std::min(run_end, a + (writer_->end() - *guest));
  return b - a;
}

uint64_t StreamDecoder::ReadLength(uint64_t offset, uint64_t max) {
  if (max <= 1 || offset >= kMaxHostOffset) return std::min<uint64_t>(max, 1);
  uint64_t next_run = max;
  runs_.ForEach(offset, offset + std::min(max, kMaxHostOffset - offset),
                [&](uint64_t lo, uint64_t hi, uint64_t) {
                  if (lo > offset && hi - lo >= options_.min_move) {
                    next_run = std::min(next_run, lo - offset);
                  }
                });
  if (tree_complete_ || next_run < max) return next_run;
  const uint64_t n = std::min(max, probe_);
  probe_ = std::min(probe_ * 2, kMaxHostOffset);
  return n;
}

void StreamDecoder::SetSize(uint64_t size) {
  if (finished_) Refuse("the image's size was set after the end of the image");
  Drain(true);
  if (size > kMaxHostOffset) Refuse("image size " + std::to_string(size) + " lies beyond 2^56");
  if (!history_.SetSize(size)) {
    Refuse("the image was truncated to " + std::to_string(size) + " bytes after bytes up to " +
           std::to_string(history_.max_end()) +
           " had been written; qcowfs cannot take back image bytes it has received");
  }
}

// Bytes that arrive again must be what arrived before: a writer may repeat itself, but an
// image that changes after parts of it were decoded cannot be decoded.
void StreamDecoder::CheckRewrite(uint64_t offset, std::span<const uint8_t> bytes) {
  std::vector<std::pair<uint64_t, uint64_t>> again;
  received_.ForEachIn(offset, offset + bytes.size(),
                      [&](uint64_t a, uint64_t b) { again.emplace_back(a, b); });
  std::vector<uint8_t> held;
  for (const auto& [a, b] : again) {
    for (uint64_t p = a; p < b; p += kReadChunk) {
      const uint64_t q = std::min(b, p + kReadChunk);
      held.resize(q - p);
      if (TryReadHeld(p, q, held.data())) {
        if (std::memcmp(held.data(), bytes.data() + (p - offset), q - p) != 0) {
          Refuse("bytes " + Range(p, q) +
                 " of the image were written twice with different content; an image must be "
                 "written once");
        }
      } else if (Referenced(p, q)) {
        Refuse("bytes " + Range(p, q) +
               " of the image were written again after qcowfs had decoded them; an image "
               "must be written once");
      }
      // Otherwise nothing in the image refers to them and they are no longer held.
    }
  }
}

void StreamDecoder::Take(uint64_t a, std::span<const uint8_t> bytes) {
  const uint64_t b = a + bytes.size();
  if (!info_) {
    spool_.Put(a, bytes);
    TryParseHeader();
    return;
  }
  if (!refcount_blocks_.empty()) ScanRefcounts(a, bytes);
  // Data clusters go straight to every guest offset that maps these bytes.
  std::vector<std::pair<uint64_t, uint64_t>> mapped;
  runs_.ForEach(a, b, [&](uint64_t lo, uint64_t hi, uint64_t guest) {
    writer_->Write(guest, bytes.data() + (lo - a), hi - lo);
    pending_run_bytes_ -= hi - lo;
    mapped.emplace_back(lo, hi);
  });
  // The rest is kept while anything may still need it: everything until the whole tree is
  // known, then only what compressed clusters still waiting need.
  auto keep = [&](uint64_t lo, uint64_t hi) {
    if (lo >= hi) return;
    if (!tree_complete_) return spool_.Put(lo, bytes.subspan(lo - a, hi - lo));
    PendingOverlaps(lo, hi,
                    [&](uint64_t x, uint64_t y) { spool_.Put(x, bytes.subspan(x - a, y - x)); });
  };
  uint64_t pos = a;
  for (const auto& [lo, hi] : mapped) {
    keep(pos, std::max(pos, lo));
    pos = std::max(pos, hi);
  }
  keep(pos, b);
  CompleteWaiting(a, b);
}

void StreamDecoder::PendingOverlaps(uint64_t a, uint64_t b,
                                    const std::function<void(uint64_t, uint64_t)>& fn) const {
  RangeSet need;
  if (!l1_parsed_ && l1_length_) need.Insert(l1_offset_, l1_offset_ + l1_length_);
  if (!refcount_table_parsed_ && refcount_table_length_) {
    need.Insert(refcount_table_offset_, refcount_table_offset_ + refcount_table_length_);
  }
  if (info_) {
    const uint64_t c = info_->cluster_size;
    for (auto it = l2_tables_.lower_bound(a >= c ? a - c + 1 : 0);
         it != l2_tables_.end() && it->first < b; ++it) {
      if (!it->second.parsed) need.Insert(it->first, it->first + c);
    }
  }
  for (const auto& [start, end] : compressed_.Overlapping(a, b)) need.Insert(start, end);
  need.ForEachIn(a, b, fn);
}

void StreamDecoder::CompleteWaiting(uint64_t a, uint64_t b) {
  // Tables change what decompressed clusters do once applied: each Drain(true) below applies
  // those in flight first.
  // The refcount table first: its blocks may be among the bytes held now, which completing
  // the tree below would let go.
  if (refcount_table_length_ && !refcount_table_parsed_ && refcount_table_offset_ < b &&
      refcount_table_offset_ + refcount_table_length_ > a) {
    Drain(true);
    ParseRefcountTable();
  }
  if (!l1_parsed_ && l1_length_ && l1_offset_ < b && l1_offset_ + l1_length_ > a &&
      received_.Covers(l1_offset_, l1_offset_ + l1_length_)) {
    Drain(true);
    CompleteL1();
  }
  const uint64_t c = info_->cluster_size;
  std::vector<uint64_t> tables;
  for (auto it = l2_tables_.lower_bound(a >= c ? a - c + 1 : 0);
       it != l2_tables_.end() && it->first < b; ++it) {
    if (!it->second.parsed) tables.push_back(it->first);
  }
  for (uint64_t off : tables) {
    auto it = l2_tables_.find(off);
    if (!it->second.parsed && received_.Covers(off, off + c)) {
      Drain(true);
      CompleteL2(it);
    }
  }
  CompleteSpans(compressed_.Overlapping(a, b));
}

bool StreamDecoder::TryReadHeld(uint64_t a, uint64_t b, uint8_t* out) const {
  RangeSet got;
  auto copy = [&](uint64_t off, std::span<const uint8_t> piece) {
    std::memcpy(out + (off - a), piece.data(), piece.size());
    got.Insert(off, off + piece.size());
  };
  spool_.Visit(a, b, copy);
  if (got.Covers(a, b)) return true;
  recent_.Visit(a, b, copy);
  if (got.Covers(a, b)) return true;
  // Bytes of data clusters were written to their guest offsets: read them back there (or
  // from the image itself, when it is a file being checked).
  bool ok = true;
  runs_.ForEach(a, b, [&](uint64_t lo, uint64_t hi, uint64_t guest) {
    if (!ok) return;
    got.ForEachGap(lo, hi, [&](uint64_t x, uint64_t y) {
      if (!received_.Covers(x, y)) {
        ok = false;
        return;
      }
      if (options_.reread) {
        options_.reread(x, out + (x - a), y - x);
      } else {
        writer_->Read(guest + (x - lo), out + (x - a), y - x);
      }
      got.Insert(x, y);
    });
  });
  return ok && got.Covers(a, b);
}

std::vector<uint8_t> StreamDecoder::ReadHeld(uint64_t a, uint64_t b, const std::string& who) const {
  std::vector<uint8_t> out(b - a);
  if (TryReadHeld(a, b, out.data())) return out;
  if (released_.Overlaps(a, b)) {
    Refuse(who + " needs bytes in " + Range(a, b) +
           " that qcowfs had already decoded as compressed data and dropped: the image "
           "overlaps compressed data with other structures, which qcowfs cannot decode");
  }
  Refuse(who + " needs bytes in " + Range(a, b) + " that qcowfs no longer holds (internal error)");
}

bool StreamDecoder::Referenced(uint64_t a, uint64_t b) const {
  if (!info_ || a < info_->cluster_size) return true;
  if (released_.Overlaps(a, b) || runs_.Overlaps(a, b)) return true;
  if (l1_length_ && l1_offset_ < b && l1_offset_ + l1_length_ > a) return true;
  const uint64_t c = info_->cluster_size;
  auto it = l2_tables_.lower_bound(a >= c ? a - c + 1 : 0);
  if (it != l2_tables_.end() && it->first < b) return true;
  bool any = false;
  PendingOverlaps(a, b, [&](uint64_t, uint64_t) { any = true; });
  return any;
}

// Forgets held bytes of [a, b) that no waiting table or compressed cluster needs; the image
// refers to them, so they count as decoded (released_). Compressed data just `decoded`
// before the whole tree is known goes to recent_ first, in case a later table shares it.
void StreamDecoder::Drop(uint64_t a, uint64_t b, bool decoded) {
  if (a >= b) return;
  RangeSet keep;
  PendingOverlaps(a, b, [&](uint64_t x, uint64_t y) { keep.Insert(x, y); });
  auto gone = [&](uint64_t p, uint64_t q) { released_.Insert(p, q); };
  keep.ForEachGap(a, b, [&](uint64_t x, uint64_t y) {
    if (decoded && !tree_complete_) {
      spool_.Visit(x, y, [&](uint64_t off, std::span<const uint8_t> piece) {
        recent_.Put(off, piece, gone);
      });
    } else {
      spool_.ForEachHeld(x, y, gone);
    }
    spool_.Erase(x, y);
  });
}

void StreamDecoder::CheckTreeComplete() {
  if (tree_complete_ || !info_ || !l1_parsed_ || pending_tables_ != 0) return;
  // Every consumer exists now: nothing new can need what is held, but the compressed
  // clusters still waiting for the rest of their bytes.
  tree_complete_ = true;
  decoded_spans_.reset();
  last_cluster_.clear();
  recent_.Clear([&](uint64_t p, uint64_t q) { released_.Insert(p, q); });
  for (const auto& [a, b] : spool_.Ranges()) Drop(a, b);
}

void StreamDecoder::UpdateMemory() {
  uint64_t other = received_.memory_bytes() + released_.memory_bytes() + runs_.memory_bytes() +
                   l2_tables_.size() * kTableNodeBytes + l2_names_ * sizeof(uint64_t) +
                   compressed_.memory_bytes() +
                   (inflate_ ? inflate_->bytes() + inflate_->spare_bytes() : 0) +
                   recent_.memory_bytes() + last_cluster_.capacity() +
                   refcount_blocks_.capacity() * sizeof(refcount_blocks_[0]);
  if (decoded_spans_) other += decoded_spans_->size() * kDecodedSpanBytes;
  spool_.set_other_memory(other);
}

uint64_t StreamDecoder::expected_size() const {
  if (!tree_complete_) return 0;
  return std::max({structure_end_, compressed_end_, compressed_max_end_});
}

bool StreamDecoder::Complete() {
  if (finished_) return true;
  Drain(true);
  if (!info_ || !received_.Covers(0, structure_end_)) return false;
  return DiskComplete() && received_.Covers(0, std::max(structure_end_, compressed_end_));
}

bool StreamDecoder::DiskComplete() {
  if (finished_) return true;
  Drain(true);
  if (!info_ || !tree_complete_ || pending_run_bytes_ != 0) return false;
  const uint64_t bd = info_->bitmap_directory_offset;
  if (!received_.Covers(bd, bd + info_->bitmap_directory_size)) return false;
  // Compressed clusters still waiting: their data may end before the bytes that have not
  // arrived (the last one's span often runs past the end of the file). What decodes from
  // the bytes that did arrive is what any later bytes would give.
  while (!compressed_.empty()) {
    const auto [start, end] = compressed_.first();
    uint64_t avail = std::min(end, received_.CoveredUpTo(start));
    released_.ForEachIn(start, avail, [&](uint64_t lo, uint64_t) { avail = std::min(avail, lo); });
    if (avail <= start || !CompleteCompressed({start, end}, avail, avail, false)) return false;
  }
  UpdateMemory();
  return true;
}

}  // namespace qcow

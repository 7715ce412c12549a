// The end of an image: holes the writer left, what never arrived, the last compressed
// clusters (whose spans may run past the end of the file).
#include <algorithm>

#include "qcow/format/format.h"
#include "qcow/import/stream_decoder.h"

namespace qcow {
namespace {

// Holes are filled a megabyte of zeros at a time.
constexpr uint64_t kZeroChunk = 1u << 20;

}  // namespace

void StreamDecoder::Finish() {
  if (finished_) return;
  const uint64_t file_end = history_.file_end();
  const bool holes = history_.holes_are_zeros();
  if (received_.empty()) Refuse("the image is empty: no bytes of it were written");
  Drain(true);
  if (holes) FillHoles(file_end);
  Drain(true);
  if (!info_) {
    uint64_t need = kV3MinHeaderLength;
    std::vector<uint8_t> head(need);
    if (received_.Covers(0, need) && TryReadHeld(0, need, head.data())) {
      need = HeaderBytesNeeded(head);
    }
    if (file_end < need) {
      Refuse("the image ends at byte " + std::to_string(file_end) + ", inside its header (" +
             std::to_string(need) + " bytes needed)");
    }
    Missing(0, need, "the header", file_end, holes);
  }
  const uint64_t c = info_->cluster_size;
  if (!l1_parsed_) Missing(l1_offset_, l1_offset_ + l1_length_, "the L1 table", file_end, holes);
  for (const auto& [off, t] : l2_tables_) {
    if (!t.parsed) {
      Missing(off, off + c, "the L2 table of L1 entry " + std::to_string(t.l1_indices[0]), file_end,
              holes);
    }
  }
  const uint64_t bd = info_->bitmap_directory_offset, bd_end = bd + info_->bitmap_directory_size;
  if (bd_end > bd && !received_.Covers(bd, bd_end)) {
    Missing(bd, bd_end, "the bitmap directory", file_end, holes);
  }
  if (pending_run_bytes_ != 0) {
    runs_.ForAll([&](uint64_t host, uint64_t guest, uint64_t length) {
      if (!received_.Covers(host, host + length)) {
        Missing(host, host + length, "data for guest offset " + std::to_string(guest), file_end,
                holes);
      }
    });
  }
  // Compressed clusters decode from what the file holds; past its end QEMU reads zeros.
  while (!compressed_.empty()) {
    const auto [start, end] = compressed_.first();
    const std::string what = "compressed data for guest offset " +
                             std::to_string(compressed_.Guests(compressed_.first()).front());
    if (start >= file_end) Missing(start, end, what, file_end, holes);
    uint64_t avail = std::min(end, file_end);
    released_.ForEachIn(start, avail, [&](uint64_t lo, uint64_t) { avail = std::min(avail, lo); });
    if (!received_.Covers(start, avail)) Missing(start, avail, what, file_end, holes);
    CompleteCompressed({start, end}, avail, avail == std::min(end, file_end) ? end : avail, true);
  }
  if (pending_run_bytes_ != 0) {
    // Every run was checked above: bytes still owed mean the bookkeeping lost a run.
    Refuse("internal error: " + std::to_string(pending_run_bytes_) +
           " bytes of data clusters are still owed after every run arrived");
  }
  writer_->Flush();
  spool_.Clear();
  finished_ = true;
}

// Feeds zeros for every byte below the end of the file that something needs and the writer
// skipped, until nothing more is needed (each table read can name more).
void StreamDecoder::FillHoles(uint64_t file_end) {
  static const std::vector<uint8_t> zeros(kZeroChunk, 0);
  for (;;) {
    const auto need = MissingNeeded(file_end);
    if (need.empty()) return;
    for (const auto& [a, b] : need) {
      for (uint64_t p = a; p < b; p += kZeroChunk) {
        const uint64_t q = std::min(b, p + kZeroChunk);
        if (received_.Overlaps(p, q)) continue;  // filled meanwhile
        received_.Insert(p, q);
        Take(p, std::span(zeros).first(q - p));
      }
    }
    UpdateMemory();
  }
}

// Returns the ranges below `limit` that something waiting needs and that never arrived.
std::vector<std::pair<uint64_t, uint64_t>> StreamDecoder::MissingNeeded(uint64_t limit) {
  RangeSet need;
  auto add = [&](uint64_t a, uint64_t b) {
    received_.ForEachGap(a, std::min(b, limit), [&](uint64_t x, uint64_t y) { need.Insert(x, y); });
  };
  if (!info_) {
    uint64_t n = kV3MinHeaderLength;
    std::vector<uint8_t> head(n);
    if (received_.Covers(0, n) && TryReadHeld(0, n, head.data())) n = HeaderBytesNeeded(head);
    add(0, n);
  } else {
    const uint64_t c = info_->cluster_size;
    if (!l1_parsed_) add(l1_offset_, l1_offset_ + l1_length_);
    add(info_->bitmap_directory_offset,
        info_->bitmap_directory_offset + info_->bitmap_directory_size);
    for (const auto& [off, t] : l2_tables_) {
      if (!t.parsed) add(off, off + c);
    }
    if (pending_run_bytes_ != 0) {
      runs_.ForAll([&](uint64_t host, uint64_t, uint64_t length) { add(host, host + length); });
    }
    compressed_.ForEach([&](const CompressedKey& key) { add(key.first, key.second); });
  }
  std::vector<std::pair<uint64_t, uint64_t>> out;
  need.ForEachIn(0, limit, [&](uint64_t a, uint64_t b) { out.emplace_back(a, b); });
  return out;
}

void StreamDecoder::Missing(uint64_t a, uint64_t b, const std::string& what, uint64_t file_end,
                            bool holes) {
  const std::string where = what + " at " + Hex(a) + " (" + std::to_string(b - a) + " bytes)";
  uint64_t gap = b;
  received_.ForEachGap(a, std::min(b, file_end),
                       [&](uint64_t x, uint64_t) { gap = std::min(gap, x); });
  if (gap >= file_end) {
    Refuse(where + (a >= file_end ? " lies" : " runs") + " past the end of the image (" +
           std::to_string(file_end) + " bytes): the image is truncated");
  }
  Refuse(where + " was never written: byte " + Hex(gap) +
         " is missing although the image file is " + std::to_string(file_end) + " bytes long" +
         (holes ? std::string()
                : " (skipped bytes count as holes only when the writer writes front to back "
                  "and sets the file's size last, as sparse copies do)") +
         ": the image is truncated");
}

}  // namespace qcow
